"""A Triton Inference Server model repository from a bundle (`mmmos-export --triton-repo DIR`).

Layout (Triton's documented one: `<repo>/<model>/config.pbtxt` + `<repo>/<model>/<version>/model.<ext>`):

    <enc>/            onnxruntime_onnx: 1/model.onnx (+ its external data), one per encoder
    <enc>_trt/        tensorrt_plan: 1/model.plan, where the bundle ships plans of every graph (matched by graph
                      sha256; fp16 plans from mmmos-export even when the ORT models are fp32); must match Triton's
                      TensorRT and GPU
    mmmos_heads/      onnxruntime_onnx: the ensemble graph (members -> scores [M,4], mean [4], std [4])
    mmmos_windows/    ensemble: <enc>_wav [W] + <enc>_lengths [1] per encoder -> encoders -> heads (per window)
    mmmos_windows_trt/  the same on the TensorRT models (when every graph has an engine)
    mmmos/            python backend (1/model.py = runtime/serving/triton_model.py): pcm + sample_rate -> resample,
                      10 s windows, BLS to mmmos_windows, per-file averaging -> scores [4], std [4], duration_s [1]

Every model has dynamic batching. Each `config.pbtxt` is parsed with Triton's own protobuf definitions
(`tritonclient.grpc.model_config_pb2`), and `check_repo` checks the layout and that every ensemble step
names inputs and outputs its model has. Nothing here imports torch; onnxruntime reads the graph shapes.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..bundle import Bundle
from ..errors import BackendUnavailableError, PrecisionError
from ..names import GraphKey
from ..ort_session import make_session
from ..trt_engine import graph_digest, key_dirs, plan_name

_ORT_TYPES = {"tensor(float)": "TYPE_FP32", "tensor(float16)": "TYPE_FP16", "tensor(int64)": "TYPE_INT64",
              "tensor(int32)": "TYPE_INT32", "tensor(bool)": "TYPE_BOOL", "tensor(double)": "TYPE_FP64"}
PREPROCESS_MODEL = "mmmos"
WINDOWS_MODEL = "mmmos_windows"
HEADS_MODEL = "mmmos_heads"


def model_config_pb2() -> Any:
    """Triton's ModelConfig protobuf module (shipped by tritonclient).

    Raises:
        BackendUnavailableError: tritonclient is not installed.
    """
    try:
        from tritonclient.grpc import model_config_pb2 as pb2
    except ImportError:
        raise BackendUnavailableError(
            "validating Triton configs needs Triton's protobuf definitions; install them with: "
            "pip install 'tritonclient[grpc]'."
        ) from None
    return pb2


def parse_config(text: str) -> Any:
    """Parse config.pbtxt text into Triton's `ModelConfig` message.

    Raises:
        ValueError: the text is not a valid ModelConfig.
    """
    from google.protobuf import text_format

    msg = model_config_pb2().ModelConfig()
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as exc:
        raise ValueError(f"invalid config.pbtxt: {exc}") from None
    return msg


def _io_shapes(onnx_path: Path) -> tuple[dict[str, tuple[str, list[int]]], dict[str, tuple[str, list[int]]]]:
    """(inputs, outputs): name -> (Triton type, dims without the batch axis; -1 for symbolic dims)."""
    sess = make_session(onnx_path)

    def conv(args: list[Any]) -> dict[str, tuple[str, list[int]]]:
        return {a.name: (_ORT_TYPES[a.type], [d if isinstance(d, int) else -1 for d in a.shape[1:]]) for a in args}

    return conv(sess.get_inputs()), conv(sess.get_outputs())


def _tensor(name: str, dtype: str, dims: list[int], reshape: list[int] | None = None) -> str:
    body = f'name: "{name}" data_type: {dtype} dims: [ {", ".join(str(d) for d in dims)} ]'
    if reshape is not None:
        body += f" reshape: {{ shape: [ {', '.join(str(d) for d in reshape)} ] }}"
    return "{ " + body + " }"


def _io_block(kind: str, tensors: list[str]) -> str:
    return f"{kind} [\n  " + ",\n  ".join(tensors) + "\n]\n"


def _batching(queue_delay_us: int) -> str:
    return f"dynamic_batching {{ max_queue_delay_microseconds: {int(queue_delay_us)} }}\n"


def _graph_config(name: str, platform: str, max_batch: int, inputs: dict[str, tuple[str, list[int]]],
                  outputs: dict[str, tuple[str, list[int]]], kind: str, queue_delay_us: int) -> str:
    ins = []
    for n, (t, dims) in inputs.items():
        # Triton has no scalar dims: a per-item scalar is dims [1] reshaped to [] for the model ([B]).
        ins.append(_tensor(n, t, dims or [1], reshape=[] if not dims else None))
    outs = [_tensor(n, t, dims or [1], reshape=[] if not dims else None) for n, (t, dims) in outputs.items()]
    return (f'name: "{name}"\nplatform: "{platform}"\nmax_batch_size: {max_batch}\n' + _io_block("input", ins)
            + _io_block("output", outs) + _batching(queue_delay_us)
            + f"instance_group [ {{ kind: {kind} count: 1 }} ]\n")


def _copy_graph(bundle: Bundle, rel: str, dest_dir: Path) -> None:
    """Copy a graph as `model.onnx`, with its external-data files under their own names (the graph names them)."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    src = bundle.root / rel
    shutil.copy2(src, dest_dir / "model.onnx")
    for extra in bundle.root.iterdir():
        if extra.is_file() and extra.name.startswith(src.name + ".") and extra.suffix in (".data", ".bin"):
            shutil.copy2(extra, dest_dir / extra.name)


