"""`mmmos-serve`: online scoring on Triton Inference Server through PyTriton (extra `[serve]`).

PyTriton starts a real `tritonserver` (shipped in the `nvidia-pytriton` wheel) and binds the runtime's
`Scorer` as Python models, so Triton owns the HTTP/gRPC endpoints (KServe v2 protocol), the health
endpoints (`/v2/health/live`, `/v2/health/ready`), metrics and the dynamic batcher:

- model `mmmos`: inputs `pcm` FP32 [-1] (mono samples, any rate) and `sample_rate` INT32 [1];
- model `mmmos_file`: input `audio` BYTES [1] (an encoded file: wav, flac, ogg, mp3, ...);
- both answer `scores` FP32 [4] and `std` FP32 [4] (axes PQ, PC, CE, CU), `duration_s` FP32 [1] and
  `error` BYTES [1]: empty when the clip was scored, else the one-line reason (and NaN scores).

Every request of a batch Triton hands over is scored in one `Scorer.score_iter` call, so windows of
several requests share graph calls. A clip that cannot be scored (bad rate, NaN, undecodable bytes) gets
its own `error`; the other requests of the same dynamic batch get their scores. (PyTriton fails a whole
batch when the inference callable raises, and has no per-request error response, hence the `error`
output.) Triton batches only requests of equal shape, so a batch holds clips of one length (send
fixed-length chunks for the best batching).

pytriton is imported lazily; nothing here imports torch.
"""

from __future__ import annotations

import os
import signal
import sys
import sysconfig
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from ..bundle import AXES
from ..cli_options import (
    DEFAULTS,
    BackendOption,
    BatchSizeOption,
    BundleOption,
    CoverageOption,
    ForcePrecisionOption,
    ModelOption,
    PrecisionOption,
    ThreadsOption,
    settings_from_options,
    with_model,
)
from ..errors import BackendUnavailableError, MMMOSRuntimeError
from ..inputs import InputItem
from ..results import ScoreResult
from ..settings import ScorerSettings

MODEL_PCM = "mmmos"
MODEL_FILE = "mmmos_file"
MIN_RATE, MAX_RATE = 1000, 768000
"""Sample rates a `mmmos` request may declare (Hz)."""


@dataclass(frozen=True)
class ServeOptions:
    """Server settings (see `mmmos-serve --help`); `scorer` holds each model instance's Scorer settings."""

    scorer: ScorerSettings = field(default_factory=ScorerSettings)
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch_size: int = 16
    max_queue_delay_us: int = 2000
    instances: int = 1


def import_pytriton() -> Any:
    """Import pytriton, or say which extra to install.

    Raises:
        BackendUnavailableError: nvidia-pytriton is not installed.
    """
    try:
        import pytriton.triton
    except ImportError:
        raise BackendUnavailableError(
            "mmmos-serve needs PyTriton, which is not installed; install it with: pip install 'mmmos[serve]' "
            "(it needs numpy<2, so use a separate environment from the exporter's)."
        ) from None
    return pytriton


def fix_python_backend_env() -> None:
    """Put this interpreter's own lib/ first on LD_LIBRARY_PATH.

    Triton's python-backend stub links `libpython3.X.so`; without this it can pick the distro's copy of a
    different patch release, and model init fails (`'_thread.RLock' object has no attribute ...`).
    """
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and any(Path(libdir).glob("libpython3*.so*")):
        old = os.environ.get("LD_LIBRARY_PATH", "")
        parts = [p for p in old.split(os.pathsep) if p and p != libdir]
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, *parts])


def _vector(values: dict[str, float] | None) -> list[float]:
    return [float("nan")] * len(AXES) if values is None else [values[a] for a in AXES]


def _outputs(results: list[ScoreResult]) -> dict[str, np.ndarray]:
    """One request's output arrays: scores, std and duration per clip, and each clip's error ("" when scored)."""
    return {
        "scores": np.asarray([_vector(r.scores) for r in results], np.float32),
        "std": np.asarray([_vector(r.std) for r in results], np.float32),
        "duration_s": np.asarray([[r.duration_s or 0.0] for r in results], np.float32),
        "error": np.asarray([[(r.error or "").encode()] for r in results], dtype=object),
    }


