"""Geometry capture: the stored points equal the reference's (Hugging Face module outputs),
the residual check catches a wrong hook, resume, the four modes, bad input."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from interp_toolkit.adapter import as_adapter
from interp_toolkit.geometry import (POINTS, GeometryStore, InputSet, ResidualMismatchError, capture, make_inputs,
                                     quick_geometry)
from interp_toolkit.models.tiny import tiny_hf_model

TEXTS = ["the quick brown fox jumps over the lazy dog", "a second sentence, long enough for this test",
         "and a third one to make three sequences", "four texts make a shard boundary appear"]


def _hf_with_random_norms(arch):
    """A tiny HF model whose vectors (norm gains and biases, other biases) are random too,
    so that a norm's output differs from its normalised input."""
    hf = tiny_hf_model(arch, seed=0, init_std=0.3)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in hf.parameters():
            if p.ndim == 1:
                p.copy_(1 + 0.5 * torch.randn(p.shape, generator=g))
    return hf


def _hf_reference(hf, arch, tokens):
    """The reference's capture: outputs of the Hugging Face modules (ln_1, attn, ln_2, mlp,
    final norm) and the hidden states, for the same weights."""
    body = hf.transformer if arch == "gpt2" else hf.model
    blocks = body.h if arch == "gpt2" else body.layers
    names = (("ln_1", "attn", "ln_2", "mlp") if arch == "gpt2" else
             ("input_layernorm", "self_attn", "post_attention_layernorm", "mlp"))
    out, handles = {}, []
    for l, b in enumerate(blocks):
        for point, mod in zip(("norm1", "attn_out", "norm2", "mlp_out"), names):
            def hook(m, i, o, k=f"{point}.{l}"):
                out[k] = (o[0] if isinstance(o, tuple) else o).detach()
            handles.append(getattr(b, mod).register_forward_hook(hook))
    final = body.ln_f if arch == "gpt2" else body.norm
    handles.append(final.register_forward_hook(lambda m, i, o: out.__setitem__("final_norm", o.detach())))
    with torch.no_grad():
        hs = hf(input_ids=tokens, output_hidden_states=True).hidden_states
    for h in handles:
        h.remove()
    out["embed"] = hs[0]
    for l in range(len(blocks)):
        out[f"resid_mid.{l}"] = hs[l] + out[f"attn_out.{l}"]
        if l < len(blocks) - 1:  # HF's last hidden state is after the final norm
            out[f"resid_post.{l}"] = hs[l + 1]
    return out


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_captured_points_equal_reference_module_outputs(arch, make_tiny, tmp_path):
    hf = _hf_with_random_norms(arch)
    m = make_tiny(arch, hf_model=copy.deepcopy(hf))
    inputs = make_inputs(as_adapter(m), "text", texts=TEXTS, seq_len=12)
    store = capture(m, inputs, tmp_path, dtype="float32", max_batch_tokens=24, progress=False)
    assert len(store.shards) == 2 and store.points == POINTS
    ref = _hf_reference(hf, arch, inputs.tokens)
    assert len(ref) > 10
    for k, want in ref.items():
        p, _, l = k.partition(".")
        got = store.load(p, int(l) if l else None)
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=5e-5, err_msg=k)
    # the norm points are the norms' outputs, not TransformerLens's pre-gain hook_normalized
    assert not np.allclose(store.load("norm1", 0), store.load("embed") / np.linalg.norm(
        store.load("embed"), axis=-1, keepdims=True) * np.sqrt(store.d_model), atol=1e-2)
    assert store.residual_error()["post"] < 1e-5
    np.testing.assert_array_equal(store.tokens(), inputs.tokens.numpy())


@pytest.mark.parametrize("wrong", [{"attn_out": "ln2"}, {"mlp_out": "attn_out"}, {"resid_post": "resid_mid"}])
def test_residual_check_fails_loudly_on_a_wrong_hook(wrong, make_tiny, tmp_path):
    m = make_tiny("llama", init_std=0.3)
    inputs = make_inputs(as_adapter(m), "text", texts=TEXTS[:2], seq_len=8)
    with pytest.raises(ResidualMismatchError, match="rebuilt"):
        capture(m, inputs, tmp_path / "bad", sites=wrong, progress=False)
    # the right hooks pass on the same input
    capture(m, inputs, tmp_path / "good", progress=False)


def test_resume_rewrites_only_missing_shards_and_refuses_other_settings(tiny_gpt2, tmp_path):
    a = as_adapter(tiny_gpt2)
    inputs = make_inputs(a, "text", texts=TEXTS, seq_len=10)
    store = capture(a, inputs, tmp_path, max_batch_tokens=10, progress=False)  # one sequence per shard
    assert [s["n"] for s in store.shards] == [1, 1, 1, 1]
    before = store.load("resid_post", 1)
    files = sorted(tmp_path.glob("shard-*.safetensors"))
    mtimes = {f.name: f.stat().st_mtime_ns for f in files}
    files[2].unlink()  # as if the run had died while writing shard 2
    with pytest.raises(ValueError, match="incomplete"):
        m = json.loads((tmp_path / "manifest.json").read_text())
        m["complete"] = False
        (tmp_path / "manifest.json").write_text(json.dumps(m))
        GeometryStore(tmp_path)
    store = capture(a, inputs, tmp_path, max_batch_tokens=10, progress=False)
    np.testing.assert_array_equal(store.load("resid_post", 1), before)
    for f in sorted(tmp_path.glob("shard-*.safetensors")):
        assert (f.stat().st_mtime_ns == mtimes[f.name]) == (f.name != files[2].name)
    with pytest.raises(ValueError, match="other settings"):
        capture(a, inputs, tmp_path, max_batch_tokens=20, progress=False)


