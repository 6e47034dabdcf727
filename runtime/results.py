"""Result dataclasses of the runtime: `ScoreResult` (one row per input) and `EncodedItem` (encode API)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .bundle import AXES, ModelId

NON_FINITE_SCORES = ("the model produced non-finite scores (NaN/Inf) for this input; its audio is probably extreme "
                     "(check its level), or the bundle's graphs are broken")
"""The error of an input whose scores came out NaN/Inf (every path that writes rows turns them into this)."""


@dataclass(frozen=True)
class WindowScore:
    """The ensemble's scores of one window of a file (one timeline entry)."""

    start_s: float
    end_s: float
    scores: dict[str, float]

    def to_dict(self) -> dict[str, float]:
        """The timeline entry: start_s, end_s, PQ, PC, CE, CU."""
        return {"start_s": round(self.start_s, 6), "end_s": round(self.end_s, 6),
                **{a: float(self.scores[a]) for a in AXES}}


@dataclass
class ScoreResult:
    """The scores of one input (a file, a file segment or an array).

    Attributes:
        path: the file as given or found (None for an array input).
        scores: axis -> score on the 0-10 scale (ensemble mean), None on error.
        std: axis -> population std over ensemble members, None on error.
        duration_s: decoded duration (of the segment) in seconds, None when it could not be decoded.
        windows: number of 10 s windows scored.
        error: one-line reason when the input could not be scored, else None.
        start_time: segment start (manifest inputs), else None.
        end_time: segment end (manifest inputs), else None.
        members: per-member file scores [M, 4] (AXES order), None on error.
        extra: manifest fields passed through.
        model: the bundle that made the scores.
        timeline: the scores of each window the file score averages (empty on error).
        interval: axis -> [lo, hi] at the nominal coverage, when the bundle has calibrated intervals.
        ood: {"score", "flag"}: how far the file's fused embedding lies from the bundle's reference clips.
    """

    path: str | None
    scores: dict[str, float] | None = None
    std: dict[str, float] | None = None
    duration_s: float | None = None
    windows: int = 0
    error: str | None = None
    start_time: float | None = None
    end_time: float | None = None
    members: np.ndarray | None = field(default=None, repr=False)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)
    model: ModelId | None = None
    timeline: list[WindowScore] = field(default_factory=list, repr=False)
    interval: dict[str, list[float]] | None = None
    ood: dict[str, float | bool] | None = None

    def __post_init__(self) -> None:
        # The last guard of every path that writes rows: finite scores or an error, never neither.
        if self.error is not None:
            return
        values = [*(self.scores or {}).values(), *(self.std or {}).values()]
        if self.scores is None or self.std is None:
            self.error = "no scores were computed for this input"
        elif not all(math.isfinite(v) for v in values):
            self.error = NON_FINITE_SCORES
        else:
            return
        self.scores, self.std, self.members, self.timeline, self.interval, self.ood = None, None, None, [], None, None

    @property
    def ok(self) -> bool:
        """True when the input was scored."""
        return self.error is None

    def worst(self) -> dict[str, float]:
        """Per axis, where the file's lowest-scoring window starts (seconds); empty without a timeline."""
        if not self.timeline:
            return {}
        return {a: min(self.timeline, key=lambda w: w.scores[a]).start_s for a in AXES}

    def to_row(self, timeline: bool = False) -> dict[str, Any]:
        """The JSONL row: path, [start_time, end_time,] PQ, PC, CE, CU, std{...}, duration_s, windows, error,
        model{name, sha256}, and with `timeline` the per-window scores and the worst window per axis."""
        row: dict[str, Any] = {"path": self.path}
        if self.start_time is not None:
            row["start_time"] = self.start_time
        if self.end_time is not None:
            row["end_time"] = self.end_time
        for a in AXES:
            row[a] = None if self.scores is None else float(self.scores[a])
        row["std"] = None if self.std is None else {a: float(self.std[a]) for a in AXES}
        row["duration_s"] = None if self.duration_s is None else round(self.duration_s, 6)
        row["windows"] = self.windows
        row["error"] = self.error
        if self.model is not None:
            row["model"] = self.model.to_dict()
        if self.interval is not None:
            row["interval"] = {a: [round(v, 6) for v in self.interval[a]] for a in AXES}
        if self.ood is not None:
            row["ood"] = dict(self.ood)
        if timeline and self.ok:
            row["timeline"] = [w.to_dict() for w in self.timeline]
            row["worst"] = self.worst()
        return row


@dataclass
class EncodedItem:
    """Encoder-graph outputs of one input, stacked over its windows (contracts: "Runtime API used by training").

    Attributes:
        path: the file (None for an array input).
        error: one-line reason when the input could not be encoded (then `outputs` is empty).
        weights: [n_windows] float32, valid seconds / window seconds.
        outputs: output name -> array stacked over windows, e.g. "wavlm_pooled" [n_windows, L, D].
        duration_s: decoded duration in seconds (None on error).
        start_time: segment start, else None.
        end_time: segment end, else None.
        extra: manifest fields passed through.
    """

    path: str | None
    error: str | None = None
    weights: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    duration_s: float | None = None
    start_time: float | None = None
    end_time: float | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)