def _pcm_items(pcm: np.ndarray, rates: np.ndarray) -> list[InputItem]:
    """The clips of one `mmmos` request; a row with an unusable rate carries its error instead of failing."""
    items = []
    for i in range(pcm.shape[0]):
        rate = int(rates[i]) if i < rates.shape[0] else 0
        ok = MIN_RATE <= rate <= MAX_RATE
        items.append(InputItem(array=pcm[i], sample_rate=rate, error=None if ok else
                               f"sample_rate must be between {MIN_RATE} and {MAX_RATE} Hz, got {rate}"))
    return items


class ServeScorer:
    """The inference callables bound into Triton (one Scorer, guarded by a lock, per model instance)."""

    def __init__(self, scorer: Any) -> None:
        self.scorer = scorer
        self.lock = threading.Lock()

    def _score(self, per_request: list[list[InputItem]]) -> list[dict[str, np.ndarray]]:
        flat = [it for items in per_request for it in items]
        with self.lock:
            results = list(self.scorer.score_iter(flat))
        out, k = [], 0
        for items in per_request:
            out.append(_outputs(results[k : k + len(items)]))
            k += len(items)
        return out

    def infer_pcm(self, requests: list[Any]) -> list[dict[str, np.ndarray]]:
        """Model `mmmos`: rows of `pcm` [b, N] float32 with `sample_rate` [b, 1] (Triton checked the shapes)."""
        per_request = [_pcm_items(np.atleast_2d(np.asarray(req["pcm"], dtype=np.float32)),
                                  np.asarray(req["sample_rate"]).reshape(-1)) for req in requests]
        return self._score(per_request)

    def infer_file(self, requests: list[Any]) -> list[dict[str, np.ndarray]]:
        """Model `mmmos_file`: `audio` [b, 1] encoded files, decoded by the runtime's own decoder."""
        with tempfile.TemporaryDirectory(prefix="mmmos-serve-") as tmp:
            per_request = []
            n = 0
            for req in requests:
                items = []
                for blob in np.asarray(req["audio"], dtype=object).reshape(-1):
                    path = Path(tmp) / f"{n}.audio"
                    path.write_bytes(bytes(blob))
                    n += 1
                    items.append(InputItem(path=str(path)))
                per_request.append(items)
            return self._score(per_request)


def _make_scorer(opts: ServeOptions, warn: Callable[[str], None]) -> Any:
    scorer = opts.scorer.build(warn=warn, prefetch=0)
    if not scorer.bundle.has_ensemble:
        from ..errors import NoEnsembleError

        raise NoEnsembleError(scorer.bundle)
    return scorer