def test_modes(tiny_gpt2, tmp_path):
    a = as_adapter(tiny_gpt2)
    v = make_inputs(a, "vocab")
    assert v.tokens.shape == (64, 1) and v.tokens[:, 0].tolist() == list(range(64))
    r = make_inputs(a, "repeat", token_ids=[5, 9], seq_len=7)
    assert r.tokens.tolist() == [[5] * 7, [9] * 7]
    t = make_inputs(a, "text", texts=TEXTS, seq_len=20)
    p = make_inputs(a, "permute", texts=TEXTS, seq_len=20, block_size=4, seed=1)
    assert not torch.equal(p.tokens, t.tokens)
    for row_t, row_p in zip(t.tokens, p.tokens):  # same blocks, other order
        assert sorted(map(tuple, row_t.view(5, 4).tolist())) == sorted(map(tuple, row_p.view(5, 4).tolist()))
    store = capture(a, v, tmp_path, points=["resid_post"], layers=[-1], progress=False)
    assert store.load("resid_post", 1).shape == (64, 1, a.d_model)


def test_bad_input(tiny_gpt2, tmp_path):
    a = as_adapter(tiny_gpt2)
    inputs = make_inputs(a, "text", texts=TEXTS, seq_len=6)
    with pytest.raises(ValueError, match="unknown capture point"):
        capture(a, inputs, tmp_path, points=["resid_post", "attn_output"], progress=False)
    with pytest.raises(ValueError, match="empty"):
        make_inputs(a, "text", texts=[])
    with pytest.raises(ValueError, match="longer than the model's context"):
        make_inputs(a, "repeat", token_ids=[3], seq_len=a.n_ctx + 1)
    with pytest.raises(ValueError, match="longer than the model's context"):
        capture(a, InputSet(torch.zeros(1, a.n_ctx + 1, dtype=torch.long), "text"), tmp_path, progress=False)
    with pytest.raises(ValueError, match="fewer than seq_len"):
        make_inputs(a, "text", texts=["short", TEXTS[0]], seq_len=20)
    with pytest.raises(ValueError, match="unknown mode"):
        make_inputs(a, "words", texts=TEXTS)
    store = capture(a, inputs, tmp_path, points=["attn_out"], layers=[0], progress=False)
    with pytest.raises(ValueError, match="not captured"):
        store.load("mlp_out", 0)


def test_float16_overflow_is_an_error(tiny_gpt2, tmp_path):
    from interp_toolkit.geometry.capture import _cast

    with pytest.raises(OverflowError, match="float32"):
        _cast(torch.tensor([1.0, 1e6]), "float16", "resid_post.0")
    assert torch.equal(_cast(torch.tensor([1.0, 1e6]), "float32", "x"), torch.tensor([1.0, 1e6]))


@pytest.mark.real
def test_smollm2_capture_and_quick_geometry(smollm2, tmp_path):
    a = as_adapter(smollm2)
    inputs = make_inputs(a, "text", texts=["The cat sat on the mat and looked at the garden.",
                                           "Paris is the capital of France, a country in Europe."], seq_len=10)
    store = capture(a, inputs, tmp_path, layers=[0, 14, 29], dtype="float32", progress=False)
    err = store.residual_error()
    assert max(err.values()) < 1e-4
    # norm1 is the model's input_layernorm output: RMS-normalised resid_pre times the gain
    x = torch.as_tensor(store.load("embed"))
    want = x / (x.pow(2).mean(-1, keepdim=True) + a.cfg.eps).sqrt() * a.norm_gain("ln1", 0).detach()
    np.testing.assert_allclose(store.load("norm1", 0), want.numpy(), rtol=1e-4, atol=1e-5)
    res = quick_geometry(smollm2, "The quick brown fox jumps over the lazy dog because it was late for dinner.")
    assert res.seq_len <= 20 and res.separability is not None and res.grid is not None
    assert res.report().render().count("<img") >= 4


def test_cli_geometry(tmp_path, capsys, backend):
    from interp_toolkit.cli import main
    from interp_toolkit.core import load_result

    texts = tmp_path / "t.txt"
    texts.write_text("\n".join(TEXTS))
    rc = main(["geometry", "--model", "tiny-random-llama", "--backend", backend, "--texts", str(texts),
               "--seq-len", "10", "--out", str(tmp_path / "g.html"), "--json", str(tmp_path / "g.json"),
               "--capture-dir", str(tmp_path / "cap")])
    assert rc == 0 and "attention vs MLP" in capsys.readouterr().out
    res = load_result(tmp_path / "g.json")
    assert res.n_seq == 4 and res.seq_len == 10 and (tmp_path / "g.html").stat().st_size > 10_000
    assert GeometryStore(tmp_path / "cap").n_seq == 4
    assert main(["geometry", "--model", "tiny-random-llama", "--texts", str(texts), "--seq-len", "1000"]) == 2
    assert "longer than the model's context" in capsys.readouterr().err
    assert main(["geometry", "--model", "tiny-random-llama", "--mode", "vocab", "--points", "mlp_output"]) == 2
