"""Corpus scoring on Ray Data (`mmmos-score --ray`): decode on CPU tasks, score in an actor pool, sharded JSONL.

Pipeline: the driver expands the inputs with `inputs.expand` (same inputs as `mmmos-score`) and drops the
ones already written in the output folder; Ray Data then runs `decode_batch` as CPU tasks (decode,
validate, resample once per encoder rate: `audio.prepare`) and `ActorScorer` in an actor pool (one
`Scorer` per actor, one GPU per actor where asked), which cuts the windows, batches them across files and
formats each result with the runtime's own JSONL writer. The driver streams the rows into
`DIR/part-RRRRR-SSSSS.jsonl` files, one line at a time, flushed.

Resume: a row reaches a part file only once it is complete, the driver is the only writer and writes each
row once, and an interrupted last line is cut on the next run (`outputs.done_keys`), so rerunning the same
command after a crash or kill scores exactly the inputs that have no row yet: none lost, none twice.

Ray is imported lazily (extra `[ray]`); nothing here imports torch.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..audio import Prepared, decode, prepare
from ..bundle import ModelId
from ..errors import AudioError, BackendUnavailableError, InputError, OutputError
from ..inputs import InputItem, RowKey, expand
from ..outputs import JsonlWriter, done_keys
from ..settings import ScorerSettings

PART_RE = re.compile(r"^part-(\d{5})-(\d{5})\.jsonl$")


@dataclass(frozen=True)
class RayOptions:
    """What `mmmos-score --ray` needs besides the inputs and the output folder.

    Attributes:
        scorer: each actor's Scorer settings (the bundle is resolved on the driver; "auto" backends pick
            TensorRT / ORT CUDA where the actor has a GPU; threads are per actor).
        files_per_batch: files per Ray batch (decode task input and actor call).
        actors: scoring actors (the pool size).
        gpus_per_actor: GPUs reserved per actor (0 on CPU-only clusters).
        cpus_per_actor: CPUs reserved per actor.
        decode_cpus: CPUs per decode task; when it equals `cpus_per_actor` and no GPU is asked, Ray fuses
            decoding into the actors (less object-store traffic, no decode/score overlap).
        shard_rows: rows per part file before the driver starts the next one.
        address: Ray cluster address (None: $RAY_ADDRESS, else start a local instance).
        num_cpus: CPUs of a local instance (None: all); ignored when joining a cluster.
    """

    scorer: ScorerSettings = field(default_factory=lambda: ScorerSettings(threads=1))
    files_per_batch: int = 8
    actors: int = 1
    gpus_per_actor: float = 0.0
    cpus_per_actor: float = 1.0
    decode_cpus: float = 0.5
    shard_rows: int = 10000
    address: str | None = None
    num_cpus: int | None = None


def import_ray() -> Any:
    """Import ray (with Ray Data), or say which extra to install.

    Raises:
        BackendUnavailableError: ray is not installed.
    """
    try:
        import ray
        import ray.data
    except ImportError:
        raise BackendUnavailableError(
            "--ray needs Ray Data, which is not installed; install it with: pip install 'mmmos[ray]'."
        ) from None
    return ray


# ------------------------------------------------------------------ output folder and resume


def part_files(out_dir: Path) -> list[Path]:
    """The part files of an output folder, in name order (temporary or foreign files are ignored)."""
    if not out_dir.is_dir():
        return []
    return sorted(p for p in out_dir.iterdir() if p.is_file() and PART_RE.match(p.name))


def written_keys(out_dir: Path, model: ModelId | None = None) -> set[RowKey]:
    """Keys (path, start_time, end_time) of every row already in the folder's part files (error rows too).

    A half-written last line (the run was killed while writing it) is cut, so its input is scored again.
    With `model`, part files holding rows of another model are refused (OutputError), as for `--resume`.
    """
    keys: set[RowKey] = set()
    for p in part_files(out_dir):
        keys |= done_keys(p, "jsonl", model)
    return keys


def prepare_output(out_dir: Path, force: bool) -> int:
    """Create the output folder (or empty it with `force`) and return this run's number.

    Raises:
        OutputError: the path exists and is a file.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"--output {out_dir} is a file; with --ray it must be a folder (of part-*.jsonl files).")
    out_dir.mkdir(parents=True, exist_ok=True)
    if force:
        for p in part_files(out_dir):
            p.unlink()
    runs = [int(m.group(1)) for p in part_files(out_dir) if (m := PART_RE.match(p.name))]
    return max(runs, default=-1) + 1


def read_rows(out_dir: Path) -> list[dict[str, Any]]:
    """Every row of a folder's part files (for tests and small corpora)."""
    rows = []
    for p in part_files(out_dir):
        with open(p, encoding="utf-8") as fh:
            rows.extend(json.loads(line) for line in fh if line.strip())
    return rows


