"""Calibration audio: file discovery, decoding and the contracts' window rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mmmos.calibration.data import calibration_feeds, cut_windows, list_audio, load_clips
from mmmos.runtime.manifest import EncoderSpec

W16 = EncoderSpec("wavlm", 16000, 160000)
W24 = EncoderSpec("muq", 24000, 240000)


def test_window_rule() -> None:
    audio = np.ones(16000 * 25, np.float32)  # 25 s -> 3 windows, the last one 5 s
    clip = cut_windows(audio, 16000, "x", [W16, W24])
    assert clip.n_windows == 3
    assert clip.lengths["wavlm"].tolist() == [160000, 160000, 80000]
    assert clip.wav["wavlm"].shape == (3, 160000)
    assert np.all(clip.wav["wavlm"][2, 80000:] == 0)  # zero-padded
    assert clip.lengths["muq"][2] == pytest.approx(120000, abs=2)  # resampled to 24 kHz
    assert clip.weights.tolist() == pytest.approx([1.0, 1.0, 0.5])


def test_exact_multiple_and_tiny_clip() -> None:
    clip = cut_windows(np.ones(160000, np.float32), 16000, "x", [W16])
    assert clip.n_windows == 1 and clip.lengths["wavlm"].tolist() == [160000]
    short = cut_windows(np.ones(3, np.float32), 16000, "y", [W16])
    assert short.n_windows == 1 and short.lengths["wavlm"][0] == 3


def _write(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        sf.write(folder / n, np.zeros(1600, np.float32), 16000)


def test_list_audio_folder_and_manifests(tmp_path: Path) -> None:
    _write(tmp_path / "a", ["x.wav", "y.flac"])
    (tmp_path / "a" / "notes.md").write_text("not audio")
    assert [p.name for p in list_audio(tmp_path / "a")] == ["x.wav", "y.flac"]
    assert len(list_audio(tmp_path / "a", max_files=1)) == 1
    (tmp_path / "list.txt").write_text("# comment\na/x.wav\n\na/y.flac\n")
    assert [p.name for p in list_audio(tmp_path / "list.txt")] == ["x.wav", "y.flac"]
    (tmp_path / "m.csv").write_text("sample_id,data_path,Production_Quality\n1,a/x.wav,5\n")
    assert list_audio(tmp_path / "m.csv") == [tmp_path / "a" / "x.wav"]


def test_list_audio_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_audio(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no audio files"):
        list_audio(tmp_path / "empty")


def test_bad_files_are_reported_not_raised(tmp_path: Path) -> None:
    _write(tmp_path, ["ok.wav"])
    (tmp_path / "broken.wav").write_bytes(b"RIFF....not a wav")
    clips, errors = load_clips([tmp_path / "ok.wav", tmp_path / "broken.wav"], [W16])
    assert len(clips) == 1 and len(errors) == 1 and errors[0]["path"].endswith("broken.wav")
    with pytest.raises(ValueError, match="none of the 1"):
        load_clips([tmp_path / "broken.wav"], [W16])


def test_calibration_feeds_limits() -> None:
    clips = [cut_windows(np.ones(16000 * 25, np.float32), 16000, "x", [W16])] * 2
    feeds = list(calibration_feeds(clips, "wavlm", max_windows=4))
    assert len(feeds) == 4
    assert feeds[0]["wav"].shape == (1, 160000) and feeds[0]["lengths"].dtype == np.int64
