"""``mmmos-calibrate BUNDLE DATA``: INT8 graphs, precision reports and target statistics for a bundle."""

from __future__ import annotations

from pathlib import Path

import typer

from mmmos.runtime.precision_gate import DEFAULT_THRESHOLDS, Thresholds

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def calibrate(
    bundle: Path = typer.Argument(..., help="Bundle folder (manifest.json) to calibrate in place."),
    data: Path = typer.Argument(..., help="Real audio: a folder, or a manifest (CSV/JSONL/TSV/JSON/txt list)."),
    max_files: int | None = typer.Option(None, "--max-files", "-n", help="Use at most N files of DATA."),
    fp16_max_abs: float = typer.Option(DEFAULT_THRESHOLDS["fp16"].max_abs, help="fp16: max abs diff per axis."),
    fp16_min_srcc: float = typer.Option(
        DEFAULT_THRESHOLDS["fp16"].min_srcc, help="fp16: min SRCC per axis (where the files can be ranked)."),
    int8_max_abs: float = typer.Option(DEFAULT_THRESHOLDS["int8"].max_abs, help="int8: max abs diff per axis."),
    int8_min_srcc: float = typer.Option(
        DEFAULT_THRESHOLDS["int8"].min_srcc, help="int8: min SRCC per axis (where the files can be ranked)."),
    int8: bool = typer.Option(True, "--int8/--no-int8",
                              help="Write INT8 encoder graphs first (static QDQ, per-channel weights, ORT CPU)."),
    calib_method: str = typer.Option("minmax", help="INT8 range calibration: minmax, entropy or percentile."),
    calib_data: Path | None = typer.Option(
        None, help="Other audio to calibrate INT8 ranges on (default: every other file of DATA)."),
    hold_out: bool = typer.Option(True, "--hold-out/--no-hold-out", help="Judge precisions on DATA files the INT8 "
                                  "ranges were not calibrated on (every other file calibrates); both are reported."),
    ood_reference: bool = typer.Option(True, "--ood-reference/--no-ood-reference", help="Store DATA's fused "
                                       "embeddings as the out-of-domain reference rows are scored against."),
    calib_windows: int = typer.Option(64, help="At most this many windows per encoder for INT8 ranges."),
    reduce_range: bool = typer.Option(False, help="7-bit weights, for CPUs without VNNI."),
    quantize_conv: bool = typer.Option(True, "--quantize-conv/--no-quantize-conv",
                                       help="Also quantize the encoder bodies' Conv nodes (front-ends stay fp32)."),
    quantize_feature_extractor: bool = typer.Option(
        False, "--quantize-feature-extractor/--no-quantize-feature-extractor",
        help="Also quantize WavLM's conv feature extractor (conv layers 1..6; layer 0 and its GroupNorm stay fp32). "
             "The largest INT8 speed-up, but it can move the features a lot: check the report's pooled error."),
    exclude: list[str] = typer.Option([], help="Regex of node names to keep fp32 (repeatable)."),
    trt_int8: bool | None = typer.Option(
        None, "--trt-int8/--no-trt-int8",
        help="TensorRT INT8 QDQ graph (+ its plans where TensorRT and a GPU exist; default: only there)."),
    targets: Path | None = typer.Option(None, help="Labelled manifest (CSV/JSONL with PQ/PC/CE/CU labels): target "
                                        "statistics, and conformal score intervals fitted on its clips (use clips the "
                                        "members were not trained on)."),
    threads: int = typer.Option(0, help="ORT intra-op threads (0 = ORT's default)."),
    bench: bool = typer.Option(False, help="Afterwards, time fp32 vs the other precisions' encoder graphs."),
) -> None:
    """Measure every precision of BUNDLE against fp32 on DATA and record which ones pass."""
    from .calibrate import CalibrationOptions, calibrate_bundle

    opts = CalibrationOptions(
        max_files=max_files,
        thresholds={"fp16": Thresholds(fp16_max_abs, fp16_min_srcc), "int8": Thresholds(int8_max_abs, int8_min_srcc),
                    "int8-trt": Thresholds(int8_max_abs, int8_min_srcc)},
        int8=int8, int8_method=calib_method, calib_data=calib_data, hold_out=hold_out, ood_reference=ood_reference,
        calib_windows=calib_windows, reduce_range=reduce_range, exclude_patterns=tuple(exclude),
        include_conv=quantize_conv, quantize_feature_extractor=quantize_feature_extractor, trt_int8=trt_int8,
        targets=targets, threads=threads,
    )
    try:
        block = calibrate_bundle(bundle, data, opts, log=lambda s: typer.echo(s, err=True))
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"mmmos-calibrate: {exc}", err=True)
        raise typer.Exit(2) from None
    for p, rep in block["precisions"].items():
        srcc = "not ranked (set too narrow)" if rep["srcc"] is None else f"{rep['srcc']:.4g}"
        typer.echo(f"{p}\t{rep['status']}\tmax_abs={rep['max_abs']:.4g}\tmean_abs={rep['mean_abs']:.4g}"
                   f"\tsrcc={srcc}")
    if bench:
        from .bench import bench_bundle, format_table

        table = bench_bundle(bundle, threads=threads)
        typer.echo("encoder graphs, wall ms\n" + format_table(table["wall_ms"]))
        typer.echo("encoder graphs, process CPU ms\n" + format_table(table["cpu_ms"]))


def main() -> None:
    """Console entry point (``mmmos-calibrate``)."""
    app()


if __name__ == "__main__":
    main()
