#!/usr/bin/env bash
# Create .venv and install the project with its development tools.
# pip resolves torch and torchvision together (see docs/installation.md).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
# On a CPU-only machine, TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu installs the
# CPU builds of torch and torchvision (a matching pair, as the Dockerfile does) instead of
# the default CUDA builds: about 4 GB less (docs/performance.md, Install size).
if [ -n "${TORCH_INDEX_URL:-}" ]; then
    .venv/bin/pip install -q --index-url "${TORCH_INDEX_URL}" torch torchvision
fi
.venv/bin/pip install -q -e '.[dev]' 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import torch, torchvision, open_clip, qdrant_edge, onnxruntime" \
    || { echo "install failed: torch/torchvision/open_clip/qdrant_edge/onnxruntime do not import" >&2; exit 1; }
