"""Calibration audio: find files in a folder or manifest, then decode and window them with the runtime's code.

Decoding, resampling and the window rule are the runtime's own (`mmmos.runtime.audio`, `mmmos.runtime.windows`),
so calibration measures exactly the windows `mmmos-score` computes.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmmos.runtime.audio import AUDIO_EXTENSIONS, decode, prepare
from mmmos.runtime.errors import AudioError
from mmmos.runtime.inputs import walk_folder
from mmmos.runtime.manifest import EncoderSpec
from mmmos.runtime.windows import iter_windows, stack_windows

PATH_KEYS: tuple[str, ...] = ("path", "data_path", "file", "filepath", "audio", "wav")
"""Keys a TSV/JSON manifest may name the audio file with (Audiobox uses ``path``, MMMOS CSVs ``data_path``)."""

MANIFEST_SUFFIXES: tuple[str, ...] = (".csv", ".tsv", ".jsonl", ".json", ".txt", ".lst")


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
        files = [Path(p) for p in walk_folder(str(data))]
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


def cut_windows(audio: np.ndarray, sr: int, path: str, encoders: Sequence[EncoderSpec]) -> ClipWindows:
    """Cut one mono clip into each encoder's windows with the runtime's window rule.

    Raises:
        AudioError: the clip is empty, non-finite or has a bad rate.
    """
    windows = list(iter_windows(prepare(audio, sr, [e.sample_rate for e in encoders]), encoders))
    clip = ClipWindows(path=path, duration_s=audio.shape[0] / sr)
    for enc in encoders:
        clip.wav[enc.name] = stack_windows([w.wavs[enc.name] for w in windows])
        clip.lengths[enc.name] = np.asarray([w.lengths[enc.name] for w in windows], np.int64)
    clip.weights = np.asarray([w.weight for w in windows], np.float32)
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
            clips.append(cut_windows(audio, sr, str(f), encoders))
        except AudioError as exc:  # one bad file must not stop calibration: it is reported instead
            errors.append({"path": str(f), "error": str(exc)})
    if not clips:
        raise ValueError(f"none of the {len(files)} calibration files could be decoded; first error: {errors[0]}")
    return clips, errors


def calibration_feeds(clips: Sequence[ClipWindows], name: str, max_windows: int | None = None) -> Iterator[dict]:
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
