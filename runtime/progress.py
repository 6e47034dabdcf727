"""Progress on stderr: files done, audio hours, speed (x realtime), and a summary line at the end."""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from .results import ScoreResult


class Progress:
    """Counts results and shows a tqdm bar on stderr (only on a terminal, unless `quiet`).

    Args:
        quiet: no bar and no summary.
        stream: where it writes (stderr).
    """

    def __init__(self, quiet: bool = False, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.files = 0
        self.failed = 0
        self.audio_s = 0.0
        self.t0 = time.perf_counter()
        self.bar: Any = None
        if not quiet and getattr(self.stream, "isatty", lambda: False)():
            from tqdm import tqdm

            self.bar = tqdm(file=self.stream, unit="file", desc="scoring", dynamic_ncols=True, leave=False)

    def update(self, r: ScoreResult) -> None:
        """Count one result."""
        self.files += 1
        self.failed += int(r.error is not None)
        self.audio_s += r.duration_s or 0.0
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(self._rates(), refresh=False)

    def _rates(self) -> str:
        wall = max(time.perf_counter() - self.t0, 1e-9)
        return f"{self.audio_s / 3600:.3f} h audio, {self.audio_s / wall:.1f}x realtime, {self.failed} failed"

    def close(self) -> None:
        """Close the bar and print the summary line."""
        if self.bar is not None:
            self.bar.close()
        if not self.quiet:
            wall = time.perf_counter() - self.t0
            print(f"mmmos-score: {self.files} inputs ({self.failed} failed) in {wall:.1f} s: {self._rates()}",
                  file=self.stream, flush=True)
