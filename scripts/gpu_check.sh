#!/usr/bin/env bash
# scripts/gpu_check.sh: the one check of mmmos's GPU paths (TensorRT and ONNX Runtime CUDA) on a real NVIDIA GPU.
#
# NOT RUN YET. It was written where there is no GPU and no TensorRT (every GPU path of mmmos is so far checked
# only against fake tensorrt/cuda-bindings modules in the tests). Whoever first has a GPU: run it and keep the
# report; a failure here is what it is for.
#
# Usage:  scripts/gpu_check.sh [WORK_DIR]          (default: ./gpu-check-<date>-<time>)
# Needs:  an NVIDIA GPU and driver (nvidia-smi), and this checkout installed with
#           driver >= 580:  pip install torch && pip install -e '.[gpu,trt-cu13,export,bench,dev]'
#           driver <  580:  pip install torch && pip install -e '.[gpu-cu12,trt-cu12,export,bench,dev]'
#         (never `cpu` beside `gpu`: both installed break the CUDA provider). It says what is missing and exits 2.
# Does:   for each preset (tiny, full): mmmos-export --random-init with TensorRT engines; mmmos-calibrate --trt-int8
#         on a few clips (INT8 graphs and their TensorRT plans); mmmos-score on those clips with tensorrt and
#         ort-cuda at fp32, fp16 and int8, each compared with ORT CPU fp32 (max abs per axis: fp32 <= 1e-3,
#         fp16 <= 0.05, int8 <= 0.15, the calibration gates) and required to run on the backend asked for (no
#         fallback); mmmos-bench on the GPU backends; the GPU-marked pytest tests. Writes WORK_DIR/report.md and
#         WORK_DIR/report.json, prints PASS or FAIL, exits 0 (pass) or 1 (fail).
# Time:   aim under 10 minutes on one GPU; TensorRT engine builds of the full preset dominate (not measured yet).
#         PRESETS=tiny runs the quick half only.
# Env:    PYTHON (default python), PRESETS ("tiny full"), N_CLIPS (4), STEP_TIMEOUT seconds per step (1800),
#         SKIP_BENCH=1, SKIP_PYTEST=1.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python}
PRESETS=${PRESETS:-tiny full}
N_CLIPS=${N_CLIPS:-4}
STEP_TIMEOUT=${STEP_TIMEOUT:-1800}
W=${1:-gpu-check-$(date +%Y%m%d-%H%M%S)}

say() { echo "[gpu_check $(date +%H:%M:%S)] $*" >&2; }
need() { say "missing: $*"; MISSING=1; }

# --- what it needs -------------------------------------------------------------------------------------------
MISSING=0
command -v nvidia-smi >/dev/null 2>&1 || need "an NVIDIA driver (nvidia-smi not found): this check needs a GPU"
for cmd in mmmos-export mmmos-calibrate mmmos-score mmmos-bench; do
  command -v "$cmd" >/dev/null 2>&1 || need "$cmd (pip install -e '.[...]' from $ROOT, see the header)"
done
if ! command -v "$PY" >/dev/null 2>&1; then
  need "python ($PY); set PYTHON to the environment's python"
else
  # The runtime's own probe: tensorrt + cuda-bindings import and a GPU answers (its message names the extra).
  if ! why=$("$PY" -c 'from mmmos.runtime.trt_engine import unavailable_reason as u; r = u(); print(r or "")' 2>&1); then
    need "mmmos in $PY ($why)"
  elif [ -n "$why" ]; then
    need "TensorRT path: $why"
  fi
  "$PY" -c 'import onnxruntime as o, sys; sys.exit("CUDAExecutionProvider" not in o.get_available_providers())' \
    >/dev/null 2>&1 || need "onnxruntime with the CUDA provider: pip install -e '.[gpu]' (driver < 580: '.[gpu-cu12]'), without '.[cpu]'"
  "$PY" -c 'import torch' >/dev/null 2>&1 || need "torch (export): pip install torch && pip install -e '.[export]'"
  "$PY" -c 'import matplotlib' >/dev/null 2>&1 || need "matplotlib (mmmos-bench): pip install -e '.[bench]'"
fi
if [ "$MISSING" -ne 0 ]; then
  say "cannot run: install what is listed above (see the header of $0), then run it again"
  exit 2
fi

mkdir -p "$W/logs" "$W/scores"
W=$(cd "$W" && pwd)
STEPS="$W/steps.tsv"
: >"$STEPS"
nvidia-smi >"$W/logs/nvidia-smi.txt" 2>&1 || true

