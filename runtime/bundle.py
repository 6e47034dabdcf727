"""Bundle loading: manifest parsing, sha256 verification, precision choice (docs/contracts.md, "The bundle").

A bundle is the only thing the runtime reads. Anything wrong with it is a BundleError whose one
sentence says what to do (re-export, rebuild engines, pick another precision).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmmos import AXES

from .errors import BundleError, BundleNotFoundError, PrecisionError

FORMAT_VERSION = 1
PRECISIONS = ("fp32", "fp16", "int8")
MAKE_ONE = (
    "make one with `mmmos-export DIR --random-init --preset tiny` (random weights: scores mean nothing) "
    "or `mmmos-export DIR --audiobox CHECKPOINT.pt`, then pass `--bundle DIR` or set $MMMOS_BUNDLE"
)


def cache_dir() -> Path:
    """The user cache folder of mmmos ($MMMOS_CACHE_DIR, else the platform's cache folder + /mmmos)."""
    env = os.environ.get("MMMOS_CACHE_DIR")
    if env:
        return Path(env)
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "mmmos"


def default_bundle_dir() -> Path:
    """Where a bundle is looked for when neither --bundle nor $MMMOS_BUNDLE is given."""
    return cache_dir() / "bundle"


def resolve_bundle_dir(bundle: str | os.PathLike[str] | None) -> Path:
    """Pick the bundle folder: the argument, else $MMMOS_BUNDLE, else the default cache folder.

    Raises:
        BundleNotFoundError: no manifest.json there; the message says how to make a bundle.
    """
    if bundle is not None:
        root, how = Path(bundle), "--bundle"
    elif os.environ.get("MMMOS_BUNDLE"):
        root, how = Path(os.environ["MMMOS_BUNDLE"]), "$MMMOS_BUNDLE"
    else:
        root, how = default_bundle_dir(), "the default location"
    if not (root / "manifest.json").is_file():
        raise BundleNotFoundError(f"no mmmos bundle at {root} (from {how}): {MAKE_ONE}.")
    return root


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks (bundles hold GB-sized graphs)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


class _VerifyCache:
    """Remembers (size, mtime) of files whose sha256 already matched, so big bundles hash once.

    Stored under the user cache folder; when that is not writable verification simply re-hashes.
    """

    def __init__(self) -> None:
        self.path = cache_dir() / "verified.json"
        try:
            self.data: dict[str, Any] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.data = {}
        self.dirty = False

    @staticmethod
    def _stamp(p: Path) -> list[int]:
        st = p.stat()
        return [st.st_size, st.st_mtime_ns]

    def ok(self, p: Path, digest: str) -> bool:
        rec = self.data.get(str(p.resolve()))
        return bool(rec) and rec[0] == digest and rec[1] == self._stamp(p)

    def add(self, p: Path, digest: str) -> None:
        self.data[str(p.resolve())] = [digest, self._stamp(p)]
        self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.data))
            os.replace(tmp, self.path)
        except OSError:
            pass  # a read-only cache only costs re-hashing next time


@dataclass(frozen=True)
class EncoderSpec:
    """One encoder graph of a bundle (a manifest `encoders[]` entry)."""

    name: str
    sample_rate: int
    window_samples: int
    graphs: dict[str, str]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    frames: bool = False


