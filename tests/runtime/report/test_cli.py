"""`mmmos-report`: parsing (usage errors exit 2 with one line), the report file, curation lists, audio players."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

from mmmos.runtime.report.cli import main, parse_args
from mmmos.runtime.report.command import ReportCommand, run

from ...audio_helpers import tone
from ...bundle_factory import Params
from .corpus import LONG, MODEL, SYSTEMS, clip_name, scored_row, write_corpus


@pytest.fixture
def corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test corpus in tmp_path, which is also the working folder (rows' paths are relative to it)."""
    monkeypatch.chdir(tmp_path)
    return write_corpus(tmp_path)


def report(args: list[str], stdin: str | None = None) -> tuple[int, str]:
    out = io.StringIO()
    code = run(parse_args(args), stdin=io.StringIO(stdin) if stdin is not None else None, stdout=out)
    return code, out.getvalue()


# ------------------------------------------------------------------ parsing


def test_parse_args_builds_the_command() -> None:
    cmd = parse_args(["a.jsonl", "b/", "-o", "r.html", "--group-by", "re:^(\\w+)_", "--top", "3", "--filter",
                      "PQ>=6 and CE>=5", "--accepted", "keep.txt", "--embed-audio", "--embed-limit-mb", "5"])
    assert isinstance(cmd, ReportCommand)
    assert cmd.inputs == ["a.jsonl", "b/"] and cmd.output == "r.html" and cmd.top == 3
    assert cmd.grouper.kind == "regex" and cmd.filter is not None and cmd.filter.text == "PQ>=6 and CE>=5"
    assert cmd.accepted == "keep.txt" and cmd.rejected is None and cmd.embed_audio and cmd.embed_limit_mb == 5
    assert cmd.command.startswith("mmmos-report a.jsonl b/ -o r.html")
    defaults = parse_args(["s.jsonl", "-o", "r.html"])
    assert defaults.grouper.kind == "auto" and defaults.filter is None and defaults.top == 5
    assert defaults.list_format == "auto" and not defaults.embed_audio