def run_server(opts: ServeOptions, warn: Callable[[str], None] | None = None) -> None:
    """Start Triton with the `mmmos` and `mmmos_file` models and serve until SIGINT/SIGTERM.

    Raises:
        BackendUnavailableError: pytriton is missing.
        BundleNotFoundError, BundleError, PrecisionError: the bundle cannot be used.
    """
    say = warn or (lambda m: print(m, file=sys.stderr, flush=True))
    import_pytriton()
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    scorers = [ServeScorer(_make_scorer(opts, say)) for _ in range(max(1, opts.instances))]
    fix_python_backend_env()
    config = TritonConfig(http_address=opts.host, http_port=opts.http_port, grpc_address=opts.host,
                          grpc_port=opts.grpc_port, metrics_address=opts.host, metrics_port=opts.metrics_port)
    model_config = ModelConfig(max_batch_size=opts.max_batch_size,
                               batcher=DynamicBatcher(max_queue_delay_microseconds=opts.max_queue_delay_us))
    outputs = [Tensor(name="scores", dtype=np.float32, shape=(4,)), Tensor(name="std", dtype=np.float32, shape=(4,)),
               Tensor(name="duration_s", dtype=np.float32, shape=(1,)), Tensor(name="error", dtype=bytes, shape=(1,))]

    def _stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # leaves the `with` below, which stops tritonserver and cleans its workspace

    signal.signal(signal.SIGTERM, _stop)
    with Triton(config=config) as triton:
        triton.bind(model_name=MODEL_PCM, infer_func=[s.infer_pcm for s in scorers],
                    inputs=[Tensor(name="pcm", dtype=np.float32, shape=(-1,)),
                            Tensor(name="sample_rate", dtype=np.int32, shape=(1,))],
                    outputs=outputs, config=model_config, strict=True)
        triton.bind(model_name=MODEL_FILE, infer_func=[s.infer_file for s in scorers],
                    inputs=[Tensor(name="audio", dtype=bytes, shape=(1,))],
                    outputs=outputs, config=model_config, strict=True)
        say(f"mmmos-serve: models {MODEL_PCM!r} and {MODEL_FILE!r} on http://{opts.host}:{opts.http_port} and "
            f"grpc {opts.host}:{opts.grpc_port} (health: /v2/health/ready; Ctrl-C stops)")
        try:
            triton.serve()
        except KeyboardInterrupt:
            say("mmmos-serve: stopping.")
    for s in scorers:
        s.scorer.close()


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command(help="Serve the mmmos scorer on Triton Inference Server (PyTriton): HTTP and gRPC (KServe v2), "
             "dynamic batching, health at /v2/health/ready. Models: mmmos (pcm FP32 [-1] + sample_rate INT32 [1]) "
             "and mmmos_file (audio BYTES [1]); outputs scores[4], std[4] (PQ, PC, CE, CU), duration_s[1], error[1].")
def serve(
    bundle: BundleOption = None,
    model: ModelOption = None,
    backend: BackendOption = DEFAULTS.backend,
    precision: PrecisionOption = DEFAULTS.precision,
    force_precision: ForcePrecisionOption = False,
    threads: ThreadsOption = DEFAULTS.threads,
    batch_size: BatchSizeOption = DEFAULTS.batch_size,
    coverage: CoverageOption = DEFAULTS.coverage,
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default; 0.0.0.0 exposes it).")] = (
        "127.0.0.1"),
    http_port: Annotated[int, typer.Option(min=1, max=65535, help="HTTP port.")] = 8000,
    grpc_port: Annotated[int, typer.Option(min=1, max=65535, help="gRPC port.")] = 8001,
    metrics_port: Annotated[int, typer.Option(min=1, max=65535, help="Prometheus metrics port.")] = 8002,
    max_batch_size: Annotated[int, typer.Option(min=1, help="Triton max_batch_size (requests per batch).")] = 16,
    max_queue_delay_us: Annotated[int, typer.Option(min=0, help="Dynamic batcher queue delay (us).")] = 2000,
    instances: Annotated[int, typer.Option(min=1, help="Model instances (one Scorer each).")] = 1,
) -> None:
    """Run the server until Ctrl-C / SIGTERM."""
    settings = settings_from_options(bundle, backend, precision, force_precision, threads, batch_size, coverage)
    try:
        settings = with_model(settings, model, lambda m: print(m, file=sys.stderr, flush=True))
    except MMMOSRuntimeError as exc:
        print(f"mmmos-serve: error: {exc}", file=sys.stderr, flush=True)
        raise typer.Exit(2) from None
    opts = ServeOptions(scorer=settings, host=host, http_port=http_port, grpc_port=grpc_port,
                        metrics_port=metrics_port, max_batch_size=max_batch_size,
                        max_queue_delay_us=max_queue_delay_us, instances=instances)
    try:
        run_server(opts)
    except MMMOSRuntimeError as exc:
        print(f"mmmos-serve: error: {exc}", file=sys.stderr, flush=True)
        raise typer.Exit(2) from None


def main(argv: list[str] | None = None) -> None:
    """Console entry point (`mmmos-serve`)."""
    app(args=argv, prog_name="mmmos-serve")


if __name__ == "__main__":
    main()
