"""Train one member on cached encoder outputs (``mmmos-train fit``).

Windows of a clip share the clip's label: training is per window, evaluation per clip (the weighted mean
of its window scores, weights = valid seconds / 10, as scoring does). Targets are z-normalised with the
training clips' mean/std (pandas-style ddof=1, as the reference code), dev with the same statistics (the
reference code used the dev set's own, research/paper.md 9.1.5). Adam, constant lr 1e-4, best-by-dev
checkpoint (dev loss, as the reference code, or dev mean SRCC).
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from mmmos import AXES
from mmmos.models.members import Member, MemberConfig
from mmmos.runtime.windows import weighted_segment_mean
from mmmos.training.cache_store import CachedSet
from mmmos.training.losses import LOSSES, get_loss
from mmmos.training.member_io import identity_mismatch, save_member
from mmmos.training.metrics import evaluate, mean_metric

SELECT_BY: tuple[str, ...] = ("loss", "srcc")


@dataclass
class FitOptions:
    """Everything ``fit`` needs besides the data; the grid's TOML keys are these field names."""

    aggregator: str = "mlp"
    loss: str = "utmos"
    encoders: tuple[str, ...] | None = None  # None = every encoder in the cache, in bundle order
    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-4
    seed: int = 42
    hidden: int = 256
    head_layers: int = 1
    head_hidden: int | None = None
    head_ln: bool = False
    layer_mix: str = "shared"
    select_by: str = "loss"
    name: str = ""
    # Members are small: on CPU one thread is fastest (more threads mostly spin, much worse on a shared machine).
    threads: int = 1  # 0 = leave torch's default
    device: str = "cpu"  # "cpu" | "cuda" | "auto" (cuda when available)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}.")
        if self.select_by not in SELECT_BY:
            raise ValueError(f"select_by must be one of {SELECT_BY}, got {self.select_by!r}.")
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError("epochs must be >= 1 and batch_size >= 2 (the pairwise losses need pairs).")
        if self.encoders is not None:
            self.encoders = tuple(self.encoders)

    def default_name(self, encoders: list[str]) -> str:
        """``<aggregator>-<loss>-<encoders joined by +>``, unless a name was given."""
        return self.name or f"{self.aggregator}-{self.loss}-{'+'.join(encoders)}"


@dataclass
class FitResult:
    """What a fit produced: the best member (weights loaded), its dev scores and per-epoch history."""

    member: Member
    dims: dict[str, Any]
    best_epoch: int
    dev_scores: dict[str, Any]
    history: list[dict[str, Any]]
    out_dir: Path | None = None


