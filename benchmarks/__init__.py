"""mmmos.benchmarks: `mmmos-bench`, latency/throughput/memory per backend and precision against PyTorch baselines.

Modules: `cli` (the command), `runtime_bench` (one backend/precision through mmmos.runtime, no torch),
`baselines` (PyTorch eager, naive per-member ensemble, audiobox-aesthetics), `worker` (runs one of
those in a fresh process), `flops` (FLOPs counted from an ONNX graph), `peak` (this machine's matmul
peak), `timing` (statistics, memory, machine), `clips` (the shared audio), `report` (JSON, markdown, plots).
"""
