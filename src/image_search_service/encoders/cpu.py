"""The CPU's instruction-set class, and the INT8 quantization settings that hold on it.

ONNX Runtime's INT8 matrix products (MLAS) pick their kernel by instruction set. With
uint8 activations and int8 weights (U8S8), an x86-64 CPU without VNNI multiplies with
VPMADDUBSW, which adds pairs of products into 16 bits and saturates (255 * 127 * 2 >
32767): on the demo models' text towers that dropped agreement with PyTorch to
0.994-0.996 on an AVX2-only EPYC, where the same export agreed to 0.9995+ on a VNNI CPU.
VNNI (AVX-512 VNNI, AVX-VNNI) accumulates in 32 bits, and ARM's kernels widen first, so
neither saturates. With uint8 weights (U8U8) ONNX Runtime's kernels do not saturate on
any x86-64 CPU (its quantization docs name U8U8 and reduce_range as the remedies), so
every one of them computes the same integer products.

Only this module knows the CPU; the export cache is keyed by :func:`cpu_isa`'s answer,
so an export verified on one class of CPU is never trusted on another.
"""

from __future__ import annotations

import importlib
import os
import platform
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal, get_args

from image_search_service.core.config import CpuIsa

CPU_ISAS: tuple[CpuIsa, ...] = get_args(CpuIsa)
# Overrides the detected class (tests, or an operator who knows better); see
# docs/configuration.md. Settings validates it too (ONNX_CPU_ISA).
ENV_VAR = "ONNX_CPU_ISA"

_X86 = ("x86_64", "amd64", "i386", "i686", "x86")
_ARM = ("aarch64", "arm64", "armv8l", "armv8b")


@dataclass(frozen=True)
class Int8Settings:
    """How ONNX Runtime's dynamic quantizer is asked to quantize MatMul/Gemm weights."""

    name: str
    weights: Literal["int8", "uint8"]
    reduce_range: bool
    description: str

    @property
    def exact_on_every_cpu(self) -> bool:
        """Whether no CPU's kernel can saturate on these weights: unsigned (widened
        first), or 7 bits. Then every CPU computes the same integers."""
        return self.weights == "uint8" or self.reduce_range


# Signed 8-bit weights (the settings before CPU classes): exact where products
# accumulate in 32 bits (VNNI, ARM), and the fastest there.
U8S8 = Int8Settings("u8s8", "int8", False, "uint8 activations, int8 weights")
# 7-bit weights cannot saturate VPMADDUBSW (255 * 64 * 2 < 32768) but lose a bit too much:
# demo-siglip's text tower fell to 0.99894 (< 0.999) on the export check. Not used.
U8S8_REDUCED = Int8Settings(
    "u8s8_reduce_range", "int8", True, "uint8 activations, int8 weights in 7 bits"
)
# Full 8-bit unsigned weights: never saturates; about half U8S8's speed on a VNNI CPU.
U8U8 = Int8Settings("u8u8", "uint8", False, "uint8 activations, uint8 weights")
INT8_SETTINGS = {s.name: s for s in (U8S8, U8S8_REDUCED, U8U8)}

# The classes whose U8S8 kernels may saturate (ONNX Runtime's quantization docs: x86-64
# with AVX2 or AVX-512 and no VNNI; older x86-64 is put with them, to be safe).
SATURATING_U8S8: frozenset[CpuIsa] = frozenset({"avx512", "avx2", "x86_64"})
# Per class: settings whose results do not depend on saturation. x86-64 without VNNI
# gets U8U8 rather than 7-bit weights: U8U8 held (>= 0.999) on both demo models and on
# a seeded ViT-B-32 where 7-bit weights did not (docs/performance.md, "INT8 per CPU").
_BY_ISA: dict[CpuIsa, Int8Settings] = {
    isa: U8U8 if isa in SATURATING_U8S8 else U8S8 for isa in get_args(CpuIsa)
}


def int8_settings(isa: str) -> Int8Settings:
    """The settings for class ``isa`` (ValueError for a name that is not a class)."""
    return _BY_ISA[check_cpu_isa(isa)]


def classify(machine: str, flags: Iterable[str]) -> CpuIsa:
    """The class of a CPU from its architecture (``platform.machine()``) and its feature
    flags in /proc/cpuinfo's spelling (``avx512_vnni``, ``avx_vnni``, ``asimddp``...)."""
    arch = machine.lower()
    have = {flag.lower() for flag in flags}
    if arch in _X86:
        if "avx512_vnni" in have and "avx512f" in have:
            return "avx512_vnni"
        if "avx_vnni" in have:
            return "avx_vnni"
        if "avx512f" in have and "avx512bw" in have:
            return "avx512"
        if "avx2" in have:
            return "avx2"
        return "x86_64"
    if arch in _ARM:
        return "arm64_dotprod" if "asimddp" in have else "arm64"
    return "other"


def parse_cpuinfo(text: str) -> set[str]:
    """Feature flags of the first processor in /proc/cpuinfo (``flags`` on x86-64,
    ``Features`` on ARM)."""
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip().lower() in ("flags", "features"):
            return set(value.split())
    return set()


# numpy's run-time CPU dispatch names -> /proc/cpuinfo's. numpy does not report AVX-VNNI,
# so such a CPU is taken for AVX2 there: U8U8, which holds everywhere (only slower).
_NUMPY_FLAGS = {
    "AVX512VNNI": "avx512_vnni",
    "AVX512F": "avx512f",
    "AVX512BW": "avx512bw",
    "AVX2": "avx2",
    "ASIMDDP": "asimddp",
}


def _numpy_flags() -> set[str]:
    """The portable fallback where there is no /proc/cpuinfo (macOS, Windows)."""
    for module in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):  # 2.x, 1.x
        try:
            features = getattr(importlib.import_module(module), "__cpu_features__", None)
        except ImportError:
            continue
        if isinstance(features, dict):
            return {ours for theirs, ours in _NUMPY_FLAGS.items() if features.get(theirs)}
    return set()


@cache
def detect_cpu_isa(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuIsa:
    """This machine's class, from /proc/cpuinfo where there is one, else from numpy."""
    try:
        flags = parse_cpuinfo(cpuinfo.read_text(errors="replace"))
    except OSError:
        flags = set()
    return classify(platform.machine(), flags or _numpy_flags())


def check_cpu_isa(value: str) -> CpuIsa:
    """``value`` as a class, or ValueError naming the classes."""
    name = value.strip().lower()
    for isa in CPU_ISAS:
        if isa == name:
            return isa
    raise ValueError(f"must be one of {', '.join(CPU_ISAS)} (got {value!r})")


def cpu_isa(override: str | None = None) -> CpuIsa:
    """The class INT8 is chosen and verified for: ``override``, else ``ONNX_CPU_ISA``,
    else the detected one."""
    chosen = override or os.environ.get(ENV_VAR, "").strip()
    if chosen:
        try:
            return check_cpu_isa(chosen)
        except ValueError as exc:
            raise ValueError(f"{ENV_VAR}: {exc}") from None
    return detect_cpu_isa()
