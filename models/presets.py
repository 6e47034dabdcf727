"""Named encoder size presets: ``tiny`` (same architectures, small, for tests) and ``full`` (released sizes).

``build_encoders(preset, seed)`` makes the three encoders in bundle order (wavlm, muq, m2d) with
deterministic random weights; checkpoint loaders replace those weights for real models.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmmos.models.m2d import M2D, M2DConfig
from mmmos.models.muq import MuQ, MuQConfig
from mmmos.models.wavlm import WavLM, WavLMConfig

ENCODER_ORDER: tuple[str, ...] = ("wavlm", "muq", "m2d")
"""Bundle order of the encoders; every dict of encoders in mmmos follows it."""


@dataclass(frozen=True)
class Preset:
    """One size preset: a config per encoder."""

    name: str
    wavlm: WavLMConfig
    muq: MuQConfig
    m2d: M2DConfig


PRESETS: dict[str, Preset] = {
    "tiny": Preset("tiny", WavLMConfig.tiny(), MuQConfig.tiny(), M2DConfig.tiny()),
    "full": Preset("full", WavLMConfig.full(), MuQConfig.full(), M2DConfig.full()),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; an unknown name raises a KeyError listing the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}.") from None


def build_encoders(preset: Preset | str, seed: int = 0, names: tuple[str, ...] = ENCODER_ORDER) -> dict[str, nn.Module]:
    """Build the encoders of ``preset`` (those in ``names``, in bundle order) in eval mode.

    Weights are random but deterministic given ``seed`` (each encoder gets its own seed offset, so
    building a subset gives the same weights as building all three); the global torch RNG is untouched.
    """
    if isinstance(preset, str):
        preset = get_preset(preset)
    unknown = [n for n in names if n not in ENCODER_ORDER]
    if unknown:
        raise ValueError(f"unknown encoder names {unknown}; use a subset of {ENCODER_ORDER}.")
    builders = {
        "wavlm": lambda: WavLM(preset.wavlm),
        "muq": lambda: MuQ(preset.muq),
        "m2d": lambda: M2D(preset.m2d),
    }
    encoders: dict[str, nn.Module] = {}
    with torch.random.fork_rng(devices=[]):
        for offset, name in enumerate(ENCODER_ORDER):
            if name not in names:
                continue
            torch.manual_seed(seed * 1000 + offset)
            encoders[name] = builders[name]().eval()
    return encoders


def encoder_dims(encoders: dict[str, nn.Module]) -> dict[str, object]:
    """The ``dims`` that ``Member`` needs: ``{"wavlm": (L, D), "muq": D, "m2d": D}`` for the given encoders."""
    dims: dict[str, object] = {}
    for name, enc in encoders.items():
        if name == "wavlm":
            n_layers = getattr(enc, "num_layers_out", None)
            if n_layers is None:  # not part of the contract: find L with one dummy forward
                n = int(enc.window_samples)
                with torch.no_grad():
                    feats, _ = enc(torch.zeros(1, n), torch.tensor([n], dtype=torch.int64))
                n_layers = feats.shape[1]
            dims[name] = (int(n_layers), int(enc.out_dim))
        else:
            dims[name] = int(enc.out_dim)
    return dims