# step NAME LOG CMD...: run one command with a timeout, record exit code and seconds; never aborts the script.
step() {
  local name=$1 log=$2 start=$SECONDS rc=0
  shift 2
  say "$name ..."
  timeout "$STEP_TIMEOUT" "$@" >"$log" 2>&1 || rc=$?
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" "$log" >>"$STEPS"
  if [ "$rc" -ne 0 ]; then say "  $name failed (exit $rc); see $log"; fi
  return 0
}

# --- clips ---------------------------------------------------------------------------------------------------
"$PY" - "$W/clips" "$N_CLIPS" "$ROOT/examples/example.wav" <<'PY'
import shutil, sys
from pathlib import Path
import numpy as np
import soundfile as sf

out, n, example = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
out.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)
specs = [(3.0, 44100), (12.5, 16000), (25.0, 48000), (0.7, 24000), (9.0, 22050), (17.0, 32000)]
for i, (seconds, sr) in enumerate(specs[:n]):
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * (220 + 110 * i) * t) + 0.05 * rng.standard_normal(t.size)
    sf.write(out / f"clip{i:02d}.wav", x.astype(np.float32), sr)
if example.is_file():
    shutil.copy2(example, out / "example.wav")
PY

# --- per preset: export with engines, calibrate INT8, score, bench --------------------------------------------
for preset in $PRESETS; do
  B="$W/bundle-$preset"
  step "export-$preset" "$W/logs/export-$preset.log" \
    mmmos-export "$B" --random-init --preset "$preset" --num-members 3 --trt
  step "calibrate-$preset" "$W/logs/calibrate-$preset.log" \
    mmmos-calibrate "$B" "$W/clips" --trt-int8 --max-files "$N_CLIPS" --calib-windows 8
  step "score-$preset-ort-cpu-fp32" "$W/logs/score-$preset-ort-cpu-fp32.log" \
    mmmos-score --bundle "$B" --backend ort-cpu --precision fp32 --format jsonl --force \
    -o "$W/scores/$preset-ort-cpu-fp32.jsonl" "$W/clips"
  for backend in tensorrt ort-cuda; do
    for precision in fp32 fp16 int8; do
      tag="$preset-$backend-$precision"
      # --force-precision: random weights may miss a gate; this check compares the scores itself
      step "score-$tag" "$W/logs/score-$tag.log" \
        mmmos-score --bundle "$B" --backend "$backend" --precision "$precision" --force-precision --format jsonl \
        --force -o "$W/scores/$tag.jsonl" "$W/clips"
    done
  done
  if [ "${SKIP_BENCH:-0}" != 1 ]; then
    step "bench-$preset" "$W/logs/bench-$preset.log" \
      mmmos-bench --bundle "$B" --out "$W/bench-$preset" --backends tensorrt,ort-cuda --precisions fp32,fp16,int8 \
      --lengths 10 --batches 1,8 --repeats 3 --e2e-repeats 1 --no-baselines --no-audiobox --no-flops
  fi
done

if [ "${SKIP_PYTEST:-0}" != 1 ]; then
  step "pytest-gpu" "$W/logs/pytest-gpu.log" \
    "$PY" -m pytest -q -m "gpu or trt" -p no:cacheprovider --rootdir "$ROOT" \
    "$ROOT/tests/runtime/test_backends.py" "$ROOT/tests/export/test_tensorrt_build.py"
fi

# --- report --------------------------------------------------------------------------------------------------
rc=0
"$PY" - "$W" "$PRESETS" <<'PY' || rc=$?
import json, sys
from pathlib import Path

W, presets = Path(sys.argv[1]), sys.argv[2].split()
AXES = ("PQ", "PC", "CE", "CU")
GATES = {"fp32": 1e-3, "fp16": 0.05, "int8": 0.15}
steps = {}
for line in (W / "steps.tsv").read_text().splitlines():
    name, code, seconds, log = line.split("\t")
    steps[name] = {"exit": int(code), "seconds": int(seconds), "log": log}
problems, rows = [], []


def load(path):
    return {r["path"]: r for r in map(json.loads, path.read_text().splitlines())} if path.is_file() else {}


for name, s in steps.items():
    if s["exit"] != 0:
        problems.append(f"{name}: exit {s['exit']} (see {s['log']})")
