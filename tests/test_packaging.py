"""The package imports from the checkout with any kind of install: the root `mmmos/` folder holds the whole
package (links to the top-level folders), so it never shadows an installed mmmos with an empty one.

CI also installs mmmos non-editably into its own environment and names its interpreter in $MMMOS_PLAIN_PYTHON:
`python -m mmmos.runtime.cli --help` and `mmmos-score --ray` then run from the repository root.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import soundfile as sf

from .audio_helpers import tone
from .bundle_factory import make_bundle

ROOT = Path(__file__).resolve().parents[1]

# Import from the repository root with every editable-install finder removed: what a plain `pip install .`
# user (or a Ray worker started there) gets, since the checkout's mmmos/ comes first on sys.path.
WITHOUT_EDITABLE = """
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__name__.lower()
                    and "editable" not in getattr(f, "__name__", "").lower()]
for name in [m for m in sys.modules if m == "mmmos" or m.startswith("mmmos.")]:
    del sys.modules[name]
import mmmos.runtime.cli, mmmos.runtime.serving.ray_scoring, mmmos.calibration.reports
print(mmmos.runtime.cli.__file__)
"""


def test_every_subpackage_is_importable_from_the_checkout_root() -> None:
    out = subprocess.run([sys.executable, "-c", WITHOUT_EDITABLE], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert Path(out.stdout.strip()).resolve() == (ROOT / "runtime" / "cli.py").resolve()


def test_the_root_package_links_every_mapped_folder() -> None:
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for package, folder in mapping.items():
        if package == "mmmos":
            continue
        link = ROOT / "mmmos" / Path(*package.split(".")[1:])
        assert link.resolve() == (ROOT / folder).resolve(), f"{link} must lead to {folder}/"


def _plain_python() -> Path:
    env = os.environ.get("MMMOS_PLAIN_PYTHON")
    if not env:
        pytest.skip("$MMMOS_PLAIN_PYTHON names no non-editable install of mmmos (.ci/run makes one)")
    return Path(env)


@pytest.mark.slow
def test_a_non_editable_install_runs_from_the_repository_root(tmp_path: Path) -> None:
    py = _plain_python()
    helped = subprocess.run([str(py), "-m", "mmmos.runtime.cli", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert helped.returncode == 0 and "Usage" in helped.stdout, helped.stderr[-2000:]
    bundle = tmp_path / "bundle"
    make_bundle(bundle)
    clips = tmp_path / "clips"
    clips.mkdir()
    for i in range(3):
        sf.write(clips / f"c{i}.wav", tone(1.0 + i, 16000, seed=i), 16000)
    env = {**os.environ, "MMMOS_CACHE_DIR": str(tmp_path / "cache")}
    run = subprocess.run([str(py.parent / "mmmos-score"), str(clips), "--ray", "--ray-cpus", "2", "--bundle",
                          str(bundle), "--backend", "ort-cpu", "-o", str(tmp_path / "out"), "-q"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [line for p in sorted((tmp_path / "out").glob("part-*.jsonl")) for line in p.read_text().splitlines()]
    assert len(rows) == 3
