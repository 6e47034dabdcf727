"""PyTorch baselines on the bundle's own weights and the shared windows (each run in its own process).

- `eager`: `ReferenceModel.forward_windows`, the PyTorch model with encoders shared by all members.
- `naive`: `ReferenceModel.forward_naive`, which re-runs the encoders for every member (how the
  reference MMMOS code scores an ensemble); timed at the smallest batch only (it is the slow one).
- `audiobox`: the `audiobox_aesthetics` package's own model (`AesMultiOutput`: one WavLM Base+, four
  heads) at fp32 on the same 16 kHz window. Its checkpoint is loaded when the bundle came from one,
  else it has random weights (timing does not depend on them). Only the model forward is timed:
  the package's `AesPredictor` wrapper needs torchaudio, which cannot be installed beside torch here.

The torch modules are rebuilt from the manifest's provenance through `mmmos.export.sources` (the same
functions the exporter used), so a random-init bundle gets bit-identical weights; the window scores are
returned so the caller can check that against the runtime's.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from mmmos.runtime.manifest import read_manifest

from .clips import load_windows
from .timing import peak_rss_mb, time_call


class BaselineUnavailableError(RuntimeError):
    """The bundle's provenance does not let the PyTorch modules be rebuilt (say how in the message)."""


def build_reference(manifest: dict[str, Any]) -> Any:
    """The `ReferenceModel` with the bundle's weights, rebuilt from `manifest["provenance"]`.

    Raises:
        BaselineUnavailableError: the source cannot be rebuilt (e.g. its checkpoints are gone).
    """
    from mmmos.export import sources
    from mmmos.models.reference import ReferenceModel

    prov = manifest.get("provenance", {}) or {}
    src = prov.get("source")
    n_members = len(manifest.get("members", []))
    if src == "random-init":
        spec = sources.from_random_init(str(prov["preset"]), seed=int(prov.get("seed", 0)), num_members=n_members)
    elif src == "audiobox":
        ckpts = [Path(c["path"]) for c in prov.get("checkpoints", [])]
        if not ckpts or not all(p.exists() for p in ckpts):
            raise BaselineUnavailableError(f"the Audiobox checkpoint {ckpts} of this bundle is not on this machine; "
                                           "re-export from it here to benchmark the PyTorch baseline.")
        first = ckpts[0]
        spec = sources.from_audiobox(first if first.suffix in (".pt", ".ckpt", ".pth") else first.parent)
    elif src == "checkpoints":
        enc = prov.get("encoders", {}) or {}
        members = prov.get("members_dir")
        paths = {k: Path(v) for k, v in enc.items()}
        if not all(p.exists() for p in paths.values()) or not members or not Path(members).exists():
            raise BaselineUnavailableError("the encoder checkpoints or members folder named in this bundle's "
                                           "provenance are not on this machine; run the benchmark where they are.")
        spec = sources.from_checkpoints(paths.get("wavlm"), paths.get("muq"), paths.get("m2d"), Path(members))
    else:
        raise BaselineUnavailableError(f"bundle provenance source {src!r} cannot be rebuilt in PyTorch "
                                       "(supported: random-init, audiobox, checkpoints).")
    if not spec.members:
        raise BaselineUnavailableError("the bundle has no ensemble members, so there is nothing to score.")
    for enc in spec.encoders.values():
        if hasattr(enc, "bake_weight_norm"):
            enc.bake_weight_norm()  # as the exporter does: the graph has the baked weight, so time that
    steps = next((int(e["steps"]) for e in manifest.get("encoders", []) if "steps" in e), 50)
    return ReferenceModel(spec.encoders, spec.members, steps=steps)


def _torch_threads(threads: int) -> int:
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    return int(torch.get_num_threads())


