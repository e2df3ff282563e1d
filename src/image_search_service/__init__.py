"""Semantic photo search."""

import os

# PyTorch's OpenMP threads spin-wait between parallel regions by default; next to the JPEG
# decoders, or any other process, that made PyTorch eager 3-4x slower (docs/design.md).
# libgomp reads this once, when torch loads, so it is set before anything can import torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