TRT_GRAPH_KEYS: tuple[GraphKey, ...] = ("fp16", "fp32", "int8-trt")
"""Graph keys whose shipped plans become the TensorRT models, first match wins (mmmos-export ships fp16 plans)."""


@dataclass(frozen=True)
class ShippedPlans:
    """Plans the bundle ships for every graph of one graph key, in one engine key folder."""

    folder: Path
    key: GraphKey
    plans: dict[str, Path]  # graph file (relative to the bundle) -> its plan
    max_batch: int


def shipped_plans(bundle: Bundle) -> ShippedPlans | None:
    """The plans to serve: the first graph key of TRT_GRAPH_KEYS (key folders in reverse name order) with a plan
    for every encoder graph and the ensemble graph, each matched by the graph's sha256 in the manifest; else None.

    A plan built from another version of a graph (its hash in the name differs) never matches.
    """
    files = bundle.manifest.get("files") or {}
    folders = list(reversed(key_dirs([bundle.engines_dir()])))
    for key in (k for k in TRT_GRAPH_KEYS if k in bundle.graph_keys()):
        graphs = [e.graphs[key] for e in bundle.encoders] + [_ensemble_graph(bundle, key)]
        names = {g: plan_name(g, graph_digest(bundle.root, g, files)) for g in graphs}
        for folder, _, profile in folders:
            if all((folder / n).is_file() for n in names.values()):
                return ShippedPlans(folder, key, {g: folder / n for g, n in names.items()}, profile.max)
    return None


def _ensemble_graph(bundle: Bundle, key: str) -> str:
    """The ensemble graph file a graph key uses (its fp32 graph when it has none of its own)."""
    return bundle.ensemble_graphs.get(key, bundle.ensemble_graphs.get("fp32", ""))


def _ensemble_config(name: str, max_batch: int, bundle: Bundle, enc_models: dict[str, str], heads: str,
                     enc_in: dict[str, dict[str, tuple[str, list[int]]]],
                     heads_out: dict[str, tuple[str, list[int]]]) -> str:
    ins, steps = [], []
    for e in bundle.encoders:
        wav_t, wav_d = enc_in[e.name]["wav"]
        len_t, _ = enc_in[e.name]["lengths"]
        ins += [_tensor(f"{e.name}_wav", wav_t, wav_d), _tensor(f"{e.name}_lengths", len_t, [1])]
        outmap = " ".join(f'output_map {{ key: "{o}" value: "{o}" }}' for o in e.outputs)
        steps.append(f'{{ model_name: "{enc_models[e.name]}" model_version: -1 '
                     f'input_map {{ key: "wav" value: "{e.name}_wav" }} '
                     f'input_map {{ key: "lengths" value: "{e.name}_lengths" }} {outmap} }}')
    inmap = " ".join(f'input_map {{ key: "{i}" value: "{i}" }}' for i in bundle.ensemble_inputs)
    outmap = " ".join(f'output_map {{ key: "{o}" value: "{o}" }}' for o in heads_out)
    steps.append(f'{{ model_name: "{heads}" model_version: -1 {inmap} {outmap} }}')
    outs = [_tensor(n, t, d) for n, (t, d) in heads_out.items()]
    return (f'name: "{name}"\nplatform: "ensemble"\nmax_batch_size: {max_batch}\n' + _io_block("input", ins)
            + _io_block("output", outs) + "ensemble_scheduling {\n  step [\n    " + ",\n    ".join(steps)
            + "\n  ]\n}\n")


