"""No PyTorch: the runtime and `mmmos-score` work in a process where importing torch fails."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from ..audio_helpers import tone
from ..bundle_factory import Params

SHIM = r'''
import importlib.abc, pkgutil, sys

class BlockTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            sys.stderr.write(f"BLOCKED-IMPORT {name}\n")
            raise ImportError(f"torch is blocked in this test ({name})")
        return None

sys.meta_path.insert(0, BlockTorch())
import mmmos.runtime
for mod in pkgutil.iter_modules(mmmos.runtime.__path__):   # every runtime module, backends included
    __import__(f"mmmos.runtime.{mod.name}")
from mmmos.runtime.cli import main
try:
    main(sys.argv[1:])
finally:
    sys.stderr.write(f"TORCH-LOADED={'torch' in sys.modules}\n")
'''


def test_cli_runs_with_torch_unimportable(bundle: tuple[Path, Params], tmp_path: Path) -> None:
    sf.write(tmp_path / "a.wav", tone(2.0, 22050, channels=2), 22050, subtype="PCM_16")
    sf.write(tmp_path / "b.flac", tone(11.0, 16000), 16000)
    (tmp_path / "bad.wav").write_bytes(b"RIFF....")
    proc = subprocess.run(
        [sys.executable, "-c", SHIM, str(tmp_path / "a.wav"), "-", str(tmp_path / "bad.wav"),
         "--bundle", str(bundle[0]), "--format", "jsonl", "--threads", "1"],
        input=f"{tmp_path / 'b.flac'}\n", capture_output=True, text=True, timeout=120,
        env={**_env(), "MMMOS_CACHE_DIR": str(tmp_path / "cache")},
    )
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 1, proc.stderr  # one bad file among good ones
    assert "BLOCKED-IMPORT" not in proc.stderr and "TORCH-LOADED=False" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert [Path(r["path"]).name for r in rows] == ["a.wav", "b.flac", "bad.wav"]
    assert rows[0]["error"] is None and rows[1]["windows"] == 2 and rows[2]["error"]


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "MMMOS_BUNDLE"}


def test_import_is_light_and_cpu_install_pulls_no_torch() -> None:
    # Heavy backends load only when a Scorer starts, so `import mmmos.runtime` works with just the core deps.
    code = "import sys, mmmos.runtime; print(sorted(m for m in ('torch', 'onnxruntime', 'tensorrt', 'onnx') " \
           "if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11+")
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    project = tomllib.loads(pyproject.read_text())["project"]
    for req in [*project["dependencies"], *project["optional-dependencies"]["cpu"]]:
        assert "torch" not in req.lower(), req
