"""`mmmos-bench`: benchmark a bundle. Commands (`run` is the default, so `mmmos-bench --bundle DIR` is `run`):

- `run --bundle DIR [--out DIR] [--lengths 1,10,60] [--batches 1,8,32] ...`: for every backend and precision this
  machine and the bundle allow, one fresh process measures cold start, per-window latency per batch, the per-graph
  split, end-to-end latency per clip length, throughput and peak RSS; in the same run, on the same weights and
  windows: the PyTorch eager model, the naive per-member ensemble and the audiobox-aesthetics model; the graphs'
  FLOPs against this machine's matmul peak. Writes report.json, report.md and two PNG plots.
- `versus --bundle DIR [--lengths 1,2,5,10,30] [--rounds 5] ...`: mmmos's end-to-end `score(path)` against the
  audiobox-aesthetics package's `AesPredictor` on the same files, in two long-lived processes timed call by call,
  interleaved; the per-round ratio per clip length. Writes versus.json and versus.md.
- `profile --bundle DIR [--precision fp32] [--top 10]`: ONNX Runtime's profile of each encoder graph on one
  10 s window (batch 1): the top operator types and nodes with their share of the time.

This process never imports torch.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import typer
from typer.core import TyperGroup

DEFAULT_COMMAND = "run"


class DefaultCommandGroup(TyperGroup):
    """A command group that runs `run` when the first argument is not a command (`mmmos-bench --bundle DIR`)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Put `run` in front of arguments that do not start with a command name or ask for the group's help."""
        return super().parse_args(ctx, route_args(args, list(self.commands)))


def route_args(args: list[str], commands: list[str]) -> list[str]:
    """`args` with the default command in front unless they start with a command, `--help`/`-h`, or are empty."""
    if not args or args[0] in commands or args[0] in ("--help", "-h"):
        return list(args)
    return [DEFAULT_COMMAND, *args]


HELP = ("Benchmark a bundle. `run` (the default command: `mmmos-bench --bundle DIR ...` runs it) times every backend "
        "and precision against the PyTorch and Audiobox baselines; `versus` times mmmos against the "
        "audiobox-aesthetics package on the same files, interleaved, per clip length; `profile` lists the top "
        "operators of each encoder graph from ONNX Runtime's profiler.")
app = typer.Typer(add_completion=False, help=HELP, cls=DefaultCommandGroup, no_args_is_help=True)


