"""A small `torchaudio` stand-in so that the audiobox-aesthetics package's `AesPredictor` runs without torchaudio.

`audiobox_aesthetics.infer` imports torchaudio and uses three of its functions: `load(path, frame_offset,
num_frames)`, `info(path).sample_rate` and `functional.resample(wav, orig_freq, new_freq)`. torchaudio cannot be
installed beside torch 2.13 here, so the peer worker of `mmmos-bench versus` puts this module in its place when
torchaudio is missing: files are read with soundfile (as float32, channels first, like torchaudio) and resampled
with soxr (HQ), the same libraries mmmos decodes and resamples with. The versus clips are 16 kHz, so the package
never resamples them; only `load` is on the timed path.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


def make_module() -> types.ModuleType:
    """A module object with torchaudio's `load`, `info` and `functional.resample` (needs torch, soundfile, soxr)."""
    import numpy as np
    import soundfile as sf
    import torch

    def load(path: Any, frame_offset: int = 0, num_frames: int = -1) -> tuple[Any, int]:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True, start=int(frame_offset),
                           frames=int(num_frames))
        return torch.from_numpy(np.ascontiguousarray(data.T)), int(sr)

    def info(path: Any) -> types.SimpleNamespace:
        i = sf.info(str(path))
        return types.SimpleNamespace(sample_rate=int(i.samplerate), num_frames=int(i.frames),
                                     num_channels=int(i.channels))

    def resample(wav: Any, orig_freq: int, new_freq: int) -> Any:
        if int(orig_freq) == int(new_freq):
            return wav
        import soxr

        x = wav.detach().cpu().numpy().astype(np.float32)
        flat = x.reshape(-1, x.shape[-1])  # soxr resamples along time for [time, channels]
        out = soxr.resample(flat.T, int(orig_freq), int(new_freq), quality="HQ").T
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).reshape(*x.shape[:-1], -1)

    mod = types.ModuleType("torchaudio")
    mod.__doc__ = "mmmos-bench stand-in for torchaudio (soundfile load/info, soxr resample)"
    mod.load, mod.info = load, info
    mod.functional = types.SimpleNamespace(resample=resample)
    mod.__mmmos_standin__ = True
    return mod


def ensure_torchaudio() -> str:
    """Make `import torchaudio` work: the real one when it imports, else install the stand-in.

    Returns:
        What the package will use, in words (for the report).
    """
    try:
        real = importlib.import_module("torchaudio")
    except Exception as exc:  # not installed (ImportError) or built for another torch (OSError, RuntimeError)
        why = "not installed" if isinstance(exc, ModuleNotFoundError) else f"failed to import ({type(exc).__name__})"
        sys.modules["torchaudio"] = make_module()
        return f"stand-in (soundfile load/info, soxr resample): torchaudio {why}"
    if getattr(real, "__mmmos_standin__", False):
        return "stand-in (soundfile load/info, soxr resample)"
    return f"torchaudio {getattr(real, '__version__', '?')}"
