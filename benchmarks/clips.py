"""The audio every measurement uses: deterministic clips written as WAV files, and their first windows.

Timing does not depend on what the audio says, but decode and resample cost does depend on the file,
so clips are real 44.1 kHz stereo files (every encoder then resamples). The windows that the graph
timings and the PyTorch baselines share are cut from the same clip by the runtime's own window rule
and saved in one .npz, so every backend and baseline sees identical arrays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from mmmos.runtime.audio import decode, prepare
from mmmos.runtime.bundle import Bundle
from mmmos.runtime.manifest import EncoderSpec
from mmmos.runtime.windows import WINDOW_SECONDS, iter_windows

CLIP_RATE = 44100
AUDIOBOX_RATE = 16000


def synth_clip(seconds: float, sr: int = CLIP_RATE, seed: int = 0) -> np.ndarray:
    """A stereo music-like test signal [N, 2] float32: a few partials, a slow tremolo and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(max(1, round(seconds * sr))) / sr
    x = sum(0.15 / (k + 1) * np.sin(2 * np.pi * 220.0 * (k + 1) * t) for k in range(5))
    x = x * (0.6 + 0.4 * np.sin(2 * np.pi * 0.7 * t)) + 0.02 * rng.standard_normal(t.size)
    return np.stack([x, 0.8 * x], axis=1).astype(np.float32)


def write_clips(folder: Path, lengths: list[float], sr: int = CLIP_RATE, *, mono: bool = False,
                subtype: str = "PCM_16", prefix: str = "clip") -> dict[float, Path]:
    """Write one WAV per length (seconds) into `folder` as `<prefix>_<seconds>s.wav`; returns length -> path.

    Stereo 16-bit by default; `mono=True, subtype="FLOAT"` writes the float mono files `mmmos-bench versus`
    feeds both sides (at 16 kHz, Audiobox's rate, so the package does not resample).
    """
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for sec in lengths:
        p = folder / f"{prefix}_{sec:g}s.wav"
        x = synth_clip(sec, sr)
        sf.write(p, x[:, 0] if mono else x, sr, subtype=subtype)
        out[sec] = p
    return out


def write_windows(bundle: Bundle, clip: Path, out: Path) -> Path:
    """Save the clip's first window for every encoder (+ a 16 kHz one for Audiobox) to `out` (.npz).

    Keys: `wav_<encoder>` float32 [1, window_samples], `len_<encoder>` int64 [1], `audiobox_wav`
    float32 [1, 160000], `audiobox_len` int64 [1].
    """
    samples, sr = decode(clip)
    rates = [e.sample_rate for e in bundle.encoders]
    audiobox = EncoderSpec("audiobox", AUDIOBOX_RATE, int(AUDIOBOX_RATE * WINDOW_SECONDS))
    prepared = prepare(samples, sr, [*rates, AUDIOBOX_RATE])
    first = next(iter_windows(prepared, [*bundle.encoders, audiobox]))
    arrays: dict[str, np.ndarray] = {}
    for name, wav in first.wavs.items():
        wav_key, len_key = ("audiobox_wav", "audiobox_len") if name == "audiobox" else (f"wav_{name}", f"len_{name}")
        arrays[wav_key] = wav[None, :]
        arrays[len_key] = np.asarray([first.lengths[name]], np.int64)
    np.savez(out, **arrays)
    return out


def load_windows(path: Path, names: list[str], batch: int = 1) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The saved windows of `names`, repeated to `batch`: name -> (wav [B, N], lengths [B])."""
    with np.load(path) as z:
        return {n: (np.repeat(z[f"wav_{n}"], batch, axis=0), np.repeat(z[f"len_{n}"], batch, axis=0))
                for n in names}
