"""Encoder-graph timing per precision on ONNX Runtime CPU (fp32 vs fp16 vs int8), for the calibration note.

``python -m mmmos.calibration.bench BUNDLE [--batch B] [--repeats R]`` times each encoder graph of every
precision on random 10 s windows (timing does not depend on the audio) and prints a table plus the int8
speed-up. With ``--compare-modes`` it also quantizes fp32 graphs both ways (static QDQ and dynamic) into a
temporary folder and times both, which is how the default INT8 mode was chosen. Sessions use the
runtime's settings (spinning off, default intra-op threads); runs are interleaved across precisions and
the median of R rounds after warm-ups is reported, with the load average (the dev box is shared).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from mmmos.runtime.bundle import Bundle
from mmmos.runtime.ort_session import make_session

from . import int8_ort, runner


def _feed(sess, window_samples: int, batch: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feed = {"wav": (0.1 * rng.standard_normal((batch, window_samples))).astype(np.float32),
            "lengths": np.full(batch, window_samples, np.int64)}
    return {i.name: feed[i.name] for i in sess.get_inputs()}


def time_graphs(graphs: dict[str, dict[str, tuple[Path, int]]], batch: int = 1, repeats: int = 5, warmup: int = 2,
                threads: int = 0) -> dict[str, dict[str, dict[str, float]]]:
    """Median wall ms and process CPU ms per run of every graph in ``{precision: {encoder: (path, samples)}}``.

    Returns ``{"wall_ms": table, "cpu_ms": table}``. Runs are interleaved (each round runs every precision's
    graphs once), so load from other processes biases every precision alike; CPU time (all ORT threads,
    spinning off) is the steadier number on a shared machine, wall time the one a user waits for.
    """
    sessions = {p: {e: (make_session(path, threads=threads), n) for e, (path, n) in row.items()}
                for p, row in graphs.items()}
    feeds = {p: {e: _feed(sess, n, batch) for e, (sess, n) in row.items()} for p, row in sessions.items()}
    wall: dict[str, dict[str, list[float]]] = {p: {e: [] for e in row} for p, row in sessions.items()}
    cpu: dict[str, dict[str, list[float]]] = {p: {e: [] for e in row} for p, row in sessions.items()}
    for r in range(warmup + repeats):
        for p, row in sessions.items():
            for e, (sess, _) in row.items():
                t0, c0 = time.perf_counter(), time.process_time()
                sess.run(None, feeds[p][e])
                if r >= warmup:
                    wall[p][e].append(1000 * (time.perf_counter() - t0))
                    cpu[p][e].append(1000 * (time.process_time() - c0))
    out: dict[str, dict[str, dict[str, float]]] = {}
    for key, times in (("wall_ms", wall), ("cpu_ms", cpu)):
        out[key] = {}
        for p, row in times.items():
            out[key][p] = {e: statistics.median(v) for e, v in row.items()}
            out[key][p]["total"] = sum(out[key][p].values())
    return out


def bench_bundle(bundle: str | Path, batch: int = 1, repeats: int = 5, warmup: int = 2,
                 compare_modes: bool = False, threads: int = 0) -> dict:
    """``{"wall_ms" | "cpu_ms": {precision: {encoder: ms, ..., "total": ms}}}`` for every precision of the bundle.

    With ``compare_modes``, adds ``int8-static``, ``int8-dynamic`` and ``int8-static+conv`` rows quantized on
    the fly (static calibrated on 4 random windows: fine for timing, not for accuracy).
    """
    bundle = Path(bundle)
    loaded = Bundle.load(bundle, verify=False)
    graphs: dict[str, dict[str, tuple[Path, int]]] = {}
    for p in runner.graph_keys_present(loaded):
        # a full window, fed as the runtime feeds it (an encoder with a length rule takes its max_samples)
        graphs[p] = {e.name: (bundle / e.graphs[p], e.max_samples) for e in loaded.encoders if p in e.graphs}
    with tempfile.TemporaryDirectory(prefix="mmmos-bench-") as tmp:
        if compare_modes:
            rng = np.random.default_rng(1)
            for variant in ("static", "dynamic", "static+conv"):
                mode = variant.split("+")[0]
                graphs[f"int8-{variant}"] = {}
                for enc in loaded.encoders:
                    n = enc.max_samples
                    feeds = [{"wav": (0.1 * rng.standard_normal((1, n))).astype(np.float32),
                              "lengths": np.array([n], np.int64)} for _ in range(4)]
                    dst = Path(tmp) / f"{enc.name}.{variant}.onnx"
                    int8_ort.quantize_encoder(bundle / enc.graphs["fp32"], dst, int8_ort.WindowReader(feeds),
                                              mode=mode, include_conv=variant.endswith("+conv"))
                    graphs[f"int8-{variant}"][enc.name] = (dst, n)
        return time_graphs(graphs, batch, repeats, warmup, threads)


def format_table(table: dict[str, dict[str, float]]) -> str:
    """A plain-text table of milliseconds, with speed-ups against fp32's total."""
    names = [k for k in next(iter(table.values())) if k != "total"] + ["total"]
    lines = ["precision".ljust(18) + "".join(n.rjust(10) for n in names) + "   speed-up vs fp32"]
    base = table.get("fp32", {}).get("total")
    for p, row in table.items():
        cells = "".join((f"{row[n]:.1f}" if n in row else "-").rjust(10) for n in names)
        speed = f"   x{base / row['total']:.2f}" if base and row.get("total") else ""
        lines.append(p.ljust(18) + cells + speed)
    return "\n".join(lines)


def main() -> None:
    """Console entry: ``python -m mmmos.calibration.bench BUNDLE [--batch B] [--repeats R] [--compare-modes]``."""
    import typer

    def run(
        bundle: Path = typer.Argument(..., help="Bundle folder (manifest.json)."),
        batch: int = typer.Option(1, help="Windows per batch."),
        repeats: int = typer.Option(5, help="Timed runs per graph (median)."),
        warmup: int = typer.Option(2, help="Untimed runs first."),
        threads: int = typer.Option(0, help="ORT intra-op threads (0 = ORT's default, physical cores)."),
        compare_modes: bool = typer.Option(False, help="Also time INT8 variants (static, dynamic, +conv) made here."),
        json_out: Path | None = typer.Option(None, "--json", help="Also write the table as JSON here."),
    ) -> None:
        load = os.getloadavg()[0]
        table = bench_bundle(bundle, batch, repeats, warmup, compare_modes, threads)
        typer.echo(f"encoder graph time, ms (median of {repeats}, interleaved), batch {batch}, ORT CPU, "
                   f"load average {load:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        typer.echo("wall ms\n" + format_table(table["wall_ms"]))
        typer.echo("process CPU ms (all threads)\n" + format_table(table["cpu_ms"]))
        if json_out is not None:
            json_out.write_text(json.dumps({"batch": batch, "repeats": repeats, **table}, indent=2))

    typer.run(run)


if __name__ == "__main__":
    main()