class ShardWriter:
    """Writes JSON lines into `part-RRRRR-SSSSS.jsonl` files of `shard_rows` rows each, flushing every line."""

    def __init__(self, out_dir: Path, run: int, shard_rows: int) -> None:
        self.out_dir, self.run, self.shard_rows = out_dir, run, max(1, int(shard_rows))
        self.shard, self.in_shard, self.rows = 0, 0, 0
        self.stream: IO[str] | None = None

    def write(self, line: str) -> None:
        """Append one row (a JSON line without its newline)."""
        if self.stream is None or self.in_shard >= self.shard_rows:
            self.close()
            path = self.out_dir / f"part-{self.run:05d}-{self.shard:05d}.jsonl"
            self.stream = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
            self.shard += 1
            self.in_shard = 0
        self.stream.write(line + "\n")
        self.stream.flush()
        self.in_shard += 1
        self.rows += 1

    def close(self) -> None:
        """Close the current part file."""
        if self.stream is not None:
            self.stream.close()
            self.stream = None


# ------------------------------------------------------------------ items <-> Ray rows


def item_to_record(item: InputItem) -> dict[str, str]:
    """One Ray row per input: the item as JSON (Arrow then never has to guess types for None and extras)."""
    if item.array is not None:
        raise InputError("--ray scores files and manifests only, not in-memory arrays.")
    return {"item": json.dumps({"path": item.path, "start_time": item.start_time, "end_time": item.end_time,
                                "error": item.error, "extra": item.extra}, ensure_ascii=False)}


def record_to_item(text: str) -> InputItem:
    """Inverse of `item_to_record`."""
    d = json.loads(text)
    return InputItem(path=d["path"], start_time=d["start_time"], end_time=d["end_time"], error=d["error"],
                     extra=d.get("extra") or {})


def pending_records(inputs: Iterable[str], skip: set[RowKey], stdin: IO[str] | None = None) -> list[dict[str, str]]:
    """Expand the inputs (like `mmmos-score`) and keep the ones without a row yet, as Ray rows.

    An input listed twice is scored once (its row key is its identity, as for `mmmos-score --resume`).
    """
    out: list[dict[str, str]] = []
    seen = set(skip)
    for item in expand(inputs, stdin):
        if item.key in seen:
            continue
        seen.add(item.key)
        out.append(item_to_record(item))
    return out


# ------------------------------------------------------------------ the two Ray stages


def _rate_column(rate: int) -> str:
    return f"pcm_{int(rate)}"


def decode_batch(batch: dict[str, np.ndarray], rates: list[int]) -> dict[str, np.ndarray]:
    """Ray CPU task: decode, validate and resample every input of a batch (`audio.prepare`).

    Returns columns `item`, `error` ("" when fine), `duration_s`, `n_windows` and one `pcm_<rate>` column of
    float32 bytes per distinct encoder rate (empty on error).
    """
    cols: dict[str, list[Any]] = {"item": [], "error": [], "duration_s": [], "n_windows": []}
    cols.update({_rate_column(r): [] for r in dict.fromkeys(rates)})
    for text in batch["item"]:
        item = record_to_item(str(text))
        prep, error = None, ""
        try:
            if item.error is not None:
                raise AudioError(item.error)
            samples, sr = decode(item.path or "", item.start_time, item.end_time)
            prep = prepare(samples, sr, rates)
        except AudioError as exc:
            error = str(exc)
        except MemoryError:
            error = "out of memory while decoding (file too long for this machine)"
        except Exception as exc:  # same rule as Scorer._safe_load: a bad file is an error row, not a crash
            error = f"cannot decode audio: {type(exc).__name__}: {' '.join(str(exc).split())}"
        cols["item"].append(str(text))
        cols["error"].append(error)
        cols["duration_s"].append(prep.duration_s if prep else 0.0)
        cols["n_windows"].append(prep.n_windows if prep else 0)
        for r in dict.fromkeys(rates):
            cols[_rate_column(r)].append(prep.per_rate[r].tobytes() if prep else b"")
    return {k: np.array(v, dtype=object) if k.startswith(("item", "error", "pcm_")) else np.asarray(v)
            for k, v in cols.items()}


