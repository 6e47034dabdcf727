#!/usr/bin/env bash
# Build the separate environment for tests/models/test_muq_parity.py (the original `muq` package is not in CI:
# it pulls torchvision, x_clip and a CUDA torch, ~5.5 GB) and run the parity test in it.
#
#   scripts/muq_parity_env.sh [VENV_DIR]      (default /work/venv-muq)
#
# muq 0.1.0 hands an EasyDict to transformers' Wav2Vec2ConformerEncoder, which transformers >= 5 rejects
# ('EasyDict' object has no attribute '_attn_implementation'), hence the transformers<5 pin.
set -euo pipefail
VENV="${1:-/work/venv-muq}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python3 -m venv "$VENV"
"$VENV/bin/pip" install torch==2.14.1 torchvision==0.29.1
"$VENV/bin/pip" install muq "transformers<5"
"$VENV/bin/pip" install -e "$ROOT" pytest
cd "$ROOT"
"$VENV/bin/pytest" -q -p no:cacheprovider tests/models/test_muq_parity.py
