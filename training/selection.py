"""``mmmos-train select``: rank trained members on a natural and a synthetic (PAM-like) dev set, keep the top k.

Each candidate member is scored on both dev caches (clip level, as scoring averages windows) with the
challenge metrics; a member's score on a set is the mean over the four axes of one utterance-level metric
(``srcc`` by default; ``mse`` counts lower as better). Rules:

- ``top-k-both``: rank by the mean of the member's two ranks (natural, synthetic); ties go to the better
  natural score. This is our reading of the paper's "top eight" (its selection rule could not be read).
- ``top-k-synthetic``: the k best on the synthetic set (the paper's "PAM top 4" variant, as we read it).
- ``top-k-natural``: the k best on the natural set.

The chosen members are copied into the members folder (format: members_format.md) with their dev scores.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

from mmmos.training.cache_store import CachedSet
from mmmos.training.member_io import MEMBER_JSON, identity_mismatch, load_member, read_member_json
from mmmos.training.metrics import evaluate, mean_metric
from mmmos.training.trainer import predict_clips

RULES: tuple[str, ...] = ("top-k-both", "top-k-synthetic", "top-k-natural")
RANK_METRICS: dict[str, str] = {"srcc": "SRCC", "lcc": "LCC", "ktau": "KTAU", "mse": "MSE"}


def find_members(paths: list[Path]) -> list[Path]:
    """Member folders among ``paths``: each path is a member folder or a folder of them (a grid's out)."""
    found: list[Path] = []
    for p in paths:
        if (p / MEMBER_JSON).is_file():
            found.append(p)
        elif p.is_dir():
            found.extend(sorted(c for c in p.iterdir() if (c / MEMBER_JSON).is_file()))
        else:
            raise FileNotFoundError(f"{p} is neither a member folder nor a folder of them; pass mmmos-train outputs.")
    if not found:
        raise FileNotFoundError(f"no member folder (with {MEMBER_JSON}) under {[str(p) for p in paths]}; train first.")
    return found


def _score(metrics: dict[str, Any], metric: str) -> float:
    """Higher-is-better score of an evaluate() result; NaN becomes -inf so broken members rank last."""
    value = mean_metric(metrics, RANK_METRICS[metric])
    if math.isnan(value):
        return -math.inf
    return -value if metric == "mse" else value


def _finite(scores: dict[str, float]) -> dict[str, float | None]:
    """Scores for JSON: -inf (a member with NaN metrics) becomes null."""
    return {n: (v if math.isfinite(v) else None) for n, v in scores.items()}


def _ranks(scores: dict[str, float]) -> dict[str, int]:
    """Rank 0 = best; stable for ties (input order)."""
    order = sorted(scores, key=lambda n: -scores[n])
    return {n: r for r, n in enumerate(order)}


def select(
    candidates: list[Path],
    natural: CachedSet,
    synthetic: CachedSet | None,
    out: Path,
    rule: str = "top-k-both",
    k: int = 8,
    metric: str = "srcc",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Score, rank and copy the chosen members into ``out``; returns the ``members.json`` content."""
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; use one of {', '.join(RULES)}.")
    if metric not in RANK_METRICS:
        raise ValueError(f"unknown metric {metric!r}; use one of {', '.join(RANK_METRICS)}.")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}.")
    if rule != "top-k-natural" and synthetic is None:
        raise ValueError(f"rule {rule} needs a synthetic dev cache (--synthetic); or use top-k-natural.")
    if synthetic is not None:
        why = identity_mismatch(natural.encoders_identity, synthetic.encoders_identity)
        if why is not None:
            raise ValueError(f"the natural and synthetic dev caches differ: {why}; cache both with one bundle.")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; pass --overwrite or choose another folder.")
    folders = find_members(candidates)
    names = [read_member_json(f)["name"] or f.name for f in folders]
    if len(set(names)) != len(names):
        raise ValueError(f"several candidates share a name ({names}); members need distinct names.")

    scored: dict[str, dict[str, Any]] = {}
    nat_score: dict[str, float] = {}
    syn_score: dict[str, float] = {}
    identity: dict[str, Any] | None = None
    for folder, name in zip(folders, names, strict=True):
        member, meta = load_member(folder)
        encs = list(member.config.encoders)
        why = identity_mismatch(meta["encoders_identity"], natural.encoders_identity, encs)
        if why is not None:
            raise ValueError(
                f"member {name} ({folder}) was trained on other features than the dev cache {natural.root}: "
                f"{why}; re-train it on a cache made with the same encoders bundle."
            )
        identity = natural.encoders_identity
        dev_scores = dict(meta.get("dev_scores", {}))
        for label, data, sink in (("natural", natural, nat_score), ("synthetic", synthetic, syn_score)):
            if data is None:
                continue
            res = evaluate(data.labels, predict_clips(member, data), ids=data.ids, systems=data.systems)
            dev_scores[label] = res
            sink[name] = _score(res, metric)
        scored[name] = {"folder": folder, "meta": meta, "dev_scores": dev_scores}

    nat_rank = _ranks(nat_score)
    syn_rank = _ranks(syn_score) if syn_score else {}
    if rule == "top-k-both":
        order = sorted(names, key=lambda n: ((nat_rank[n] + syn_rank[n]) / 2, nat_rank[n]))
    elif rule == "top-k-synthetic":
        order = sorted(names, key=lambda n: syn_rank[n])
    else:
        order = sorted(names, key=lambda n: nat_rank[n])
    chosen = order[: min(k, len(order))]

    out.mkdir(parents=True, exist_ok=True)
    for name in chosen:
        src = scored[name]["folder"]
        dst = out / name
        if dst.exists():
            shutil.rmtree(dst)
        dst.mkdir(parents=True)
        meta = dict(scored[name]["meta"])
        meta["dev_scores"] = scored[name]["dev_scores"]
        weights = meta.get("weights", "weights.safetensors")
        shutil.copy2(src / weights, dst / weights)
        (dst / MEMBER_JSON).write_text(json.dumps(meta, indent=1) + "\n")
    index = {
        "format_version": 1,
        "members": chosen,
        "encoders_identity": identity,
        "selection": {
            "rule": rule, "k": k, "metric": metric,
            "ranking": {"natural": sorted(nat_rank, key=nat_rank.__getitem__),
                        "synthetic": sorted(syn_rank, key=syn_rank.__getitem__)},
            "scores": {"natural": _finite(nat_score), "synthetic": _finite(syn_score)},
            "natural_cache": str(natural.root), "synthetic_cache": str(synthetic.root) if synthetic else None,
        },
    }
    (out / "members.json").write_text(json.dumps(index, indent=1, default=str) + "\n")
    return index
