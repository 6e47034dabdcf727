"""Input expansion: files, folders, .jsonl, .csv, stdin (runtime/inputs.py)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

from mmmos.runtime.inputs import expand, row_key

from ..audio_helpers import write_zoo


def test_folder_walk_is_recursive_sorted_and_keeps_bad_entries(tmp_path: Path) -> None:
    zoo = write_zoo(tmp_path / "d")
    (tmp_path / "d" / "sub").mkdir()
    (tmp_path / "d" / "sub" / "z.WAV").write_bytes(b"")
    paths = [it.path for it in expand([str(tmp_path / "d")])]
    names = [os.path.relpath(p, tmp_path / "d") for p in paths]
    assert names == sorted(names)
    assert set(names) == set(zoo) | {os.path.join("sub", "z.WAV")}  # notes.txt is not audio


def test_jsonl_manifest_with_segments_and_bad_rows(tmp_path: Path) -> None:
    man = tmp_path / "m.jsonl"
    rows = [{"path": "a.wav"}, {"path": "b.wav", "start_time": 1, "end_time": 2.5, "id": 7}]
    man.write_text("\n".join(json.dumps(r) for r in rows) + "\n\nnot json\n{\"x\": 1}\n[1]\n")
    (tmp_path / "b.wav").write_bytes(b"x")  # exists next to the manifest only
    items = list(expand([str(man)]))
    assert [it.error is None for it in items] == [True, True, False, False, False]
    assert items[0].path == "a.wav"  # missing anywhere: kept as given, gets "file not found" later
    assert items[1].path == str(tmp_path / "b.wav")
    assert (items[1].start_time, items[1].end_time, items[1].extra) == (1.0, 2.5, {"id": 7})
    assert "invalid JSON" in (items[2].error or "") and f"{man}:4" in (items[2].error or "")
    assert "no 'path'" in (items[3].error or "")


def test_csv_lists_with_data_path_or_path(tmp_path: Path) -> None:
    a = tmp_path / "challenge.csv"
    a.write_text("sample_id,data_path,Production_Quality\ns1,/x/a.wav,5\ns2,/x/b.wav,6\n")
    assert [it.path for it in expand([str(a)])] == ["/x/a.wav", "/x/b.wav"]
    b = tmp_path / "list.csv"
    b.write_text("path,start_time,end_time\n/y/c.flac,0,3\n")
    (it,) = expand([str(b)])
    assert (it.path, it.start_time, it.end_time) == ("/y/c.flac", 0.0, 3.0)
    bad = tmp_path / "bad.csv"
    bad.write_text("file\n/a.wav\n")
    (it,) = expand([str(bad)])
    assert it.error and "data_path" in it.error


def test_stdin_and_plain_files_keep_order() -> None:
    items = list(expand(["first.wav", "-", "last.mp3"], stdin=io.StringIO("a.wav\n\n  b.flac \n")))
    assert [it.path for it in items] == ["first.wav", "a.wav", "b.flac", "last.mp3"]


def test_row_key_normalises_numbers() -> None:
    assert row_key("a", 1, "2.5") == row_key("a", 1.0, 2.5) != row_key("a", None, None)
