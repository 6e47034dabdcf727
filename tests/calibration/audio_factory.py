"""Test audio for calibration: short clips of different lengths, rates, levels and noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf


def write_audio(folder: Path, n: int = 6, seed: int = 0) -> Path:
    """``n`` clips (1-5.5 s, tones + noise at varied levels, 16 / 22.05 / 44.1 kHz) written into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rates = (16000, 22050, 44100)
    for i in range(n):
        sr = rates[i % len(rates)]
        seconds = 1.0 + 1.5 * (i % 4)
        t = np.arange(int(sr * seconds)) / sr
        tone = np.sin(2 * np.pi * (110 * (i + 1)) * t) * (0.05 + 0.1 * i)
        noise = rng.standard_normal(t.shape[0]) * (0.3 if i % 2 else 0.01)
        sf.write(folder / f"clip{i:02d}.wav", ((tone + noise) * 0.5).astype(np.float32), sr)
    return folder
