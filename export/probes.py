"""Probe audio the exporter makes for parity checks: speech-, music- and noise-like signals.

Deterministic (seeded) and synthesised at any sample rate, so every encoder gets its own native rate.
Each probe also has a valid length: one is a partial window, so the masking paths are exercised.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

PROBE_NAMES: tuple[str, ...] = ("speech", "music", "noise")


@dataclass(frozen=True)
class Probe:
    """One probe: a name and the fraction of the window that holds signal (the rest is zero padding)."""

    name: str
    valid_fraction: float


DEFAULT_PROBES: tuple[Probe, ...] = (Probe("speech", 1.0), Probe("music", 0.63), Probe("noise", 1.0))


def _speech_like(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Voiced syllables: a gliding harmonic source shaped by two formant-like peaks, with pauses."""
    f0 = 120.0 + 30.0 * np.sin(2 * np.pi * 0.7 * t)
    dt = float(t[1] - t[0]) if len(t) > 1 else 0.0
    phase = 2 * np.pi * np.cumsum(f0) * dt
    harmonics = sum((1.0 / k) * np.sin(k * phase) * (1.0 + 0.8 * np.cos(2 * np.pi * (k * 120.0 - 700.0) / 900.0))
                    for k in range(1, 20))
    syllables = np.clip(np.sin(2 * np.pi * 4.0 * t), 0.0, None) ** 2  # ~4 syllables per second
    pauses = (np.sin(2 * np.pi * 0.35 * t + 1.0) > -0.6).astype(np.float64)
    breath = 0.02 * rng.standard_normal(len(t))
    return 0.3 * harmonics * syllables * pauses / 4.0 + breath * syllables


def _music_like(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A chord progression of plucked notes with decaying envelopes and a soft kick on the beat."""
    roots = [220.0, 174.61, 261.63, 196.0]
    out = np.zeros_like(t)
    beat = 0.5
    for i, start in enumerate(np.arange(0.0, max(t[-1], 0.0) + beat, beat)):
        root = roots[(i // 4) % len(roots)]
        env = np.where(t >= start, np.exp(-(t - start) * 3.0), 0.0)
        for ratio in (1.0, 1.25, 1.5, 2.0):
            out += 0.08 * env * np.sin(2 * np.pi * root * ratio * (t - start) + rng.uniform(0, 2 * np.pi))
        kick = np.where(t >= start, np.exp(-(t - start) * 25.0), 0.0)
        out += 0.2 * kick * np.sin(2 * np.pi * 60.0 * (t - start))
    return out


def _noise_like(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pink-ish noise (white noise through a one-pole low-pass) with slow level changes."""
    white = rng.standard_normal(len(t))
    pink = lfilter([0.03], [1.0, -0.97], white)
    level = 0.6 + 0.4 * np.sin(2 * np.pi * 0.2 * t)
    return 0.5 * level * (0.5 * pink * 4.0 + 0.1 * white)


_SYNTHS = {"speech": _speech_like, "music": _music_like, "noise": _noise_like}


def probe_signal(name: str, sample_rate: int, seconds: float = 10.0, seed: int = 0) -> np.ndarray:
    """The probe ``name`` as float32 mono in [-1, 1] at ``sample_rate`` for ``seconds``."""
    if name not in _SYNTHS:
        raise ValueError(f"unknown probe {name!r}; choose one of {PROBE_NAMES}.")
    n = round(seconds * sample_rate)
    t = np.arange(n, dtype=np.float64) / sample_rate
    rng = np.random.default_rng(seed + 7919 * PROBE_NAMES.index(name))
    x = _SYNTHS[name](t, rng)
    peak = float(np.max(np.abs(x))) if n else 0.0
    return (0.9 * x / peak if peak > 0 else x).astype(np.float32)


def probe_batch(
    sample_rate: int, window_samples: int, probes: tuple[Probe, ...] = DEFAULT_PROBES, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Windows ``[P, window_samples]`` float32 (zero past each valid length) and lengths ``[P]`` int64."""
    wavs = np.zeros((len(probes), window_samples), dtype=np.float32)
    lengths = np.zeros(len(probes), dtype=np.int64)
    seconds = window_samples / sample_rate
    for i, probe in enumerate(probes):
        sig = probe_signal(probe.name, sample_rate, seconds, seed)
        n = max(1, min(window_samples, round(probe.valid_fraction * window_samples)))
        wavs[i, :n] = sig[:n]
        lengths[i] = n
    return wavs, lengths
