"""Reading score rows: JSONL files, Ray part folders, CSV and challenge outputs, stdin, lines that are not rows."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from mmmos.runtime.errors import InputError
from mmmos.runtime.report.rows import RowReader, expand_inputs

from .corpus import error_row, scored_row


def _write(path: Path, rows: list[dict], tail: str = "") -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail, encoding="utf-8")
    return path


def test_jsonl_rows_keep_every_field_and_their_origin(tmp_path: Path) -> None:
    f = _write(tmp_path / "s.jsonl", [scored_row("a.wav", (1, 2, 3, 4), system_id="s1"), error_row("b.wav")])
    rows = list(RowReader(expand_inputs([str(f)])))
    assert [r.path for r in rows] == ["a.wav", "b.wav"]
    assert rows[0].ok and rows[0].scores == {"PQ": 1.0, "PC": 2.0, "CE": 3.0, "CU": 4.0}
    assert rows[0].data["system_id"] == "s1" and (rows[0].source, rows[0].line) == (str(f), 1)
    assert not rows[1].ok and "not an audio file" in rows[1].error


def test_a_ray_output_folder_reads_its_part_files_in_order(tmp_path: Path) -> None:
    out = tmp_path / "ray"
    out.mkdir()
    _write(out / "part-00001-00000.jsonl", [scored_row("c.wav", (1, 1, 1, 1))])
    _write(out / "part-00000-00000.jsonl", [scored_row("a.wav", (1, 1, 1, 1))])
    _write(out / "part-00000-00001.jsonl", [scored_row("b.wav", (1, 1, 1, 1))])
    (out / "notes.txt").write_text("not a part file")
    assert [r.path for r in RowReader(expand_inputs([str(out)]))] == ["a.wav", "b.wav", "c.wav"]


def test_missing_inputs_and_empty_folders_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        expand_inputs([str(tmp_path / "nope.jsonl")])
    with pytest.raises(InputError, match="part-"):
        expand_inputs([str(tmp_path)])
    with pytest.raises(InputError, match="more than once"):
        expand_inputs(["-", "-"])


def test_bad_lines_are_skipped_with_a_warning_and_counted(tmp_path: Path) -> None:
    f = _write(tmp_path / "s.jsonl", [scored_row("a.wav", (1, 1, 1, 1))],
               tail='not json\n[1, 2]\n{"no": "path"}\n\n{"path": "half-writ')
    warnings: list[str] = []
    reader = RowReader([str(f)], warn=warnings.append)
    assert [r.path for r in reader] == ["a.wav"]
    assert reader.skipped == 4 and len(warnings) == 4
    assert "s.jsonl:2: not a JSON row" in warnings[0] and "interrupted run" in warnings[3]


def test_many_bad_lines_warn_a_few_times_then_once(tmp_path: Path) -> None:
    f = tmp_path / "s.jsonl"
    f.write_text("x\n" * 20)
    warnings: list[str] = []
    reader = RowReader([str(f)], warn=warnings.append)
    assert list(reader) == [] and reader.skipped == 20
    assert len(warnings) == 6 and "15 more lines skipped (20 in all)" in warnings[-1]


def test_stdin(tmp_path: Path) -> None:
    text = json.dumps(scored_row("x.wav", (5, 5, 5, 5))) + "\n"
    rows = list(RowReader(["-"], stdin=io.StringIO(text)))
    assert rows[0].path == "x.wav" and rows[0].source == "-"


def test_mmmos_score_csv_and_challenge_outputs(tmp_path: Path) -> None:
    csv_file = tmp_path / "s.csv"
    csv_file.write_text("path,start_time,end_time,PQ,PC,CE,CU,PQ_std,PC_std,CE_std,CU_std,duration_s,windows,error,"
                        "model\na.wav,1.5,3,1,2,3,4,0.1,0.1,0.1,0.1,1.5,1,,aes@0123456789ab\n"
                        "b.wav,,,,,,,,,,,,0,cannot decode,\n")
    a, b = RowReader([str(csv_file)])
    assert a.scores == {"PQ": 1.0, "PC": 2.0, "CE": 3.0, "CU": 4.0} and a.data["start_time"] == 1.5
    assert a.data["model"] == {"name": "aes", "sha256": "0123456789ab"} and a.data["std"]["CU"] == 0.1
    assert not b.ok and b.error == "cannot decode"
    txt = tmp_path / "answer.txt"
    txt.write_text("audiomos2025-track2-sys0v1wm-utt0dJodp,1,2,3,4\nbad line\n")
    reader = RowReader([str(txt)], warn=lambda _m: None)
    (row,) = reader
    assert row.path == "audiomos2025-track2-sys0v1wm-utt0dJodp" and row.scores["CU"] == 4.0
    assert reader.skipped == 1


def test_rows_with_non_numbers_or_non_finite_scores_count_as_failed(tmp_path: Path) -> None:
    f = _write(tmp_path / "s.jsonl", [scored_row("a.wav", (1, 2, 3, "4")), {"path": "b.wav", "PQ": 1.0},
                                      scored_row("c.wav", (1, 2, 3, True))])
    rows = list(RowReader([str(f)]))
    assert [r.ok for r in rows] == [False, False, False]
    assert rows[1].error == "the row has no scores"
