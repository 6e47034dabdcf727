"""Fixtures for the runtime tests: small numpy-only ONNX bundles (see bundle_factory.py) and audio files."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..bundle_factory import Params, make_bundle


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Params]:
    """A 3-member, 2-encoder (16 kHz + 24 kHz) random-weight bundle shared by the read-only tests."""
    root = tmp_path_factory.mktemp("bundle") / "b"
    return root, make_bundle(root)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the sha256 stamp cache and default-bundle lookup out of the user's home."""
    monkeypatch.setenv("MMMOS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MMMOS_BUNDLE", raising=False)
