"""`Scorer`: the ensemble scorer (bundle + backend + batching across files with bounded memory).

Pipeline per input: decode -> validate -> resample per encoder rate -> 10 s windows; windows of
consecutive inputs share batches of `batch_size`; after the graphs, each window's member scores are
folded into its file's running weighted sum, so model memory never exceeds one batch of windows
whatever the file length. Results come back in input order.
"""

from __future__ import annotations

import os
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, overload

import numpy as np

from .audio import Prepared, decode, prepare, to_mono
from .backends import start_pipeline
from .bundle import AXES, Bundle
from .errors import AudioError, NoEnsembleError
from .inputs import InputItem
from .names import Backend, PrecisionChoice
from .results import EncodedItem, ScoreResult, WindowScore
from .runner import EnsembleOut, Pipeline
from .settings import ScorerSettings
from .uncertainty import fused_embedding
from .windows import WINDOW_SECONDS, Window, fold_windows, iter_windows, stack_windows

ScoreInput = str | os.PathLike[str] | tuple[np.ndarray, int] | InputItem


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def as_item(x: Any) -> InputItem:
    """Turn a path, an `(array, sample_rate)` pair or an InputItem into an InputItem.

    Raises:
        TypeError: anything else.
    """
    if isinstance(x, InputItem):
        return x
    if isinstance(x, str | os.PathLike):
        return InputItem(path=os.fspath(x))
    if isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], np.ndarray):
        return InputItem(array=x[0], sample_rate=int(x[1]))
    raise TypeError(f"cannot score {type(x).__name__}: pass a path, an (array, sample_rate) pair or a list of them")


def _is_single(x: Any) -> bool:
    return isinstance(x, str | os.PathLike | InputItem) or (
        isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], np.ndarray)
    )


@dataclass
class _State:
    """Running state of one input while its windows go through the graphs."""

    item: InputItem
    error: str | None = None
    duration_s: float | None = None
    n_windows: int = 0
    done: int = 0
    weights: list[float] = field(default_factory=list)
    window_scores: list[np.ndarray] = field(default_factory=list)  # [M, 4] per window, folded at the end
    feats: dict[str, list[np.ndarray]] = field(default_factory=dict)
    embedding_sum: np.ndarray | None = None  # weighted sum of window fused embeddings (out-of-domain score)

    @property
    def complete(self) -> bool:
        return self.error is not None or self.done >= self.n_windows


