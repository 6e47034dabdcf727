"""Timing primitives: statistics, call counting, memory and machine description (no timed assertions)."""

from __future__ import annotations

import numpy as np
import pytest

from mmmos.benchmarks.timing import Stats, machine_info, peak_rss_mb, percentile, time_call


def test_stats_match_numpy_percentiles() -> None:
    xs = [0.5, 0.1, 0.3, 0.9, 0.7, 0.2]
    st = Stats.of(xs, warmup=2)
    assert st.median == pytest.approx(float(np.median(xs)))
    assert st.p90 == pytest.approx(float(np.percentile(xs, 90)))
    assert (st.min, st.max, st.warmup) == (0.1, 0.9, 2)
    assert percentile([3.0], 90) == 3.0
    with pytest.raises(ValueError, match="no timings"):
        Stats.of([])


def test_time_call_runs_warmup_then_repeats_with_the_given_timer() -> None:
    calls: list[int] = []
    fake = iter([0.25, 0.75, 0.5])
    st = time_call(lambda: calls.append(1), warmup=2, repeats=3, timer=lambda fn: (fn(), next(fake))[1])
    assert len(calls) == 5
    assert st.times == [0.25, 0.75, 0.5] and st.median == 0.5
    with pytest.raises(ValueError, match="repeats"):
        time_call(lambda: None, repeats=0)


def test_memory_and_machine() -> None:
    assert peak_rss_mb() > 1.0
    info = machine_info()
    assert info["logical_cpus"] >= 1
    assert "numpy" in info["versions"]


def test_peak_rss_of_a_child_is_its_own_not_the_parents() -> None:
    import subprocess
    import sys

    ballast = np.ones(200 * 1024 * 1024, np.uint8)  # ~200 MiB resident in this (parent) process
    assert peak_rss_mb() > 200
    code = "from mmmos.benchmarks.timing import peak_rss_mb; print(peak_rss_mb())"
    child = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert child < 150, "a fork+exec child must not report its parent's high-water mark"
    del ballast
