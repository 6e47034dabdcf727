"""mmmos-train: cache encoder outputs, fit one member, train a grid, select the ensemble.

    mmmos-train cache MANIFEST --bundle ENCODERS --out CACHE [--root DIR]
    mmmos-train fit CACHE --dev DEV_CACHE --aggregator mlp --loss utmos [--encoders wavlm,muq,m2d] --out MEMBER
    mmmos-train grid CONFIG.toml [--train CACHE --dev DEV_CACHE --out RUNS] [--jobs N]
    mmmos-train select RUNS --natural DEV_CACHE --synthetic PAM_CACHE --rule top-k-both --k 8 --out MEMBERS
    mmmos-export OUT --encoders-from ENCODERS --members MEMBERS
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, help=__doc__, no_args_is_help=True)

_USER_ERRORS = (FileNotFoundError, FileExistsError, ValueError, KeyError, FloatingPointError)


def _fail(e: BaseException) -> typer.Exit:
    typer.echo(f"mmmos-train: {e.args[0] if isinstance(e, KeyError) and e.args else e}", err=True)
    return typer.Exit(2)


@app.command()
def cache(
    manifest: Annotated[Path, typer.Argument(help="labelled CSV (challenge format) or JSONL manifest")],
    bundle: Annotated[Path, typer.Option(help="bundle whose encoder graphs compute the features")],
    out: Annotated[Path, typer.Option(help="cache folder (created; resumed if it holds an unfinished cache)")],
    root: Annotated[Path | None, typer.Option(help="base folder for relative paths and /your_path/")] = None,
    shard_size: Annotated[int, typer.Option(help="clips per shard (the unit of resumption)")] = 64,
    dtype: Annotated[str, typer.Option(help="storage dtype: float16 or float32")] = "float16",
    backend: Annotated[str, typer.Option(help="runtime backend (ort-cpu, ort-cuda, tensorrt, auto)")] = "ort-cpu",
    batch_size: Annotated[int, typer.Option(help="windows per encoder-graph call")] = 8,
    threads: Annotated[int, typer.Option(help="ONNX Runtime threads (0 = physical cores)")] = 0,
    overwrite: Annotated[bool, typer.Option(help="replace a cache of another manifest or bundle")] = False,
    frames: Annotated[bool, typer.Option(help="store frame outputs (needed by blstm-t members)")] = True,
) -> None:
    """Run the bundle's encoder graphs over every clip once and store the outputs per window."""
    from mmmos.training.cache import build_cache

    try:
        index = build_cache(manifest, bundle, out, root=root, shard_size=shard_size, dtype=dtype, backend=backend,
                            batch_size=batch_size, threads=threads, overwrite=overwrite, frames=frames)
    except _USER_ERRORS as e:
        raise _fail(e) from None
    typer.echo(f"cache {out}: {index['n_manifest_clips']} clips, {index['n_encode_errors']} encode errors, "
               f"{len(index['skipped'])} manifest rows skipped; outputs {sorted(index['outputs'])}", err=True)


@app.command()
def fit(
    cache_dir: Annotated[Path, typer.Argument(metavar="CACHE", help="training cache")],
    dev: Annotated[Path, typer.Option(help="dev cache (best epoch chosen on it)")],
    out: Annotated[Path, typer.Option(help="member folder to write")],
    aggregator: Annotated[str, typer.Option(help="mlp | blstm-t | blstm-e")] = "mlp",
    loss: Annotated[str, typer.Option(help="utmos | contrastive | dcq | ccc")] = "utmos",
    encoders: Annotated[str | None, typer.Option(help="comma list, e.g. wavlm,muq,m2d (default: all)")] = None,
    epochs: Annotated[int, typer.Option()] = 10,
    batch_size: Annotated[int, typer.Option()] = 16,
    lr: Annotated[float, typer.Option()] = 1e-4,
    seed: Annotated[int, typer.Option()] = 42,
    hidden: Annotated[int, typer.Option(help="BLSTM aggregator width")] = 256,
    head_layers: Annotated[int, typer.Option()] = 1,
    layer_mix: Annotated[str, typer.Option(help="shared | per-axis (mlp only)")] = "shared",
    select_by: Annotated[str, typer.Option(help="best epoch by dev 'loss' or mean 'srcc'")] = "loss",
    name: Annotated[str, typer.Option(help="member name (default aggregator-loss-encoders)")] = "",
    threads: Annotated[int, typer.Option(help="torch threads (0 = torch default; 1 suits small members)")] = 1,
    device: Annotated[str, typer.Option(help="cpu | cuda | auto")] = "cpu",
) -> None:
    """Train one member on cached features; write member.json, weights.safetensors, history.json."""
    from mmmos.training.cache_store import CachedSet
    from mmmos.training.trainer import FitOptions
    from mmmos.training.trainer import fit as run_fit

    try:
        opts = FitOptions(
            aggregator=aggregator, loss=loss,
            encoders=tuple(e.strip() for e in encoders.split(",") if e.strip()) if encoders else None,
            epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, hidden=hidden, head_layers=head_layers,
            layer_mix=layer_mix, select_by=select_by, name=name, threads=threads, device=device,
        )
        res = run_fit(CachedSet(cache_dir), CachedSet(dev), opts, out_dir=out)
    except _USER_ERRORS as e:
        raise _fail(e) from None
    srcc = {a: round(v["SRCC"], 4) for a, v in res.dev_scores["dev"]["utterance"].items()}
    typer.echo(f"{res.member.config.name}: best epoch {res.best_epoch}, dev SRCC {srcc} -> {out}", err=True)


