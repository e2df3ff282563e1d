#!/usr/bin/env bash
# Create .venv and install the project with its development tools.
# pip resolves torch and torchvision together (install size: docs/performance.md).
set -euo pipefail
cd "$(dirname "$0")/.."
# Say plainly when the disk cannot hold the venv, rather than failing halfway through pip
# with "No space left on device" (seen on a shared CI disk): PyTorch's default CUDA
# build makes a 6.5 GB venv, the CPU build about 2.5 GB.
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    need_gb=8
    [ -n "${TORCH_INDEX_URL:-}" ] && need_gb=3
    free_kb=$(df -Pk . | awk 'NR == 2 {print $4}')
    if [ "${free_kb:-0}" -lt $((need_gb * 1024 * 1024)) ]; then
        echo "install needs about ${need_gb} GB free for .venv in $(pwd); $((free_kb / 1024 / 1024)) GB free." >&2
        echo "Free some space, or on a CPU-only machine with access to it set" >&2
        echo "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu (about 4 GB less)." >&2
        exit 1
    fi
fi
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