def target_stats(labels: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-axis mean and std (ddof=1) of clip labels; a constant axis gets std 1 so z-scores stay finite."""
    mean = labels.mean(axis=0)
    std = labels.std(axis=0, ddof=1) if labels.shape[0] > 1 else np.ones(labels.shape[1])
    std = np.where(np.isfinite(std) & (std > 1e-8), std, 1.0)
    return [float(v) for v in mean], [float(v) for v in std]


def _check_labels(data: CachedSet, what: str) -> None:
    if data.n_clips < 2:
        raise ValueError(f"the {what} cache {data.root} has {data.n_clips} clips; training needs at least 2.")
    bad = ~np.isfinite(data.labels).all(axis=1)
    if bad.any():
        first = [data.ids[k] for k in np.flatnonzero(bad)[:3]]
        raise ValueError(
            f"{int(bad.sum())} clips of the {what} cache lack labels (first: {first}); cache a labelled manifest."
        )


def resolve_encoders(data: CachedSet, wanted: tuple[str, ...] | None) -> list[str]:
    """The member's encoders in bundle order; every one must be in the cache."""
    available = data.encoders()
    if wanted is None:
        return available
    unknown = [e for e in wanted if e not in available]
    if unknown:
        raise ValueError(f"encoders {unknown} are not in cache {data.root} (it has {available}); pick from those.")
    return [e for e in available if e in wanted]


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` (must be available) or ``auto`` (cuda when available)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for but torch sees no CUDA GPU; use --device cpu.")
    if not (name == "cpu" or name.startswith("cuda")):
        raise ValueError(f"unknown device {name!r}; use cpu, cuda or auto.")
    return torch.device(name)


def _to_tensors(arrays: dict[str, np.ndarray], device: torch.device | None = None) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v).to(device) if device is not None else torch.from_numpy(v) for k, v in arrays.items()}


@torch.no_grad()
def predict_clips(member: Member, data: CachedSet, batch_size: int = 64) -> np.ndarray:
    """Clip-level de-normalised scores ``[N, 4]``: weighted mean of window scores per clip."""
    was_training = member.training
    member.eval()
    device = next(member.parameters()).device
    names = list(member.input_names)
    window_scores = np.zeros((data.n_windows, len(AXES)))
    for start in range(0, data.n_windows, batch_size):
        idx = np.arange(start, min(start + batch_size, data.n_windows))
        window_scores[idx] = member(_to_tensors(data.gather(names, idx), device)).double().cpu().numpy()
    member.train(was_training)
    return weighted_segment_mean(window_scores, data.window_weights, data.window_clip, data.n_clips)


def dev_report(member: Member, data: CachedSet, loss_name: str, mean: list[float], std: list[float]) -> dict[str, Any]:
    """Dev loss (clip level, z-scored with the TRAIN statistics) and challenge metrics of a member."""
    pred = predict_clips(member, data)
    m, s = np.asarray(mean), np.asarray(std)
    zp = torch.from_numpy((pred - m) / s)
    zt = torch.from_numpy((data.labels - m) / s)
    loss = float(get_loss(loss_name)(zp, zt))
    metrics = evaluate(data.labels, pred, ids=data.ids, systems=data.systems)
    return {"loss": loss, "metrics": metrics, "mean_srcc": mean_metric(metrics, "SRCC")}


def fit(
    train: CachedSet,
    dev: CachedSet,
    opts: FitOptions,
    out_dir: Path | None = None,
    progress: bool = True,
) -> FitResult:
    """Train one member on ``train``, keep the epoch best on ``dev``, and write it to ``out_dir`` if given."""
    _check_labels(train, "training")
    _check_labels(dev, "dev")
    encoders = resolve_encoders(train, opts.encoders)
    why = identity_mismatch(train.encoders_identity, dev.encoders_identity, encoders)
    if why is not None:
        raise ValueError(
            f"train cache {train.root} and dev cache {dev.root} differ: {why}; cache both with one bundle."
        )
    if opts.threads > 0:
        torch.set_num_threads(opts.threads)
    device = resolve_device(opts.device)
    torch.manual_seed(opts.seed)
    rng = np.random.default_rng(opts.seed)
    mean, std = target_stats(train.labels)
    config = MemberConfig(
        aggregator=opts.aggregator,
        loss=opts.loss,
        encoders=tuple(encoders),
        layer_mix=opts.layer_mix,
        head_layers=opts.head_layers,
        head_hidden=opts.head_hidden,
        head_ln=opts.head_ln,
        hidden=opts.hidden,
        target_mean=tuple(mean),
        target_std=tuple(std),
        name=opts.default_name(encoders),
    )
    dims = {e: v for e, v in train.dims().items() if e in encoders}
    member = Member(config, dims).to(device)
    names = list(member.input_names)
    train.gather(names, np.zeros(1, np.int64))  # fail early, with the cache's message, on a missing output
    loss_fn = get_loss(opts.loss)
    optim = torch.optim.Adam(member.parameters(), lr=opts.lr)
    m_t = torch.tensor(mean, dtype=torch.float32, device=device)
    s_t = torch.tensor(std, dtype=torch.float32, device=device)
    z_all = torch.from_numpy(((train.labels - np.asarray(mean)) / np.asarray(std)).astype(np.float32)).to(device)

    history: list[dict[str, Any]] = []
    best: tuple[float, int, dict[str, torch.Tensor], dict[str, Any]] | None = None
    bar = tqdm(range(1, opts.epochs + 1), desc=config.name, file=sys.stderr, disable=not progress, leave=False)
    for epoch in bar:
        t0 = time.perf_counter()
        member.train()
        order = rng.permutation(train.n_windows)
        total, steps = 0.0, 0
        for start in range(0, order.size, opts.batch_size):
            idx = order[start : start + opts.batch_size]
            if idx.size < 2:  # a lone last window carries no pair information and breaks CCC
                continue
            x = _to_tensors(train.gather(names, idx), device)
            z_pred = (member(x) - m_t) / s_t
            loss = loss_fn(z_pred, z_all[torch.from_numpy(train.window_clip[idx]).to(device)])
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"{config.name}: the training loss became {value} at epoch {epoch}; lower the learning rate."
                )
            total += value
            steps += 1
        report = dev_report(member, dev, opts.loss, mean, std)
        key = report["loss"] if opts.select_by == "loss" else -report["mean_srcc"]
        if not math.isfinite(key):
            key = math.inf
        row = {"epoch": epoch, "train_loss": total / max(steps, 1), "dev_loss": report["loss"],
               "dev_mean_srcc": report["mean_srcc"], "seconds": time.perf_counter() - t0}
        history.append(row)
        bar.set_postfix(dev_loss=f"{report['loss']:.4f}", srcc=f"{report['mean_srcc']:.3f}")
        if best is None or key < best[0]:
            best = (key, epoch, copy.deepcopy(member.state_dict()), report)
    assert best is not None
    _, best_epoch, state, report = best
    member.load_state_dict(state)
    member.cpu().eval()
    dev_scores = {"dev": {**report["metrics"], "loss": report["loss"]}}
    result = FitResult(member=member, dims=dims, best_epoch=best_epoch, dev_scores=dev_scores, history=history)
    if out_dir is not None:
        training = {**{k: v for k, v in asdict(opts).items() if k != "extra"}, **opts.extra,
                    "best_epoch": best_epoch, "train_cache": str(train.root), "dev_cache": str(dev.root),
                    "n_train_clips": train.n_clips, "n_train_windows": train.n_windows}
        training["encoders"] = list(encoders)
        save_member(out_dir, member, dims, train.encoders_identity, dev_scores, training)
        (out_dir / "history.json").write_text(json.dumps(history, indent=1) + "\n")
        result.out_dir = out_dir
    return result
