#!/usr/bin/env bash
# Create .venv and install the project with its development tools.
# pip resolves torch and torchvision together (see docs/installation.md).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[dev]' 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import torch, torchvision, open_clip, qdrant_edge" \
    || { echo "install failed: torch/torchvision/open_clip/qdrant_edge do not import" >&2; exit 1; }
