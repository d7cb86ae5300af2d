"""What the CPU can do, read once: its model name and instruction-set flags (Linux
``/proc/cpuinfo``; elsewhere the model from :mod:`platform` and no flags)."""

from __future__ import annotations

import functools
import platform
from pathlib import Path

# Instructions that make bfloat16 arithmetic fast; without them bf16 runs at fp32 speed or slower.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=1)
def cpu_info() -> tuple[str, frozenset[str]]:
    """``(model name, flags)`` of this machine's CPU; flags are empty when they cannot be read."""
    model, flags = platform.processor(), frozenset()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = frozenset(value.split())
    return model, flags


def has_fast_bf16() -> bool | None:
    """Whether the CPU has bfloat16 instructions; None when its flags cannot be read."""
    flags = cpu_info()[1]
    return None if not flags else any(flag in flags for flag in BF16_FLAGS)
