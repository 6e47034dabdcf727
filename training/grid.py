"""``mmmos-train grid CONFIG.toml``: train every config of a TOML grid, sequentially or in worker processes.

TOML layout (see default_grid.toml):

```toml
[data]                 # optional; command-line options override; relative to the TOML's folder
train = "cache/train"
dev = "cache/dev"
out = "runs"

[defaults]             # any FitOptions field, applied to every config
epochs = 10

[[config]]             # one member per entry; any FitOptions field; name defaults to aggregator-loss-encoders
aggregator = "mlp"
loss = "utmos"
encoders = ["wavlm", "muq", "m2d"]
```

Each config trains into ``OUT/<name>/`` (a member folder). A config whose folder already holds a
``member.json`` is skipped, so an interrupted grid resumes; ``force`` retrains. ``OUT/grid.json`` sums up.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
import tomllib
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import fields
from importlib import resources
from pathlib import Path
from typing import Any

from mmmos.training.member_io import MEMBER_JSON, read_member_json
from mmmos.training.trainer import FitOptions

_FIT_FIELDS = {f.name for f in fields(FitOptions)} - {"extra"}


def default_grid_path() -> Path:
    """Path of the shipped ``default_grid.toml``."""
    return Path(str(resources.files("mmmos.training") / "default_grid.toml"))


def load_grid(path: Path) -> tuple[dict[str, Path], list[dict[str, Any]]]:
    """Parse a grid TOML: ``({"train"|"dev"|"out": path}, [config dicts with defaults applied])``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"grid file {path} does not exist; start from {default_grid_path()}.")
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path} is not valid TOML ({e}); fix the syntax.") from None
    data = {k: (path.parent / v).resolve() for k, v in doc.get("data", {}).items() if k in ("train", "dev", "out")}
    defaults = doc.get("defaults", {})
    configs = []
    for n, entry in enumerate(doc.get("config", []), 1):
        cfg = {**defaults, **entry}
        unknown = sorted(set(cfg) - _FIT_FIELDS)
        if unknown:
            raise ValueError(f"{path} config #{n} has unknown keys {unknown}; allowed: {sorted(_FIT_FIELDS)}.")
        if "encoders" in cfg:
            cfg["encoders"] = tuple(cfg["encoders"])
        configs.append(cfg)
    if not configs:
        raise ValueError(f"{path} has no [[config]] entries; add at least one.")
    names = [config_name(c) for c in configs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{path} has several configs named {dup}; give them distinct name keys.")
    return data, configs


def config_name(cfg: dict[str, Any]) -> str:
    """The member name of a config (its ``name``, or aggregator-loss-encoders)."""
    if cfg.get("name"):
        return str(cfg["name"])
    encs = "+".join(cfg.get("encoders") or ("all",))
    return f"{cfg.get('aggregator', 'mlp')}-{cfg.get('loss', 'utmos')}-{encs}"


def _train_one(train: str, dev: str, cfg: dict[str, Any], out: str, threads: int, progress: bool) -> dict[str, Any]:
    """Worker: open the caches, fit one config, return a summary row (runs in a subprocess with --jobs)."""
    from mmmos.training.cache_store import CachedSet
    from mmmos.training.trainer import fit

    t0 = time.perf_counter()
    opts = FitOptions(**{**cfg, "name": config_name(cfg), "threads": cfg.get("threads") or threads})
    res = fit(CachedSet(train), CachedSet(dev), opts, out_dir=Path(out), progress=progress)
    return {"name": opts.name, "out": out, "best_epoch": res.best_epoch, "dev_loss": res.dev_scores["dev"]["loss"],
            "seconds": round(time.perf_counter() - t0, 2), "status": "trained"}


def run_grid(
    configs: list[dict[str, Any]],
    train: Path,
    dev: Path,
    out: Path,
    jobs: int = 1,
    force: bool = False,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train every config into ``out/<name>``; returns one summary row per config, also written to grid.json."""
    out.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict[str, Any]] = {}
    todo = []
    for cfg in configs:
        name = config_name(cfg)
        folder = out / name
        if not force and (folder / MEMBER_JSON).is_file():
            meta = read_member_json(folder)
            rows[name] = {"name": name, "out": str(folder), "status": "skipped (already trained)",
                          "best_epoch": meta.get("training", {}).get("best_epoch")}
            continue
        todo.append((name, cfg, folder))
    if jobs <= 1:
        for name, cfg, folder in todo:
            print(f"grid: training {name}", file=sys.stderr)
            try:
                rows[name] = _train_one(str(train), str(dev), cfg, str(folder), 0, progress)
            except (ValueError, KeyError, FileNotFoundError, RuntimeError, ArithmeticError) as e:
                rows[name] = {"name": name, "status": f"failed: {type(e).__name__}: {e}"}
                print(f"grid: {name}: {rows[name]['status']}", file=sys.stderr)
    else:
        # Split the cores between workers so they do not oversubscribe; spawn keeps torch state clean.
        threads = max(1, (os.cpu_count() or 1) // jobs)
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            futures = {pool.submit(_train_one, str(train), str(dev), cfg, str(folder), threads, False): name
                       for name, cfg, folder in todo}
            for fut in as_completed(futures):
                name = futures[fut]
                try:
                    rows[name] = fut.result()
                except Exception as e:  # one failing config must not lose the others' results
                    rows[name] = {"name": name, "status": f"failed: {type(e).__name__}: {e}"}
                print(f"grid: {name}: {rows[name]['status']}", file=sys.stderr)
    ordered = [rows[config_name(c)] for c in configs]
    (out / "grid.json").write_text(json.dumps(ordered, indent=1) + "\n")
    return ordered