class Scorer:
    """Scores audio with a bundle's whole ensemble, without PyTorch.

    Args:
        bundle: bundle folder or a loaded `Bundle` (None: $MMMOS_BUNDLE, else the default cache folder).
        backend: "auto" | "ort-cpu" | "ort-cuda" | "tensorrt" (falls back with one line when unavailable).
        precision: "auto" | "fp32" | "fp16" | "int8"; only precisions the bundle's report passed, unless forced.
        threads: ONNX Runtime intra-op threads (0 = physical cores).
        batch_size: windows per graph call (bounds model memory).
        force_precision: allow a precision whose check did not pass (warns).
        verify: check the bundle files' sha256 on load.
        warn: where warnings go (default: one line on stderr).
        prefetch: files decoded ahead on a background thread (0 = decode inline).

    Raises:
        BundleNotFoundError, BundleError, PrecisionError, BackendUnavailableError: see their docs.
    """

    def __init__(
        self,
        bundle: str | os.PathLike[str] | Bundle | None = None,
        backend: Backend = "auto",
        precision: PrecisionChoice = "auto",
        *,
        threads: int = 0,
        batch_size: int = 8,
        force_precision: bool = False,
        verify: bool = True,
        warn: Callable[[str], None] | None = None,
        prefetch: int = 2,
    ) -> None:
        loaded = bundle if isinstance(bundle, Bundle) else None
        path = None if bundle is None or loaded is not None else os.fspath(bundle)
        settings = ScorerSettings(bundle=path, backend=backend, precision=precision, force_precision=force_precision,
                                  threads=threads, batch_size=batch_size, verify=verify)
        self._start(settings, loaded, warn, prefetch)

    @classmethod
    def from_settings(cls, settings: ScorerSettings, *, bundle: Bundle | None = None,
                      warn: Callable[[str], None] | None = None, prefetch: int = 2) -> Scorer:
        """A Scorer built from settings (what servers and Ray actors hold); `bundle` skips loading it again."""
        scorer = cls.__new__(cls)
        scorer._start(settings, bundle, warn, prefetch)
        return scorer

    def _start(self, settings: ScorerSettings, bundle: Bundle | None, warn: Callable[[str], None] | None,
               prefetch: int) -> None:
        self.settings = settings
        self.warn = warn or _stderr
        self.bundle = bundle if bundle is not None else Bundle.load(settings.bundle, verify=settings.verify)
        if self.bundle.untrained:
            self.warn(f"warning: bundle {self.bundle.root} is untrained (random weights): its scores mean nothing")
        self.batch_size = settings.batch_size
        self.prefetch = max(0, int(prefetch))
        started = start_pipeline(self.bundle, settings, warn=self.warn)
        self.pipeline: Pipeline = started.pipeline
        self.precision = started.precision
        self._encoders = list(self.bundle.encoders)
        self._ood = self.bundle.ood_reference
        self._pooled = self.bundle.pooled_outputs()
        self.model = self.bundle.model_id
        self._rates = [e.sample_rate for e in self.bundle.encoders]

    @property
    def backend(self) -> str:
        """The backend actually in use (after any fallback)."""
        return self.pipeline.name

    # ---------------------------------------------------------------- public API

    @overload
    def score(self, x: ScoreInput) -> ScoreResult: ...

    @overload
    def score(self, x: Sequence[ScoreInput]) -> list[ScoreResult]: ...

    def score(self, x: ScoreInput | Sequence[ScoreInput]) -> ScoreResult | list[ScoreResult]:
        """Score a path, an `(array, sample_rate)` pair, or a list of either.

        Bad inputs do not raise: their result has `error` set.

        Returns:
            One ScoreResult for a single input, a list (input order) for a list.
        """
        if _is_single(x):
            return next(self.score_iter([x]))
        return list(self.score_iter(x))

    def score_iter(self, inputs: Iterable[ScoreInput]) -> Iterator[ScoreResult]:
        """Score inputs lazily, yielding one ScoreResult per input in input order.

        Raises:
            NoEnsembleError: the bundle has encoder graphs only.
        """
        yield from self.score_prepared(self._loaded(as_item(x) for x in inputs))

    def score_prepared(self, loaded: Iterable[tuple[InputItem, Prepared | str]]) -> Iterator[ScoreResult]:
        """Score inputs that were decoded already (`audio.prepare`, or an error line), in input order.

        Ray decodes in CPU tasks and hands the actors these pairs; `score_iter` decodes here first.

        Raises:
            NoEnsembleError: the bundle has encoder graphs only.
        """
        if not self.bundle.has_ensemble:
            raise NoEnsembleError(self.bundle)
        for st in self._process(loaded, want_features=False, want_scores=True):
            yield self._finish_score(st)

    def encode(self, inputs: Iterable[ScoreInput] | ScoreInput) -> Iterator[EncodedItem]:
        """Run the encoder graphs only and yield every output stacked over windows, in input order.

        Same inputs as `score`; windows of several files share batches like `score` does.
        """
        items = [as_item(inputs)] if _is_single(inputs) else (as_item(v) for v in inputs)
        for st in self._process(self._loaded(items), want_features=True, want_scores=False):
            it = st.item
            if st.error is not None:
                yield EncodedItem(path=it.path, error=st.error, start_time=it.start_time,
                                  end_time=it.end_time, extra=it.extra)
                continue
            yield EncodedItem(
                path=it.path, weights=np.asarray(st.weights, np.float32),
                outputs={k: np.stack(v) for k, v in st.feats.items()}, duration_s=st.duration_s,
                start_time=it.start_time, end_time=it.end_time, extra=it.extra,
            )

    def run_ensemble(self, outputs: dict[str, np.ndarray]) -> EnsembleOut:
        """Run the ensemble graph alone on encoder outputs (batch axis first), in chunks of `batch_size`.

        Returns:
            (scores [B, M, 4], mean [B, 4], std [B, 4]).
        """
        feeds = {k: np.ascontiguousarray(outputs[k], dtype=np.float32) for k in self.bundle.ensemble_inputs}
        n = next(iter(feeds.values())).shape[0]
        parts = [self.pipeline.run_ensemble({k: v[i : i + self.batch_size] for k, v in feeds.items()})
                 for i in range(0, n, self.batch_size)]
        return tuple(np.concatenate([p[j] for p in parts]) for j in range(3))  # type: ignore[return-value]

    def close(self) -> None:
        """Release the backend's sessions/engines."""
        self.pipeline.close()

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- internals

    def _load(self, item: InputItem) -> Prepared:
        """Decode + validate + resample one input (runs on the prefetch thread)."""
        if item.error is not None:
            raise AudioError(item.error)
        if item.array is not None:
            if item.sample_rate is None:
                raise AudioError("an array input needs its sample rate: pass (array, sample_rate)")
            samples, sr = to_mono(item.array), int(item.sample_rate)
        else:
            samples, sr = decode(item.path or "", item.start_time, item.end_time)
        return prepare(samples, sr, self._rates)

    def _safe_load(self, item: InputItem) -> Prepared | str:
        """`_load`, with every failure turned into its one-line error (no traceback for bad input)."""
        try:
            return self._load(item)
        except AudioError as exc:
            return str(exc)
        except MemoryError:
            return "out of memory while decoding (file too long for this machine)"
        except Exception as exc:  # a decoder bug on a hostile file must not stop the run
            return f"cannot decode audio: {type(exc).__name__}: {' '.join(str(exc).split())}"

    def _loaded(self, items: Iterable[InputItem]) -> Iterator[tuple[InputItem, Prepared | str]]:
        """Items with their decoded audio, decoding up to `prefetch` files ahead on one thread."""
        if self.prefetch == 0:
            for it in items:
                yield it, self._safe_load(it)
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmmos-decode") as pool:
            queue: deque[tuple[InputItem, Future[Prepared | str]]] = deque()
            for it in items:
                queue.append((it, pool.submit(self._safe_load, it)))
                if len(queue) > self.prefetch:
                    head, fut = queue.popleft()
                    yield head, fut.result()
            while queue:
                head, fut = queue.popleft()
                yield head, fut.result()

    def _process(self, loaded: Iterable[tuple[InputItem, Prepared | str]], *, want_features: bool,
                 want_scores: bool) -> Iterator[_State]:
        """Yield each input's completed state in input order, batching windows across inputs."""
        pending: deque[_State] = deque()
        batch: list[tuple[_State, Window]] = []

        def drain() -> Iterator[_State]:
            while pending and pending[0].complete:
                yield pending.popleft()

        for item, clip in loaded:
            st = _State(item=item)
            pending.append(st)
            if isinstance(clip, str):
                st.error = clip
                yield from drain()
                continue
            st.duration_s, st.n_windows = clip.duration_s, clip.n_windows
            for w in iter_windows(clip, self._encoders):
                batch.append((st, w))
                if len(batch) == self.batch_size:
                    self._flush(batch, want_features, want_scores)
                    batch = []
                    yield from drain()
            del clip
        if batch:
            self._flush(batch, want_features, want_scores)
        yield from drain()

    def _flush(self, batch: list[tuple[_State, Window]], want_features: bool, want_scores: bool) -> None:
        """Run one batch of windows and hand each window's results to its file's state."""
        feeds = {
            e.name: (stack_windows([w.wavs[e.name] for _, w in batch]),
                     np.asarray([w.lengths[e.name] for _, w in batch], dtype=np.int64))
            for e in self._encoders
        }
        ood = self._ood is not None and want_scores
        feats, out = self.pipeline.run(feeds, want_features=want_features or ood, want_scores=want_scores)
        fused = fused_embedding(feats, self._pooled) if ood else None
        for i, (st, w) in enumerate(batch):
            st.weights.append(w.weight)
            if out is not None:
                st.window_scores.append(np.array(out[0][i], np.float32))
            if fused is not None:
                part = w.weight * fused[i]
                st.embedding_sum = part if st.embedding_sum is None else st.embedding_sum + part
            if want_features:
                for k, v in feats.items():
                    st.feats.setdefault(k, []).append(np.array(v[i]))
            st.done += 1

    def _finish_score(self, st: _State) -> ScoreResult:
        """Per-file averaging: per member weighted mean over windows, then mean/std over members."""
        it = st.item
        base = {"path": it.path, "start_time": it.start_time, "end_time": it.end_time, "extra": it.extra,
                "model": self.model}
        if st.error is not None or not st.window_scores:
            return ScoreResult(error=st.error or "no windows were scored", **base)
        window_scores = np.stack(st.window_scores)  # [n, M, 4]
        folded = fold_windows(window_scores, np.asarray(st.weights))
        scores = {a: float(folded.mean[j]) for j, a in enumerate(AXES)}
        std = {a: float(folded.std[j]) for j, a in enumerate(AXES)}
        conformal = self.bundle.conformal
        return ScoreResult(
            scores=scores, std=std, duration_s=st.duration_s, windows=st.n_windows,
            members=folded.members.astype(np.float32), timeline=self._timeline(window_scores.mean(axis=1), st),
            interval=None if conformal is None else conformal.interval(scores, std, self.settings.coverage),
            ood=self._ood_row(st), **base,
        )

    def _ood_row(self, st: _State) -> dict[str, float | bool] | None:
        """The file's out-of-domain score against the bundle's reference clips (None without a reference)."""
        if self._ood is None or st.embedding_sum is None:
            return None
        score = self._ood.score(st.embedding_sum / float(np.sum(st.weights)))
        return {"score": round(score, 4), "flag": self._ood.flag(score)}

    def _timeline(self, window_means: np.ndarray, st: _State) -> list[WindowScore]:
        """One entry per window: where it lies in the file (a segment's windows start at its start_time)."""
        offset = st.item.start_time or 0.0
        duration = st.duration_s or 0.0
        return [WindowScore(start_s=offset + k * WINDOW_SECONDS, end_s=offset + min((k + 1) * WINDOW_SECONDS, duration),
                            scores={a: float(m[j]) for j, a in enumerate(AXES)})
                for k, m in enumerate(window_means)]


