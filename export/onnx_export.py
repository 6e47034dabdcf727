"""torch -> ONNX for the per-encoder graphs (``PooledEncoder``) and the ensemble graph.

Exporter choice: the TorchScript exporter (``dynamo=False``), opset 17.
- It exports WavLM, MuQ and M2D (explicit-matmul attention, Conv1d-DFT front-ends) in well under a
  second per tiny graph, where the dynamo exporter takes several seconds per graph and failed on
  attention decompositions in the research runs (research/encoders.md 2.3).
- Its node names carry the module path (``/encoder/frontend/...``), which is what the mixed-precision
  pass uses to keep the front-ends in fp32; dynamo names nodes by op and counter.
- ``dynamic_axes`` keeps a symbolic batch axis even from a batch-2 example; the checks assert it.
- Opset 17 has a real ``LayerNormalization`` (TensorRT maps it to a normalization layer, safer in fp16)
  and lies inside the TensorRT parser's opset range (9-24).
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import onnx
import torch
from torch import Tensor, nn

OPSET = 17
EXTERNAL_DATA_THRESHOLD = 1_900_000_000
"""Bytes of weights above which a graph is saved with external data (protobuf's hard limit is 2 GiB)."""


def _weights_bytes(model: onnx.ModelProto) -> int:
    """Approximate serialized size of the weights (initializers and Constant tensors)."""
    total = sum(len(t.raw_data) or t.ByteSize() for t in model.graph.initializer)
    for node in model.graph.node:
        if node.op_type == "Constant":
            total += sum(a.t.ByteSize() for a in node.attribute if a.name == "value")
    return total


def save_model(model: onnx.ModelProto, path: Path) -> list[Path]:
    """Save ``model`` at ``path``; past ~2 GB the weights go to ``<name>.data`` beside it.

    Returns the files written (the graph, plus the data file when external data was used).
    """
    path = Path(path)
    data = path.with_name(path.name + ".data")
    if data.exists():
        data.unlink()
    if _weights_bytes(model) > EXTERNAL_DATA_THRESHOLD:
        onnx.save_model(
            model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
            location=data.name, size_threshold=1024,
        )
        return [path, data]
    onnx.save_model(model, str(path))
    return [path]


def _torchscript_export(
    module: nn.Module,
    args: tuple[Tensor, ...],
    input_names: Sequence[str],
    output_names: Sequence[str],
    extra_axes: dict[str, dict[int, str]] | None = None,
) -> onnx.ModelProto:
    """Export with the TorchScript exporter and a dynamic batch axis on every input and output.

    ``extra_axes`` adds more dynamic axes per tensor name (e.g. ``{"wav": {1: "samples"}}``).
    """
    dynamic_axes = {name: {0: "batch"} for name in [*input_names, *output_names]}
    for name, axes in (extra_axes or {}).items():
        dynamic_axes[name] = {**dynamic_axes.get(name, {}), **axes}
    module.eval()  # the exporter restores the wrapper's mode; eval it so dropout is off (research 2.3)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings and the legacy-exporter deprecation notice
        target = Path(tmp) / "graph.onnx"
        torch.onnx.export(
            module,
            args,
            str(target),
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
        # Loading pulls in any external data the exporter wrote, so the caller gets one in-memory model.
        model = onnx.load(str(target))
    return model


def export_encoder(
    pooled: nn.Module, path: Path, batch: int = 2, dynamic_samples: bool = False
) -> tuple[list[Path], list[str]]:
    """Export a ``PooledEncoder`` to ``path``: inputs ``wav [B, N]`` float32 and ``lengths [B]`` int64.

    The example batch holds one full and one partial window (batch >= 2 so no axis gets specialised
    to 1). ``N`` is the fixed ``window_samples``, or with ``dynamic_samples`` a dynamic ``samples`` axis, for an
    encoder that takes shorter inputs (one with a ``length_rule``, fed ``length_rule.fed_samples(valid)``).
    Returns the files written and the output names.
    """
    encoder = pooled.encoder
    n = int(encoder.window_samples)
    rule = getattr(encoder, "length_rule", None) if dynamic_samples else None
    # Trace on the longest input the graph will take (a length rule may feed a little more than the window).
    fed = n if rule is None else int(rule.max_samples)
    gen = torch.Generator().manual_seed(0)
    wav = 0.1 * torch.randn(batch, fed, generator=gen)
    lengths = torch.tensor([n] + [max(1, n // 3)] * (batch - 1), dtype=torch.int64)
    output_names = list(pooled.output_names)
    # The pooled outputs have a fixed size whatever N is; only the input's time axis becomes dynamic.
    extra = {"wav": {1: "samples"}} if dynamic_samples else None
    model = _torchscript_export(pooled, (wav, lengths), ["wav", "lengths"], output_names, extra)
    return save_model(model, path), output_names


def export_ensemble(
    flat_ensemble: nn.Module, input_names: Sequence[str], examples: Sequence[Tensor], path: Path
) -> list[Path]:
    """Export a ``FlatEnsemble`` (inputs in ``input_names`` order) with outputs scores, mean, std."""
    if len(examples) != len(input_names):
        raise ValueError(f"export_ensemble got {len(examples)} example tensors for inputs {list(input_names)}.")
    model = _torchscript_export(flat_ensemble, tuple(examples), input_names, ["scores", "mean", "std"])
    return save_model(model, path)


def export_module(
    module: nn.Module,
    args: Sequence[Tensor],
    input_names: Sequence[str],
    output_names: Sequence[str],
    path: Path,
) -> list[Path]:
    """Export any module the way the bundle graphs are exported (TorchScript, opset 17, dynamic batch)."""
    return save_model(_torchscript_export(module, tuple(args), input_names, output_names), path)
