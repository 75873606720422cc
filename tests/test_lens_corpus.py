"""Sampling a training corpus from the model: the key/value-cache sampler draws what the
slow twin (the whole sequence rerun every step, on a TransformerBridge) draws, seeded."""

from __future__ import annotations

import pytest
import torch
from _engine_support import single_thread  # noqa: F401  (autouse fixture)
from backends import DEFAULT_BACKEND

from interp_toolkit.adapter import ModelAdapter
from interp_toolkit.lens.corpus import sample_continuations
from interp_toolkit.models import tiny_model

PROMPTS = ["the cat sat", "a dog ran far", "we ate bread", "hello there", "one two"]


@pytest.mark.hooked_only  # the key/value-cache path exists on HookedTransformer only
def test_cached_sampler_equals_full_reruns(monkeypatch):
    model = tiny_model("llama", backend="hooked", n_layers=2, init_std=0.3, dtype=torch.float64)
    fast = sample_continuations(model, PROMPTS, 12, seed=3, batch=2, progress=False)
    monkeypatch.setattr(ModelAdapter, "supports_kv_cache", property(lambda self: False))
    slow = sample_continuations(model, PROMPTS, 12, seed=3, batch=2, progress=False)
    assert fast == slow
    width = min(len(ModelAdapter(model).to_tokens(p)[0]) for p in PROMPTS)
    assert all(len(ModelAdapter(model).to_tokens(t)[0]) >= width for t in fast)
    assert sample_continuations(model, PROMPTS, 12, seed=4, batch=2, progress=False) != fast  # seeded
    assert sample_continuations(model, PROMPTS, 12, seed=3, batch=2, progress=False) == fast  # reproducible


def test_bad_sampling_settings():
    model = tiny_model("llama", backend=DEFAULT_BACKEND, n_layers=1)
    with pytest.raises(ValueError, match="exceed the context"):
        sample_continuations(model, PROMPTS, 10_000, progress=False)
    with pytest.raises(ValueError, match="temperature"):
        sample_continuations(model, PROMPTS, 4, temperature=0, progress=False)
    with pytest.raises(ValueError, match="no prompts"):
        sample_continuations(model, [], 4, progress=False)
