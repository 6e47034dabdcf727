"""`python -m mmmos.benchmarks.versus_worker SPEC.json`: one long-lived side of `mmmos-bench versus`.

The process loads its model once, warms up on `spec["warmup_clip"]`, then answers JSON lines on stdin/stdout:

- it first writes `{"ready": true, "info": {...}}` (or `{"error": "..."}` and exits);
- for each `{"path": P}` it scores the file and writes `{"seconds": wall seconds of the call, "scores": {axis: x}}`
  (or `{"error": "..."}`);
- `{"quit": true}` (or the end of stdin) makes it write `{"bye": true, "peak_rss_mb": ...}` and exit.

Sides (`spec["side"]`):

- `mmmos`: `Scorer(bundle, backend, precision, threads=...).score(path)`, end to end (decode, resample, windows,
  graphs, per-file averaging). Never imports torch.
- `peer`: the audiobox-aesthetics package's own `AesPredictor(checkpoint_pth=..., precision="32")`, timed on
  `.forward([{"path": path}])` (its own decode, resample, windows, batch, model, averaging), torch with
  `torch.set_num_threads(threads)`. Without torchaudio it runs on our stand-in (`torchaudio_standin`).

Library output that would go to stdout is sent to stderr (the parent keeps it in a log file), so the protocol
stream only carries these lines.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from .timing import peak_rss_mb

Scores = dict[str, float]
ScoreFn = Callable[[str], Scores]


def mmmos_side(spec: dict[str, Any]) -> tuple[ScoreFn, dict[str, Any]]:
    """The mmmos scorer for `spec` (bundle, backend, precision, force_precision, threads) and what it is."""
    from mmmos.runtime import Scorer

    warnings: list[str] = []
    scorer = Scorer(spec["bundle"], backend=spec["backend"], precision=spec["precision"],
                    threads=int(spec["threads"]), force_precision=bool(spec.get("force_precision", False)),
                    verify=False, warn=warnings.append)
    if scorer.backend != spec["backend"]:
        raise RuntimeError(f"backend {spec['backend']} is unavailable here (the Scorer fell back to {scorer.backend})")

    def score(path: str) -> Scores:
        res = scorer.score(path)
        if res.error is not None:
            raise RuntimeError(f"mmmos could not score {path}: {res.error}")
        return dict(res.scores or {})

    info = {"backend": scorer.backend, "precision": scorer.precision, "batch_size": scorer.batch_size,
            "threads": int(spec["threads"]), "warnings": warnings, "model": str(scorer.model)}
    return score, info


def fitted_wavlm_config(state: dict[str, Any], default: dict[str, Any]) -> dict[str, Any] | None:
    """The package's WavLM config that fits a checkpoint's tensor shapes, or None when its default fits.

    The package always builds WavLM Base+ (`audiobox_aesthetics.model.aes.DEFAULT_AUDIO_CFG`); a checkpoint of
    another size (the tests' tiny one) only loads with a config of its sizes. The sizes come from the shapes;
    conv strides and everything shapes do not show stay the default's.
    """
    sub = {k.removeprefix("model.").removeprefix("wavlm_model."): v for k, v in state.items()
           if k.removeprefix("model.").startswith("wavlm_model.")}
    default_conv = eval(default["conv_feature_layers"], {"__builtins__": {}})  # the package evals this string too
    conv = []
    while f"feature_extractor.conv_layers.{len(conv)}.0.weight" in sub:
        w = sub[f"feature_extractor.conv_layers.{len(conv)}.0.weight"]
        conv.append((int(w.shape[0]), int(w.shape[2])))
    if len(conv) != len(default_conv):
        raise ValueError(f"the checkpoint's WavLM has {len(conv)} conv layers, the package's {len(default_conv)}")
    layers = {k.split(".")[2] for k in sub if k.startswith("encoder.layers.")}
    embed = int(sub["encoder.layer_norm.weight"].shape[0])
    pos = sub.get("encoder.pos_conv.0.weight_v", sub.get("encoder.pos_conv.0.weight"))
    bias = sub["encoder.layers.0.self_attn.relative_attention_bias.weight"]
    cfg = dict(default)
    cfg.update(
        conv_feature_layers=repr([(d, k, s[2]) for (d, k), s in zip(conv, default_conv, strict=True)]),
        conv_bias="feature_extractor.conv_layers.0.0.bias" in sub, encoder_layers=len(layers),
        encoder_embed_dim=embed, encoder_ffn_embed_dim=int(sub["encoder.layers.0.fc1.weight"].shape[0]),
        encoder_attention_heads=int(bias.shape[1]), num_buckets=int(bias.shape[0]), conv_pos=int(pos.shape[2]),
        conv_pos_groups=embed // int(pos.shape[1]),
    )
    same_conv = [(d, k) for d, k, _ in default_conv] == conv
    keys = ("conv_bias", "encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim", "encoder_attention_heads",
            "num_buckets", "conv_pos", "conv_pos_groups")
    return None if same_conv and all(cfg[k] == default[k] for k in keys) else cfg


def _package_checkpoint(spec: dict[str, Any], tmp: Path) -> tuple[Path, str]:
    """A checkpoint file in the package's format (state_dict with `model.`, model_cfg, target_transform).

    `spec["checkpoint"]`: a checkpoint.pt (used as is), a Hugging Face folder (config.json + model.safetensors,
    converted into `tmp`), or None: a random-init `AesMultiOutput` (the package's default WavLM Base+), saved
    into `tmp`.
    """
    import torch
    from audiobox_aesthetics.model.aes import AXES_NAME, AesMultiOutput

    src = spec.get("checkpoint")
    cfg_keys = ("proj_num_layer", "proj_ln", "proj_act_fn", "proj_dropout", "nth_layer", "use_weighted_layer_sum",
                "normalize_embed", "output_dim")
    if src and Path(src).is_file():
        return Path(src), f"checkpoint {src}"
    out = tmp / "peer_checkpoint.pt"
    if src:  # a Hugging Face folder
        from safetensors.torch import load_file

        cfg = json.loads((Path(src) / "config.json").read_text(encoding="utf-8"))
        state = {f"model.{k}": v for k, v in load_file(str(Path(src) / "model.safetensors")).items()}
        model_cfg = {k: cfg[k] for k in cfg_keys if k in cfg} | {"precision": "32"}
        torch.save({"state_dict": state, "model_cfg": model_cfg, "target_transform": cfg["target_transform"]}, out)
        return out, f"Hugging Face folder {src} (converted to the package's checkpoint format)"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(spec.get("seed", 0)))
        model = AesMultiOutput(precision="32")
    model_cfg = {k: getattr(model, k) for k in cfg_keys} | {"precision": "32"}
    target = {a: {"mean": 5.5, "std": 1.5} for a in AXES_NAME}
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "model_cfg": model_cfg,
                "target_transform": target}, out)
    return out, "random init (package default config: WavLM Base+)"


def peer_side(spec: dict[str, Any]) -> tuple[ScoreFn, dict[str, Any]]:
    """The audiobox-aesthetics package's `AesPredictor` for `spec` (checkpoint, threads, device, work)."""
    import tempfile

    if spec.get("device", "cpu") == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # AesPredictor picks CUDA when it can; compare on the same device
    import torch

    torch.set_num_threads(int(spec["threads"]))
    from .torchaudio_standin import ensure_torchaudio

    torchaudio = ensure_torchaudio()
    try:
        from audiobox_aesthetics.infer import AesPredictor
        from audiobox_aesthetics.model import aes
        from audiobox_aesthetics.model.wavlm import WavLMConfig
    except ImportError as exc:
        raise RuntimeError(f"the audiobox-aesthetics package does not import ({exc}); install it with "
                           "`pip install audiobox_aesthetics --no-deps` (plus huggingface_hub).") from None

    with tempfile.TemporaryDirectory(dir=spec.get("work")) as tmp:
        path, weights = _package_checkpoint(spec, Path(tmp))
        state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        fitted = fitted_wavlm_config(state, dict(vars(aes.DEFAULT_AUDIO_CFG)))
        del state
        config = "package default (WavLM Base+)"
        if fitted is not None:
            aes.DEFAULT_AUDIO_CFG = WavLMConfig(fitted)  # AesMultiOutput reads this module global
            config = (f"read from the checkpoint's shapes ({fitted['encoder_layers']} layers, "
                      f"width {fitted['encoder_embed_dim']}; not WavLM Base+)")
        predictor = AesPredictor(checkpoint_pth=str(path), precision="32")

    def score(p: str) -> Scores:
        return {k: float(v) for k, v in predictor.forward([{"path": p}])[0].items()}

    info = {"weights": weights, "wavlm_config": config, "torchaudio": torchaudio, "device": str(predictor.device),
            "threads": int(torch.get_num_threads()), "precision": "32", "batch_size": 1,
            "autocast": bool(getattr(predictor.model, "enable_autocast", False)),
            "torch": torch.__version__}
    return score, info


def serve(fn: ScoreFn, info: dict[str, Any], inp: TextIO, out: TextIO,
          clock: Callable[[], float] = time.perf_counter) -> None:
    """Answer the JSON-line protocol (module docstring) until `quit` or the end of `inp`."""

    def send(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    send({"ready": True, "info": info})
    for line in inp:
        msg = json.loads(line)
        if msg.get("quit"):
            break
        try:
            t0 = clock()
            scores = fn(str(msg["path"]))
            dt = clock() - t0
        except Exception as exc:
            send({"error": f"{type(exc).__name__}: {' '.join(str(exc).split())}"})
            continue
        send({"seconds": dt, "scores": scores})
    send({"bye": True, "peak_rss_mb": peak_rss_mb()})


def main(argv: list[str] | None = None) -> int:
    """Entry point: build the side named in the spec, warm it up, serve; errors become an `error` line."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m mmmos.benchmarks.versus_worker SPEC.json", file=sys.stderr)
        return 2
    proto = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints from libraries go to the log, not the protocol
    spec = json.loads(Path(args[0]).read_text())
    try:
        fn, info = (mmmos_side if spec["side"] == "mmmos" else peer_side)(spec)
        if spec.get("warmup_clip"):
            t0 = time.perf_counter()
            fn(str(spec["warmup_clip"]))
            info["warmup_s"] = time.perf_counter() - t0
    except Exception as exc:
        traceback.print_exc()
        proto.write(json.dumps({"error": f"{type(exc).__name__}: {' '.join(str(exc).split())}"}) + "\n")
        proto.flush()
        return 1
    serve(fn, info, sys.stdin, proto)
    return 0


if __name__ == "__main__":
    sys.exit(main())
