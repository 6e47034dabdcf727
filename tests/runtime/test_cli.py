"""`mmmos-score`: input kinds, output formats, --output/--force/--resume, exit codes (runtime/cli.py)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import soundfile as sf
import typer
from typer.testing import CliRunner

from mmmos.runtime.bundle import Bundle
from mmmos.runtime.cli import main, parse_args
from mmmos.runtime.score_command import ScoreCommand

from ..audio_helpers import tone, write_zoo
from ..bundle_factory import Params, make_bundle

HAS_MP3 = "MP3" in sf.available_formats()


_entry = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@_entry.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                  "help_option_names": []})
def _mmmos_score(ctx: typer.Context) -> None:
    """`mmmos-score` itself (parse_args + run), under CliRunner's captured stdin/stdout/stderr."""
    main(list(ctx.args))


def run(args: list[str], stdin: str | None = None) -> tuple[int, str, str]:
    res = CliRunner().invoke(_entry, args, input=stdin)
    if res.exception and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, res.stdout, res.stderr


@pytest.fixture
def audio(tmp_path: Path) -> Path:
    """good files in every container/sample format and rate the issue names."""
    d = tmp_path / "audio"
    (d / "sub").mkdir(parents=True)
    x = tone(2.0, 16000)
    for sub in ("PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT"):
        sf.write(d / f"{sub.lower()}.wav", x, 16000, subtype=sub)
    sf.write(d / "sub" / "rate8k.flac", tone(1.0, 8000), 8000)
    sf.write(d / "sub" / "rate96k_stereo.wav", tone(1.5, 96000, channels=2), 96000, subtype="PCM_24")
    sf.write(d / "sub" / "v.ogg", tone(1.0, 22050), 22050, format="OGG")
    if HAS_MP3:
        sf.write(d / "sub" / "m.mp3", tone(1.0, 44100), 44100, format="MP3")
    return d


