"""Bundle loading: manifest parsing, sha256 verification, precision choice (docs/contracts.md, "The bundle").

A bundle is the only thing the runtime reads. Anything wrong with it is a BundleError whose one
sentence says what to do (re-export, rebuild engines, pick another precision).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmmos import AXES

from .errors import BundleError, BundleNotFoundError, PrecisionError
from .manifest import ENGINES_DIR, MANIFEST_NAME, EncoderSpec, manifest_sha256, read_manifest, sha256_file
from .names import GRAPH_KEYS, Backend, GraphKey, Precision, PrecisionChoice, auto_precision, graph_key
from .uncertainty import Conformal, OODReference, load_conformal
from .windows import WINDOW_SECONDS

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
    if not (root / MANIFEST_NAME).is_file():
        raise BundleNotFoundError(f"no mmmos bundle at {root} (from {how}): {MAKE_ONE}.")
    return root


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

    def digest(self, p: Path) -> str:
        """The file's sha256, from the stamp when its size and mtime are unchanged, else computed and stamped."""
        rec = self.data.get(str(p.resolve()))
        if rec and rec[1] == self._stamp(p):
            return str(rec[0])
        digest = sha256_file(p)
        self.add(p, digest)
        return digest

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


def file_digest(path: Path) -> str:
    """sha256 of a (large) file, hashed once per size and mtime (the stamp lives in the user cache folder)."""
    cache = _VerifyCache()
    try:
        return cache.digest(Path(path))
    finally:
        cache.save()


