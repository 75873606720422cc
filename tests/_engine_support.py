"""Shared helpers of the engine, patching and attribution tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Tiny-model forwards are dominated by thread start-up and, on a shared machine, by
    contention: one intra-op thread is many times faster for them. Restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