@dataclass
class Bundle:
    """A loaded bundle folder: the parsed manifest plus paths to its graphs.

    Use `Bundle.load(dir)`; it checks the format version and (by default) every file's sha256.
    """

    root: Path
    manifest: dict[str, Any]
    encoders: list[EncoderSpec]
    ensemble_graphs: dict[str, str]
    ensemble_inputs: tuple[str, ...]
    ensemble_outputs: tuple[str, ...]
    window_seconds: float
    members: list[dict[str, Any]] = field(default_factory=list)

    @property
    def untrained(self) -> bool:
        """True for a random-weight bundle (its scores mean nothing)."""
        prov = self.manifest.get("provenance", {}) or {}
        return bool(self.manifest.get("untrained", prov.get("untrained", False)))

    @property
    def precisions(self) -> dict[str, dict[str, Any]]:
        """Manifest `precisions`: name -> {"status": "passed" | "failed" | "unchecked", ...}."""
        return dict(self.manifest.get("precisions", {}) or {})

    @property
    def has_ensemble(self) -> bool:
        """False for an encoders-only bundle (it can encode, not score)."""
        return bool(self.ensemble_graphs)

    @property
    def n_members(self) -> int:
        """Number of ensemble members."""
        return len(self.members)

    @classmethod
    def load(cls, root: str | os.PathLike[str] | None = None, verify: bool = True) -> Bundle:
        """Load and check a bundle folder.

        Args:
            root: the folder (None: $MMMOS_BUNDLE, else the default cache folder).
            verify: check the sha256 of every non-engine file listed in the manifest.

        Raises:
            BundleNotFoundError: no bundle there.
            BundleError: unreadable manifest, unknown format version, missing file or checksum mismatch.
        """
        path = resolve_bundle_dir(root)
        try:
            man = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BundleError(f"cannot read {path / 'manifest.json'} ({exc}); re-export the bundle.") from None
        if man.get("format_version") != FORMAT_VERSION:
            raise BundleError(
                f"bundle {path} has format_version {man.get('format_version')!r} but this mmmos reads "
                f"{FORMAT_VERSION}; re-export it with this version of mmmos-export."
            )
        try:
            encs = [
                EncoderSpec(
                    name=str(e["name"]), sample_rate=int(e["sample_rate"]),
                    window_samples=int(e["window_samples"]), graphs=dict(e["graphs"]),
                    inputs=tuple(e.get("inputs", ("wav", "lengths"))), outputs=tuple(e["outputs"]),
                    frames=bool(e.get("frames", False)),
                )
                for e in man["encoders"]
            ]
            ens = man.get("ensemble") or {"graphs": {}, "inputs": [], "outputs": []}
            win = man.get("window", {}) or {}
            seconds = float(win.get("seconds", 10.0))
            hop = float(win.get("hop_seconds", seconds))
            bundle = cls(
                root=path, manifest=man, encoders=encs, ensemble_graphs=dict(ens["graphs"]),
                ensemble_inputs=tuple(ens["inputs"]),
                ensemble_outputs=tuple(ens.get("outputs", ("scores", "mean", "std"))),
                window_seconds=seconds, members=list(man.get("members", [])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"manifest of {path} is missing or has a bad field ({exc!r}); re-export it.") from None
        if abs(hop - seconds) > 1e-9:
            raise BundleError(f"bundle {path} uses hop {hop} s != window {seconds} s, which this runtime "
                              "does not support; re-export with the default window rule.")
        if tuple(man.get("axes", AXES)) != AXES:
            raise BundleError(f"bundle {path} has axes {man.get('axes')}, expected {list(AXES)}; re-export it.")
        known = {o for e in encs for o in e.outputs}
        missing = [i for i in bundle.ensemble_inputs if i not in known]
        if missing:
            raise BundleError(f"ensemble graph of {path} needs {missing}, which no encoder graph outputs; "
                              "re-export the bundle.")
        if verify:
            bundle.verify()
        return bundle

    def verify(self) -> None:
        """Check every non-engine file listed in manifest `files` against its sha256.

        Engines are checked when the TensorRT backend loads them (they are rebuilt on mismatch).

        Raises:
            BundleError: a listed file is missing or its checksum differs.
        """
        files: dict[str, str] = self.manifest.get("files", {}) or {}
        cache = _VerifyCache()
        try:
            for rel, digest in files.items():
                if rel.startswith("engines/"):
                    continue
                p = self.root / rel
                if not p.is_file():
                    raise BundleError(f"bundle file {p} is listed in the manifest but missing; re-export.")
                if cache.ok(p, digest):
                    continue
                if sha256_file(p) != digest:
                    raise BundleError(
                        f"checksum mismatch for {p}: the file changed after export; re-export the bundle."
                    )
                cache.add(p, digest)
        finally:
            cache.save()
        used = [g for e in self.encoders for g in e.graphs.values()] + list(self.ensemble_graphs.values())
        unlisted = [g for g in used if g not in files and (self.root / g).exists()]
        if files and unlisted:
            raise BundleError(f"graphs {unlisted} of {self.root} have no sha256 in the manifest; re-export.")

    def available_precisions(self) -> list[str]:
        """Precisions every encoder has a graph for (the ensemble falls back to its fp32 graph)."""
        return [p for p in PRECISIONS if all(p in e.graphs for e in self.encoders)
                and (not self.has_ensemble or p in self.ensemble_graphs or "fp32" in self.ensemble_graphs)]

    def passed_precisions(self) -> list[str]:
        """Available precisions whose export-time check passed (`precisions[p].status == "passed"`)."""
        st = self.precisions
        return [p for p in self.available_precisions() if (st.get(p) or {}).get("status") == "passed"]

    def check_precision(self, precision: str, force: bool = False) -> str | None:
        """Validate a precision choice.

        Returns:
            None, or a warning line when `force` let through a precision whose check did not pass.

        Raises:
            PrecisionError: not in the bundle, or not passed and not forced.
        """
        if precision not in self.available_precisions():
            raise PrecisionError(
                f"precision {precision!r} is not in bundle {self.root} (it has {self.available_precisions()}); "
                "pick one of those or re-export with it."
            )
        status = (self.precisions.get(precision) or {}).get("status", "unchecked")
        if status == "passed":
            return None
        if not force:
            raise PrecisionError(
                f"precision {precision!r} of bundle {self.root} has status {status!r} in its report "
                f"(passed: {self.passed_precisions()}); pick a passed one or force it (--force-precision)."
            )
        return f"warning: using precision {precision} although its export-time check is {status!r}"

    def encoder_graph(self, enc: EncoderSpec, precision: str) -> Path:
        """Path of an encoder's graph at `precision`."""
        return self.root / enc.graphs[precision]

    def ensemble_graph(self, precision: str) -> Path:
        """Path of the ensemble graph at `precision` (its fp32 graph when it has none at that precision)."""
        return self.root / self.ensemble_graphs.get(precision, self.ensemble_graphs.get("fp32", ""))

    def engines_dir(self) -> Path:
        """Folder of TensorRT plans (`engines/<trt_version>-sm<cc>-<profile>/<graph>.plan`)."""
        return self.root / "engines"
