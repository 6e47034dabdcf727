"""Report writer: derived figures, goals, markdown, JSON, plots and the README section, on a made-up run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mmmos.benchmarks import report


def _stats(median: float) -> dict[str, Any]:
    return {"median": median, "p90": median * 1.1, "mean": median, "min": median, "max": median,
            "times": [median], "warmup": 1}


def _run(precision: str, per_window: float, enc_s: float) -> dict[str, Any]:
    return {
        "backend": "ort-cpu", "precision": precision, "cold_start": {"total_s": 2.0},
        "memory": {"peak_rss_mb": 900.0}, "window_mean_scores": [5.0, 5.0, 5.0, 5.0],
        "batches": {"1": {"latency": _stats(per_window), "per_window_median_s": per_window,
                          "per_window_p90_s": per_window * 1.1, "throughput_audio_s_per_s": 10 / per_window,
                          "split_median_s": {"encoder:a": enc_s, "ensemble": per_window - enc_s}}},
        "lengths": {"10": {"seconds": 10.0, "score": _stats(per_window + 0.1), "decode_resample": _stats(0.05),
                           "throughput_audio_s_per_s": 10 / (per_window + 0.1)}},
    }


@pytest.fixture
def raw() -> dict[str, Any]:
    return {
        "machine": {"cpu": "test cpu", "usable_cpus": 2, "versions": {"numpy": "x"}},
        "bundle": {"path": "/b", "description": "test"},
        "flops": {"encoder:a": {"flops": 40e9}, "ensemble": {"flops": 1e6}},
        "peaks": {"fp32": {"gflops": 50.0}, "int8": {"gflops": 100.0}},
        "runs": [_run("fp32", 1.0, 0.8), _run("int8", 0.5, 0.4),
                 {"requested_backend": "tensorrt", "precision": "fp16", "error": "no GPU"}],
        "baselines": {"torch": {"eager": {"1": {"per_window_median_s": 2.0}},
                                "naive": {"1": {"per_window_median_s": 6.0, "latency": _stats(6.0)}},
                                "window_mean_scores": [5.0, 5.0, 5.0, 5.001], "memory": {"peak_rss_mb": 3000.0}},
                      "audiobox": {"batches": {"1": {"per_window_median_s": 0.5}}, "weights": "random",
                                   "memory": {"peak_rss_mb": 1500.0}}},
    }


def test_summary_picks_the_best_backend_and_judges_the_goals(raw: dict[str, Any]) -> None:
    s = report.summarize(raw)
    assert s["best"]["label"] == "ort-cpu int8"
    assert s["ratios"]["naive_over_best"] == pytest.approx(12.0)
    assert s["ratios"]["eager_over_best"] == pytest.approx(4.0)
    assert s["goals"]["naive_speedup"]["met"] is True
    # end-to-end 10 s clip (0.6 s) vs audiobox 0.5 s -> 1.2x, within 1.5x
    assert s["goals"]["audiobox_ratio"]["value"] == pytest.approx(1.2)
    assert s["goals"]["audiobox_ratio"]["met"] is True
    # 40 GFLOP in 0.4 s = 100 GFLOP/s = the int8 peak
    enc = s["floors"]["ort-cpu int8"]["1"]["encoders (all)"]
    assert enc["achieved_gflops"] == pytest.approx(100.0)
    assert s["goals"]["floor_fraction"]["value"] == pytest.approx(1.0)
    assert s["floors"]["ort-cpu fp32"]["1"]["encoder:a"]["floor_fraction"] == pytest.approx(1.0)


def test_floor_uses_the_higher_peak_and_none_for_gpu(raw: dict[str, Any]) -> None:
    raw["runs"][0]["peak_here"] = {"gflops": 100.0}
    raw["runs"].append({**raw["runs"][0], "backend": "tensorrt", "precision": "fp16"})
    s = report.summarize(raw)
    assert s["floors"]["ort-cpu fp32"]["1"]["encoder:a"]["floor_fraction"] == pytest.approx(0.5)
    assert s["floors"]["tensorrt fp16"]["1"]["encoder:a"]["floor_fraction"] is None
    assert s["ratios"]["scores_max_abs_diff_vs_torch"]["ort-cpu fp32"] == pytest.approx(0.001)


def test_best_is_chosen_among_passed_precisions(raw: dict[str, Any]) -> None:
    raw["runs"][1]["precision_status"] = "failed"
    s = report.summarize(raw)
    assert s["best"]["label"] == "ort-cpu fp32"
    assert s["goals"]["naive_speedup"]["value"] == pytest.approx(6.0)
    assert s["fastest_forced"] == "ort-cpu int8"
    assert s["goals_forced"]["naive_speedup"]["value"] == pytest.approx(12.0)
    md = report.markdown(raw)
    assert "ort-cpu int8 (check failed, forced)" in md
    assert "fastest run, ort-cpu int8" in md


def test_goal_not_met_is_reported_as_such(raw: dict[str, Any]) -> None:
    raw["baselines"]["torch"]["naive"]["1"]["per_window_median_s"] = 1.0
    assert report.summarize(raw)["goals"]["naive_speedup"]["met"] is False


def test_writers(raw: dict[str, Any], tmp_path: Path) -> None:
    report.summarize(raw)
    path = report.write_json(raw, tmp_path / "r.json")
    assert json.loads(path.read_text())["summary"]["best"]["label"] == "ort-cpu int8"
    md = report.markdown(raw)
    assert "| ort-cpu int8 | 1 | 500.0 | 550.0 | 500.0 |" in md
    assert "error: no GPU" in md
    assert "| naive_speedup | >= 8x | 12.00x | 12.00x | yes |" in md
    pngs = report.plots(raw, tmp_path)
    assert [p.name for p in pngs] == ["latency_vs_length.png", "throughput_vs_batch.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_summary_without_runs_or_baselines() -> None:
    raw: dict[str, Any] = {"runs": [{"error": "x", "precision": "fp32"}]}
    s = report.summarize(raw)
    assert s["goals"] == {} and "best" not in s
    assert "error: x" in report.markdown(raw)


def test_update_readme_replaces_only_its_section(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n\nintro\n")
    report.update_readme(readme, "first")
    report.update_readme(readme, "second")
    text = readme.read_text()
    assert text.startswith("# Title\n\nintro\n")
    assert "second" in text and "first" not in text
    assert text.count(report.README_START) == 1
