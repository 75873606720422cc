"""Shared helpers of the engine, patching and attribution tests."""

from __future__ import annotations

import pytest

REAL_FIXTURES = {"smollm2-135m": "smollm2", "gemma3-270m": "gemma3"}


def real_model(request, name: str):
    """The real model ``name``: the session fixture from conftest.py when there is one,
    else loaded here (the test is skipped when the model's package is not installed)."""
    fixture = REAL_FIXTURES[name]
    try:
        return request.getfixturevalue(fixture)
    except pytest.FixtureLookupError:
        pass
    from interp_toolkit.models import ModelNotAvailableError, load_model

    try:
        return load_model(name, device="cpu", progress=False)
    except ModelNotAvailableError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Tiny-model forwards are dominated by thread start-up and, on a shared machine, by
    contention: one intra-op thread is many times faster for them. Restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
