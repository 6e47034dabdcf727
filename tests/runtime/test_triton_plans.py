"""`mmmos-export --triton-repo` serves the TensorRT plans the bundle ships (matched by graph sha256), whatever
precision its ONNX Runtime models use; plans of other graph versions are never served. Plans here are stand-in
files: no Triton or TensorRT runs (tests/export/test_triton_repo.py checks the repository's ORT side)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed (Triton's config protobufs)")

from mmmos.runtime.serving.triton_repo import check_repo, parse_config, write_triton_repo

from ..bundle_factory import make_bundle

KEY = "10.13.3.9-sm90-b1-8-16"


def _ship_fp16_plans(root: Path, digest_of: dict[str, str] | None = None) -> dict[str, bytes]:
    """Plan files as mmmos-export names them for the fp16 precision (its ensemble graph is the fp32 one)."""
    files = json.loads((root / "manifest.json").read_text())["files"]
    folder = root / "engines" / KEY
    folder.mkdir(parents=True)
    plans = {}
    for graph in ("wavlm.fp16.onnx", "muq.fp16.onnx", "ensemble.fp32.onnx"):
        digest = (digest_of or {}).get(graph, files[graph][:16])
        plans[graph] = f"plan of {graph}".encode()
        (folder / f"{graph.removesuffix('.onnx')}.{digest}.plan").write_bytes(plans[graph])
    return plans


def test_fp32_repo_serves_the_shipped_fp16_plans(tmp_path: Path) -> None:
    root = tmp_path / "b"
    make_bundle(root)
    plans = _ship_fp16_plans(root)
    said: list[str] = []
    models = write_triton_repo(root, tmp_path / "repo", precision="fp32", log=said.append)
    repo = tmp_path / "repo"
    assert {"wavlm_trt", "muq_trt", "mmmos_heads_trt", "mmmos_windows_trt"} <= set(models)
    assert (repo / "wavlm_trt" / "1" / "model.plan").read_bytes() == plans["wavlm.fp16.onnx"]
    assert (repo / "muq_trt" / "1" / "model.plan").read_bytes() == plans["muq.fp16.onnx"]
    assert (repo / "mmmos_heads_trt" / "1" / "model.plan").read_bytes() == plans["ensemble.fp32.onnx"]
    assert (repo / "wavlm" / "1" / "model.onnx").read_bytes() == (root / "wavlm.fp32.onnx").read_bytes()
    cfg = parse_config((repo / "wavlm_trt" / "config.pbtxt").read_text())
    assert cfg.platform == "tensorrt_plan" and cfg.max_batch_size == 16  # capped by the plans' profile
    pre = json.loads(parse_config((repo / "mmmos" / "config.pbtxt").read_text())
                     .parameters["mmmos_config"].string_value)
    assert pre["windows_model"] == "mmmos_windows_trt" and pre["windows_per_call"] == 16
    assert check_repo(repo) == []
    assert any("fp16 plans" in m for m in said)


def test_plans_of_other_graph_versions_are_not_served(tmp_path: Path) -> None:
    root = tmp_path / "b"
    make_bundle(root)
    _ship_fp16_plans(root, {"muq.fp16.onnx": "0123456789abcdef"})  # built before muq's graph changed
    said: list[str] = []
    models = write_triton_repo(root, tmp_path / "repo", precision="fp32", log=said.append)
    assert not any(m.endswith("_trt") for m in models)
    assert any("no TensorRT models" in m for m in said)
    assert check_repo(tmp_path / "repo") == []