def _preprocess_config(bundle: Bundle, max_batch: int, queue_delay_us: int, windows_model: str,
                       windows_per_call: int) -> str:
    spec = {"encoders": [e.to_dict() for e in bundle.encoders],  # with each encoder's length rule
            "windows_model": windows_model, "windows_per_call": windows_per_call}
    value = json.dumps(json.dumps(spec))  # a JSON string, quoted and escaped for protobuf text
    return (f'name: "{PREPROCESS_MODEL}"\nbackend: "python"\nmax_batch_size: {max_batch}\n'
            + _io_block("input", [_tensor("pcm", "TYPE_FP32", [-1]), _tensor("sample_rate", "TYPE_INT32", [1])])
            + _io_block("output", [_tensor("scores", "TYPE_FP32", [4]), _tensor("std", "TYPE_FP32", [4]),
                                   _tensor("duration_s", "TYPE_FP32", [1])])
            + _batching(queue_delay_us) + "instance_group [ { kind: KIND_CPU count: 2 } ]\n"
            + f'parameters {{ key: "mmmos_config" value: {{ string_value: {value} }} }}\n')


def write_triton_repo(bundle_dir: str | Path, repo_dir: str | Path, *, precision: str = "fp32",
                      max_batch_size: int = 32, queue_delay_us: int = 2000, kind: str = "KIND_GPU",
                      log: Callable[[str], None] | None = None) -> list[str]:
    """Write a Triton model repository for a bundle and validate every config.

    Args:
        bundle_dir: the bundle.
        repo_dir: the repository folder (created; existing model folders of the same names are replaced).
        precision: which encoder graphs the ONNX Runtime models use (fp32, or fp16 for the mixed graphs); the
            TensorRT models use whichever plans the bundle ships (`shipped_plans`).
        max_batch_size: windows per batch of the graph models (capped by a TensorRT profile's max).
        queue_delay_us: dynamic batcher delay.
        kind: instance kind of the graph models (KIND_GPU; KIND_CPU for CPU-only Triton).

    Returns:
        The names of the models written.

    Raises:
        BundleError: the bundle cannot be used or has no ensemble.
        BackendUnavailableError: tritonclient (for validation) or onnxruntime (for shapes) is missing.
        ValueError: a written config does not parse or the layout check fails.
    """
    say = log or (lambda m: None)
    model_config_pb2()  # fail before writing anything when validation is impossible
    bundle = Bundle.load(bundle_dir, verify=True)
    if not bundle.has_ensemble:
        from ..errors import NoEnsembleError

        raise NoEnsembleError(bundle)
    if precision not in bundle.graph_keys():
        raise PrecisionError(f"bundle {bundle.root} has no {precision} graphs (it has {bundle.graph_keys()}).")
    repo = Path(repo_dir)
    repo.mkdir(parents=True, exist_ok=True)
    configs: dict[str, str] = {}
    enc_in: dict[str, dict[str, tuple[str, list[int]]]] = {}
    enc_graphs = [e.graphs[precision] for e in bundle.encoders]
    heads_graph = _ensemble_graph(bundle, precision)
    for e, rel in zip(bundle.encoders, enc_graphs, strict=True):
        ins, outs = _io_shapes(bundle.root / rel)
        enc_in[e.name] = ins
        outs = {o: outs[o] for o in e.outputs}
        _copy_graph(bundle, rel, repo / e.name / "1")
        configs[e.name] = _graph_config(e.name, "onnxruntime_onnx", max_batch_size, ins, outs, kind, queue_delay_us)
    h_in, h_out = _io_shapes(bundle.root / heads_graph)
    _copy_graph(bundle, heads_graph, repo / HEADS_MODEL / "1")
    configs[HEADS_MODEL] = _graph_config(HEADS_MODEL, "onnxruntime_onnx", max_batch_size, h_in, h_out, kind,
                                         queue_delay_us)
    configs[WINDOWS_MODEL] = _ensemble_config(WINDOWS_MODEL, max_batch_size, bundle,
                                              {e.name: e.name for e in bundle.encoders}, HEADS_MODEL, enc_in, h_out)
    windows_model, windows_per_call = WINDOWS_MODEL, max_batch_size
    shipped = shipped_plans(bundle)
    if shipped is not None:
        # The TensorRT models come from whatever plans the bundle ships (fp16 from mmmos-export), whatever
        # `precision` the ORT models use; their configs are read from the graphs the plans were built from.
        trt_batch = min(max_batch_size, shipped.max_batch)
        names = {e.name: f"{e.name}_trt" for e in bundle.encoders}
        for e in bundle.encoders:
            graph = e.graphs[shipped.key]
            (repo / names[e.name] / "1").mkdir(parents=True, exist_ok=True)
            shutil.copy2(shipped.plans[graph], repo / names[e.name] / "1" / "model.plan")
            ins, outs = _io_shapes(bundle.root / graph)
            configs[names[e.name]] = _graph_config(names[e.name], "tensorrt_plan", trt_batch, ins,
                                                   {o: outs[o] for o in e.outputs}, "KIND_GPU", queue_delay_us)
        heads_trt, trt_heads_graph = f"{HEADS_MODEL}_trt", _ensemble_graph(bundle, shipped.key)
        (repo / heads_trt / "1").mkdir(parents=True, exist_ok=True)
        shutil.copy2(shipped.plans[trt_heads_graph], repo / heads_trt / "1" / "model.plan")
        t_in, t_out = _io_shapes(bundle.root / trt_heads_graph)
        configs[heads_trt] = _graph_config(heads_trt, "tensorrt_plan", trt_batch, t_in, t_out, "KIND_GPU",
                                           queue_delay_us)
        windows_model, windows_per_call = f"{WINDOWS_MODEL}_trt", trt_batch
        configs[windows_model] = _ensemble_config(windows_model, trt_batch, bundle, names, heads_trt, enc_in, t_out)
        say(f"Triton repo: TensorRT models from the {shipped.key} plans in {shipped.folder} (they load only in a "
            "Triton with that TensorRT version, on that GPU)")
    elif any(bundle.engines_dir().rglob("*.plan")):
        say(f"Triton repo: no TensorRT models: the plans in {bundle.engines_dir()} do not cover every graph of one "
            "precision, or were built from other versions of the graphs (rebuild them: mmmos-export --trt)")
    # The python model batches requests (clips) up to max_batch_size and sends windows in calls that fit the
    # graph models' own max batch (a TensorRT profile's max where plans are used).
    configs[PREPROCESS_MODEL] = _preprocess_config(bundle, max_batch_size, queue_delay_us, windows_model,
                                                   windows_per_call)
    (repo / PREPROCESS_MODEL / "1").mkdir(parents=True, exist_ok=True)
    shutil.copy2(Path(__file__).with_name("triton_model.py"), repo / PREPROCESS_MODEL / "1" / "model.py")
    for name, text in configs.items():
        (repo / name / "1").mkdir(parents=True, exist_ok=True)  # ensembles too: Triton wants a version folder
        parse_config(text)  # before writing: a config Triton would reject never reaches the repo
        (repo / name / "config.pbtxt").write_text(text, encoding="utf-8")
    problems = check_repo(repo)
    if problems:
        raise ValueError("Triton repository check failed: " + "; ".join(problems))
    say(f"Triton repo: {len(configs)} models in {repo} ({', '.join(sorted(configs))})")
    return sorted(configs)


