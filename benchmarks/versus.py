"""`mmmos-bench versus`: mmmos against the audiobox-aesthetics package, interleaved, per clip length.

Two long-lived worker processes (`versus_worker`), started once; each loads its model once and warms up:
mmmos (`Scorer(bundle, backend, precision).score(path)`) and the peer (the package's `AesPredictor` on the same
file). Both get the same number of threads. The clips are 16 kHz mono float WAVs written into `--out/clips`.
`versus_stats.interleave` times them call by call (A,B then B,A ...), `versus_stats` makes the statistics and
judges the goals, `versus_report` writes the markdown. This process never imports torch.

The peer's checkpoint: `--peer-checkpoint`, else the Audiobox checkpoint the bundle was exported from (its
manifest's `provenance.checkpoints`, checked against the recorded sha256), else - for a bundle that is not an
Audiobox export, e.g. the full ensemble - a random-init `AesMultiOutput` (the package's default WavLM Base+).
An Audiobox bundle whose checkpoint cannot be found is refused: the comparison would not be of the same model.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from .versus_stats import interleave, judge_goals, summarize_lengths

DEFAULT_LENGTHS = (1.0, 2.0, 5.0, 10.0, 30.0)
CLIP_RATE = 16000


class VersusError(RuntimeError):
    """The comparison cannot run as asked (no peer checkpoint, a worker failed); the message says why."""


@dataclass(frozen=True)
class VersusSettings:
    """What `mmmos-bench versus` was asked to do (see the CLI's options)."""

    bundle: str
    out: str
    lengths: tuple[float, ...] = DEFAULT_LENGTHS
    rounds: int = 5
    warmup: int = 1
    precision: str = "auto"
    force_precision: bool = False
    backend: str = "ort-cpu"
    threads: int = 2
    peer_checkpoint: str | None = None

    def command(self) -> str:
        """The `mmmos-bench versus` command line that makes these settings."""
        args = ["mmmos-bench", "versus", "--bundle", self.bundle, "--lengths", ",".join(f"{x:g}" for x in self.lengths),
                "--rounds", str(self.rounds), "--warmup", str(self.warmup), "--precision", self.precision,
                "--backend", self.backend, "--threads", str(self.threads), "--out", self.out]
        if self.force_precision:
            args.append("--force-precision")
        if self.peer_checkpoint:
            args += ["--peer-checkpoint", self.peer_checkpoint]
        return shlex.join(args)


def bundle_kind(manifest: dict[str, Any]) -> str:
    """"audiobox" for an Audiobox export (same model on both sides), else "ensemble"."""
    return "audiobox" if (manifest.get("provenance") or {}).get("source") == "audiobox" else "ensemble"


def _candidates(path: str, bundle_root: Path) -> list[Path]:
    p = Path(path)
    if p.is_absolute():
        return [p]
    return [Path.cwd() / p, bundle_root / p, bundle_root.parent / p]  # the export recorded it as it was given


def peer_checkpoint(manifest: dict[str, Any], bundle_root: Path, explicit: str | None) -> tuple[str | None, str]:
    """The checkpoint the peer loads (None: random init) and how it was chosen.

    Raises:
        VersusError: `explicit` does not exist, or the bundle is an Audiobox export whose checkpoint is not
            on this machine (or differs from the one it was exported from).
    """
    from mmmos.runtime.manifest import sha256_file

    if explicit:
        if not Path(explicit).exists():
            raise VersusError(f"--peer-checkpoint {explicit} does not exist.")
        return str(Path(explicit).resolve()), "--peer-checkpoint"
    if bundle_kind(manifest) != "audiobox":
        return None, "random init: the bundle is not an Audiobox export"
    recorded = (manifest.get("provenance") or {}).get("checkpoints") or []
    for entry in recorded:
        for cand in _candidates(str(entry.get("path", "")), bundle_root):
            if not cand.is_file() or (cand.suffix not in (".pt", ".ckpt", ".pth") and cand.name != "model.safetensors"):
                continue
            if entry.get("sha256") and sha256_file(cand) != entry["sha256"]:
                raise VersusError(f"{cand} differs from the Audiobox checkpoint bundle {bundle_root} was exported from "
                                  "(sha256 mismatch); pass --peer-checkpoint with the right file.")
            found = cand if cand.name != "model.safetensors" else cand.parent
            return str(found.resolve()), "the bundle's provenance"
    names = [e.get("path") for e in recorded] or ["(none recorded)"]
    raise VersusError(f"bundle {bundle_root} was exported from the Audiobox checkpoint {names}, which is not on this "
                      "machine; pass --peer-checkpoint PATH (that checkpoint.pt or Hugging Face folder) so that the "
                      "package runs the same model.")


class WorkerProcess:
    """One side in its own long-lived process (`versus_worker`), spoken to in JSON lines; stderr goes to a log."""

    def __init__(self, side: str, spec: dict[str, Any], work: Path) -> None:
        self.side = side
        self.log_path = work / f"versus-{side}.log"
        spec_path = work / f"versus-{side}.spec.json"
        spec_path.write_text(json.dumps({**spec, "side": side}, indent=1))
        self._log: IO[str] = open(self.log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen([sys.executable, "-m", "mmmos.benchmarks.versus_worker", str(spec_path)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
                                     encoding="utf-8")
        self.info: dict[str, Any] = {}

    def _send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()

    def _recv(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self._log.flush()
            tail = " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-3:])
            raise VersusError(f"the {self.side} worker exited (code {self.proc.wait()}) without an answer: {tail} "
                              f"(log: {self.log_path})")
        msg = json.loads(line)
        if "error" in msg:
            raise VersusError(f"the {self.side} worker failed: {msg['error']} (log: {self.log_path})")
        return msg

    def wait_ready(self) -> dict[str, Any]:
        """Block until the worker has loaded and warmed up; returns its description."""
        self.info = self._recv()["info"]
        return self.info

    def __call__(self, path: str) -> tuple[float, dict[str, float] | None]:
        """(wall seconds the worker measured around one end-to-end call on `path`, the file's scores)."""
        self._send({"path": str(path)})
        msg = self._recv()
        return float(msg["seconds"]), msg.get("scores")

    def close(self) -> dict[str, Any]:
        """Stop the worker; returns its last words (peak RSS) when it could say them."""
        bye: dict[str, Any] = {}
        try:
            if self.proc.poll() is None:
                self._send({"quit": True})
                bye = self._recv()
        except (OSError, VersusError, ValueError):
            pass
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
        return bye


def run_versus(settings: VersusSettings, say: Callable[[str], None]) -> dict[str, Any]:
    """Run the comparison; writes clips, `versus.json` and `versus.md` into `settings.out`; returns the report.

    Raises:
        VersusError: see `peer_checkpoint`, or a worker failed to start or to score.
        mmmos.runtime.errors.MMMOSRuntimeError: the bundle does not load.
    """
    from mmmos.runtime.bundle import Bundle

    from .clips import write_clips
    from .timing import load_average, machine_info
    from .versus_report import markdown

    bundle = Bundle.load(settings.bundle, verify=True)
    manifest, kind = bundle.manifest, bundle_kind(bundle.manifest)
    ckpt, ckpt_how = peer_checkpoint(manifest, bundle.root, settings.peer_checkpoint)
    out = Path(settings.out)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    lengths = sorted(set(settings.lengths))
    say(f"writing {CLIP_RATE} Hz mono clips of {', '.join(f'{x:g}' for x in lengths)} s into {out / 'clips'}")
    clips = {sec: str(p) for sec, p in write_clips(out / "clips", lengths, CLIP_RATE, mono=True, subtype="FLOAT",
                                                   prefix="versus").items()}
    prov = manifest.get("provenance") or {}
    raw: dict[str, Any] = {
        "kind": kind, "command": settings.command(), "settings": asdict(settings), "machine": machine_info(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "bundle": {"path": str(bundle.root.resolve()), "source": prov.get("source"),
                   "encoders": [e.name for e in bundle.encoders], "members": bundle.n_members,
                   "model": str(bundle.model_id)},
        "clips": {f"{k:g}": v for k, v in clips.items()},
    }
    base = {"threads": settings.threads, "warmup_clip": clips[lengths[0]]}
    specs = {"mmmos": {**base, "bundle": str(bundle.root), "backend": settings.backend,
                       "precision": settings.precision, "force_precision": settings.force_precision},
             "peer": {**base, "checkpoint": ckpt, "device": "cpu" if settings.backend == "ort-cpu" else "cuda",
                      "work": str(work)}}
    say(f"starting the workers (peer checkpoint: {ckpt or 'random init'}, from {ckpt_how}) ...")
    workers = {side: WorkerProcess(side, spec, work) for side, spec in specs.items()}
    try:
        for side, w in workers.items():
            info = w.wait_ready()
            say(f"  {side} ready: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                                                for k, v in info.items() if k != "warnings"))
        raw["mmmos"], raw["peer"] = dict(workers["mmmos"].info), dict(workers["peer"].info)
        raw["peer"]["checkpoint_from"] = ckpt_how
        raw["load_average_before"] = load_average()
        say(f"timing {settings.rounds} interleaved rounds (+{settings.warmup} warm-up) ...")
        measured = interleave(workers, {sec: clips[sec] for sec in lengths}, settings.rounds, settings.warmup, say)
        raw["load_average_after"] = load_average()
    finally:
        for side, w in workers.items():
            bye = w.close()
            if side in raw and "peak_rss_mb" in bye:
                raw[side]["peak_rss_mb"] = bye["peak_rss_mb"]
    raw["lengths"] = summarize_lengths(measured, same_model=kind == "audiobox")
    raw["goals"] = judge_goals(kind, raw["lengths"])
    (out / "versus.json").write_text(json.dumps(raw, indent=1, default=str))
    (out / "versus.md").write_text(markdown(raw))
    return raw