@dataclass(frozen=True)
class ModelId:
    """Which model made a row: the bundle's name and the first 12 hex of its manifest's sha256."""

    name: str
    sha256: str

    def to_dict(self) -> dict[str, str]:
        """The row's `model` object."""
        return {"name": self.name, "sha256": self.sha256}

    def __str__(self) -> str:
        return f"{self.name}@{self.sha256}"


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

    @property
    def sha256(self) -> str:
        """sha256 of manifest.json: the identity of the bundle's whole content (it lists every file's hash)."""
        return manifest_sha256(self.root)

    @property
    def name(self) -> str:
        """A short model name for result rows: the provenance's model name, else the folder name."""
        prov = self.manifest.get("provenance", {}) or {}
        return str(prov.get("name") or self.root.resolve().name)

    @property
    def model_id(self) -> ModelId:
        """The model every row this bundle scores names: its name and 12 hex of its manifest's sha256."""
        return ModelId(self.name, self.sha256[:12])

    @classmethod
    def load(cls, root: str | os.PathLike[str] | None = None, verify: bool = True) -> Bundle:
        """Load and check a bundle folder.

        Args:
            root: the folder (None: $MMMOS_BUNDLE, else the default cache folder).
            verify: check the sha256 of every file listed in the manifest.

        Raises:
            BundleNotFoundError: no bundle there.
            BundleError: unreadable manifest, unknown format version, missing file or checksum mismatch.
        """
        path = resolve_bundle_dir(root)
        bundle = cls.from_manifest(path, read_manifest(path))
        if verify:
            bundle.verify()
        return bundle

    @classmethod
    def from_manifest(cls, root: Path, man: dict[str, Any]) -> Bundle:
        """A bundle from a manifest already read (e.g. one calibration is updating), checked but not verified.

        Raises:
            BundleError: a bad field, another window rule or other axes.
        """
        path = Path(root)
        try:
            encs = [EncoderSpec.from_dict(e) for e in man["encoders"]]
            ens = man.get("ensemble") or {"graphs": {}, "inputs": [], "outputs": []}
            win = man.get("window", {}) or {}
            seconds = float(win.get("seconds", WINDOW_SECONDS))
            hop = float(win.get("hop_seconds", seconds))
            bundle = cls(
                root=path, manifest=man, encoders=encs, ensemble_graphs=dict(ens["graphs"]),
                ensemble_inputs=tuple(ens["inputs"]),
                ensemble_outputs=tuple(ens.get("outputs", ("scores", "mean", "std"))),
                window_seconds=seconds, members=list(man.get("members", [])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"manifest of {path} is missing or has a bad field ({exc!r}); re-export it.") from None
        if abs(seconds - WINDOW_SECONDS) > 1e-9 or abs(hop - seconds) > 1e-9:
            raise BundleError(f"bundle {path} uses {seconds} s windows with hop {hop} s, but this runtime cuts "
                              f"{WINDOW_SECONDS} s windows with hop {WINDOW_SECONDS} s; re-export it.")
        if tuple(man.get("axes", AXES)) != AXES:
            raise BundleError(f"bundle {path} has axes {man.get('axes')}, expected {list(AXES)}; re-export it.")
        known = {o for e in encs for o in e.outputs}
        missing = [i for i in bundle.ensemble_inputs if i not in known]
        if missing:
            raise BundleError(f"ensemble graph of {path} needs {missing}, which no encoder graph outputs; "
                              "re-export the bundle.")
        return bundle

    def verify(self) -> None:
        """Check every file listed in manifest `files` against its sha256 (engines are keyed by it instead).

        Raises:
            BundleError: a listed file is missing or its checksum differs.
        """
        files: dict[str, str] = self.manifest.get("files", {}) or {}
        cache = _VerifyCache()
        try:
            for rel, digest in files.items():
                if rel.startswith(f"{ENGINES_DIR}/"):
                    continue  # bundles of older exports listed their plans; plans are keyed by graph hash now
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

    @functools.cached_property
    def conformal(self) -> Conformal | None:
        """Calibrated score intervals (`mmmos-calibrate --targets`), or None."""
        name = (self.manifest.get("uncertainty") or {}).get("conformal")
        return load_conformal(self.root / name) if name else None

    @functools.cached_property
    def ood_reference(self) -> OODReference | None:
        """The out-of-domain reference (fused embeddings of reference clips), or None."""
        name = (self.manifest.get("uncertainty") or {}).get("ood")
        return OODReference.load(self.root / name) if name else None

    def pooled_outputs(self) -> list[str]:
        """The encoders' pooled output names (`<name>_pooled`), in bundle order: what the fused embedding fuses."""
        return [o for e in self.encoders for o in e.outputs if o.endswith("_pooled")]

    def graph_keys(self) -> list[GraphKey]:
        """Graph keys every encoder has a graph for (the ensemble falls back to its fp32 graph)."""
        return [k for k in GRAPH_KEYS if all(k in e.graphs for e in self.encoders)
                and (not self.has_ensemble or k in self.ensemble_graphs or "fp32" in self.ensemble_graphs)]

    def status(self, key: GraphKey) -> str:
        """The report status of a graph key: "passed" | "failed" | "unchecked"."""
        return str((self.precisions.get(key) or {}).get("status", "unchecked"))

    def passed_keys(self) -> list[GraphKey]:
        """Graph keys whose export-time or calibration check passed."""
        return [k for k in self.graph_keys() if self.status(k) == "passed"]

    def choose_precision(
        self, choice: PrecisionChoice, backend: Backend, force: bool = False
    ) -> tuple[Precision, str | None]:
        """Resolve a precision choice for a backend and check it against the bundle's report.

        Returns:
            (precision, None) or, when `force` let through a precision whose check did not pass, a warning line.

        Raises:
            PrecisionError: not in the bundle (for that backend), or not passed and not forced.
        """
        precision: Precision = auto_precision(backend, list(self.passed_keys())) if choice == "auto" else choice
        key = graph_key(precision, backend)
        if key not in self.graph_keys():
            how = ("run mmmos-calibrate with --trt-int8 to write the TensorRT INT8 graph" if key == "int8-trt"
                   else "pick one of those or re-export with it")
            raise PrecisionError(f"precision {precision!r} on {backend} needs {key!r} graphs, which are not in bundle "
                                 f"{self.root} (it has {self.graph_keys()}); {how}.")
        status = self.status(key)
        if status == "passed":
            return precision, None
        if not force:
            raise PrecisionError(
                f"precision {precision!r} ({key} graphs) of bundle {self.root} has status {status!r} in its report "
                f"(passed: {self.passed_keys()}); pick a passed one or force it (--force-precision)."
            )
        return precision, f"warning: using precision {precision} ({key} graphs) although its check is {status!r}"

    def encoder_graph(self, enc: EncoderSpec, key: GraphKey) -> Path:
        """Path of an encoder's graph for a graph key."""
        return self.root / enc.graphs[key]

    def ensemble_graph(self, key: GraphKey) -> Path:
        """Path of the ensemble graph for a graph key (its fp32 graph when it has none for that key)."""
        return self.root / self.ensemble_graphs.get(key, self.ensemble_graphs.get("fp32", ""))

    def engines_dir(self) -> Path:
        """Folder of the TensorRT plans shipped with the bundle (`engines/<key>/<graph stem>.<sha16>.plan`)."""
        return self.root / ENGINES_DIR
