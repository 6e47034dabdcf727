"""The GPU extras of the installed package (importlib.metadata, so run `pip install -e .` after editing pyproject):
each TensorRT extra admits TensorRT and cuda-bindings of one CUDA major only, and the ONNX Runtime GPU extras bring
their CUDA/cuDNN wheels. Versions are those on PyPI (notes/gpu_facts.md)."""

from __future__ import annotations

import re
from importlib.metadata import requires

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

CUDA_BINDINGS = ["12.8.0", "12.9.0", "12.9.1", "12.9.10", "13.0.0", "13.2.0", "13.5.0", "14.0.0", "11.8.0"]
ORT_GPU = ["1.20.1", "1.21.0", "1.26.0", "1.27.0", "1.32.0"]


def _extras() -> dict[str, list[Requirement]]:
    out: dict[str, list[Requirement]] = {}
    for line in requires("mmmos") or []:
        m = re.search(r"""extra\s*==\s*["']([^"']+)["']""", line)
        if m:
            out.setdefault(m.group(1), []).append(Requirement(line))
    return out


def _admitted(req: Requirement, versions: list[str]) -> list[Version]:
    return [Version(v) for v in versions if req.specifier.contains(v, prereleases=False)]


def test_the_old_trt_extra_is_gone_and_each_cuda_major_has_one() -> None:
    extras = _extras()
    assert "trt" not in extras
    assert sorted(e for e in extras if e.startswith("trt")) == ["trt-cu12", "trt-cu13"]


@pytest.mark.parametrize("major", [12, 13])
def test_a_trt_extra_admits_one_cuda_major(major: int) -> None:
    reqs = _extras()[f"trt-cu{major}"]
    trt = [r for r in reqs if r.name.startswith("tensorrt")]
    # plain `tensorrt` resolves to tensorrt-cu12 up to 10.13.0.35 and to tensorrt-cu13 after: two majors
    assert [r.name for r in trt] == [f"tensorrt-cu{major}"]
    assert not _admitted(trt[0], ["10.11.0", "12.0.0"]) and _admitted(trt[0], ["10.13.3.9", "11.4.0.106"])
    (bindings,) = [r for r in reqs if r.name == "cuda-bindings"]
    admitted = _admitted(bindings, CUDA_BINDINGS)
    assert admitted and {v.major for v in admitted} == {major}
    # get_cuda_native_handle (the stream handle) exists from 12.9.1 / 13.0.0 on
    assert all(v >= Version("12.9.1") for v in admitted)


def test_gpu_extras_bring_cuda_and_cudnn_wheels() -> None:
    extras = _extras()
    for name in ("gpu", "gpu-cu12"):
        (ort,) = extras[name]
        assert ort.name == "onnxruntime-gpu" and ort.extras == {"cuda", "cudnn"}
        assert Version("1.20.1") not in _admitted(ort, ORT_GPU)  # the extras exist from 1.21 on
    # onnxruntime-gpu 1.27+ is built for CUDA 13 (driver >= 580): gpu-cu12 stops before it
    assert [str(v) for v in _admitted(extras["gpu-cu12"][0], ORT_GPU)] == ["1.21.0", "1.26.0"]
    assert all(not r.name.startswith("onnxruntime") for e in ("trt-cu12", "trt-cu13") for r in extras[e])