def bench_torch(spec: dict[str, Any]) -> dict[str, Any]:
    """Eager (shared encoders) at every batch and naive (per member) at the smallest batch.

    `spec` keys: bundle, windows, batches, warmup, repeats, threads, naive (bool).
    """
    import torch

    manifest = read_manifest(spec["bundle"])
    threads = _torch_threads(int(spec.get("threads", 0)))
    model = build_reference(manifest)
    names = list(model.encoders.keys())
    batches = sorted(int(b) for b in spec["batches"])
    warmup, repeats = int(spec["warmup"]), int(spec["repeats"])

    def tensors(b: int) -> tuple[dict[str, Any], dict[str, Any]]:
        w = load_windows(Path(spec["windows"]), names, b)
        return ({k: torch.from_numpy(v[0]) for k, v in w.items()}, {k: torch.from_numpy(v[1]) for k, v in w.items()})

    wavs, lens = tensors(1)
    _, mean, _ = model.forward_windows(wavs, lens)
    out: dict[str, Any] = {"torch_threads": threads, "window_mean_scores": mean[0].tolist(), "eager": {},
                           "naive": {}, "members": len(model.ensemble.members)}
    for b in batches:
        wavs, lens = tensors(b)
        st = time_call(lambda w=wavs, n=lens: model.forward_windows(w, n), warmup=warmup, repeats=repeats)
        out["eager"][str(b)] = {"latency": st.to_dict(), "per_window_median_s": st.median / b}
    if spec.get("naive", True):
        b = batches[0]
        wavs, lens = tensors(b)
        _, nmean, _ = model.forward_naive(wavs, lens)  # doubles as the warm-up
        st = time_call(lambda: model.forward_naive(wavs, lens), warmup=max(0, warmup - 1), repeats=repeats)
        out["naive"][str(b)] = {"latency": st.to_dict(), "per_window_median_s": st.median / b}
        out["naive_matches_eager"] = bool(torch.allclose(nmean[:1], mean[:1], atol=1e-4))
    out["memory"] = {"peak_rss_mb": peak_rss_mb()}
    return out


def _audiobox_model(manifest: dict[str, Any]) -> tuple[Any, str]:
    """The package's AesMultiOutput: the bundle's Audiobox checkpoint when there is one, else random init."""
    import torch
    from audiobox_aesthetics.model.aes import AesMultiOutput

    prov = manifest.get("provenance", {}) or {}
    ckpts = [Path(c["path"]) for c in prov.get("checkpoints", [])] if prov.get("source") == "audiobox" else []
    pt = next((p for p in ckpts if p.suffix in (".pt", ".ckpt") and p.is_file()), None)
    if pt is not None:
        # The package's own checkpoint layout: state_dict with a "model." prefix, model_cfg, target_transform.
        ckpt = torch.load(pt, map_location="cpu", weights_only=False)
        keys = ("proj_num_layer", "proj_ln", "proj_act_fn", "proj_dropout", "nth_layer", "use_weighted_layer_sum",
                "normalize_embed", "output_dim")
        cfg = {k: ckpt["model_cfg"][k] for k in keys if k in ckpt["model_cfg"]}
        model = AesMultiOutput(**cfg, precision="32", target_transform=ckpt["target_transform"])
        model.load_state_dict({re.sub(r"^model\.", "", k): v for k, v in ckpt["state_dict"].items()})
        return model.eval(), f"checkpoint {pt}"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AesMultiOutput(precision="32")
    return model.eval(), "random init (package default config: WavLM Base+)"


def bench_audiobox(spec: dict[str, Any]) -> dict[str, Any]:
    """The audiobox-aesthetics model forward at fp32 on the shared 16 kHz window, at every batch.

    Raises:
        BaselineUnavailableError: audiobox_aesthetics is not installed.
    """
    try:
        import torch
        from audiobox_aesthetics.model import aes  # noqa: F401 - availability check
    except ImportError as exc:
        raise BaselineUnavailableError(f"audiobox_aesthetics is not installed ({exc}); pip install "
                                       "audiobox_aesthetics --no-deps to add this baseline.") from None
    manifest = read_manifest(spec["bundle"])
    threads = _torch_threads(int(spec.get("threads", 0)))
    model, weights = _audiobox_model(manifest)
    with np.load(spec["windows"]) as z:
        wav1, len1 = z["audiobox_wav"], z["audiobox_len"]
    out: dict[str, Any] = {"torch_threads": threads, "weights": weights, "precision": "fp32", "batches": {}}
    for b in sorted(int(x) for x in spec["batches"]):
        wav = torch.from_numpy(np.repeat(wav1, b, axis=0))[:, None, :]
        mask = (torch.arange(wav.shape[-1])[None, :] < torch.from_numpy(np.repeat(len1, b)))[:, None, :]

        def fwd(w: Any = wav, m: Any = mask) -> None:
            with torch.inference_mode():
                model({"wav": w, "mask": m})

        st = time_call(fwd, warmup=int(spec["warmup"]), repeats=int(spec["repeats"]))
        out["batches"][str(b)] = {"latency": st.to_dict(), "per_window_median_s": st.median / b}
    out["memory"] = {"peak_rss_mb": peak_rss_mb()}
    return out
