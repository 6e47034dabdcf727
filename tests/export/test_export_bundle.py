"""End to end: ``mmmos-export --random-init --preset tiny``, ``--encoders-from``, and the refusals."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from mmmos import AXES
from mmmos.export.cli import main

ort = pytest.importorskip("onnxruntime")


def _run(args: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        main(args)
    return int(info.value.code or 0)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "tiny"
    assert _run([str(out), "--random-init", "--preset", "tiny", "--num-members", "3", "--no-trt"]) == 0
    return out


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_manifest_follows_the_contract(bundle: Path) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["format_version"] == 1 and manifest["axes"] == list(AXES) and manifest["untrained"] is True
    assert [e["name"] for e in manifest["encoders"]] == ["wavlm", "muq", "m2d"]
    rates = {e["name"]: (e["sample_rate"], e["window_samples"]) for e in manifest["encoders"]}
    assert rates == {"wavlm": (16000, 160000), "muq": (24000, 240000), "m2d": (16000, 160000)}
    for enc in manifest["encoders"]:
        assert enc["inputs"] == ["wav", "lengths"] and set(enc["graphs"]) == {"fp32", "fp16"}
        assert enc["outputs"][0] == f"{enc['name']}_pooled"
    assert {m["aggregator"] for m in manifest["members"]} == {"mlp", "blstm-t", "blstm-e"}
    assert manifest["ensemble"]["outputs"] == ["scores", "mean", "std"]
    # fp16 keeps the (cheap) ensemble in fp32, so scores are not rounded to fp16 steps.
    assert manifest["ensemble"]["graphs"]["fp16"] == manifest["ensemble"]["graphs"]["fp32"]
    assert manifest["provenance"]["source"] == "random-init" and manifest["provenance"]["preset"] == "tiny"
    assert manifest["precisions"]["fp32"]["status"] == "passed"
    assert manifest["precisions"]["fp16"]["status"] in ("passed", "failed")
    # sha256 of every file but the manifest itself.
    on_disk = {p.name for p in bundle.iterdir() if p.is_file() and p.name != "manifest.json"}
    assert set(manifest["files"]) == on_disk
    assert all(_sha(bundle / f) == h for f, h in manifest["files"].items())


def test_report_records_checks_and_parity(bundle: Path) -> None:
    report = json.loads((bundle / "report.json").read_text())
    assert report["status"] == "passed" and len(report["checks"]) == 8
    assert all(c["passed"] and c["checker"] == "passed" for c in report["checks"])
    par = report["parity"]
    assert {p["name"] for p in par["probes"]} == {"speech", "music", "noise"}
    assert par["fp32"]["compared"] == "scores" and par["fp32"]["max_abs"] <= 1e-3
    fp16 = par["fp16"]
    assert fp16["thresholds"] == {"max_abs": 0.05, "min_srcc": 0.995}  # the documented gate, not a looser one
    assert fp16["status"] == ("passed" if fp16["max_abs"] <= 0.05 else "failed")
    assert fp16["too_narrow_to_rank"] == ["PQ", "PC", "CE", "CU"]  # 3 probes cannot rank: the report says so
    assert report["tensorrt"]["status"] == "skipped"


def test_export_judges_fp16_by_the_documented_gate() -> None:
    from mmmos.export.parity import fp16_gate

    ref = np.tile(np.linspace(2, 8, 12)[:, None], (1, 4)).astype(np.float32)  # 12 probes spread over 2..8
    scores = np.zeros((12, 1, 4), np.float32)

    def run(mean: np.ndarray) -> tuple[dict, tuple]:
        return {"x": np.zeros(1)}, (scores, mean, np.zeros_like(mean))

    assert fp16_gate(run(ref), run(ref + 0.03))["status"] == "passed"
    off = fp16_gate(run(ref), run(ref + 0.07))  # within the old 0.1 tolerance, outside the documented 0.05
    assert off["status"] == "failed" and any("max abs" in r for r in off["reasons"])
    swapped = ref + np.where(np.arange(12)[:, None] % 2 == 0, 0.04, -0.04).astype(np.float32)
    flips = fp16_gate(run(ref), run(swapped))
    assert flips["per_axis"]["PQ"]["ranked"]  # 12 probes spread over 2..8 can be ranked
    assert fp16_gate(({"x": np.zeros(1)}, None), ({"x": np.zeros(1)}, None))["status"] == "unchecked"


def test_graphs_have_a_dynamic_batch(bundle: Path) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    enc = manifest["encoders"][2]
    for precision in ("fp32", "fp16"):
        sess = ort.InferenceSession(str(bundle / enc["graphs"][precision]), providers=["CPUExecutionProvider"])
        for b in (1, 4):
            wav = np.zeros((b, enc["window_samples"]), np.float32)
            out = sess.run(None, {"wav": wav, "lengths": np.full(b, 1000, np.int64)})
            assert out[0].shape[0] == b and out[0].dtype == np.float32


def test_refuses_a_non_empty_folder_and_two_sources(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run([str(bundle), "--random-init", "--preset", "tiny", "--no-trt"]) == 2
    assert "--force" in capsys.readouterr().err
    assert _run([str(bundle.parent / "x"), "--random-init", "--audiobox", "ckpt.pt"]) == 2
    assert "exactly one source" in capsys.readouterr().err
    assert _run([str(bundle.parent / "y"), "--audiobox", str(bundle / "missing.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err


def _write_members(folder: Path, bundle: Path, tamper: bool = False) -> None:
    """A members folder in the training format (members.json + member.json + weights.safetensors)."""
    from mmmos.models.ensemble import random_members
    from mmmos.models.presets import build_encoders, encoder_dims

    manifest = json.loads((bundle / "manifest.json").read_text())
    identity = {"manifest_sha256": _sha(bundle / "manifest.json"), "encoders": [
        {"name": e["name"], "graphs": {"fp32": "0" * 64 if tamper else manifest["files"][e["graphs"]["fp32"]]}}
        for e in manifest["encoders"]
    ]}
    dims = encoder_dims(build_encoders("tiny", names=("wavlm", "m2d")))
    members = random_members(dims, 2, seed=5, encoders=("wavlm", "m2d"), aggregators=("mlp", "blstm-e"))
    names = []
    for m in members:
        sub = folder / m.config.name
        sub.mkdir(parents=True)
        save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(sub / "weights.safetensors"))
        meta = {"format_version": 1, "name": m.config.name, "config": m.config.to_dict(),
                "dims": {k: list(v) if isinstance(v, tuple) else v for k, v in dims.items()},
                "inputs": m.input_names, "weights": "weights.safetensors", "dev_scores": {"natural": {"srcc": 0.5}},
                "encoders_identity": identity}
        (sub / "member.json").write_text(json.dumps(meta))
        names.append(m.config.name)
    (folder / "members.json").write_text(json.dumps({"format_version": 1, "members": names,
                                                     "encoders_identity": identity}))


def test_encoders_from_reuses_graphs_with_new_members(bundle: Path, tmp_path: Path) -> None:
    members = tmp_path / "members"
    _write_members(members, bundle)
    out = tmp_path / "reused"
    assert _run([str(out), "--encoders-from", str(bundle), "--members", str(members), "--no-trt"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    old = json.loads((bundle / "manifest.json").read_text())
    assert [e["name"] for e in manifest["encoders"]] == ["wavlm", "m2d"]
    for e in manifest["encoders"]:
        for g in e["graphs"].values():
            assert manifest["files"][g] == old["files"][g]
    assert len(manifest["members"]) == 2 and manifest["members"][0]["dev_scores"] == {"natural": {"srcc": 0.5}}
    assert manifest["provenance"]["source"] == "encoders-from"
    report = json.loads((out / "report.json").read_text())
    assert report["parity"]["fp32"]["max_abs"] <= 1e-3


def test_encoders_from_refuses_members_of_other_graphs(bundle: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    members = tmp_path / "members"
    _write_members(members, bundle, tamper=True)
    assert _run([str(tmp_path / "o"), "--encoders-from", str(bundle), "--members", str(members)]) == 2
    assert "trained on another" in capsys.readouterr().err


def test_a_graph_outside_the_allowlist_fails_the_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An op TensorRT cannot parse fails the export: report.json says so and no manifest is written."""
    from mmmos.export import checks
    from mmmos.export.op_allowlist import OpAllowList, load_allowlist
    from mmmos.export.pipeline import ExportCheckError, ExportSpec, export_bundle
    from mmmos.models.members import Member, MemberConfig
    from mmmos.models.presets import build_encoders, encoder_dims

    full = load_allowlist()
    no_matmul = OpAllowList({k: v for k, v in full.ops.items() if k != "MatMul"}, full.opset_min, full.opset_max)
    monkeypatch.setattr(checks, "load_allowlist", lambda: no_matmul)
    encoders = build_encoders("tiny", names=("m2d",))
    torch.manual_seed(0)
    member = Member(MemberConfig(encoders=("m2d",), name="m"), encoder_dims(encoders)).eval()
    spec = ExportSpec(encoders=encoders, members=[member], provenance={"source": "test"}, untrained=True)
    with pytest.raises(ExportCheckError, match="MatMul"):
        export_bundle(tmp_path / "b", spec, fp16=False, trt=False, log=lambda _: None)
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["status"] == "failed" and not (tmp_path / "b" / "manifest.json").exists()


def test_frames_flag_exports_frames_for_an_encoders_only_bundle(tmp_path: Path) -> None:
    """``--frames`` gives every encoder its frame outputs even with no blstm-t member (feature caches need them)."""
    from mmmos.export.pipeline import ExportSpec, export_bundle
    from mmmos.models.presets import build_encoders

    spec = ExportSpec(encoders=build_encoders("tiny", names=("m2d",)), members=[], provenance={"source": "test"},
                      untrained=True, frames=True)
    manifest = export_bundle(tmp_path / "b", spec, fp16=False, trt=False, log=lambda _: None)
    (enc,) = manifest["encoders"]
    assert enc["frames"] is True and enc["outputs"] == ["m2d_pooled", "m2d_frames", "m2d_steps"]