@app.command()
def grid(
    config: Annotated[Path, typer.Argument(help="grid TOML (see training/default_grid.toml)")],
    train: Annotated[Path | None, typer.Option(help="training cache (overrides [data].train)")] = None,
    dev: Annotated[Path | None, typer.Option(help="dev cache (overrides [data].dev)")] = None,
    out: Annotated[Path | None, typer.Option(help="runs folder (overrides [data].out)")] = None,
    jobs: Annotated[int, typer.Option(help="configs trained in parallel processes")] = 1,
    force: Annotated[bool, typer.Option(help="retrain configs that already have a member.json")] = False,
) -> None:
    """Train every config entry of a grid TOML into OUT/<name>/ (resumable); summary in OUT/grid.json."""
    from mmmos.training.grid import load_grid, run_grid

    try:
        data, configs = load_grid(config)
        paths = {"train": train or data.get("train"), "dev": dev or data.get("dev"), "out": out or data.get("out")}
        missing = [k for k, v in paths.items() if v is None]
        if missing:
            raise ValueError(f"no {', '.join(missing)} path: pass --{' --'.join(missing)} or set them in [data].")
        rows = run_grid(configs, paths["train"], paths["dev"], paths["out"], jobs=jobs, force=force)  # type: ignore[arg-type]
    except _USER_ERRORS as e:
        raise _fail(e) from None
    failed = [r for r in rows if str(r.get("status", "")).startswith("failed")]
    for r in rows:
        typer.echo(f"{r['name']}: {r['status']}", err=True)
    if failed:
        raise typer.Exit(1)


@app.command()
def select(
    runs: Annotated[list[Path], typer.Argument(help="member folders, or folders of them (grid outputs)")],
    natural: Annotated[Path, typer.Option(help="natural dev cache")],
    out: Annotated[Path, typer.Option(help="members folder for mmmos-export --members")],
    synthetic: Annotated[Path | None, typer.Option(help="synthetic (PAM-like) dev cache")] = None,
    rule: Annotated[str, typer.Option(help="top-k-both | top-k-synthetic | top-k-natural")] = "top-k-both",
    k: Annotated[int, typer.Option(help="members to keep")] = 8,
    metric: Annotated[str, typer.Option(help="ranking metric, mean over axes: srcc | lcc | ktau | mse")] = "srcc",
    overwrite: Annotated[bool, typer.Option(help="write into a non-empty OUT")] = False,
) -> None:
    """Rank members on the dev sets and write the top k as a members folder."""
    from mmmos.training.cache_store import CachedSet
    from mmmos.training.selection import select as run_select

    try:
        index = run_select(runs, CachedSet(natural), CachedSet(synthetic) if synthetic else None, out,
                           rule=rule, k=k, metric=metric, overwrite=overwrite)
    except _USER_ERRORS as e:
        raise _fail(e) from None
    typer.echo(json.dumps({"members": index["members"], "scores": index["selection"]["scores"]}, indent=1))


def main() -> None:
    """Console-script entry point for ``mmmos-train``."""
    app(prog_name="mmmos-train")


if __name__ == "__main__":
    main()
