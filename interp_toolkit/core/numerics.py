"""Floating-point mode for CPU-heavy loops.

Subnormal floats (|x| < 1.2e-38 in float32) take a slow microcode path on x86 CPUs: a
matrix product whose inputs hold many of them runs several times slower. They appear when
probabilities ``exp(log p)`` with ``log p < -87`` enter a backward pass (e.g. the gradient
``q - p`` of a KL over a vocabulary). Reading and writing them as zero changes each affected
value by less than 1.2e-38 — far below float32 resolution of any quantity that is summed.
"""

from __future__ import annotations

import contextlib

import torch


def flush_denormal_enabled() -> bool:
    """Whether subnormal float32 values are currently flushed to zero (probed, not stored)."""
    tiny = torch.tensor([1e-39], dtype=torch.float32)
    return bool((tiny * torch.ones(1))[0] == 0)


@contextlib.contextmanager
def flushed_denormals(enabled: bool = True):
    """Inside the block, subnormal floats are read and written as zero (where the CPU supports
    it); the previous mode is restored on exit. ``enabled=False`` leaves the mode unchanged."""
    if not enabled:
        yield
        return
    before = flush_denormal_enabled()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)
