"""Audio decode, validation and resampling (numpy + soundfile + soxr only); windows are cut in `windows.py`."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .errors import AudioError
from .windows import num_windows

# What a folder walk picks up: every container libsndfile (>= 1.1) decodes.
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".caf",
     ".w64", ".rf64"}
)

# libsndfile reports a WAV whose data chunk was cut short in `extra_info`, then silently reads what is
# there; a half-written file must be an error row, not a score of half the audio.
_TRUNCATED_RE = re.compile(r"^\s*data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


def _one_line(text: str) -> str:
    """Collapse a (possibly multi-line) library message into one line."""
    return " ".join(str(text).split())


def _decoder_message(exc: BaseException) -> str:
    """libsndfile's message without the path (the row has it), and with its misleading texts fixed."""
    msg = re.sub(r"^Error opening '.*?': ", "", _one_line(exc))
    # The path exists and is a regular file (checked before): libsndfile says this for unknown bytes.
    if "does not exist or is not a regular file" in msg or "Format not recognised" in msg:
        return "format not recognised (corrupt file or not audio)"
    return msg


def check_path(path: str | os.PathLike[str]) -> Path:
    """Return `path` as a Path if it can be opened as a file, else raise AudioError naming why.

    Args:
        path: the file to check.

    Raises:
        AudioError: the path is missing, a dangling link, a folder or an empty file.
    """
    p = Path(path)
    if not p.exists():
        if p.is_symlink():
            raise AudioError(f"dangling symbolic link: its target {os.readlink(p)!r} does not exist")
        raise AudioError("file not found")
    if p.is_dir():
        raise AudioError("is a directory, not an audio file")
    if p.stat().st_size == 0:
        raise AudioError("empty file (0 bytes)")
    return p


def decode(
    path: str | os.PathLike[str], start_time: float | None = None, end_time: float | None = None
) -> tuple[np.ndarray, int]:
    """Decode an audio file (or a segment of it) to mono float32.

    Args:
        path: wav/flac/ogg/mp3/... file, any rate, channel count and sample format.
        start_time: segment start in seconds (None = 0).
        end_time: segment end in seconds (None = end of file).

    Returns:
        (samples [N] float32, mono by channel mean; sample_rate).

    Raises:
        AudioError: one-line reason when the file cannot be used (see `check_path` and `validate`).
    """
    p = check_path(path)
    try:
        with sf.SoundFile(str(p)) as f:
            sr = int(f.samplerate)
            m = _TRUNCATED_RE.search(f.extra_info or "")
            if m and int(m.group(1)) != int(m.group(2)):
                raise AudioError(
                    f"truncated file: the header promises {m.group(1)} bytes of audio but only "
                    f"{m.group(2)} are present"
                )
            start = 0 if start_time is None else round(float(start_time) * sr)
            stop = f.frames if end_time is None else min(round(float(end_time) * sr), f.frames)
            if start_time is not None and start < 0:
                raise AudioError(f"start_time {start_time} is negative")
            if stop <= start:
                raise AudioError(
                    f"empty segment: start_time={start_time} end_time={end_time} "
                    f"in a file of {f.frames / sr:.3f} s"
                )
            if start:
                f.seek(start)
            mono = _read_mono(f, stop - start)
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
        raise AudioError(f"cannot decode audio: {_decoder_message(exc)}") from None
    validate(mono, sr)
    return mono, sr


def _read_mono(f: sf.SoundFile, frames: int, block: int = 1 << 20) -> np.ndarray:
    """Read `frames` frames as mono float32 in blocks, so a long multichannel file never sits in
    memory with all its channels (peak = the mono clip + one block)."""
    out = np.empty(frames, dtype=np.float32)
    pos = 0
    while pos < frames:
        data = f.read(min(block, frames - pos), dtype="float32", always_2d=True)
        if data.shape[0] == 0:
            break  # the header over-promised (compressed formats): keep what decoded
        # Channel mean (not channel 0): what the encoders' reference pipelines do for stereo music.
        out[pos : pos + data.shape[0]] = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
        pos += data.shape[0]
    return out[:pos] if pos < frames else out


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Return float32 mono samples from a [N] or [N, C] array (channel mean).

    Raises:
        AudioError: the array has more than two dimensions.
    """
    x = np.asarray(samples)
    if x.ndim == 2:
        # [N, C] is soundfile's layout; a [C, N] array with few rows and many columns is torch's.
        if x.shape[0] <= 8 < x.shape[1]:
            x = x.T
        x = x.astype(np.float32).mean(axis=1, dtype=np.float32)
    elif x.ndim != 1:
        raise AudioError(f"audio array must be [samples] or [samples, channels], got shape {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32)


MAX_ABS_SAMPLE = 1000.0
"""Largest sample magnitude scored: 60 dB above full scale. Float files may exceed 1.0 a little (mixes that
clip), but a file far beyond it is corrupt or mis-scaled (integer PCM stored as float), and around 1e19 the
front-ends' power spectra overflow float32 into Inf/NaN scores."""


def validate(samples: np.ndarray, sample_rate: int) -> None:
    """Check that mono samples can be scored.

    Raises:
        AudioError: empty, non-finite, far outside [-1, 1], or an unusable sample rate.
    """
    if int(sample_rate) <= 0:
        raise AudioError(f"invalid sample rate {sample_rate}")
    if samples.size == 0:
        raise AudioError("no audio samples (0 frames)")
    bad = int(samples.size - np.count_nonzero(np.isfinite(samples)))
    if bad:
        raise AudioError(f"{bad} non-finite samples (NaN/Inf); the file is corrupt or not audio")
    peak = float(np.max(np.abs(samples)))
    if peak > MAX_ABS_SAMPLE:
        raise AudioError(f"samples reach {peak:.3g}, beyond the {MAX_ABS_SAMPLE:g} this scorer accepts (audio is "
                         "expected in [-1, 1]); the file is corrupt or mis-scaled (integer PCM stored as float?): "
                         "rescale it")


def resample(samples: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample mono float32 samples with soxr (HQ); a no-op when the rates match."""
    if int(sr_in) == int(sr_out):
        return samples
    return np.ascontiguousarray(soxr.resample(samples, int(sr_in), int(sr_out), quality="HQ"), np.float32)


@dataclass(frozen=True)
class Prepared:
    """A decoded clip resampled once per distinct encoder rate, ready to be cut into windows.

    Attributes:
        duration_s: clip duration in seconds (at its source rate).
        n_windows: number of windows (contracts' window rule).
        per_rate: sample rate -> mono float32 samples at that rate.
    """

    duration_s: float
    n_windows: int
    per_rate: dict[int, np.ndarray]


def prepare(samples: np.ndarray, sample_rate: int, rates: list[int]) -> Prepared:
    """Validate a mono clip and resample it to every rate in `rates` (soxr HQ, once per rate).

    Raises:
        AudioError: empty, non-finite or bad sample rate.
    """
    validate(samples, sample_rate)
    per_rate = {r: resample(samples, sample_rate, r) for r in dict.fromkeys(rates)}
    return Prepared(
        duration_s=samples.size / sample_rate,
        n_windows=num_windows(samples.size, sample_rate),
        per_rate=per_rate,
    )

