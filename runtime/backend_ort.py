"""ONNX Runtime backend: CPU provider (the reference) and CUDA provider with IO binding.

The CUDA path is written against onnxruntime-gpu's documented IO-binding API but is untested here
(no GPU on the build machine); a session that silently fell back to CPU is detected and reported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .bundle import Bundle
from .errors import NoEnsembleError
from .names import GraphKey
from .ort_session import Device, io_names, make_session
from .runner import EncoderBatch, EnsembleOut, Pipeline, Runner


class OrtRunner(Runner):
    """One ONNX graph in one ONNX Runtime session.

    Args:
        path: the .onnx file (its .onnx.data sidecar is found by ORT).
        device: "cpu" or "cuda".
        threads: intra-op threads (0 = ORT's default, the physical cores).
    """

    def __init__(self, path: Path, device: Device = "cpu", threads: int = 0) -> None:
        super().__init__(Path(path).name)
        self.path = Path(path)
        self.device = device
        self.threads = int(threads)
        self.session: Any = None
        self.input_names: list[str] = []
        self.output_names: list[str] = []

    def activate_impl(self) -> None:
        """Create the session (the runtime's one session factory)."""
        self.session = make_session(self.path, self.device, self.threads)
        self.input_names, self.output_names = io_names(self.session)

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run on host arrays (only the inputs the graph declares are passed)."""
        outs = self.session.run(self.output_names, {k: feeds[k] for k in self.input_names})
        return dict(zip(self.output_names, outs, strict=True))

    def deactivate_impl(self) -> None:
        """Drop the session."""
        self.session = None


class OrtPipeline(Pipeline):
    """A bundle's encoder graphs and ensemble graph on ONNX Runtime.

    On CUDA the encoder outputs are bound to device memory (IO binding) and fed to the ensemble
    session as OrtValues, so they never visit the host unless `want_features` asks for them.
    """

    def __init__(self, bundle: Bundle, graphs: GraphKey, device: Device = "cpu", threads: int = 0) -> None:
        super().__init__(bundle, graphs)
        self.device = device
        self.name = f"ort-{device}"
        # Where IO binding keeps encoder outputs; tests bind to "cpu" to exercise the same code on CPU.
        self.io_device = device
        self.specs = {e.name: e for e in bundle.encoders}
        self.encoders = {e.name: OrtRunner(bundle.encoder_graph(e, graphs), device, threads)
                         for e in bundle.encoders}
        self.ensemble = OrtRunner(bundle.ensemble_graph(graphs), device, threads) if bundle.has_ensemble else None
        try:
            for r in self._runners():
                r.activate()
        except BaseException:
            self.close()
            raise

    def _runners(self) -> list[OrtRunner]:
        return [*self.encoders.values(), *([self.ensemble] if self.ensemble else [])]

    def run(
        self, batch: EncoderBatch, *, want_features: bool, want_scores: bool = True
    ) -> tuple[dict[str, np.ndarray], EnsembleOut | None]:
        """Encoders then ensemble (see Pipeline.run)."""
        if want_scores and self.ensemble is None:
            raise NoEnsembleError(self.bundle)
        if self.device == "cuda":
            return self._run_bound(batch, want_features, want_scores)
        feats: dict[str, np.ndarray] = {}
        for name, (wav, lengths) in batch.items():
            feats.update(self._encode_each(name, wav, lengths))
        scores = self.run_ensemble(feats) if want_scores else None
        return (feats if want_features else {}), scores

    def _encode_each(self, name: str, wav: np.ndarray, lengths: np.ndarray) -> dict[str, np.ndarray]:
        """One encoder graph call per window, each fed its own length: on the CPU a batch of windows is slower per
        window than single windows (measured: WavLM int8 +17% at batch 3), and a short window costs its length."""
        spec = self.specs[name]
        rows = []
        for i in range(wav.shape[0]):
            fed = min(spec.fed_samples(int(lengths[i])), wav.shape[1])
            rows.append(self.encoders[name].infer({"wav": np.ascontiguousarray(wav[i : i + 1, :fed]),
                                                   "lengths": lengths[i : i + 1]}))
        return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}

    def _run_bound(
        self, batch: EncoderBatch, want_features: bool, want_scores: bool
    ) -> tuple[dict[str, np.ndarray], EnsembleOut | None]:
        """IO-binding path: encoder outputs stay as device OrtValues between the graphs.

        Run on CPU by the tests (io_device="cpu"); on CUDA it is untested here (no GPU on CI).
        """
        on_device: dict[str, Any] = {}
        for name, (wav, lengths) in batch.items():
            r = self.encoders[name]
            io = r.session.io_binding()
            io.bind_cpu_input("wav", wav)
            io.bind_cpu_input("lengths", lengths)
            for o in r.output_names:
                io.bind_output(o, self.io_device, 0)
            r.session.run_with_iobinding(io)
            on_device.update(zip(r.output_names, io.get_outputs(), strict=True))
        feats = {k: v.numpy() for k, v in on_device.items()} if want_features else {}
        if not want_scores or self.ensemble is None:
            return feats, None
        s = self.ensemble.session
        io = s.io_binding()
        for i in self.ensemble.input_names:
            io.bind_ortvalue_input(i, on_device[i])
        for o in self.ensemble.output_names:
            io.bind_output(o, "cpu")
        s.run_with_iobinding(io)
        outs = dict(zip(self.ensemble.output_names, io.copy_outputs_to_cpu(), strict=True))
        return feats, (outs["scores"], outs["mean"], outs["std"])

    def close(self) -> None:
        """Release every session."""
        for r in self._runners():
            r.deactivate()
