"""`--model`: a bundle folder, or the name of a public model that mmmos fetches and exports once.

`mmmos-score --model audiobox clip.wav` fetches Meta's `facebook/audiobox-aesthetics` checkpoint through
huggingface_hub on first use (its Hugging Face folder: config.json + model.safetensors, no pickle), exports it
into a cached bundle `<cache>/bundles/<name>-<sha256 of the weights, 12 hex>` with `mmmos-export` in a child
process (so the scoring process never imports torch), and scores with it; later runs find the bundle by the
checkpoint's hash and need neither torch nor the network.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from .bundle import cache_dir, file_digest
from .errors import BackendUnavailableError, BundleNotFoundError
from .manifest import MANIFEST_NAME

ModelName = Literal["audiobox"]
"""Public models `--model` knows by name: `audiobox` = Meta's Audiobox Aesthetics (WavLM Base+, four axes)."""

MODEL_NAMES: tuple[ModelName, ...] = get_args(ModelName)


@dataclass(frozen=True)
class HubModel:
    """A public checkpoint on the Hugging Face Hub and how `mmmos-export` turns it into a bundle."""

    name: ModelName
    repo: str
    files: tuple[str, ...]
    weights: str
    export_flag: str


HUB_MODELS: dict[str, HubModel] = {
    "audiobox": HubModel("audiobox", "facebook/audiobox-aesthetics", ("config.json", "model.safetensors"),
                         "model.safetensors", "--audiobox"),
}


def bundles_dir() -> Path:
    """Where exported public models are cached (`<mmmos cache>/bundles`)."""
    return cache_dir() / "bundles"


def resolve_model(spec: str, log: Callable[[str], None]) -> Path:
    """The bundle folder `--model SPEC` means: SPEC itself when it is a folder, else a known model's bundle.

    Raises:
        BundleNotFoundError: neither a folder nor a known name, or the checkpoint cannot be fetched offline.
        BackendUnavailableError: the model must be exported first and the `export` extra is missing.
    """
    if Path(spec).is_dir():
        return Path(spec)
    if spec not in HUB_MODELS:
        raise BundleNotFoundError(f"--model {spec!r} is neither a bundle folder nor a known model "
                                  f"({', '.join(MODEL_NAMES)}); pass one of those or a folder made by mmmos-export.")
    return cached_bundle(HUB_MODELS[spec], log)


def _fetch(model: HubModel) -> Path:
    """The model's files through huggingface_hub (from its cache first, then the network)."""
    where = f"https://huggingface.co/{model.repo}"
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise BackendUnavailableError(
            f"--model {model.name} fetches {model.repo} with huggingface_hub, which is not installed: "
            "pip install 'mmmos[export]' (it also exports the checkpoint once).") from None
    try:
        return Path(snapshot_download(model.repo, allow_patterns=list(model.files)))
    except Exception as exc:  # offline, gated, rate limited: say which files to fetch and where they go
        from huggingface_hub.constants import HF_HUB_CACHE

        raise BundleNotFoundError(
            f"cannot fetch {model.repo} ({type(exc).__name__}); download {' and '.join(model.files)} from {where} "
            f"into the Hugging Face cache (huggingface-cli download {model.repo} {' '.join(model.files)}, cache "
            f"{HF_HUB_CACHE}), or export them yourself (mmmos-export DIR {model.export_flag} FOLDER) and pass "
            "--model DIR.") from None


def _export_available() -> str | None:
    """None when this Python can run mmmos-export, else what is missing."""
    missing = [m for m in ("torch", "onnx", "safetensors") if importlib.util.find_spec(m) is None]
    return ", ".join(missing) or None


def cached_bundle(model: HubModel, log: Callable[[str], None]) -> Path:
    """The model's bundle in the cache, exported from its checkpoint on first use (keyed by the weights' hash).

    Raises:
        BundleNotFoundError: the checkpoint cannot be fetched.
        BackendUnavailableError: the export extra is missing, or the export failed.
    """
    folder = _fetch(model)
    key = file_digest(folder / model.weights)[:12]
    target = bundles_dir() / f"{model.name}-{key}"
    if (target / MANIFEST_NAME).is_file():
        return target
    missing = _export_available()
    if missing:
        raise BackendUnavailableError(
            f"--model {model.name} exports the checkpoint into a bundle once, which needs the export extra "
            f"({missing} missing): pip install 'mmmos[export]' (on a machine without a GPU, take torch's CPU build: "
            "pip install torch --index-url https://download.pytorch.org/whl/cpu).")
    log(f"mmmos: exporting {model.repo} into {target} (once; later runs reuse it) ...")
    bundles_dir().mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{model.name}-", dir=bundles_dir()))
    try:
        cmd = [sys.executable, "-m", "mmmos.export.cli", str(tmp / "bundle"), model.export_flag, str(folder)]
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=sys.stderr, check=False)
        if done.returncode != 0:
            raise BackendUnavailableError(f"exporting {model.repo} failed (mmmos-export exit code {done.returncode}, "
                                          "see above); run it by hand: " + " ".join(cmd))
        try:
            os.replace(tmp / "bundle", target)  # atomic: a concurrent run either sees the whole bundle or none
        except OSError:
            if not (target / MANIFEST_NAME).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
