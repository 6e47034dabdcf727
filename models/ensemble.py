"""The ensemble graph: every member on the shared encoder outputs, plus the member mean and spread.

``Ensemble.forward(outputs) -> (scores [B, M, 4], mean [B, 4], std [B, 4])`` with std the population
std over members (0 for one member). For ONNX export, ``input_names`` fixes the positional order used by
``forward_flat``.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn

from mmmos.models.members import AGGREGATORS, ENCODER_NAMES, Dims, Member, MemberConfig

LOSSES: tuple[str, ...] = ("utmos", "contrastive", "dcq", "ccc")


class Ensemble(nn.Module):
    """A list of members scored together; see the module docstring for the outputs."""

    def __init__(self, members: list[Member]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an Ensemble needs at least one member.")
        self.members = nn.ModuleList(members)
        self.input_names: list[str] = sorted({n for m in members for n in m.input_names})
        self.output_names: list[str] = ["scores", "mean", "std"]

    def forward(self, outputs: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Scores per member ``[B, M, 4]``, their mean ``[B, 4]`` and population std ``[B, 4]``."""
        missing = [n for n in self.input_names if n not in outputs]
        if missing:
            raise KeyError(
                f"the ensemble needs encoder outputs {missing}; run those encoder graphs (frames=True "
                "for blstm-t members) and pass their outputs by name."
            )
        scores = torch.stack([m(outputs) for m in self.members], dim=1)
        mean = scores.mean(dim=1)
        std = torch.sqrt(((scores - mean.unsqueeze(1)) ** 2).mean(dim=1))
        return scores, mean, std

    def forward_flat(self, *tensors: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``forward`` with the inputs given positionally in ``input_names`` order (for ONNX export)."""
        if len(tensors) != len(self.input_names):
            raise ValueError(
                f"forward_flat expects {len(self.input_names)} tensors ({self.input_names}), got {len(tensors)}."
            )
        return self.forward(dict(zip(self.input_names, tensors, strict=True)))


class FlatEnsemble(nn.Module):
    """Wrapper whose ``forward`` is ``Ensemble.forward_flat`` (what ``torch.onnx.export`` traces)."""

    def __init__(self, ensemble: Ensemble) -> None:
        super().__init__()
        self.ensemble = ensemble

    def forward(self, *tensors: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Positional inputs in ``ensemble.input_names`` order."""
        return self.ensemble.forward_flat(*tensors)


def _subsets(encoders: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Encoder subsets to cycle through: all of them first, then each single, then each pair (bundle order)."""
    subsets = [encoders]
    for k in (1, 2):
        if k < len(encoders):
            subsets += list(itertools.combinations(encoders, k))
    return subsets


def random_members(
    dims: Dims,
    n: int,
    seed: int = 0,
    encoders: tuple[str, ...] = ENCODER_NAMES,
    aggregators: tuple[str, ...] = AGGREGATORS,
    hidden: int = 64,
) -> list[Member]:
    """``n`` members with random weights, cycling aggregators, losses and encoder subsets (for ``--random-init``).

    Deterministic given ``seed`` and independent of the global torch RNG. Target statistics are random but
    plausible for a 0-10 scale (mean in [4, 7], std in [1, 2]); heads and layer-mix weights are randomised
    so that members disagree (a non-zero std). Members with ``blstm-t`` need the encoders' frame outputs.
    """
    if n < 1:
        raise ValueError(f"random_members needs n >= 1, got {n}.")
    encoders = tuple(encoders)
    unknown = [a for a in aggregators if a not in AGGREGATORS]
    if unknown or not aggregators:
        raise ValueError(f"aggregators must be a non-empty subset of {AGGREGATORS}, got {aggregators}.")
    subsets = _subsets(encoders)
    gen = torch.Generator().manual_seed(seed)
    members = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i in range(n):
            agg = aggregators[i % len(aggregators)]
            loss = LOSSES[i % len(LOSSES)]
            subset = subsets[(i // len(aggregators)) % len(subsets)] if i else encoders
            layer_mix = "per-axis" if agg == "mlp" and i % 2 == 1 and "wavlm" in subset else "shared"
            mean = (4.0 + 3.0 * torch.rand(4, generator=gen)).tolist()
            std = (1.0 + torch.rand(4, generator=gen)).tolist()
            cfg = MemberConfig(
                aggregator=agg,
                loss=loss,
                encoders=subset,
                layer_mix=layer_mix,
                head_layers=2,
                head_hidden=hidden if agg == "mlp" else None,
                head_ln=i % 2 == 0,
                hidden=hidden,
                target_mean=tuple(mean),
                target_std=tuple(std),
                name=f"random-{i:02d}-{agg}-{loss}-{'+'.join(subset)}",
            )
            member = Member(cfg, dims)
            if member.layer_mix is not None:
                with torch.no_grad():
                    member.layer_mix.weight.normal_(0.0, 1.0)
            member.eval()
            members.append(member)
    return members
