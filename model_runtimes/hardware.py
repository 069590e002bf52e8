"""What this machine can run fast: the CPU's instruction sets (from /proc/cpuinfo) and whether PyTorch sees a
CUDA GPU. Read by the engine choice and recorded beside speed figures.

Hosts differ: a Xeon with AMX multiplies bfloat16 matrices several times faster than fp32, an AVX2-only EPYC
runs bfloat16 slower than fp32, and int8 needs VNNI to be quick. A figure means little without these.
"""

from __future__ import annotations

import platform
from functools import cache

# The instruction sets that decide which cross-encoder engine is fast here.
SPEED_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)


@cache
def _cpuinfo_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def cpu_flags() -> list[str]:
    """The SPEED_FLAGS this CPU has, in SPEED_FLAGS order (empty where /proc/cpuinfo is unreadable)."""
    present = _cpuinfo_flags()
    return [flag for flag in SPEED_FLAGS if flag in present]


def cpu_has_bf16_matrix_units() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AMX-BF16)."""
    return "amx_bf16" in _cpuinfo_flags()


def cpu_model() -> str:
    """The CPU's model name (e.g. "AMD EPYC"), or the machine type where /proc/cpuinfo has none."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.machine()


def cuda_is_available() -> bool:
    """Whether PyTorch is installed with CUDA and sees a GPU (False where it is not installed)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())