class ActorScorer:
    """Ray actor: one `Scorer` per actor, fed decoded clips; returns each result as the runtime's JSONL row.

    Args:
        settings: the Scorer's settings, with the bundle resolved on the driver so every actor loads the same one.
    """

    def __init__(self, settings: ScorerSettings) -> None:
        self.scorer = settings.build(prefetch=0, warn=lambda m: print(m, file=sys.stderr, flush=True))
        self.rates = list(dict.fromkeys(e.sample_rate for e in self.scorer.bundle.encoders))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Score one batch of decoded clips; returns columns `line` (JSON row) and `failed` (bool)."""
        pairs: list[tuple[InputItem, Prepared | str]] = []
        for k, text in enumerate(batch["item"]):
            item = record_to_item(str(text))
            err = str(batch["error"][k])
            if err:
                pairs.append((item, err))
                continue
            per_rate = {r: np.frombuffer(batch[_rate_column(r)][k], dtype=np.float32) for r in self.rates}
            pairs.append((item, Prepared(duration_s=float(batch["duration_s"][k]),
                                         n_windows=int(batch["n_windows"][k]), per_rate=per_rate)))
        buf = io.StringIO()
        writer = JsonlWriter(buf)  # the runtime's own row schema and serialisation
        failed = []
        for r in self.scorer.score_prepared(pairs):
            writer.write(r)
            failed.append(not r.ok)
        lines = buf.getvalue().splitlines()
        return {"line": np.array(lines, dtype=object), "failed": np.asarray(failed, dtype=bool)}


# ------------------------------------------------------------------ the driver


def _check_resources(cpus: float, opts: RayOptions) -> None:
    """Refuse a pool that would hold every CPU: decode tasks would then never be scheduled (a silent hang).

    Raises:
        InputError: the actors' CPUs plus one decode task exceed the cluster's CPUs.
    """
    need = max(1, int(opts.actors)) * float(opts.cpus_per_actor) + float(opts.decode_cpus)
    if need > cpus + 1e-9:
        raise InputError(
            f"{opts.actors} actors x {opts.cpus_per_actor} CPU + {opts.decode_cpus} CPU for decoding need {need:g} "
            f"CPUs but the Ray cluster has {cpus:g}; lower --actors or --cpus-per-actor."
        )


def score_corpus(inputs: list[str], out_dir: str | os.PathLike[str], opts: RayOptions, *, force: bool = False,
                 stdin: IO[str] | None = None, log: Callable[[str], None] | None = None) -> tuple[int, int]:
    """Score `inputs` on Ray into `out_dir`, skipping inputs that already have a row there.

    Returns:
        (rows written by this run, error rows among them).

    Raises:
        BackendUnavailableError: ray is not installed.
        BundleNotFoundError, BundleError: the bundle cannot be used (checked on the driver first).
        OutputError: `out_dir` is a file.
    """
    from ..bundle import Bundle

    say = log or (lambda m: print(m, file=sys.stderr, flush=True))
    ray = import_ray()
    bundle = Bundle.load(opts.scorer.bundle, verify=True)  # fail here, once, rather than in every actor
    out = Path(out_dir)
    run = prepare_output(out, force)
    records = pending_records(inputs, written_keys(out, bundle.model_id), stdin)
    if not records:
        say(f"mmmos-score --ray: every input already has a row in {out}; nothing to do.")
        return 0, 0
    say(f"mmmos-score --ray: {len(records)} inputs to score into {out} (run {run}).")
    started = False
    address = opts.address or os.environ.get("RAY_ADDRESS")
    if not ray.is_initialized() and not address:  # a local instance: check before paying for its start
        _check_resources(float(opts.num_cpus or os.cpu_count() or 1), opts)
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
        if not address and opts.num_cpus:
            kwargs["num_cpus"] = int(opts.num_cpus)
        ray.init(address=address, **kwargs)
        started = True
    writer = ShardWriter(out, run, opts.shard_rows)
    written = failed = 0
    try:
        _check_resources(float(ray.cluster_resources().get("CPU", 0.0)), opts)
        rates = [e.sample_rate for e in bundle.encoders]
        fpb = max(1, int(opts.files_per_batch))
        ds = ray.data.from_items(records, override_num_blocks=max(1, -(-len(records) // fpb)))
        ds = ds.map_batches(decode_batch, fn_kwargs={"rates": rates},
                            batch_size=fpb, batch_format="numpy", num_cpus=opts.decode_cpus)
        ds = ds.map_batches(
            ActorScorer, batch_size=fpb, batch_format="numpy",
            fn_constructor_kwargs={"settings": opts.scorer.with_changes(bundle=str(bundle.root))},
            compute=ray.data.ActorPoolStrategy(size=max(1, int(opts.actors))),
            num_cpus=opts.cpus_per_actor, **({"num_gpus": opts.gpus_per_actor} if opts.gpus_per_actor else {}),
        )
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for line, bad in zip(batch["line"], batch["failed"], strict=True):
                writer.write(str(line))
                written += 1
                failed += int(bool(bad))
    finally:
        writer.close()
        if started:
            ray.shutdown()
    return written, failed
