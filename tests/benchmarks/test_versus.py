"""`mmmos-bench versus` without processes: interleaving with fake sides, ratio statistics, goals, the peer's
checkpoint, the worker protocol, the markdown and the CLI's parsing (no timed assertions)."""

from __future__ import annotations

import io
import json
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from mmmos.benchmarks import versus_stats as vs
from mmmos.benchmarks.cli import DEFAULT_COMMAND, app, route_args
from mmmos.benchmarks.versus import VersusError, VersusSettings, bundle_kind, peer_checkpoint
from mmmos.benchmarks.versus_report import markdown
from mmmos.benchmarks.versus_worker import fitted_wavlm_config, serve


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runtime's sha256 stamp cache goes to tmp_path, not the user's home."""
    monkeypatch.setenv("MMMOS_CACHE_DIR", str(tmp_path / "cache"))


class FakeSide:
    """A side that returns scripted seconds per clip and logs every call into a shared list."""

    def __init__(self, name: str, seconds: dict[str, list[float]], log: list[tuple[str, str]]) -> None:
        self.name, self.seconds, self.log = name, {k: iter(v) for k, v in seconds.items()}, log

    def __call__(self, path: str) -> tuple[float, dict[str, float]]:
        self.log.append((self.name, path))
        return next(self.seconds[path]), {"PQ": 5.0 if self.name == "mmmos" else 5.0005}


def test_interleave_alternates_who_goes_first_and_pairs_the_rounds() -> None:
    log: list[tuple[str, str]] = []
    # 1 warm-up round + 3 timed rounds per clip: the warm-up values are never reported.
    a = FakeSide("mmmos", {"c1": [9, 1.0, 2.0, 3.0], "c2": [9, 4.0, 5.0, 6.0]}, log)
    b = FakeSide("peer", {"c1": [9, 10.0, 10.0, 10.0], "c2": [9, 40.0, 40.0, 60.0]}, log)
    lines: list[str] = []
    out = vs.interleave({"mmmos": a, "peer": b}, {1.0: "c1", 2.0: "c2"}, rounds=3, warmup=1, progress=lines.append)
    assert log[:4] == [("mmmos", "c1"), ("peer", "c1"), ("mmmos", "c2"), ("peer", "c2")]  # warm-up
    timed = log[4:]
    assert timed[:4] == [("mmmos", "c1"), ("peer", "c1"), ("mmmos", "c2"), ("peer", "c2")]  # round 0: A, B
    assert timed[4:8] == [("peer", "c1"), ("mmmos", "c1"), ("peer", "c2"), ("mmmos", "c2")]  # round 1: B, A
    assert timed[8:] == [("mmmos", "c1"), ("peer", "c1"), ("mmmos", "c2"), ("peer", "c2")]  # round 2: A, B
    assert out[1.0]["times"] == {"mmmos": [1.0, 2.0, 3.0], "peer": [10.0, 10.0, 10.0]}
    assert out[2.0]["first"] == ["mmmos", "peer", "mmmos"]
    assert len(lines) == 3 and lines[0].startswith("round 1/3")
    with pytest.raises(ValueError, match="two sides"):
        vs.interleave({"mmmos": a}, {1.0: "c1"}, rounds=1)
    with pytest.raises(ValueError, match="rounds"):
        vs.interleave({"mmmos": a, "peer": b}, {1.0: "c1"}, rounds=0)


def test_pair_stats_take_the_ratio_within_each_round() -> None:
    mm, peer = [1.0, 2.0, 4.0, 8.0, 0.5], [4.0, 4.0, 4.0, 4.0, 2.0]
    st = vs.pair_stats(mm, peer)
    ratios = [p / m for m, p in zip(mm, peer, strict=True)]  # [4, 2, 1, 0.5, 4]
    assert st["rounds"] == 5
    assert st["speedup"]["median"] == pytest.approx(2.0)
    assert st["speedup"]["values"] == ratios
    for q in (10, 25, 75, 90):
        assert st["speedup"][f"p{q}"] == pytest.approx(float(np.percentile(ratios, q)))
    assert st["time_ratio"]["median"] == pytest.approx(0.5)
    assert st["speedup_min_over_min"] == pytest.approx(2.0 / 0.5)
    assert st["mmmos"]["median_s"] == 2.0 and st["peer"]["min_s"] == 2.0
    with pytest.raises(ValueError, match="same non-zero"):
        vs.pair_stats([1.0], [1.0, 2.0])


def _lengths(**speedups: float) -> dict[str, Any]:
    return {k.removeprefix("s"): vs.pair_stats([1.0, 1.0, 1.0], [v, v, v]) for k, v in speedups.items()}


def test_goals_use_one_metric_each_and_say_what_was_not_measured() -> None:
    ab = vs.judge_goals("audiobox", _lengths(s2=9.0, s10=2.5))
    assert set(ab) == {"audiobox_2s", "audiobox_10s", "audiobox_30s"}
    assert ab["audiobox_2s"]["met"] is True and ab["audiobox_2s"]["value"] == pytest.approx(9.0)
    assert ab["audiobox_10s"]["met"] is False and ab["audiobox_10s"]["target"] == ">= 3x"
    assert ab["audiobox_30s"]["value"] is None and "not measured" in ab["audiobox_30s"]["note"]
    ens = vs.judge_goals("ensemble", _lengths(s2=4.0, s10=0.8))  # mmmos / peer = 0.25 and 1.25
    assert ens["ensemble_2s"]["metric"] == "time_ratio" and ens["ensemble_2s"]["value"] == pytest.approx(0.25)
    assert ens["ensemble_2s"]["met"] is True and ens["ensemble_10s"]["met"] is False


def test_summarize_lengths_keeps_rounds_order_and_score_difference() -> None:
    measured = {2.0: {"times": {"mmmos": [1.0, 1.0], "peer": [3.0, 5.0]}, "first": ["mmmos", "peer"],
                      "scores": {"mmmos": {"PQ": 5.0, "CE": 4.0}, "peer": {"PQ": 5.001, "CE": 4.0}}}}
    out = vs.summarize_lengths(measured)
    assert out["2"]["speedup"]["median"] == pytest.approx(4.0)
    assert out["2"]["scores_max_abs_diff"] == pytest.approx(0.001)
    assert out["2"]["first"] == ["mmmos", "peer"]
    assert vs.summarize_lengths(measured, same_model=False)["2"]["scores_max_abs_diff"] is None
    assert vs.max_score_diff(None, {"PQ": 1.0}) is None


def _manifest(source: str, path: str = "", sha: str | None = None) -> dict[str, Any]:
    return {"provenance": {"source": source, "checkpoints": [{"path": path, "sha256": sha}] if path else []}}


def test_peer_checkpoint_comes_from_the_flag_the_provenance_or_random_init(tmp_path: Path) -> None:
    from mmmos.runtime.manifest import sha256_file

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    ckpt = tmp_path / "checkpoint.pt"
    ckpt.write_bytes(b"weights")
    assert peer_checkpoint(_manifest("random-init"), bundle, None) == (None, "random init: the bundle is not an "
                                                                             "Audiobox export")
    assert bundle_kind(_manifest("audiobox")) == "audiobox" and bundle_kind({}) == "ensemble"
    got, how = peer_checkpoint(_manifest("audiobox", str(ckpt), sha256_file(ckpt)), bundle, None)
    assert got == str(ckpt.resolve()) and how == "the bundle's provenance"
    # Recorded relative to where the export ran: found beside the bundle folder.
    assert peer_checkpoint(_manifest("audiobox", "checkpoint.pt"), bundle, None)[0] == str(ckpt.resolve())
    with pytest.raises(VersusError, match="sha256 mismatch"):
        peer_checkpoint(_manifest("audiobox", str(ckpt), "0" * 64), bundle, None)
    with pytest.raises(VersusError, match="--peer-checkpoint PATH"):
        peer_checkpoint(_manifest("audiobox", str(tmp_path / "gone.pt")), bundle, None)
    with pytest.raises(VersusError, match="does not exist"):
        peer_checkpoint(_manifest("audiobox"), bundle, str(tmp_path / "nope.pt"))
    assert peer_checkpoint(_manifest("random-init"), bundle, str(ckpt))[1] == "--peer-checkpoint"
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "model.safetensors").write_bytes(b"w")
    assert peer_checkpoint(_manifest("audiobox", str(hf / "model.safetensors")), bundle, None)[0] == str(hf.resolve())


def _shapes(layers: int, embed: int, ffn: int, heads: int, conv_dim: int, pos: int, groups: int) -> dict[str, Any]:
    """A state dict of shape-only stand-ins (what `fitted_wavlm_config` reads)."""
    t = lambda *shape: types.SimpleNamespace(shape=shape)  # noqa: E731
    kernels = [10, 3, 3, 3, 3, 2, 2]
    st = {f"model.wavlm_model.feature_extractor.conv_layers.{i}.0.weight": t(conv_dim, 1 if i == 0 else conv_dim, k)
          for i, k in enumerate(kernels)}
    st["model.wavlm_model.encoder.layer_norm.weight"] = t(embed)
    st["model.wavlm_model.encoder.pos_conv.0.weight_v"] = t(embed, embed // groups, pos)
    st["model.wavlm_model.encoder.layers.0.self_attn.relative_attention_bias.weight"] = t(320, heads)
    for i in range(layers):
        st[f"model.wavlm_model.encoder.layers.{i}.fc1.weight"] = t(ffn, embed)
    st["model.layer_weights.PQ"] = t(layers + 1)
    return st


def test_the_peer_fits_the_packages_wavlm_config_only_when_the_checkpoint_is_not_base_plus() -> None:
    default = {"conv_feature_layers": "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2", "conv_bias": False,
               "encoder_layers": 12, "encoder_embed_dim": 768, "encoder_ffn_embed_dim": 3072,
               "encoder_attention_heads": 12, "num_buckets": 320, "conv_pos": 128, "conv_pos_groups": 16,
               "max_distance": 800}
    assert fitted_wavlm_config(_shapes(12, 768, 3072, 12, 512, 128, 16), default) is None
    tiny = fitted_wavlm_config(_shapes(2, 64, 128, 4, 32, 16, 4), default)
    assert tiny is not None
    assert (tiny["encoder_layers"], tiny["encoder_embed_dim"], tiny["encoder_ffn_embed_dim"]) == (2, 64, 128)
    assert (tiny["encoder_attention_heads"], tiny["conv_pos"], tiny["conv_pos_groups"]) == (4, 16, 4)
    assert eval(tiny["conv_feature_layers"]) == [(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2
    assert tiny["max_distance"] == 800  # not in the shapes: the default's


def test_worker_protocol_answers_times_errors_and_says_goodbye() -> None:
    def fn(path: str) -> dict[str, float]:
        if path == "bad.wav":
            raise RuntimeError("cannot\nread")
        return {"PQ": 1.5}

    ticks = iter([10.0, 10.25, 11.0])
    inp = io.StringIO('{"path": "a.wav"}\n{"path": "bad.wav"}\n{"quit": true}\n{"path": "never.wav"}\n')
    out = io.StringIO()
    serve(fn, {"backend": "x"}, inp, out, clock=lambda: next(ticks))
    msgs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert msgs[0] == {"ready": True, "info": {"backend": "x"}}
    assert msgs[1] == {"seconds": 0.25, "scores": {"PQ": 1.5}}
    assert msgs[2] == {"error": "RuntimeError: cannot read"}
    assert msgs[3]["bye"] is True and msgs[3]["peak_rss_mb"] > 0 and len(msgs) == 4


def test_markdown_has_the_table_the_goals_and_the_command() -> None:
    settings = VersusSettings(bundle="b", out="o", lengths=(2.0,), rounds=3)
    times = {"mmmos": [0.1, 0.1, 0.1], "peer": [1.0, 1.0, 1.0]}
    lengths = vs.summarize_lengths({2.0: {"times": times, "first": ["mmmos", "peer", "mmmos"],
                                          "scores": {"mmmos": None, "peer": None}}})
    raw = {"kind": "audiobox", "command": settings.command(), "settings": vars(settings), "lengths": lengths,
           "goals": vs.judge_goals("audiobox", lengths), "bundle": {"path": "/b", "source": "audiobox"},
           "mmmos": {"backend": "ort-cpu", "precision": "fp32"}, "peer": {"torchaudio": "stand-in (soundfile ...)"}}
    md = markdown(raw)
    assert "| 2 | 100.0 | 100.0 | 1000.0 | 1000.0 | 10x | 10-10 | 10-10 | 10x | 0.1x | 0.1-0.1 | - |" in md
    assert "| audiobox_2s: Audiobox model, 2 s clip: >= 8x faster than the package | speed-up peer/mmmos | >= 8x | " \
           "10x | 10-10 | yes |" in md
    assert "torchaudio: stand-in" in md
    assert "mmmos-bench versus --bundle b --lengths 2 --rounds 3" in md


def test_cli_routes_to_run_by_default_and_parses_versus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cmds = ["run", "versus", "profile"]
    assert route_args(["--bundle", "b"], cmds) == [DEFAULT_COMMAND, "--bundle", "b"]
    assert route_args(["versus", "--bundle", "b"], cmds) == ["versus", "--bundle", "b"]
    assert route_args(["--help"], cmds) == ["--help"] and route_args([], cmds) == []
    seen: dict[str, Any] = {}

    def fake_run(settings: VersusSettings, say: Any) -> dict[str, Any]:
        seen["settings"] = settings
        Path(settings.out).mkdir(parents=True, exist_ok=True)
        (Path(settings.out) / "versus.md").write_text("TABLE\n")
        return {"kind": "audiobox"}

    import mmmos.benchmarks.versus as versus_mod

    monkeypatch.setattr(versus_mod, "run_versus", fake_run)
    readme = tmp_path / "README.md"
    res = CliRunner().invoke(app, ["versus", "--bundle", "b", "--lengths", "1,2.5", "--rounds", "4", "--threads", "0",
                                   "--precision", "int8", "--force-precision", "--out", str(tmp_path / "o"),
                                   "--readme", str(readme)])
    assert res.exit_code == 0, res.output
    s = seen["settings"]
    assert s.lengths == (1.0, 2.5) and s.rounds == 4 and s.precision == "int8" and s.force_precision
    assert s.threads >= 1 and s.peer_checkpoint is None and s.backend == "ort-cpu"
    assert "TABLE" in res.output
    assert "<!-- mmmos-bench versus audiobox: start -->\nTABLE\n<!-- mmmos-bench versus audiobox: end -->" in \
        readme.read_text()
    assert CliRunner().invoke(app, ["versus", "--bundle", "b", "--rounds", "0"]).exit_code == 2
    assert CliRunner().invoke(app, ["versus", "--bundle", "b", "--lengths", "x"]).exit_code == 2
    monkeypatch.undo()
    res = CliRunner().invoke(app, ["versus", "--bundle", str(tmp_path / "missing"), "--out", str(tmp_path / "o2")])
    assert res.exit_code == 2 and "mmmos-bench versus:" in res.output


def test_cli_refuses_an_audiobox_bundle_without_its_checkpoint(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from ..bundle_factory import make_bundle

    bundle = tmp_path / "bundle"
    make_bundle(bundle, members=1)
    man = json.loads((bundle / "manifest.json").read_text())
    man["provenance"] = _manifest("audiobox", str(tmp_path / "checkpoint.pt"))["provenance"]
    (bundle / "manifest.json").write_text(json.dumps(man))
    res = CliRunner().invoke(app, ["versus", "--bundle", str(bundle), "--out", str(tmp_path / "vs")])
    assert res.exit_code == 2
    assert "--peer-checkpoint PATH" in res.output and not (tmp_path / "vs").exists()


def test_torchaudio_standin_loads_like_torchaudio_and_resamples_with_soxr(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    import soundfile as sf

    from mmmos.benchmarks.torchaudio_standin import make_module

    ta = make_module()
    x = np.stack([np.linspace(-0.5, 0.5, 16000), np.zeros(16000)], axis=1).astype(np.float32)
    sf.write(tmp_path / "a.wav", x, 16000, subtype="FLOAT")
    wav, sr = ta.load(tmp_path / "a.wav")
    assert sr == 16000 and wav.shape == (2, 16000) and wav.dtype == torch.float32  # channels first
    assert torch.equal(wav[0], torch.from_numpy(x[:, 0]))
    part, _ = ta.load(tmp_path / "a.wav", frame_offset=100, num_frames=50)
    assert part.shape == (2, 50)
    assert ta.info(tmp_path / "a.wav").sample_rate == 16000
    assert ta.functional.resample(wav, 16000, 16000) is wav
    assert ta.functional.resample(wav, 16000, 8000).shape == (2, 8000)