def _rows(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_folder_to_jsonl_exit_0(bundle: tuple[Path, Params], audio: Path) -> None:
    code, out, err = run([str(audio), "--bundle", str(bundle[0]), "--batch-size", "3"])
    rows = _rows(out)
    assert code == 0, err
    assert len(rows) == 8 + HAS_MP3
    model = Bundle.load(bundle[0]).model_id
    for r in rows:
        assert set(r) == {"path", "PQ", "PC", "CE", "CU", "std", "duration_s", "windows", "error", "model"}
        assert r["error"] is None and set(r["std"]) == {"PQ", "PC", "CE", "CU"} and 0 < r["PQ"] < 10
        assert r["model"] == {"name": "b", "sha256": model.sha256} and len(model.sha256) == 12
    # the untrained warning and the summary go to stderr, never into the results
    assert "untrained" in err and f"{len(rows)} inputs (0 failed)" in err.splitlines()[-1]


def test_bad_files_mixed_with_good_exit_1(bundle: tuple[Path, Params], tmp_path: Path) -> None:
    zoo = write_zoo(tmp_path / "z")
    code, out, err = run([str(tmp_path / "z"), str(tmp_path / "nope.wav"), "-b", str(bundle[0])])
    rows = {Path(r["path"]).name: r for r in _rows(out)}
    assert code == 1 and "Traceback" not in err
    assert set(rows) == set(zoo) | {"nope.wav"}
    for name, expected in zoo.items():
        assert (rows[name]["error"] is None) if expected is None else (expected in rows[name]["error"])
    assert rows["nope.wav"]["error"] == "file not found"


def test_manifests_and_stdin(bundle: tuple[Path, Params], audio: Path, tmp_path: Path) -> None:
    jl = tmp_path / "m.jsonl"
    jl.write_text(json.dumps({"path": str(audio / "float.wav"), "start_time": 0.5, "end_time": 1.5}) + "\n")
    cs = tmp_path / "list.csv"
    cs.write_text(f"sample_id,data_path\ns,{audio / 'pcm_16.wav'}\n")
    code, out, err = run([str(jl), str(cs), "-", "-b", str(bundle[0])], stdin=f"{audio / 'pcm_24.wav'}\n")
    rows = _rows(out)
    assert code == 0, err
    assert [Path(r["path"]).name for r in rows] == ["float.wav", "pcm_16.wav", "pcm_24.wav"]
    assert rows[0]["start_time"] == 0.5 and rows[0]["end_time"] == 1.5 and rows[0]["duration_s"] == 1.0
    assert "start_time" not in rows[1]


def test_csv_challenge_and_table_formats(bundle: tuple[Path, Params], audio: Path) -> None:
    files = [str(audio / "pcm_16.wav"), str(audio / "missing.wav")]
    code, out, _ = run([*files, "-b", str(bundle[0]), "--format", "csv"])
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 1 and rows[0]["PQ"] and rows[0]["PQ_std"] and rows[1]["error"] == "file not found"
    code, out, err = run([*files, "-b", str(bundle[0]), "-f", "challenge"])
    (line,) = out.splitlines()
    wav_id, *vals = line.split(",")
    assert code == 1 and wav_id == "pcm_16" and len(vals) == 4 and all(0 < float(v) < 10 for v in vals)
    assert "missing.wav: file not found" in err
    code, out, _ = run([*files, "-b", str(bundle[0]), "-f", "table"])
    lines = out.splitlines()
    assert lines[0].startswith("model b@")
    assert lines[1].split()[:4] == ["PQ", "PC", "CE", "CU"] and "pcm_16.wav" in lines[2]
    assert "error: file not found" in lines[3]


def test_output_force_and_resume(bundle: tuple[Path, Params], audio: Path, tmp_path: Path) -> None:
    out_file = tmp_path / "res.jsonl"
    first = [str(audio / "pcm_16.wav"), str(audio / "pcm_24.wav")]
    assert run([*first, "-b", str(bundle[0]), "-o", str(out_file)])[0] == 0
    before = out_file.read_text()
    code, _, err = run([*first, "-b", str(bundle[0]), "-o", str(out_file)])
    assert code == 2 and "--force" in err and out_file.read_text() == before  # never overwrites
    # an interrupted run leaves a half line; --resume cuts it and scores only what is missing
    out_file.write_text(before + '{"path": "half')
    allf = [*first, str(audio / "float.wav"), str(audio / "missing.wav")]
    code, stdout, _ = run([*allf, "-b", str(bundle[0]), "-o", str(out_file), "--resume"])
    rows = _rows(out_file.read_text())
    assert code == 1 and stdout == ""
    assert [Path(r["path"]).name for r in rows] == ["pcm_16.wav", "pcm_24.wav", "float.wav", "missing.wav"]
    code, _, _ = run([*allf, "-b", str(bundle[0]), "-o", str(out_file), "--resume"])
    assert code == 0 and len(_rows(out_file.read_text())) == 4  # nothing left to do
    assert run([*first, "-b", str(bundle[0]), "-o", str(out_file), "--force"])[0] == 0
    assert len(_rows(out_file.read_text())) == 2


def test_resume_csv_and_challenge(bundle: tuple[Path, Params], audio: Path, tmp_path: Path) -> None:
    for fmt, ext in (("csv", "csv"), ("challenge", "txt")):
        out_file = tmp_path / f"r.{ext}"
        a, b = str(audio / "pcm_16.wav"), str(audio / "pcm_32.wav")
        assert run([a, "-b", str(bundle[0]), "-o", str(out_file)])[0] == 0  # format from the extension
        assert run([a, b, "-b", str(bundle[0]), "-o", str(out_file), "--resume", "-f", fmt])[0] == 0
        text = out_file.read_text()
        assert text.count("pcm_16") == 1 and text.count("pcm_32") == 1, text
        if fmt == "csv":
            assert text.count("path,start_time") == 1  # one header


@pytest.mark.parametrize(
    ("args", "needle"),
    [([], "at least one INPUT"), (["a.wav", "--resume"], "--resume needs --output"),
     (["a.wav", "--backend", "cuda"], "cuda"), (["a.wav", "--batch-size", "0"], "batch-size"),
     (["a.wav", "--bundle", "/nonexistent"], "mmmos-export"),
     (["a.wav", "--precision", "fp16"], "unchecked"), (["a.wav", "--precision", "int8"], "not in bundle")],
)
def test_usage_errors_exit_2(bundle: tuple[Path, Params], args: list[str], needle: str) -> None:
    if "--bundle" not in args:
        args = [*args, "--bundle", str(bundle[0])]
    code, out, err = run(args)
    assert code == 2 and needle in err and out == "" and "Traceback" not in err


def test_forced_precision_runs_with_a_warning(bundle: tuple[Path, Params], audio: Path) -> None:
    code, out, err = run([str(audio / "pcm_16.wav"), "-b", str(bundle[0]), "--precision", "fp16",
                          "--force-precision", "-q"])
    assert code == 0 and len(_rows(out)) == 1 and "fp16" in err and "inputs" not in err  # -q: no summary


def test_shards_partition_the_inputs(bundle: tuple[Path, Params], audio: Path) -> None:
    names = []
    for i in range(3):
        code, out, _ = run([str(audio), "-b", str(bundle[0]), "--shard", f"{i}/3", "-q"])
        assert code == 0
        names.append({Path(r["path"]).name for r in _rows(out)})
    assert sum(len(n) for n in names) == 8 + HAS_MP3 and not (names[0] & names[1]) and not (names[1] & names[2])
    assert run(["a.wav", "-b", str(bundle[0]), "--shard", "3/3"])[0] == 2


def test_parse_args_builds_settings_without_running(bundle: tuple[Path, Params], tmp_path: Path) -> None:
    cmd = parse_args(["a.wav", "b/", "-b", str(bundle[0]), "--backend", "ort-cpu", "--precision", "int8",
                      "--threads", "3", "--batch-size", "5", "-o", str(tmp_path / "s.csv"), "--shard", "1/4"])
    assert isinstance(cmd, ScoreCommand) and cmd.inputs == ["a.wav", "b/"] and cmd.ray is None
    s = cmd.settings
    assert (s.bundle, s.backend, s.precision, s.threads, s.batch_size) == (str(bundle[0]), "ort-cpu", "int8", 3, 5)
    assert cmd.output.format == "csv" and cmd.output.shard == (1, 4) and not (tmp_path / "s.csv").exists()
    assert parse_args(["a.wav"]).settings.precision == "auto"
    with pytest.raises(SystemExit) as info:
        parse_args(["a.wav", "--precision", "fp64"])
    assert info.value.code == 2


def test_scores_do_not_depend_on_batch_size_or_the_other_files(bundle: tuple[Path, Params], tmp_path: Path) -> None:
    # The determinism contract (README, "Guarantees"): fp32 scores of a file within 1e-5 alone, beside files of
    # other lengths, at any --batch-size. Ray and mmmos-serve compare with these CLI rows in their own tests.
    folder = tmp_path / "mix"
    folder.mkdir()
    for i, seconds in enumerate([0.4, 3.0, 12.0, 25.0, 9.99]):
        sf.write(folder / f"c{i}.wav", tone(seconds, 16000 if i % 2 else 44100, seed=i), 16000 if i % 2 else 44100)
    target = folder / "c2.wav"
    code, out, _ = run([str(target), "-b", str(bundle[0]), "--precision", "fp32", "--batch-size", "1"])
    assert code == 0
    (alone,) = _rows(out)
    for bs in ("1", "3", "8"):
        code, out, _ = run([str(folder), "-b", str(bundle[0]), "--precision", "fp32", "--batch-size", bs])
        assert code == 0
        (row,) = [r for r in _rows(out) if Path(r["path"]).name == "c2.wav"]
        for a in ("PQ", "PC", "CE", "CU"):
            assert abs(row[a] - alone[a]) <= 1e-5 and abs(row["std"][a] - alone["std"][a]) <= 1e-5


def test_timeline_lists_every_window_and_the_worst(bundle: tuple[Path, Params], tmp_path: Path) -> None:
    clip = tmp_path / "long.wav"
    sf.write(clip, tone(25.0, 16000, seed=3), 16000)
    code, out, _ = run([str(clip), "-b", str(bundle[0]), "--timeline"])
    (row,) = _rows(out)
    assert code == 0 and [(w["start_s"], w["end_s"]) for w in row["timeline"]] == [(0, 10), (10, 20), (20, 25)]
    for a in ("PQ", "PC", "CE", "CU"):
        lows = min(row["timeline"], key=lambda w: w[a])
        assert row["worst"][a] == lows["start_s"]
        # the file score is the valid-length-weighted mean of the windows' scores
        assert abs(row[a] - (row["timeline"][0][a] + row["timeline"][1][a] + 0.5 * row["timeline"][2][a]) / 2.5) < 1e-5
    plain = _rows(run([str(clip), "-b", str(bundle[0])])[1])[0]
    assert "timeline" not in plain and "worst" not in plain  # rows without the flag are unchanged
    code, _, err = run([str(clip), "-b", str(bundle[0]), "--timeline", "--format", "csv"])
    assert code == 2 and "--timeline" in err


def test_resume_refuses_rows_of_another_model(bundle: tuple[Path, Params], audio: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.jsonl"
    assert run([str(audio / "pcm_16.wav"), "-b", str(bundle[0]), "-o", str(out), "-q"])[0] == 0
    other = tmp_path / "other"
    make_bundle(other, seed=9)  # another model: other weights, another manifest hash
    code, _, err = run([str(audio), "-b", str(other), "-o", str(out), "--resume", "-q"])
    assert code == 2 and "holds rows of model b@" in err and "this run scores with other@" in err
    assert len(_rows(out.read_text())) == 1  # nothing was appended
    csv_out = tmp_path / "s.csv"
    assert run([str(audio / "pcm_16.wav"), "-b", str(bundle[0]), "-o", str(csv_out), "-q"])[0] == 0
    assert next(csv.DictReader(io.StringIO(csv_out.read_text())))["model"].startswith("b@")
    code, _, err = run([str(audio), "-b", str(other), "-o", str(csv_out), "--resume", "-q"])
    assert code == 2 and "another file" in err
    assert run([str(audio), "-b", str(bundle[0]), "-o", str(out), "--resume", "-q"])[0] == 0  # same model: fine
