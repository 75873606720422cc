"""Which TransformerLens model classes this environment has (imported by conftest and tests)."""

from interp_toolkit.models.hooked import has_hooked_transformer, transformer_lens_major

HAS_HOOKED = has_hooked_transformer()
TL_MAJOR = transformer_lens_major()
# Tiny-model fixtures run on each of these; real-model fixtures on DEFAULT_BACKEND.
TINY_BACKENDS = ("hooked", "bridge") if HAS_HOOKED else ("bridge",)
DEFAULT_BACKEND = "hooked" if HAS_HOOKED else "bridge"
# fixture name -> offline model name
REAL_FIXTURES = {"smollm2": "smollm2-135m", "gemma3": "gemma3-270m"}


def arch_backend_params(archs) -> dict:
    """``pytest.fixture`` keywords parametrising a fixture over (architecture, backend) pairs."""
    pairs = [(arch, backend) for arch in archs for backend in TINY_BACKENDS]
    return {"params": pairs, "ids": [f"{a}-{b}" for a, b in pairs]}
