"""Calibration audio: find files in a folder or manifest, decode, resample, and cut them into windows.

The windows follow docs/contracts.md ("Windows"): 10 s per encoder at its own rate, hop 10 s, the last one
zero-padded, ``length = clip(L_e - k*W_e, 1, W_e)``, window weight = valid seconds / 10. Calibration keeps
its own small copy of this rule (numpy + soundfile + soxr only) so it can run before, and independently of,
the runtime; the numbers it compares are fp32-vs-other-precision on the *same* windows, so any small
difference from the runtime's decoding does not enter a report.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif")
"""File name endings taken from a DATA folder (what libsndfile decodes)."""

PATH_KEYS: tuple[str, ...] = ("path", "data_path", "file", "filepath", "audio", "wav")
"""Keys a TSV/JSON manifest may name the audio file with (Audiobox uses ``path``, MMMOS CSVs ``data_path``)."""

MANIFEST_SUFFIXES: tuple[str, ...] = (".csv", ".tsv", ".jsonl", ".json", ".txt", ".lst")


@dataclass(frozen=True)
class EncoderSpec:
    """What calibration needs to know of one encoder graph: its name, input rate and fixed window length."""

    name: str
    sample_rate: int
    window_samples: int


@dataclass
class ClipWindows:
    """One decoded file cut into windows for every encoder.

    ``wav[name]`` is ``[n_windows, window_samples]`` float32, ``lengths[name]`` ``[n_windows]`` int64 and
    ``weights`` ``[n_windows]`` float32 (valid seconds / 10).
    """

    path: str
    duration_s: float
    wav: dict[str, np.ndarray] = field(default_factory=dict)
    lengths: dict[str, np.ndarray] = field(default_factory=dict)
    weights: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    @property
    def n_windows(self) -> int:
        """Number of 10 s windows of this clip."""
        return int(self.weights.shape[0])


def _is_manifest(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES


def read_manifest_rows(path: str | Path) -> list[dict[str, str]]:
    """Rows of a manifest that is not CSV/JSONL: TSV (header row), JSON (list of objects) or a plain list.

    A plain ``.txt``/``.lst`` file gives one ``{"path": line}`` row per non-empty, non-``#`` line.
    CSV and JSONL manifests are read by training's reader (``mmmos.training.manifests``), see ``list_audio``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    if suffix == ".tsv":
        return [dict(row) for row in csv.DictReader(text.splitlines(), delimiter="\t")]
    if suffix == ".json":
        data = json.loads(text)
        if not isinstance(data, list):
            raise ValueError(f"{path} must hold a JSON list of objects; write one object per clip.")
        return data
    return [{"path": line.strip()} for line in text.splitlines() if line.strip() and not line.startswith("#")]


def row_path(row: dict, base: Path) -> Path:
    """The audio path of a manifest row, resolved against the manifest's folder when relative."""
    for key in PATH_KEYS:
        value = row.get(key)
        if value:
            p = Path(str(value)).expanduser()
            return p if p.is_absolute() else base / p
    raise ValueError(f"manifest row {row!r} names no audio file; give it one of the columns {', '.join(PATH_KEYS)}.")


def list_audio(data: str | Path, max_files: int | None = None) -> list[Path]:
    """Audio files of DATA: every audio file under a folder (sorted, recursive), or the paths a manifest lists."""
    data = Path(data)
    if not data.exists():
        raise FileNotFoundError(f"calibration data {data} does not exist; pass a folder of audio or a manifest file.")
    if data.is_dir():
        files = sorted(p for p in data.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
    elif data.suffix.lower() in (".csv", ".jsonl"):
        # the same reader as training, so a training manifest works here unchanged (aliases, /your_path/)
        from mmmos.training.manifests import load_manifest

        files = [Path(c.path) for c in load_manifest(data, check_files=False, warn=False).clips]
    elif _is_manifest(data):
        files = [row_path(row, data.parent) for row in read_manifest_rows(data)]
    elif data.suffix.lower() in AUDIO_EXTENSIONS:
        files = [data]
    else:
        raise ValueError(f"{data} is neither a folder, an audio file nor a manifest ({', '.join(MANIFEST_SUFFIXES)}).")
    if not files:
        raise FileNotFoundError(f"no audio files found in {data}; calibration needs real audio clips.")
    return files[:max_files] if max_files else files


def decode(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode a file to mono float32 (channel mean) and its sample rate; rejects empty or non-finite audio."""
    import soundfile as sf

    audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1).astype(np.float32)
    if mono.size == 0:
        raise ValueError(f"{path} holds no samples.")
    if not np.isfinite(mono).all():
        raise ValueError(f"{path} holds NaN or infinite samples.")
    return mono, int(sr)


def resample(x: np.ndarray, sr: int, target: int) -> np.ndarray:
    """Resample mono float32 audio with soxr (identity when the rates match)."""
    if sr == target:
        return x
    import soxr

    return soxr.resample(x, sr, target, quality="HQ").astype(np.float32)


def cut_windows(audio: np.ndarray, sr: int, path: str, encoders: Sequence[EncoderSpec]) -> ClipWindows:
    """Cut one mono clip into each encoder's windows, by the contracts' window rule."""
    duration = audio.shape[0] / sr
    n = max(1, math.ceil(duration / 10.0 - 1e-9))
    clip = ClipWindows(path=path, duration_s=duration)
    for enc in encoders:
        x = resample(audio, sr, enc.sample_rate)
        W = enc.window_samples
        wav = np.zeros((n, W), np.float32)
        lengths = np.zeros(n, np.int64)
        for k in range(n):
            seg = x[k * W : (k + 1) * W]
            wav[k, : seg.shape[0]] = seg
            lengths[k] = min(max(x.shape[0] - k * W, 1), W)
        clip.wav[enc.name] = wav
        clip.lengths[enc.name] = lengths
    valid = np.clip(duration - 10.0 * np.arange(n), 0.0, 10.0)
    clip.weights = np.maximum(valid / 10.0, 1e-6).astype(np.float32)
    return clip


def load_clips(
    files: Sequence[str | Path], encoders: Sequence[EncoderSpec]
) -> tuple[list[ClipWindows], list[dict[str, str]]]:
    """Decode and window every file; a file that fails is listed in the second return value, not raised."""
    clips: list[ClipWindows] = []
    errors: list[dict[str, str]] = []
    for f in files:
        try:
            audio, sr = decode(f)
        except Exception as exc:  # one bad file must not stop calibration: it is reported instead
            errors.append({"path": str(f), "error": f"{type(exc).__name__}: {exc}".splitlines()[0]})
            continue
        clips.append(cut_windows(audio, sr, str(f), encoders))
    if not clips:
        raise ValueError(f"none of the {len(files)} calibration files could be decoded; first error: {errors[0]}")
    return clips, errors


def iter_windows(clips: Sequence[ClipWindows], name: str, max_windows: int | None = None) -> Iterator[dict]:
    """One ``{"wav": [1, N], "lengths": [1]}`` feed per window of encoder ``name``, across clips in order.

    Used by the INT8 calibration readers; at most ``max_windows`` windows (all when None).
    """
    count = 0
    for clip in clips:
        for k in range(clip.n_windows):
            if max_windows is not None and count >= max_windows:
                return
            yield {"wav": clip.wav[name][k : k + 1], "lengths": clip.lengths[name][k : k + 1]}
            count += 1