@pytest.mark.parametrize(("args", "words"), [
    ([], "at least one SCORES"),
    (["s.jsonl"], "nothing to do"),
    (["s.jsonl", "-o", "r.html", "--accepted", "k.txt"], "need --filter"),
    (["s.jsonl", "--filter", "PQ>5", "--embed-audio"], "give -o report.html"),
    (["s.jsonl", "--filter", "PQ>5", "--accepted", "k.txt", "--rejected", "k.txt"], "different files"),
    (["s.jsonl", "--filter", "PQ>5", "--accepted", "-", "--rejected", "-"], "only one may be -"),
    (["s.jsonl", "-o", "-"], "not -"),
    (["s.jsonl", "--filter", "PQ >= 6 &&"], "at column 9"),
    (["s.jsonl", "-o", "r.html", "--group-by", "re:("], "--group-by"),
])
def test_usage_errors_exit_2_with_one_line(args: list[str], words: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args(args)
    err = capsys.readouterr().err
    assert info.value.code == 2 and words in err and err.startswith("mmmos-report: error:")
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args", [["s.jsonl", "-o", "r.html", "--top", "0"], ["s.jsonl", "--list-format", "x"]])
def test_bad_option_values_exit_2(args: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args(args)
    assert info.value.code == 2


def test_help_and_version(capsys: pytest.CaptureFixture) -> None:
    for flag in ("--help", "--version"):
        with pytest.raises(SystemExit) as info:
            parse_args([flag])
        assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--filter" in out and "--group-by" in out and "--embed-audio" in out
    assert re.search(r"^mmmos-report \S+$", out, re.MULTILINE)


# ------------------------------------------------------------------ the report


def test_report_shows_every_section(corpus: Path, capsys: pytest.CaptureFixture) -> None:
    code, out = report([str(corpus), "-o", "out/report.html", "--top", "3"])
    err = capsys.readouterr().err
    page = (corpus.parent / "out" / "report.html").read_text()
    assert code == 0 and out == ""
    assert "14 rows (1 failed input); report -> out/report.html" in err
    assert page.count('<svg class="hist"') == 4 and page.count('class="bar"') >= 4 * 3
    groups = re.findall(r'<tr class="group-row"><td>([^<]*)</td>', page)
    assert groups == ["audio", *SYSTEMS]  # long file + failed input sit in folder audio/; systems from ids
    assert page.count('class="extreme"') == 8 and page.count('<li class="clip"') == 8 * 3
    assert page.count("<audio ") == 8 * 3 + 1  # every listed clip, and the long file's timeline
    assert MODEL["name"] in page and MODEL["sha256"] in page
    assert page.count('<svg class="timeline"') == 1 and page.count('class="tl-line"') == 4
    assert 'id="failed"' in page and "broken.wav" in page
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page  # nothing fetched


def test_links_are_relative_to_the_page_and_segments_get_a_media_fragment(corpus: Path) -> None:
    rows = [scored_row("audio/" + clip_name(SYSTEMS[0], 0), (9, 9, 9, 9), start_time=1.5, end_time=4.0)]
    seg = corpus.parent / "seg.jsonl"
    seg.write_text(json.dumps(rows[0]) + "\n")
    code, _ = report([str(corpus), str(seg), "-o", "deep/er/r.html"])
    page = (corpus.parent / "deep" / "er" / "r.html").read_text()
    srcs = re.findall(r'<audio controls preload="none" src="([^"]+)"', page)
    assert code == 0 and srcs
    for src in srcs:
        target = unquote(src.split("#")[0])
        assert target.startswith("../../audio/") and (corpus.parent / "deep" / "er" / target).is_file()
    assert any(s.endswith("#t=1.5,4") for s in srcs)


def test_audio_root_and_the_scores_files_folder_anchor_relative_paths(corpus: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # rows' paths are relative to the scores file's folder, not to here
    code, _ = report([str(corpus), "-o", "r.html"])
    assert code == 0 and 'src="../audio/' in (elsewhere / "r.html").read_text()
    code, _ = report([str(corpus), "-o", "r2.html", "--audio-root", str(tmp_path / "audio")])
    assert code == 0 and 'src="../audio/audio/' in (elsewhere / "r2.html").read_text()  # as told, though wrong


def test_embedded_audio_is_inline_once_per_clip(corpus: Path) -> None:
    code, _ = report([str(corpus), "-o", "r.html", "--embed-audio", "--top", "3"])
    page = (corpus.parent / "r.html").read_text()
    uris = re.findall(r'src="data:audio/wav;base64,([^"]+)"', page)
    refs = re.findall(r'data-src-of="(clip\d+)"', page)
    assert code == 0 and uris and 'src="audio/' not in page
    assert len(uris) + len(refs) == 8 * 3 + 1 and set(refs) <= set(re.findall(r'id="(clip\d+)"', page))
    assert base64.b64decode(uris[0])[:4] == b"RIFF"


def test_embedding_stops_at_the_limit_and_links_the_rest(corpus: Path, capsys: pytest.CaptureFixture) -> None:
    size = (corpus.parent / "audio" / clip_name(SYSTEMS[0], 0)).stat().st_size
    limit_mb = 2.5 * size / 1e6  # room for two clips
    code, _ = report([str(corpus), "-o", "r.html", "--embed-audio", "--embed-limit-mb", f"{limit_mb:.6f}"])
    page = (corpus.parent / "r.html").read_text()
    assert code == 0 and page.count("data:audio/wav;base64,") == 2 and 'src="audio/' in page
    assert "would pass the" in capsys.readouterr().err


def test_missing_audio_is_linked_and_reported(corpus: Path, capsys: pytest.CaptureFixture) -> None:
    os.remove(corpus.parent / "audio" / LONG)
    code, _ = report([str(corpus), "-o", "r.html"])
    assert code == 0 and "1 listed audio files were not found" in capsys.readouterr().err
    assert "were not found on this machine" in (corpus.parent / "r.html").read_text()


def test_stdin_and_lines_that_are_not_rows(corpus: Path, capsys: pytest.CaptureFixture) -> None:
    code, _ = report(["-", "-o", "r.html"], stdin=corpus.read_text() + "garbage\n")
    assert code == 1 and (corpus.parent / "r.html").is_file()
    assert "-:15: not a JSON row" in capsys.readouterr().err


def test_outputs_are_never_overwritten_without_force(corpus: Path, capsys: pytest.CaptureFixture) -> None:
    (corpus.parent / "r.html").write_text("mine")
    assert report([str(corpus), "-o", "r.html"])[0] == 2
    assert "pass --force" in capsys.readouterr().err and (corpus.parent / "r.html").read_text() == "mine"
    assert report([str(corpus), "-o", "r.html", "--force"])[0] == 0
    assert (corpus.parent / "r.html").read_text().startswith("<!DOCTYPE html>")


def test_grouping_by_a_field_no_row_has_warns(corpus: Path, capsys: pytest.CaptureFixture) -> None:
    code, _ = report([str(corpus), "-o", "r.html", "--group-by", "speaker"])
    assert code == 0 and "--group-by speaker: no row has that field" in capsys.readouterr().err
    code, _ = report([str(corpus), "-o", "r2.html", "--group-by", "model.name"])
    page = (corpus.parent / "r2.html").read_text()
    assert code == 0 and f'<tr class="group-row"><td>{MODEL["name"]}</td>' in page


def test_no_rows_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty.jsonl").write_text("")
    assert report([str(tmp_path / "empty.jsonl"), "-o", str(tmp_path / "r.html")])[0] == 2
    assert "no score rows" in capsys.readouterr().err and not (tmp_path / "r.html").exists()


# ------------------------------------------------------------------ curation


def test_filter_writes_accepted_and_rejected_lists(corpus: Path, capsys: pytest.CaptureFixture) -> None:
    code, out = report([str(corpus), "--filter", "PQ>=6 and CE>=5", "--accepted", "keep.txt",
                        "--rejected", "drop.txt"])
    keep = (corpus.parent / "keep.txt").read_text().splitlines()
    drop = (corpus.parent / "drop.txt").read_text().splitlines()
    rows = [json.loads(line) for line in corpus.read_text().splitlines()]
    expected = [r["path"] for r in rows if r["error"] is None and r["PQ"] >= 6 and r["CE"] >= 5]
    assert code == 0 and out == "" and keep == expected and len(keep) == 5
    assert len(keep) + len(drop) == len(rows) and "audio/broken.wav" in drop  # error rows are rejected
    assert "filter: 5 accepted, 9 rejected -> keep.txt, drop.txt" in capsys.readouterr().err
    assert not list(corpus.parent.glob(".*.tmp"))


def test_error_rows_are_rejected_even_by_a_filter_they_would_pass(corpus: Path) -> None:
    code, out = report([str(corpus), "--filter", "not PQ > 100"])
    assert code == 0 and "audio/broken.wav" not in out.splitlines() and len(out.splitlines()) == 13


def test_curation_only_prints_accepted_paths_to_stdout(corpus: Path) -> None:
    code, out = report([str(corpus), "--filter", "path ~ 'sys25Voz' and ood.flag == false"])
    assert code == 0 and out.splitlines() == [f"audio/{clip_name('sys25Voz', k)}" for k in (1, 2, 3)]


def test_jsonl_lists_keep_whole_rows(corpus: Path) -> None:
    code, _ = report([str(corpus), "--filter", "PQ < 3", "--accepted", "keep.jsonl", "--rejected", "drop.txt"])
    kept = [json.loads(line) for line in (corpus.parent / "keep.jsonl").read_text().splitlines()]
    assert code == 0 and kept and all(r["PQ"] < 3 and r["model"] == MODEL for r in kept)
    assert not (corpus.parent / "drop.txt").read_text().startswith("{")
    code, out = report([str(corpus), "--filter", "PQ < 3", "--list-format", "jsonl"])
    assert code == 0 and json.loads(out.splitlines()[0])["PQ"] < 3


def test_a_field_no_row_has_is_an_error_that_suggests_one(corpus: Path, capsys: pytest.CaptureFixture) -> None:
    code, _ = report([str(corpus), "--filter", "PQ >= 6 and CEE >= 5", "--accepted", "keep.txt"])
    err = capsys.readouterr().err
    assert code == 2 and "no row has a field 'CEE' (did you mean 'CE'?) at column 13" in err
    assert not (corpus.parent / "keep.txt").exists() and not list(corpus.parent.glob(".*.tmp"))


def test_filter_with_a_report_shows_the_outcome(corpus: Path) -> None:
    code, out = report([str(corpus), "-o", "r.html", "--filter", "PQ>=6"])
    page = (corpus.parent / "r.html").read_text()
    assert code == 0 and out == ""  # with -o, accepted paths go to stdout only when asked (--accepted -)
    assert 'id="curation"' in page and "PQ&gt;=6" in page and 'class="bar bar-accepted"' in page


def test_a_list_can_go_to_stdout(corpus: Path, capsys: pytest.CaptureFixture) -> None:
    code, out = report([str(corpus), "-o", "r.html", "--filter", "PQ < 3", "--accepted", "-", "--rejected",
                        "drop.txt"])
    drop = (corpus.parent / "drop.txt").read_text().splitlines()
    assert code == 0 and out.splitlines() and all("sys0v1wm" in p for p in out.splitlines())
    assert len(out.splitlines()) + len(drop) == 14 and "-> stdout, drop.txt" in capsys.readouterr().err
    code, out = report([str(corpus), "--filter", "PQ < 3", "--rejected", "-"])
    assert code == 0 and len(out.splitlines()) == 14 - 3 and "audio/broken.wav" in out


# ------------------------------------------------------------------ end to end


def test_console_script_on_real_mmmos_score_rows(bundle: tuple[Path, Params], tmp_path: Path) -> None:
    """mmmos-score's own JSONL (with --timeline) makes a report through the console entry, stdin to page."""
    import soundfile as sf

    clips = tmp_path / "clips" / "sysA"
    clips.mkdir(parents=True)
    for i in range(3):
        sf.write(clips / f"c{i}.wav", tone(1.0 + i, 16000, seed=i), 16000)
    sf.write(clips / "long.wav", tone(25.0, 16000, seed=7), 16000)  # three 10 s windows
    (clips / "bad.wav").write_bytes(b"not audio")
    env = {**os.environ, "MMMOS_CACHE_DIR": str(tmp_path / "cache")}
    scored = subprocess.run([sys.executable, "-m", "mmmos.runtime.cli", str(clips.parent), "--bundle",
                             str(bundle[0]), "--timeline", "-q"], capture_output=True, text=True, timeout=300, env=env)
    assert scored.returncode == 1 and len(scored.stdout.splitlines()) == 5, scored.stderr[-2000:]
    model = json.loads(scored.stdout.splitlines()[0]).get("model") or {}
    made = subprocess.run([sys.executable, "-m", "mmmos.runtime.report.cli", "-", "-o", str(tmp_path / "r.html"),
                           "--filter", "PQ > -1", "--accepted", str(tmp_path / "keep.txt")], input=scored.stdout,
                          capture_output=True, text=True, timeout=120, env=env)
    assert made.returncode == 0, made.stderr[-2000:]
    page = (tmp_path / "r.html").read_text()
    assert '<tr class="group-row"><td>sysA</td>' in page and page.count("<audio ") >= 4
    assert page.count('<svg class="timeline"') == 1 and "3 windows" in page
    assert model.get("name") and model["name"] in page and model["sha256"] in page
    assert len((tmp_path / "keep.txt").read_text().splitlines()) == 4


def test_main_is_the_console_entry(corpus: Path) -> None:
    with pytest.raises(SystemExit) as info:
        main([str(corpus), "-o", "r.html", "-q"])
    assert info.value.code == 0 and (corpus.parent / "r.html").is_file()
