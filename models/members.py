"""One ensemble member: its config, WavLM layer mix, aggregator and four de-normalised heads.

A member reads encoder-graph outputs by name (``<enc>_pooled``, or ``<enc>_frames`` + ``<enc>_steps`` for
``blstm-t``) and returns scores ``[B, 4]`` in AXES order (PQ, PC, CE, CU) on the rating scale.
The ``blstm-t`` and ``blstm-e`` aggregators are our reconstruction (see ``mmmos.models.aggregators``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mmmos import AXES
from mmmos.models.aggregators import (
    BLSTMEncoderAggregator,
    BLSTMTimeAggregator,
    LayerMix,
    MLPAggregator,
    make_head,
)
from mmmos.models.fusion import l2_normalize

AGGREGATORS: tuple[str, ...] = ("mlp", "blstm-t", "blstm-e")
LAYER_MIXES: tuple[str, ...] = ("shared", "per-axis")
ENCODER_NAMES: tuple[str, ...] = ("wavlm", "muq", "m2d")

Dims = dict[str, Any]
"""``{"wavlm": (L, D), "muq": D, "m2d": D}``: the encoder output sizes a member is built for."""


@dataclass
class MemberConfig:
    """Hyper-parameters and target statistics of one member (JSON round trip via ``to_dict``/``from_dict``).

    ``head_hidden=None`` keeps the input width inside the heads (the Audiobox rule); ``hidden`` is the
    aggregator width (BLSTM variants only); ``target_mean``/``target_std`` de-normalise, in AXES order.
    """

    aggregator: str = "mlp"
    loss: str = "utmos"
    encoders: tuple[str, ...] = ENCODER_NAMES
    layer_mix: str = "shared"
    head_layers: int = 1
    head_hidden: int | None = None
    head_ln: bool = False
    hidden: int = 256
    target_mean: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)
    target_std: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    name: str = ""

    def __post_init__(self) -> None:
        self.encoders = tuple(self.encoders)
        self.target_mean = tuple(float(v) for v in self.target_mean)
        self.target_std = tuple(float(v) for v in self.target_std)
        if self.aggregator not in AGGREGATORS:
            raise ValueError(f"unknown aggregator {self.aggregator!r}; use one of {AGGREGATORS}.")
        if self.layer_mix not in LAYER_MIXES:
            raise ValueError(f"unknown layer_mix {self.layer_mix!r}; use one of {LAYER_MIXES}.")
        if not self.encoders or any(e not in ENCODER_NAMES for e in self.encoders):
            raise ValueError(f"encoders must be a non-empty subset of {ENCODER_NAMES}, got {self.encoders}.")
        if self.layer_mix == "per-axis" and self.aggregator != "mlp":
            raise ValueError("layer_mix='per-axis' works only with the 'mlp' aggregator; use 'shared'.")
        if len(self.target_mean) != len(AXES) or len(self.target_std) != len(AXES):
            raise ValueError(f"target_mean and target_std need {len(AXES)} values each (AXES order {AXES}).")
        if any(s <= 0 for s in self.target_std):
            raise ValueError(f"target_std must be positive, got {self.target_std}.")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        for key in ("encoders", "target_mean", "target_std"):
            d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MemberConfig:
        """Inverse of ``to_dict``; unknown keys are an error (a typo would otherwise be silently ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown MemberConfig keys {unknown}; known keys are {sorted(known)}.")
        return cls(**d)


def _dim(dims: Dims, name: str) -> int:
    """Feature width of encoder ``name`` (WavLM's entry is ``(L, D)``)."""
    if name not in dims:
        raise KeyError(f"no dims for encoder {name!r}; pass dims with keys {sorted(dims)} plus {name!r}.")
    value = dims[name]
    return int(value[1]) if name == "wavlm" else int(value)


class Member(nn.Module):
    """One ensemble member: ``forward(outputs: dict[str, Tensor]) -> scores [B, 4]`` (de-normalised).

    ``input_names`` lists the encoder outputs it reads. Heads live in ``heads[axis]`` with Audiobox's
    layout, so an Audiobox checkpoint maps onto them key by key.
    """

    def __init__(self, config: MemberConfig, dims: Dims) -> None:
        super().__init__()
        self.config = config
        encs = config.encoders
        in_dims = [_dim(dims, e) for e in encs]
        self.layer_mix: LayerMix | None = None
        if "wavlm" in encs:
            self.layer_mix = LayerMix(int(dims["wavlm"][0]), per_axis=config.layer_mix == "per-axis")
        if config.aggregator == "mlp":
            self.aggregator: nn.Module = MLPAggregator(in_dims)
        elif config.aggregator == "blstm-t":
            self.aggregator = BLSTMTimeAggregator(in_dims, config.hidden)
        else:
            self.aggregator = BLSTMEncoderAggregator(in_dims, config.hidden)
        head_in = self.aggregator.out_dim
        self.heads = nn.ModuleDict(
            {axis: make_head(head_in, config.head_layers, config.head_hidden, config.head_ln) for axis in AXES}
        )
        self.register_buffer("target_mean", torch.tensor(config.target_mean, dtype=torch.float32))
        self.register_buffer("target_std", torch.tensor(config.target_std, dtype=torch.float32))
        if config.aggregator == "blstm-t":
            self.input_names: list[str] = [n for e in encs for n in (f"{e}_frames", f"{e}_steps")]
        else:
            self.input_names = [f"{e}_pooled" for e in encs]

    def _pooled_vectors(self, outputs: dict[str, Tensor]) -> list[Tensor]:
        """Normalised pooled vector per used encoder (WavLM: layer mix first, then L2)."""
        vectors = []
        for e in self.config.encoders:
            x = outputs[f"{e}_pooled"]
            if e == "wavlm":
                assert self.layer_mix is not None
                x = l2_normalize(self.layer_mix(x))
            vectors.append(x)  # muq/m2d pooled outputs are already L2-normalised in the encoder graph
        return vectors

    def embed(self, outputs: dict[str, Tensor]) -> Tensor:
        """The aggregator's output fed to the heads: ``[B, H]`` or ``[B, 4, H]`` (per-axis layer mix)."""
        agg = self.config.aggregator
        if agg == "blstm-t":
            frames = []
            step_mask: Tensor | None = None
            for e in self.config.encoders:
                f = outputs[f"{e}_frames"]
                s = outputs[f"{e}_steps"]
                if e == "wavlm":
                    assert self.layer_mix is not None
                    f = self.layer_mix(f)  # [B, L, S, D] -> [B, S, D]
                # The union step mask can hold steps where this encoder has no frame: zero them by its own
                # mask, so nothing but valid frames can reach the BLSTM (the contract already says 0 there).
                frames.append(f * s.unsqueeze(-1).to(f.dtype))
                step_mask = s if step_mask is None else torch.maximum(step_mask, s)
            assert step_mask is not None
            return self.aggregator(frames, step_mask)
        return self.aggregator(self._pooled_vectors(outputs))

    def forward(self, outputs: dict[str, Tensor]) -> Tensor:
        """Scores ``[B, 4]`` in AXES order, de-normalised with the target statistics."""
        h = self.embed(outputs)
        if h.dim() == 3:  # per-axis: axis i reads its own mixed vector
            z = torch.cat([self.heads[a](h[:, i]) for i, a in enumerate(AXES)], dim=-1)
        else:
            z = torch.cat([self.heads[a](h) for a in AXES], dim=-1)
        return z * self.target_std + self.target_mean