for preset in presets:
    bundle = W / f"bundle-{preset}"
    report = json.loads((bundle / "report.json").read_text()) if (bundle / "report.json").is_file() else {}
    if report.get("tensorrt", {}).get("status") != "built":
        problems.append(f"{preset}: mmmos-export built no engines ({report.get('tensorrt')})")
    engines = report.get("calibration", {}).get("int8", {}).get("tensorrt", {}).get("engines", {})
    if engines.get("status") != "built":
        problems.append(f"{preset}: mmmos-calibrate built no int8-trt plans ({engines})")
    ref = load(W / "scores" / f"{preset}-ort-cpu-fp32.jsonl")
    for backend in ("tensorrt", "ort-cuda"):
        for precision in ("fp32", "fp16", "int8"):
            tag = f"{preset}-{backend}-{precision}"
            got = load(W / "scores" / f"{tag}.jsonl")
            log = Path(steps.get(f"score-{tag}", {}).get("log", "/nonexistent"))
            text = log.read_text() if log.is_file() else ""
            fell_back = "warning: backend" in text and "unavailable" in text
            diffs = [abs(got[p][a] - r[a]) for p, r in ref.items() if p in got and r.get("error") is None
                     and got[p].get("error") is None for a in AXES]
            errors = [p for p, r in got.items() if r.get("error")]
            max_abs = max(diffs) if diffs else None
            ok = (bool(ref) and len(got) == len(ref) and not errors and not fell_back and max_abs is not None
                  and max_abs <= GATES[precision])
            rows.append({"preset": preset, "backend": backend, "precision": precision, "files": len(got),
                         "max_abs_vs_ort_cpu_fp32": max_abs, "gate": GATES[precision], "fell_back": fell_back,
                         "errors": errors, "seconds": steps.get(f"score-{tag}", {}).get("seconds"), "ok": ok})
            if not ok:
                problems.append(f"{tag}: max abs {max_abs} (gate {GATES[precision]}), {len(got)}/{len(ref)} files, "
                                f"errors {errors}, fell back: {fell_back}")
    bench = W / f"bench-{preset}" / "report.json"
    if f"bench-{preset}" in steps:
        runs = json.loads(bench.read_text()).get("runs", []) if bench.is_file() else []
        for run in runs or [{"error": "no report"}]:
            if "error" in run or run.get("backend") != run.get("requested_backend"):
                problems.append(f"bench {preset} {run.get('requested_backend')} {run.get('precision')}: "
                                f"{run.get('error') or 'ran on ' + str(run.get('backend'))}")
pytest_log = Path(steps.get("pytest-gpu", {}).get("log", "/nonexistent"))
if pytest_log.is_file() and " skipped" in pytest_log.read_text():
    problems.append(f"pytest-gpu: GPU tests skipped on a GPU machine (see {pytest_log})")
verdict = "PASS" if not problems else "FAIL"
smi = (W / "logs" / "nvidia-smi.txt")
out = {"verdict": verdict, "problems": problems, "scores": rows, "steps": steps,
       "nvidia_smi": smi.read_text() if smi.is_file() else None}
(W / "report.json").write_text(json.dumps(out, indent=2) + "\n")
md = [f"# mmmos GPU check: {verdict}", "", "| preset | backend | precision | files | max abs vs ORT CPU fp32 | gate | ok |",
      "|---|---|---|---|---|---|---|"]
md += [f"| {r['preset']} | {r['backend']} | {r['precision']} | {r['files']} | "
       f"{'-' if r['max_abs_vs_ort_cpu_fp32'] is None else format(r['max_abs_vs_ort_cpu_fp32'], '.3g')} | "
       f"{r['gate']} | {'yes' if r['ok'] else 'NO'} |" for r in rows]
md += ["", "## Steps", "", "| step | exit | seconds |", "|---|---|---|"]
md += [f"| {n} | {s['exit']} | {s['seconds']} |" for n, s in steps.items()]
md += ["", "## Problems", ""] + ([f"- {p}" for p in problems] or ["none"])
for preset in presets:
    bench_md = W / f"bench-{preset}" / "report.md"
    if bench_md.is_file():
        md += ["", f"## mmmos-bench ({preset})", "", bench_md.read_text()]
(W / "report.md").write_text("\n".join(md) + "\n")
print(f"{verdict}: {len(problems)} problem(s); report: {W / 'report.md'}")
for p in problems:
    print(f"  - {p}")
sys.exit(0 if verdict == "PASS" else 1)
PY
exit "$rc"
