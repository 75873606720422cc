"""Shared fixtures: tiny random models on every available backend, and the real models.

Backends. TransformerLens 3.x has both ``HookedTransformer`` ("hooked") and
``TransformerBridge`` ("bridge"); 4.x has only the bridge. Tiny-model fixtures are
parametrised over ``TINY_BACKENDS`` (both on 3.x, bridge on 4.x), so every test written
against them also proves the bridge. Real-model fixtures use ``DEFAULT_BACKEND`` (hooked on
3.x, bridge on 4.x). A test that needs a HookedTransformer-only feature is marked
``@pytest.mark.hooked_only``; it is skipped only where HookedTransformer does not exist.

Real models (``smollm2``, ``gemma3``, ``real_model``) are loaded once per session from the
offline packages through the converted-weights cache (``$INTERP_TOOLKIT_CACHE``); tests
using them carry ``@pytest.mark.real`` (also added automatically). Without the packages they
skip, except under CI (``CI`` set), where that is a failure.
"""

from __future__ import annotations

import os
from importlib.metadata import version

import pytest

from backends import DEFAULT_BACKEND, HAS_HOOKED, REAL_FIXTURES, TINY_BACKENDS, TL_MAJOR
from interp_toolkit.models import load_model, tiny_model
from interp_toolkit.models.registry import OFFLINE_MODELS, is_installed

_loaded_real: dict[str, object] = {}


def pytest_report_header(config):
    return (f"transformer-lens {version('transformer-lens')}: tiny backends {', '.join(TINY_BACKENDS)}; "
            f"real models on {DEFAULT_BACKEND}")


def pytest_collection_modifyitems(config, items):
    skip_hooked = pytest.mark.skip(reason=f"needs HookedTransformer; TransformerLens {TL_MAJOR}.x has only TransformerBridge")
    for item in items:
        if "hooked_only" in item.keywords and not HAS_HOOKED:
            item.add_marker(skip_hooked)
        if set(getattr(item, "fixturenames", ())) & (set(REAL_FIXTURES) | {"real_model"}):
            item.add_marker(pytest.mark.real)


# ---------------------------------------------------------------------- tiny models
@pytest.fixture(params=TINY_BACKENDS)
def backend(request) -> str:
    """The backend tiny models are built on (each test runs once per available backend)."""
    return request.param


@pytest.fixture
def make_tiny(backend):
    """Factory: ``make_tiny(arch="gpt2", **tiny_model_kwargs)`` on the current backend."""

    def make(arch: str = "gpt2", **kwargs):
        return tiny_model(arch, backend=backend, **kwargs)

    return make


@pytest.fixture
def tiny_gpt2(make_tiny):
    """GPT-2-like: LayerNorm, GELU, learned positions; 2 layers, 4 heads, d_model 32, vocab 64."""
    return make_tiny("gpt2")


@pytest.fixture
def tiny_llama(make_tiny):
    """Llama-like: RMSNorm, gated SiLU, rotary, 4 query heads on 2 KV heads; d_model 32."""
    return make_tiny("llama")


@pytest.fixture(params=["gpt2", "llama"])
def tiny(request, make_tiny):
    """Both tiny architectures, with sharper random weights (init_std 0.3)."""
    return make_tiny(request.param, init_std=0.3)


# ---------------------------------------------------------------------- real models
def _real(name: str):
    if name not in _loaded_real:
        if not is_installed(name):
            msg = f"{name} is not installed ({OFFLINE_MODELS[name].pip_install})"
            if os.environ.get("CI"):
                pytest.fail(msg)
            pytest.skip(msg)
        _loaded_real[name] = load_model(name, backend=DEFAULT_BACKEND, progress=False)
    return _loaded_real[name]


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct (Llama architecture, GQA 9/3), unprocessed weights, fp32, CPU."""
    return _real("smollm2-135m")


@pytest.fixture(scope="session")
def gemma3():
    """Gemma 3 270M (post-norms, GQA 4/1, scaled embeddings), unprocessed weights, fp32, CPU."""
    return _real("gemma3-270m")


@pytest.fixture(scope="session", params=list(REAL_FIXTURES))
def real_model(request):
    """Each real model in turn."""
    return request.getfixturevalue(request.param)


@pytest.fixture(autouse=True)
def _reset_real_model_hooks():
    """Session-scoped models outlive a test: never let a test's hooks leak into the next."""
    yield
    for model in _loaded_real.values():
        model.reset_hooks()