def _say(msg: str) -> None:
    print(f"[mmmos-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_list(text: str, kind: type = float) -> list[Any]:
    """Parse "1,10,60" into numbers, refusing empty or non-positive values.

    Raises:
        typer.BadParameter: not a comma-separated list of positive numbers.
    """
    try:
        vals = [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a comma-separated list of numbers, e.g. 1,10,60") from None
    if not vals or any(v <= 0 for v in vals):
        raise typer.BadParameter(f"{text!r} must list positive numbers, e.g. 1,10,60")
    return vals


def available_backends() -> list[str]:
    """Backends this machine can try: ort-cpu always; ort-cuda and tensorrt where their packages say so."""
    out = []
    try:
        import onnxruntime as ort

        out.append("ort-cpu")
        if "CUDAExecutionProvider" in ort.get_available_providers():
            out.append("ort-cuda")
    except ImportError:
        pass
    try:
        import tensorrt  # type: ignore[import-not-found]  # noqa: F401

        out.append("tensorrt")
    except ImportError:
        pass
    return out


def run_worker(kind: str, spec: dict[str, Any], work: Path, tag: str) -> dict[str, Any]:
    """Run one measurement in a fresh Python process and return its JSON result (or an error dict)."""
    spec_path, out_path = work / f"{tag}.spec.json", work / f"{tag}.result.json"
    spec_path.write_text(json.dumps(spec, indent=1))
    proc = subprocess.run([sys.executable, "-m", "mmmos.benchmarks.worker", kind, str(spec_path), str(out_path)],
                          capture_output=True, text=True, check=False)
    if not out_path.is_file():
        tail = " ".join((proc.stderr or "").strip().splitlines()[-3:])
        return {"error": f"worker exited with {proc.returncode} and no result: {tail}"}
    return json.loads(out_path.read_text())


@app.command(DEFAULT_COMMAND)
def bench(
    bundle: Path = typer.Option(..., "--bundle", help="Bundle folder to benchmark."),
    out: Path = typer.Option(Path("bench-out"), "--out", help="Folder for report.json/.md, plots and clips."),
    lengths: str = typer.Option("1,10,60", help="Clip lengths in seconds for end-to-end latency."),
    batches: str = typer.Option("1,8,32", help="Windows per batch for latency and throughput."),
    backends: str = typer.Option("all", help="Comma list of ort-cpu, ort-cuda, tensorrt, or 'all' available."),
    precisions: str = typer.Option("passed", help="Comma list, or 'passed' (those the bundle's checks passed)."),
    threads: int = typer.Option(0, help="Intra-op threads for ORT and torch (0 = their defaults)."),
    warmup: int = typer.Option(1, help="Untimed runs before timing."),
    repeats: int = typer.Option(5, help="Timed runs per batch size."),
    e2e_repeats: int = typer.Option(3, help="Timed score() runs per clip length."),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="PyTorch eager and naive baselines."),
    naive: bool = typer.Option(True, "--naive/--no-naive", help="The naive per-member baseline (slow)."),
    audiobox: bool = typer.Option(True, "--audiobox/--no-audiobox", help="The audiobox-aesthetics baseline."),
    baseline_all_batches: bool = typer.Option(
        False, help="Time PyTorch eager and audiobox at every batch size (default: the smallest only; slow)."),
    flops: bool = typer.Option(True, "--flops/--no-flops", help="Count graph FLOPs and measure the matmul peak."),
    readme: Path | None = typer.Option(None, help="Also put the markdown report into this README's results section."),
) -> None:
    """Backends x precisions against the PyTorch and Audiobox baselines (the default command)."""
    from mmmos.runtime.bundle import Bundle
    from mmmos.runtime.errors import MMMOSRuntimeError
    from mmmos.runtime.names import PRECISIONS

    from . import report
    from .clips import write_clips, write_windows
    from .timing import load_average, machine_info

    lens, bats = parse_list(lengths, float), parse_list(batches, int)
    try:
        report.require_matplotlib()
        b = Bundle.load(bundle, verify=True)
    except (MMMOSRuntimeError, ModuleNotFoundError) as exc:
        typer.echo(f"mmmos-bench: {exc}", err=True)
        raise typer.Exit(2) from None
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    work.mkdir(exist_ok=True)
    raw: dict[str, Any] = {"machine": machine_info(), "settings": {
        "lengths": lens, "batches": bats, "threads": threads, "warmup": warmup, "repeats": repeats,
        "e2e_repeats": e2e_repeats, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}}
    prov = b.manifest.get("provenance", {}) or {}
    raw["bundle"] = {"path": str(b.root), "encoders": [e.name for e in b.encoders], "members": b.n_members,
                     "precisions": b.precisions, "provenance": prov,
                     "description": f"{prov.get('source')} preset {prov.get('preset', '-')}, {b.n_members} members, "
                                    f"encoders {'+'.join(e.name for e in b.encoders)}"}
    _say(f"writing clips {lens} s and the shared windows into {out}")
    clips = write_clips(out / "clips", sorted(set([*lens, 10.0])))
    windows = write_windows(b, clips[10.0], work / "windows.npz")
    want_b = available_backends() if backends == "all" else [x.strip() for x in backends.split(",") if x.strip()]
    if precisions == "passed":
        want_p = [k for k in b.passed_keys() if k in PRECISIONS]
    else:
        want_p = [x.strip() for x in precisions.split(",")]
    if flops:
        _say("counting graph FLOPs (one profiled run per graph when shapes are dynamic) ...")
        res = run_worker("flops", {"bundle": str(b.root), "measure": True}, work, "flops")
        raw["flops"] = res.get("flops", {})
        if "error" in res:
            _say(f"  FLOP count failed: {res['error']}")
            raw["flops_error"] = res["error"]
        from .peak import measure_peaks

        _say(f"measuring the matmul peak for {want_p} ...")
        raw["peaks"] = measure_peaks(want_p, threads)
    base_spec = {"bundle": str(b.root), "threads": threads, "batches": bats, "warmup": warmup, "repeats": repeats,
                 "windows": str(windows)}
    raw["runs"] = []
    for be in want_b:
        for p in want_p:
            _say(f"measuring {be} {p} ...")
            spec = {**base_spec, "backend": be, "precision": p, "e2e_repeats": e2e_repeats,
                    "clips": {f"{k:g}": str(v) for k, v in clips.items() if k in lens},
                    "cold_clip": str(clips[10.0]), "force_precision": precisions != "passed"}
            res = run_worker("runtime", spec, work, f"runtime-{be}-{p}")
            res["precision_status"] = (b.precisions.get(p) or {}).get("status", "unchecked")
            if "error" in res:
                res.setdefault("requested_backend", be)
                res.setdefault("precision", p)
                _say(f"  {be} {p}: {res['error']}")
            raw["runs"].append(res)
    raw["baselines"] = {}
    if not baseline_all_batches:
        base_spec = {**base_spec, "batches": [min(bats)]}
    if baselines:
        _say("measuring the PyTorch baselines (eager shared encoders" + (", naive per member" if naive else "") + ")")
        raw["baselines"]["torch"] = run_worker("torch", {**base_spec, "naive": naive}, work, "torch")
    if audiobox:
        _say("measuring the audiobox-aesthetics model ...")
        raw["baselines"]["audiobox"] = run_worker("audiobox", base_spec, work, "audiobox")
    for k, v in raw["baselines"].items():
        if "error" in v:
            _say(f"  baseline {k}: {v['error']}")
    raw["machine"]["load_average_end"] = load_average()
    report.summarize(raw)
    report.write_json(raw, out / "report.json")
    md = report.markdown(raw)
    (out / "report.md").write_text(md)
    pngs = report.plots(raw, out)
    if readme is not None:
        report.update_readme(readme, md)
    _say(f"wrote {out / 'report.json'}, {out / 'report.md'}, {', '.join(p.name for p in pngs)}")
    typer.echo(md)


@app.command()
def versus(
    bundle: Path = typer.Option(..., "--bundle", help="Bundle folder (an Audiobox export for the same-model goals)."),
    peer_checkpoint: Path | None = typer.Option(
        None, help="Checkpoint (.pt or Hugging Face folder) the package loads; default: the bundle's Audiobox "
                   "checkpoint from its provenance, or random init for a bundle that is not an Audiobox export."),
    lengths: str = typer.Option("1,2,5,10,30", help="Clip lengths in seconds."),
    rounds: int = typer.Option(5, min=1, help="Timed rounds (each times both sides once per clip)."),
    warmup: int = typer.Option(1, min=0, help="Untimed rounds first (each worker also warms up once on loading)."),
    precision: str = typer.Option("auto", help="mmmos precision: auto, fp32, fp16, int8."),
    force_precision: bool = typer.Option(False, help="Allow a precision whose check did not pass."),
    backend: str = typer.Option("ort-cpu", help="mmmos backend (the peer runs on CPU for ort-cpu, else CUDA)."),
    threads: int = typer.Option(2, min=0, help="Threads of each side: ORT intra-op and torch (0 = all usable CPUs)."),
    out: Path = typer.Option(Path("bench-out/versus"), help="Folder for versus.json/.md, the clips and logs."),
    readme: Path | None = typer.Option(None, help="Also put versus.md into this README (its own marked section)."),
) -> None:
    """mmmos vs the audiobox-aesthetics package on the same files, interleaved, per clip length."""
    from mmmos.runtime.errors import MMMOSRuntimeError

    from . import report
    from .versus import VersusError, VersusSettings, run_versus

    settings = VersusSettings(bundle=str(bundle), out=str(out), lengths=tuple(parse_list(lengths, float)),
                              rounds=rounds, warmup=warmup, precision=precision, force_precision=force_precision,
                              backend=backend, threads=threads or usable_cpus(),
                              peer_checkpoint=str(peer_checkpoint) if peer_checkpoint else None)
    try:
        raw = run_versus(settings, _say)
    except (VersusError, MMMOSRuntimeError) as exc:
        typer.echo(f"mmmos-bench versus: {exc}", err=True)
        raise typer.Exit(2) from None
    md = (out / "versus.md").read_text()
    if readme is not None:
        report.update_readme(readme, md, name=f"versus {raw['kind']}")
    _say(f"wrote {out / 'versus.json'} and {out / 'versus.md'}")
    typer.echo(md)


@app.command()
def profile(
    bundle: Path = typer.Option(..., "--bundle", help="Bundle folder."),
    precision: str = typer.Option("fp32", help="Graph precision to profile: fp32, fp16, int8."),
    top: int = typer.Option(10, min=1, help="Operator types and nodes listed per graph."),
    threads: int = typer.Option(2, min=0, help="ORT intra-op threads (0 = ORT's default)."),
    warmup: int = typer.Option(1, min=0, help="Untimed runs before profiling."),
    runs: int = typer.Option(3, min=1, help="Profiled runs (times are per run)."),
    clip: Path | None = typer.Option(None, help="Audio file whose first 10 s window is fed (default: synthetic)."),
    out: Path = typer.Option(Path("bench-out"), help="Folder for profile-<precision>.json/.md."),
) -> None:
    """ORT profile of each encoder graph: top operator types and nodes with their share of time."""
    import shlex

    from mmmos.runtime.errors import MMMOSRuntimeError

    from .op_profile import profile_bundle, write

    cmd = shlex.join(["mmmos-bench", "profile", "--bundle", str(bundle), "--precision", precision, "--top", str(top),
                      "--threads", str(threads), "--warmup", str(warmup), "--runs", str(runs), "--out", str(out)]
                     + (["--clip", str(clip)] if clip else []))
    try:
        prof = profile_bundle(bundle, precision, threads, warmup, runs, top, clip, _say)
    except (ValueError, MMMOSRuntimeError) as exc:
        typer.echo(f"mmmos-bench profile: {exc}", err=True)
        raise typer.Exit(2) from None
    jp, mp = write(prof, out, cmd)
    _say(f"wrote {jp} and {mp}")
    typer.echo(mp.read_text())


def usable_cpus() -> int:
    """CPUs this process may run on (affinity), at least 1."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (`mmmos-bench`)."""
    app(args=list(sys.argv[1:] if argv is None else argv), prog_name="mmmos-bench")


if __name__ == "__main__":
    main()
