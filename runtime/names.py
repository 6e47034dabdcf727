"""The names every part of mmmos agrees on, defined once: backends, precisions and graph keys.

The CLIs build their choices from these types (`typing.get_args`), serving and the bundle use the same
values, and a new name is added here and nowhere else.
"""

from __future__ import annotations

from typing import Literal, get_args

Backend = Literal["auto", "ort-cpu", "ort-cuda", "tensorrt"]
"""Where the graphs run.

- ``auto``: TensorRT (GPU + tensorrt importable) -> ONNX Runtime CUDA -> ONNX Runtime CPU, with one line
  saying why it fell back when a bundle ships engines.
- ``ort-cpu``: ONNX Runtime's CPU provider, the reference (never falls back).
- ``ort-cuda``: ONNX Runtime's CUDA provider with IO binding (falls back to ``ort-cpu``).
- ``tensorrt``: TensorRT engines built from the bundle's graphs (falls back to ``ort-cuda``, then ``ort-cpu``).
"""

Precision = Literal["fp32", "fp16", "int8"]
"""A graph precision a bundle can hold: fp32 (the reference), mixed fp16 (front-ends, norms and reductions
kept fp32), int8 (static QDQ encoder bodies written by ``mmmos-calibrate``)."""

PrecisionChoice = Literal["auto", "fp32", "fp16", "int8"]
"""What a user asks for: a precision, or ``auto`` = fp16 on GPU backends when the bundle's report passed it
(that is what ``mmmos-export`` builds TensorRT engines for), fp32 otherwise."""

GraphKey = Literal["fp32", "fp16", "int8", "int8-trt"]
"""A key of an encoder's ``graphs`` in the manifest. ``int8-trt`` is the TensorRT form of precision int8
(symmetric int8 QDQ, zero points 0, float biases, as TensorRT's ONNX parser requires): the ``tensorrt``
backend reads it when asked for int8; every other backend reads ``int8``."""

BACKENDS: tuple[Backend, ...] = get_args(Backend)
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
PRECISION_CHOICES: tuple[PrecisionChoice, ...] = get_args(PrecisionChoice)
GRAPH_KEYS: tuple[GraphKey, ...] = get_args(GraphKey)

GPU_BACKENDS: tuple[Backend, ...] = ("ort-cuda", "tensorrt")
"""Backends that run on a CUDA GPU (``auto`` picks fp16 on these)."""


def graph_key(precision: Precision, backend: Backend) -> GraphKey:
    """The manifest graph key a backend reads for a precision (``int8`` on TensorRT is ``int8-trt``)."""
    if precision == "int8" and backend == "tensorrt":
        return "int8-trt"
    return precision


def auto_precision(backend: Backend, passed: list[str]) -> Precision:
    """The precision ``auto`` means on a backend, given the bundle's passed graph keys."""
    if backend in GPU_BACKENDS and "fp16" in passed:
        return "fp16"
    return "fp32"
