"""Grid TOML parsing, a small grid run, selection rules and the members folder, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmmos.training.cli import app
from mmmos.training.grid import default_grid_path, load_grid
from mmmos.training.member_io import load_member

runner = CliRunner()


def test_default_grid_has_16_distinct_configs() -> None:
    _, configs = load_grid(default_grid_path())
    assert len(configs) == 16
    assert {(c["aggregator"], c["loss"]) for c in configs[:12]} == {
        (a, lo) for a in ("mlp", "blstm-t", "blstm-e") for lo in ("utmos", "contrastive", "dcq", "ccc")
    }
    assert all(c["lr"] == 1e-4 and c["epochs"] == 10 for c in configs)
    assert len({c["name"] for c in configs}) == 16


def test_grid_rejects_unknown_keys(tmp_path: Path) -> None:
    bad = tmp_path / "g.toml"
    bad.write_text('[[config]]\naggregator = "mlp"\nlearning_rate = 3\n')
    with pytest.raises(ValueError, match="unknown keys"):
        load_grid(bad)


def test_grid_then_select(synth_caches: dict[str, Path], tmp_path: Path) -> None:
    toml = tmp_path / "grid.toml"
    toml.write_text(
        f'[data]\ntrain = "{synth_caches["train"]}"\ndev = "{synth_caches["dev"]}"\nout = "runs"\n'
        '[defaults]\nepochs = 3\nbatch_size = 16\nlr = 3e-3\nhidden = 16\n'
        '[[config]]\nname = "a"\naggregator = "mlp"\nloss = "utmos"\n'
        '[[config]]\nname = "b"\naggregator = "blstm-e"\nloss = "ccc"\n'
        '[[config]]\nname = "c"\naggregator = "mlp"\nloss = "contrastive"\nencoders = ["muq"]\nepochs = 1\nlr = 1e-5\n'
    )
    res = runner.invoke(app, ["grid", str(toml)])
    assert res.exit_code == 0, res.output
    runs = tmp_path / "runs"
    summary = json.loads((runs / "grid.json").read_text())
    assert [r["status"] for r in summary] == ["trained"] * 3
    # resumable: a second run skips what is trained
    res = runner.invoke(app, ["grid", str(toml)])
    assert res.exit_code == 0 and "skipped" in res.output

    members = tmp_path / "members"
    res = runner.invoke(app, ["select", str(runs), "--natural", str(synth_caches["dev"]),
                              "--synthetic", str(synth_caches["syn"]), "--k", "2", "--out", str(members)])
    assert res.exit_code == 0, res.output
    index = json.loads((members / "members.json").read_text())
    assert len(index["members"]) == 2
    assert "c" not in index["members"]  # one epoch at a tiny lr on one encoder ranks last
    for name in index["members"]:
        _member, meta = load_member(members / name)
        assert set(meta["dev_scores"]) >= {"dev", "natural", "synthetic"}
        assert meta["encoders_identity"]["encoders"][1]["graphs"]["fp32"] == "muq-a"
    # top-k-synthetic with k larger than the candidates keeps them all, in synthetic order
    res = runner.invoke(app, ["select", str(runs), "--natural", str(synth_caches["dev"]), "--synthetic",
                              str(synth_caches["syn"]), "--rule", "top-k-synthetic", "--k", "9",
                              "--out", str(tmp_path / "m2")])
    index2 = json.loads((tmp_path / "m2" / "members.json").read_text())
    assert index2["members"] == index2["selection"]["ranking"]["synthetic"]
    # a dev cache from other encoders is refused
    res = runner.invoke(app, ["select", str(runs), "--natural", str(synth_caches["other"]),
                              "--rule", "top-k-natural", "--out", str(tmp_path / "m3")])
    assert res.exit_code == 2 and "other features" in res.output
