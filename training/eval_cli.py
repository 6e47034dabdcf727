"""``mmmos-eval PRED TRUTH``: challenge metrics for a prediction file against labels.

PRED: the challenge submission format (``wavID,PQ,PC,CE,CU`` lines, header optional), ``mmmos-score``
output (CSV or JSONL with a ``path``/``id`` column and the axes), or any manifest-like file with the axes.
TRUTH: a labelled manifest (challenge CSV, Audiobox-style JSONL, human-annotation JSONL with raw ratings).
Rows are matched by id, then by path, then by file stem; unmatched rows are reported.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from mmmos import AXES
from mmmos.training.manifests import _ID_KEYS, _PATH_KEYS, _SYSTEM_KEYS, AXIS_ALIASES, _norm_key, _rows, _value
from mmmos.training.metrics import evaluate, format_table

app = typer.Typer(add_completion=False, help=__doc__)


def _stem(s: str) -> str:
    base = s.replace("\\", "/").rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[0] if "." in base else base


def read_scores(path: Path) -> list[dict[str, Any]]:
    """Rows ``{"id", "path", "values" [4] (AXES order, NaN if absent), "system", "error"}`` of a score/label file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; pass a CSV or JSONL file.")
    first = path.read_text(encoding="utf-8-sig").lstrip().split("\n", 1)[0]
    headerless = path.suffix.lower() not in (".jsonl", ".json", ".ndjson") and not any(
        _norm_key(c) in AXIS_ALIASES or _norm_key(c) in _ID_KEYS + _PATH_KEYS for c in first.split(",")
    )
    out: list[dict[str, Any]] = []
    if headerless:
        # The challenge submission format: wavID,PQ,PC,CE,CU with no header.
        for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
            if not line.strip():
                continue
            parts = [p.strip() for p in line.split(",")]
            if len(parts) != 5:
                raise ValueError(f"{path}:{n} has {len(parts)} fields; a headerless file must be wavID,PQ,PC,CE,CU.")
            out.append({"id": parts[0], "path": parts[0], "values": [float(v) for v in parts[1:]],
                        "system": None, "error": None})
        return out
    for row in _rows(path):
        values = [math.nan] * 4
        for k, v in row.items():
            axis = AXIS_ALIASES.get(k)
            if axis is not None:
                values[AXES.index(axis)] = _value(v)
        raw_path = next((str(row[k]) for k in _PATH_KEYS if row.get(k) not in (None, "")), None)
        rid = next((str(row[k]) for k in _ID_KEYS if row.get(k) not in (None, "")), raw_path)
        system = next((str(row[k]) for k in _SYSTEM_KEYS if row.get(k) not in (None, "")), None)
        err = row.get("error")
        out.append({"id": rid, "path": raw_path or rid, "values": values, "system": system,
                    "error": str(err) if err not in (None, "") else None})
    return out


def align(pred: list[dict[str, Any]], truth: list[dict[str, Any]]) -> tuple[list[int], list[int], list[str]]:
    """Pair prediction rows with truth rows (by id, then path, then stem); returns indices and unmatched ids."""
    maps: list[dict[str, int]] = [{}, {}, {}]
    for k, r in enumerate(truth):
        for m, key in zip(maps, (r["id"], r["path"], _stem(r["path"] or r["id"])), strict=True):
            if key is not None:
                m.setdefault(key, k)
        maps[2].setdefault(_stem(r["id"]), k)
    pi: list[int] = []
    ti: list[int] = []
    unmatched: list[str] = []
    used: set[int] = set()
    for k, r in enumerate(pred):
        hit = None
        for m, key in zip(maps, (r["id"], r["path"], _stem(r["path"] or r["id"])), strict=True):
            if key in m:
                hit = m[key]
                break
        if hit is None:
            hit = maps[2].get(_stem(r["id"] or ""))
        if hit is None or hit in used:
            unmatched.append(str(r["id"]))
            continue
        used.add(hit)
        pi.append(k)
        ti.append(hit)
    return pi, ti, unmatched


def evaluate_files(pred_path: Path, truth_path: Path) -> dict[str, Any]:
    """Read, align and evaluate two files; the result is :func:`metrics.evaluate`'s plus a ``matching`` block."""
    pred, truth = read_scores(pred_path), read_scores(truth_path)
    errors = [r["id"] for r in pred if r["error"]]
    pred = [r for r in pred if not r["error"]]
    pi, ti, unmatched = align(pred, truth)
    if not pi:
        raise ValueError(f"no row of {pred_path} matches a row of {truth_path} by id, path or file name.")
    p = np.array([pred[k]["values"] for k in pi], np.float64)
    t = np.array([truth[k]["values"] for k in ti], np.float64)
    keep = np.isfinite(p).all(1) & np.isfinite(t).all(1)
    ids = [str(truth[k]["id"]) for k in ti]
    systems = [truth[k]["system"] for k in ti]
    idx = np.flatnonzero(keep)
    res = evaluate(t[idx], p[idx], ids=[ids[k] for k in idx], systems=[systems[k] for k in idx])
    res["matching"] = {
        "matched": len(pi), "used": int(keep.sum()), "unmatched_predictions": len(unmatched),
        "first_unmatched": unmatched[:5], "error_rows": len(errors), "truth_rows": len(truth),
    }
    return res


@app.command()
def run(
    pred: Annotated[Path, typer.Argument(help="predictions: CSV/JSONL with id/path and PQ,PC,CE,CU")],
    truth: Annotated[Path, typer.Argument(help="labels: challenge CSV or JSONL manifest")],
    json_out: Annotated[
        Path | None, typer.Option("--json", help="where to write the JSON (default: PRED.metrics.json)")
    ] = None,
) -> None:
    """Print the per-axis utterance/system MSE, LCC, SRCC, KTAU table and write it as JSON."""
    try:
        res = evaluate_files(pred, truth)
    except (FileNotFoundError, ValueError) as e:
        typer.echo(f"mmmos-eval: {e}", err=True)
        raise typer.Exit(2) from None
    m = res["matching"]
    if m["unmatched_predictions"] or m["error_rows"] or m["used"] < m["matched"]:
        typer.echo(
            f"mmmos-eval: {m['unmatched_predictions']} prediction rows unmatched (first: {m['first_unmatched']}), "
            f"{m['error_rows']} error rows, {m['matched'] - m['used']} rows with missing values skipped",
            err=True,
        )
    typer.echo(format_table(res))
    out = json_out or pred.with_name(pred.name + ".metrics.json")
    out.write_text(json.dumps(res, indent=2) + "\n")
    typer.echo(f"wrote {out}", err=True)


def main() -> None:
    """Console-script entry point for ``mmmos-eval``."""
    app(prog_name="mmmos-eval")


if __name__ == "__main__":
    main()
