"""Flushing subnormal floats: on inside the block, the previous mode back afterwards."""

import torch

from interp_toolkit.core.numerics import flush_denormal_enabled, flushed_denormals

TINY = 1e-39  # subnormal in float32 (smallest normal: 1.18e-38)


def _product_of_tiny() -> float:
    return float((torch.tensor([TINY]) * torch.ones(1))[0])


def test_flushes_inside_and_restores_off():
    assert not flush_denormal_enabled() and _product_of_tiny() > 0
    with flushed_denormals():
        assert flush_denormal_enabled() and _product_of_tiny() == 0.0
    assert not flush_denormal_enabled() and _product_of_tiny() > 0


def test_restores_a_mode_that_was_already_on_and_disabled_leaves_it():
    try:
        torch.set_flush_denormal(True)
        with flushed_denormals():
            pass
        assert flush_denormal_enabled()
        torch.set_flush_denormal(False)
        with flushed_denormals(enabled=False):
            assert not flush_denormal_enabled()
    finally:
        torch.set_flush_denormal(False)


def test_restores_after_an_exception_and_works_as_decorator():
    @flushed_denormals()
    def inside():
        return flush_denormal_enabled()

    assert inside() and not flush_denormal_enabled()
    try:
        with flushed_denormals():
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert not flush_denormal_enabled()
