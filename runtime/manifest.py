"""The bundle's manifest.json, read and written here only (docs/contracts.md, "The bundle").

`mmmos-export` writes a manifest with `write_manifest`, `mmmos-calibrate` updates one with `update_manifest`,
and the runtime reads it with `read_manifest`; all three share the schema below, the format version, the
file hashing rule and the atomic JSON writer. Nothing outside `runtime/` opens manifest.json itself.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmmos import AXES

from .errors import BundleError, BundleNotFoundError
from .windows import WINDOW_SECONDS, LengthRule

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
REPORT_NAME = "report.json"
ENGINES_DIR = "engines"


@dataclass(frozen=True)
class EncoderSpec:
    """One encoder graph of a bundle (a manifest `encoders[]` entry).

    Attributes:
        name: "wavlm" | "muq" | "m2d" (or a test encoder's name).
        sample_rate: the rate its graph is fed.
        window_samples: samples per window at that rate.
        graphs: graph key ("fp32", "fp16", "int8", "int8-trt") -> file name in the bundle.
        inputs: graph input names (always "wav", "lengths").
        outputs: graph output names, e.g. "wavlm_pooled".
        frames: whether the graph also outputs frame features (`<name>_frames`, `<name>_steps`).
        steps: steps per window of the frame outputs (None without frames).
        lengths: for a graph with a dynamic time axis, how many samples a window is fed (None: always
            `window_samples`, the whole zero-padded window).
    """

    name: str
    sample_rate: int
    window_samples: int
    graphs: dict[str, str] = field(default_factory=dict)
    inputs: tuple[str, ...] = ("wav", "lengths")
    outputs: tuple[str, ...] = ()
    frames: bool = False
    steps: int | None = None
    lengths: LengthRule | None = None

    def fed_samples(self, valid: int) -> int:
        """Samples a window with `valid` valid samples is fed (the whole window without a length rule)."""
        return self.window_samples if self.lengths is None else self.lengths.fed_samples(valid)

    @property
    def max_samples(self) -> int:
        """The most samples a window is ever fed."""
        return self.window_samples if self.lengths is None else self.lengths.max_samples

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EncoderSpec:
        """Parse a manifest entry (KeyError/TypeError/ValueError on a bad one)."""
        return cls(name=str(d["name"]), sample_rate=int(d["sample_rate"]), window_samples=int(d["window_samples"]),
                   graphs=dict(d.get("graphs", {})), inputs=tuple(d.get("inputs", ("wav", "lengths"))),
                   outputs=tuple(d.get("outputs", ())), frames=bool(d.get("frames", False)),
                   steps=int(d["steps"]) if d.get("steps") is not None else None,
                   lengths=LengthRule.from_dict(d["lengths"]) if d.get("lengths") else None)

    def to_dict(self) -> dict[str, Any]:
        """The manifest entry."""
        out: dict[str, Any] = {"name": self.name, "sample_rate": self.sample_rate,
                               "window_samples": self.window_samples, "graphs": dict(self.graphs),
                               "inputs": list(self.inputs), "outputs": list(self.outputs), "frames": self.frames}
        if self.steps is not None:
            out["steps"] = self.steps
        if self.lengths is not None:
            out["lengths"] = self.lengths.to_dict()
        return out


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks (bundles hold GB-sized graphs)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _json_safe(value: Any) -> Any:
    """NaN/inf become None (strict JSON readers reject them), in nested dicts and lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def write_json(path: Path, data: Any) -> Path:
    """Write indented JSON atomically (temp file + rename: an interrupted run never leaves half a file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(_json_safe(data), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_report(root: Path) -> dict[str, Any]:
    """A bundle's report.json (an empty dict when there is none yet)."""
    path = Path(root) / REPORT_NAME
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def read_manifest(root: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a bundle's manifest.json.

    Raises:
        BundleNotFoundError: the folder has no manifest.json.
        BundleError: it is unreadable or of another format version.
    """
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        raise BundleNotFoundError(f"{root} is not an mmmos bundle (no {MANIFEST_NAME}); make one with mmmos-export.")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"cannot read {path} ({exc}); re-export the bundle.") from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        found = manifest.get("format_version") if isinstance(manifest, dict) else None
        raise BundleError(f"bundle {root} has format_version {found!r} but this mmmos reads {FORMAT_VERSION}; "
                          "re-export it with this version of mmmos-export.")
    return manifest


def graph_files(root: Path, graph: str) -> list[str]:
    """A graph and its external-data file (`X.onnx.data`) when it has one, relative to the bundle."""
    return [graph, *([graph + ".data"] if (Path(root) / (graph + ".data")).is_file() else [])]


def bundle_files(root: Path) -> list[str]:
    """Every file in the bundle except the manifest itself and engines, as sorted POSIX paths."""
    root = Path(root)
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and p.name != MANIFEST_NAME and p.relative_to(root).parts[0] != ENGINES_DIR)


def manifest_sha256(root: Path) -> str:
    """sha256 of the manifest file: the identity of a bundle's whole content (it lists every file's hash)."""
    return sha256_file(Path(root) / MANIFEST_NAME)


def write_manifest(
    root: Path, *, encoders: list[EncoderSpec], ensemble: dict[str, Any] | None, members: list[dict[str, Any]],
    precisions: dict[str, dict[str, Any]], provenance: dict[str, Any], untrained: bool,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write manifest.json last, with the sha256 of every other file in the bundle; returns it."""
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "axes": list(AXES),
        "window": {"seconds": WINDOW_SECONDS, "hop_seconds": WINDOW_SECONDS},
        "untrained": bool(untrained),
        "encoders": [e.to_dict() for e in encoders],
        "ensemble": ensemble,
        "members": members,
        "precisions": precisions,
        "provenance": provenance,
        **(extra or {}),
        "files": {name: sha256_file(Path(root) / name) for name in bundle_files(root)},
    }
    write_json(Path(root) / MANIFEST_NAME, manifest)
    return manifest


def update_manifest(root: Path, manifest: dict[str, Any], changed: Iterable[str] = ()) -> None:
    """Write a changed manifest back: `changed` files (and report.json) are re-hashed, vanished ones dropped."""
    root = Path(root)
    files = manifest.setdefault("files", {})
    for name in [*changed, REPORT_NAME]:
        if (root / name).is_file():
            files[name] = sha256_file(root / name)
    for name in [n for n in files if not (root / n).is_file()]:
        del files[name]
    write_json(root / MANIFEST_NAME, manifest)


def verify_files(root: Path, manifest: dict[str, Any], names: Iterable[str]) -> None:
    """Check the sha256 of `names` against the manifest.

    Raises:
        BundleError: a file is missing, unlisted or changed.
    """
    for name in names:
        want = (manifest.get("files") or {}).get(name)
        path = Path(root) / name
        if want is None or not path.is_file() or sha256_file(path) != want:
            raise BundleError(f"{path} does not match the sha256 in its manifest; re-export the bundle.")


def provenance(source: str, checkpoints: Iterable[Path] = (), **extra: Any) -> dict[str, Any]:
    """The manifest's provenance block: source kind, checkpoints with their sha256, version, time."""
    import mmmos

    return {
        "source": source,
        **extra,
        "checkpoints": [{"path": str(p), "sha256": sha256_file(Path(p))} for p in checkpoints if Path(p).is_file()],
        "mmmos_version": mmmos.__version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