_MODEL_FILES = {"onnxruntime_onnx": "model.onnx", "tensorrt_plan": "model.plan"}


def check_repo(repo_dir: str | Path) -> list[str]:
    """Check a repository against Triton's layout and its own cross-references; returns the problems found.

    Each `<model>/config.pbtxt` parses as ModelConfig, its `name` is the folder name, a numeric version
    folder holds the model file its platform/backend loads, and every ensemble step names a model of the
    repository and only inputs/outputs that model declares.
    """
    repo = Path(repo_dir)
    problems: list[str] = []
    parsed: dict[str, Any] = {}
    for d in sorted(p for p in repo.iterdir() if p.is_dir()):
        cfg = d / "config.pbtxt"
        if not cfg.is_file():
            problems.append(f"{d.name}: no config.pbtxt")
            continue
        try:
            msg = parse_config(cfg.read_text(encoding="utf-8"))
        except ValueError as exc:
            problems.append(f"{d.name}: {exc}")
            continue
        parsed[d.name] = msg
        if msg.name != d.name:
            problems.append(f"{d.name}: config name {msg.name!r} differs from its folder")
        versions = [v for v in d.iterdir() if v.is_dir() and v.name.isdigit()]
        want = "model.py" if msg.backend == "python" else _MODEL_FILES.get(msg.platform)
        if msg.platform == "ensemble":
            versions_ok = bool(versions)  # an ensemble needs an (empty) version folder only
            want = "<version>/ folder"
        else:
            versions_ok = bool(want) and any((v / str(want)).is_file() for v in versions)
        if not versions_ok:
            problems.append(f"{d.name}: no {want} in a version folder for platform {msg.platform or msg.backend!r}")
    for name, msg in parsed.items():
        for step in msg.ensemble_scheduling.step:
            target = parsed.get(step.model_name)
            if target is None:
                problems.append(f"{name}: step model {step.model_name!r} is not in the repository")
                continue
            t_in = {i.name for i in target.input}
            t_out = {o.name for o in target.output}
            problems += [f"{name}: {step.model_name} has no input {k!r}" for k in step.input_map if k not in t_in]
            problems += [f"{name}: {step.model_name} has no output {k!r}" for k in step.output_map if k not in t_out]
    return problems
