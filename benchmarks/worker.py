"""`python -m mmmos.benchmarks.worker KIND SPEC.json OUT.json`: one measurement in a fresh process.

KIND is `runtime` (one backend/precision, no torch imported), `torch` (eager + naive baselines),
`audiobox`, or `flops` (graph FLOPs; a profiled run of a big graph takes GBs, kept out of the CLI).
A fresh process per measurement makes the RSS high-water mark belong to that measurement alone and
makes cold start cold. Any failure is written as `{"error": "..."}` so the report can say why.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Any


def run(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Dispatch to the measurement for `kind`.

    Raises:
        ValueError: unknown kind.
    """
    if kind == "runtime":
        from .runtime_bench import bench_runtime

        return bench_runtime(spec)
    if kind == "torch":
        from .baselines import bench_torch

        return bench_torch(spec)
    if kind == "flops":
        from .flops import bundle_flops

        return {"flops": bundle_flops(spec["bundle"], measure=bool(spec.get("measure", True)))}
    if kind == "audiobox":
        from .baselines import bench_audiobox

        return bench_audiobox(spec)
    raise ValueError(f"unknown worker kind {kind!r}; use runtime, torch, audiobox or flops.")


def main(argv: list[str] | None = None) -> int:
    """Entry point: read the spec, run, write the result (or the error) as JSON; exit 0 either way."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3:
        print("usage: python -m mmmos.benchmarks.worker KIND SPEC.json OUT.json", file=sys.stderr)
        return 2
    kind, spec_path, out_path = args
    spec = json.loads(Path(spec_path).read_text())
    try:
        result = run(kind, spec)
    except Exception as exc:
        result = {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())}",
                  "traceback": traceback.format_exc(limit=8)}
    Path(out_path).write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
