"""Audio helpers for the runtime tests: tones and a zoo of good and broken files."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def tone(seconds: float, sr: int, freq: float = 440.0, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A sine plus a little noise, [N] or [N, C] float32 in [-0.5, 0.5]."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * sr)) / sr
    x = 0.4 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(t.size)
    if channels > 1:
        x = np.stack([x * (1 - 0.2 * c) for c in range(channels)], axis=1)
    return x.astype(np.float32)


def write_zoo(folder: Path) -> dict[str, str | None]:
    """Write good and bad inputs into `folder`; return name -> expected error fragment (None = good)."""
    import os

    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    x = tone(3.0, 16000, channels=2)
    sf.write(folder / "good_stereo.wav", x, 16000, subtype="PCM_16")
    sf.write(folder / "good.flac", x[:, 0], 16000)
    (folder / "empty.wav").write_bytes(b"")
    full = folder / "full.wav"
    sf.write(full, x, 16000, subtype="PCM_16")
    data = full.read_bytes()
    (folder / "truncated.wav").write_bytes(data[: len(data) // 2])
    full.unlink()
    (folder / "random.wav").write_bytes(np.random.default_rng(1).bytes(5000))
    (folder / "text.mp3").write_text("this is not audio\n" * 50)
    nan = x[:, 0].copy()
    nan[10] = np.nan
    nan[20] = np.inf
    sf.write(folder / "nan.wav", nan, 16000, subtype="FLOAT")
    # finite but enormous float samples: the front-ends' power would overflow to Inf and the scores to NaN
    sf.write(folder / "huge.wav", np.full(16000, 1e30, np.float32), 16000, subtype="FLOAT")
    (folder / "folder.wav").mkdir()
    os.symlink(folder / "missing_target.wav", folder / "dangling.wav")
    (folder / "notes.txt").write_text("ignored by the folder walk")
    return {
        "good_stereo.wav": None, "good.flac": None,
        "empty.wav": "empty file", "truncated.wav": "truncated", "random.wav": "cannot decode",
        "text.mp3": "cannot decode", "nan.wav": "non-finite", "huge.wav": "mis-scaled", "folder.wav": "directory",
        "dangling.wav": "dangling symbolic link",
    }
