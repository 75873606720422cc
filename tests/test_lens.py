"""Logit lens and tuned lens on tiny models (both backends), checked against slow twins."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp_toolkit.adapter import as_adapter
from interp_toolkit.core import load_result
from interp_toolkit.lens import LensResult, LogitLens, kl_div, ranks_of, run_lens, target_id
from interp_toolkit.lens.train import collect_states, lens_kl, train_tuned_lens
from interp_toolkit.lens.tuned import LensMismatchError, TunedLens
from interp_toolkit.strace.dataset import load_eval_set

PROMPTS = ["the cat sat on the mat", "hello world", "a b c d e f g h i"]


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _swap_final_logits(adapter, tokens, site, layer):
    """Slow twin of the logit lens: the model's own forward with the last block's output
    replaced by the state at ``site``/``layer`` (so the model's final norm and unembedding
    run on it)."""
    _, cache = adapter.run_with_cache(tokens, [adapter.hook_name(site, layer)])
    state = cache[adapter.hook_name(site, layer)]
    hook = (adapter.hook_name("resid_post", adapter.n_layers - 1), lambda x, hook: state.clone())
    with torch.no_grad():
        return adapter.forward(tokens, fwd_hooks=[hook])


@pytest.mark.parametrize("site", ["resid_pre", "resid_mid", "resid_post"])
def test_logit_lens_matches_model_forward_with_swapped_state(tiny, site):
    a = as_adapter(tiny)
    tokens = a.as_tokens(PROMPTS[0])
    r = run_lens(tiny, PROMPTS[0], site=site, k=4)
    for li, layer in enumerate(r.layers):
        ref = _swap_final_logits(a, tokens, site, layer)[0].log_softmax(-1)
        top = ref.topk(4, -1)
        np.testing.assert_array_equal(r.top_ids[0, li], top.indices.numpy())
        np.testing.assert_allclose(r.top_probs[0, li], top.values.exp().numpy(), rtol=1e-5, atol=1e-7)
        out = a.forward(tokens)[0].log_softmax(-1)
        np.testing.assert_allclose(r.kl[0, li], kl_div(out, ref).detach().numpy(), atol=1e-5)


def test_last_resid_post_is_the_output(tiny):
    a = as_adapter(tiny)
    r = run_lens(tiny, PROMPTS, site="resid_post", positions="all")
    for i, p in enumerate(PROMPTS):
        logits = a.forward(a.as_tokens(p))[0].detach()
        n = logits.shape[0]
        probs = logits.softmax(-1).topk(5, -1)
        np.testing.assert_array_equal(r.top_ids[i, -1, :n], probs.indices.numpy())
        np.testing.assert_allclose(r.top_probs[i, -1, :n], probs.values.numpy(), atol=1e-6)
        np.testing.assert_array_equal(r.out_top_ids[i, :n], probs.indices.numpy())
        assert np.all(r.kl[i, -1, :n] < 1e-5)
        assert np.all(r.out_rank[i, -1, :n] == 1)


def test_batched_last_position_equals_single_prompts(tiny_gpt2):
    targets = ["a", "o", "t"]
    r = run_lens(tiny_gpt2, PROMPTS, positions="last", targets=targets, max_batch_tokens=20)
    for i, p in enumerate(PROMPTS):
        one = run_lens(tiny_gpt2, p, targets=[targets[i]])
        last = len(one.tokens[0]) - 1
        np.testing.assert_array_equal(r.top_ids[i, :, 0], one.top_ids[0, :, last])
        np.testing.assert_allclose(r.top_probs[i, :, 0], one.top_probs[0, :, last], atol=1e-6)
        np.testing.assert_array_equal(r.target_rank[i], one.target_rank[0])


def test_target_rank_and_prob_brute_force(tiny_llama):
    a = as_adapter(tiny_llama)
    r = run_lens(tiny_llama, PROMPTS[1], targets=["o"])
    tid = target_id(a, "o")
    _, cache = a.run_with_cache(a.as_tokens(PROMPTS[1]))
    for l in range(a.n_layers):
        logits = a.logits_from_resid(cache[a.hook_name("resid_post", l)])[0, -1].detach()
        brute_rank = 1 + sorted(logits.tolist(), reverse=True).index(logits[tid].item())
        assert r.target_rank[0, l] == brute_rank
        assert r.target_prob[0, l] == pytest.approx(logits.softmax(-1)[tid].item(), rel=1e-5)


def test_ranks_of_counts_strictly_larger():
    logits = torch.tensor([[0.5, 2.0, 2.0, -1.0]])
    assert ranks_of(logits, torch.tensor([1])).item() == 1
    assert ranks_of(logits, torch.tensor([2])).item() == 1  # ties in the target's favour
    assert ranks_of(logits, torch.tensor([0])).item() == 3
    assert ranks_of(logits, torch.tensor([3])).item() == 4


def test_bad_input_errors(tiny_gpt2):
    with pytest.raises(ValueError, match="out of range"):
        run_lens(tiny_gpt2, "abc", layers=[2])
    with pytest.raises(ValueError, match="out of range"):
        run_lens(tiny_gpt2, "abc", layers=[-1])
    with pytest.raises(ValueError, match="site"):
        run_lens(tiny_gpt2, "abc", site="attn_out")
    with pytest.raises(ValueError, match="not one"):
        run_lens(tiny_gpt2, "abc", targets=["ab"])
    with pytest.raises(ValueError, match="targets for"):
        run_lens(tiny_gpt2, ["abc", "de"], targets=["a"])
    with pytest.raises(ValueError, match="no prompts"):
        run_lens(tiny_gpt2, [])


def test_result_round_trip_and_report(tiny_gpt2, tmp_path):
    r = run_lens(tiny_gpt2, PROMPTS, targets=["a", "b", "c"])
    back = load_result(r.save(tmp_path / "lens.json"))
    assert isinstance(back, LensResult)
    for key in ("top_ids", "out_rank", "target_rank"):
        np.testing.assert_array_equal(getattr(back, key), getattr(r, key))
    np.testing.assert_array_equal(np.isnan(back.kl), np.isnan(r.kl))
    np.testing.assert_allclose(back.kl[~np.isnan(r.kl)], r.kl[~np.isnan(r.kl)])
    html = r.to_html()
    assert html.count("<img") >= 3 and "resid_post[1]" in html
    assert "output" in r.table(0)


# ---------------------------------------------------------------------- tuned lens
@pytest.fixture(scope="module")
def trained():
    """A 3-layer tiny Llama, states of 60 lower-cased passages, a 60-step tuned lens."""
    from interp_toolkit.models import tiny_model

    torch.set_num_threads(1)
    model = tiny_model("llama", init_std=0.3, n_layers=3)
    states = collect_states(model, [t.lower() for t in load_eval_set(60)], seq_len=32, progress=False)
    train, held = states.split(1024)
    lens = train_tuned_lens(model, train, steps=60, batch_tokens=128, progress=False)
    return model, train, held, lens


def test_tuned_lens_lowers_heldout_kl(trained):
    model, _, held, lens = trained
    logit = lens_kl(model, LogitLens(), held)
    tuned = lens_kl(model, lens, held)
    assert np.all(tuned < 0.8 * logit), (tuned, logit)
    # zero translators are the logit lens
    np.testing.assert_allclose(lens_kl(model, TunedLens.zeros(as_adapter(model)), held), logit, rtol=1e-6)


def test_heldout_curve_is_the_lens_kl_at_those_steps(trained):
    """The curve recorded during training: evaluated at every 5th step and the last, its last
    point is lens_kl of the returned lens, and it falls over the first steps."""
    model, train, held, _ = trained
    lens = train_tuned_lens(model, train, steps=12, batch_tokens=64, eval_states=held, eval_every=5, progress=False)
    curve = lens.training["heldout_curve"]
    assert [s for s, _ in curve] == [5, 10, 12]
    assert curve[-1][1] == pytest.approx(float(lens_kl(model, lens, held).mean()), rel=1e-6)
    assert curve[0][1] > curve[-1][1]  # held-out KL falls over these first steps
    assert "heldout_curve" not in train_tuned_lens(model, train, steps=3, batch_tokens=64, progress=False).training


def test_training_flushes_denormals_and_equals_the_unflushed_twin(trained, monkeypatch):
    """Subnormal floats are flushed during the steps (and only then); the lens equals one
    trained without flushing, and the setting is recorded."""
    import interp_toolkit.lens.train as T
    from interp_toolkit.core.numerics import flush_denormal_enabled

    model, train, held, _ = trained
    modes, real = [], T._step_loss

    def spy(*args):
        modes.append(flush_denormal_enabled())
        return real(*args)

    monkeypatch.setattr(T, "_step_loss", spy)
    kw = dict(steps=5, batch_tokens=64, progress=False)
    fast = train_tuned_lens(model, train, **kw)
    assert modes == [True] * 5 and not flush_denormal_enabled()
    slow = train_tuned_lens(model, train, flush_denormals=False, **kw)
    assert modes[5:] == [False] * 5
    torch.testing.assert_close(fast.A, slow.A, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(fast.b, slow.b, rtol=1e-5, atol=1e-7)
    assert fast.training["flush_denormals"] is True and slow.training["flush_denormals"] is False
    lens_kl(model, fast, held)
    assert not flush_denormal_enabled()


def test_conventions_pick_translators(trained):
    model, _, held, lens = trained
    L = lens.n_layers
    assert [lens.translator_index("resid_post", l) for l in range(L)] == [1, 2, None]
    assert [lens.translator_index("resid_pre", l) for l in range(L)] == [0, 1, 2]
    ref = lens.with_convention("reference")
    assert [ref.translator_index("resid_post", l) for l in range(L)] == [0, 1, 2]
    with pytest.raises(ValueError, match="resid_post only"):
        ref.translator_index("resid_pre", 0)
    with pytest.raises(ValueError, match="resid_mid"):
        lens.translator_index("resid_mid", 0)
    # "tuned" on resid_post[l] is the resid_pre[l+1] decoding; the last one is the exact output
    post = lens_kl(model, lens, held, site="resid_post")
    pre = lens_kl(model, lens, held, site="resid_pre")
    np.testing.assert_allclose(post[:-1], pre[1:], rtol=1e-6)
    assert post[-1] < 1e-6 and lens_kl(model, ref, held, site="resid_post")[-1] > 1e-3


def test_run_lenses_equals_one_run_per_lens(trained):
    from interp_toolkit.lens import run_lenses
    from interp_toolkit.lens.cases import run_cases

    model, _, _, lens = trained
    ref = lens.with_convention("reference")
    many = run_lenses(model, PROMPTS, [None, lens, ref], positions="last", targets=["a", "b", "c"])
    for got, one in zip(many, [None, lens, ref]):
        single = run_lens(model, PROMPTS, one, positions="last", targets=["a", "b", "c"])
        for key in ("top_ids", "top_probs", "out_top_ids", "out_rank", "target_rank", "target_prob"):
            np.testing.assert_array_equal(getattr(got, key), getattr(single, key))
        assert got.lens == single.lens
    assert not np.array_equal(many[0].top_probs, many[1].top_probs)
    cases = run_cases(model, "mc", [None, lens], max_items=8, progress=False)
    assert [c.n_items for c in cases] == [8, 8] and cases[1].lens == "tuned (tuned)"
    assert cases[0].exit_accuracy[-1] == cases[1].exit_accuracy[-1]  # the same model output


def test_tuned_lens_save_load_bit_identical_and_hash(trained, tmp_path):
    model, _, held, lens = trained
    lens.save(tmp_path / "lens")
    back = TunedLens.load(tmp_path / "lens", adapter=model)
    assert torch.equal(back.A, lens.A) and torch.equal(back.b, lens.b)
    assert back.training == lens.training and back.model_meta["name"] == "tiny-random-llama"
    r1 = run_lens(model, PROMPTS, lens=lens, positions="last")
    r2 = run_lens(model, PROMPTS, lens=back, positions="last")
    np.testing.assert_array_equal(r1.top_probs, r2.top_probs)
    from interp_toolkit.models import tiny_model

    other = tiny_model("llama", init_std=0.3, n_layers=3, seed=1)
    with pytest.raises(LensMismatchError, match="trained for"):
        TunedLens.load(tmp_path / "lens", adapter=other)
    with pytest.raises(LensMismatchError):
        run_lens(other, "abc", lens=back)
    with pytest.raises(LensMismatchError, match="layers"):
        run_lens(tiny_model("llama", n_layers=2), "abc", lens=back)


@pytest.mark.parametrize("optimizer,lr", [("sgd", 1.0), ("adam", 0.01)])
def test_training_resumes_bit_identically(trained, tmp_path, optimizer, lr):
    model, train, _, _ = trained
    kw = dict(steps=6, batch_tokens=64, optimizer=optimizer, lr=lr, progress=False)
    straight = train_tuned_lens(model, train, **kw)
    first = tmp_path / "first"
    _run_until(model, train, first, stop_after=3, **kw)
    resumed = train_tuned_lens(model, train, checkpoint_dir=first, checkpoint_every=3, **kw)
    assert torch.equal(resumed.A, straight.A) and torch.equal(resumed.b, straight.b)
    with pytest.raises(ValueError, match="another run"):
        train_tuned_lens(model, train, checkpoint_dir=first, steps=7, batch_tokens=64, progress=False)
    other = "adam" if optimizer == "sgd" else "sgd"
    with pytest.raises(ValueError, match="another run"):
        train_tuned_lens(model, train, checkpoint_dir=first, **dict(kw, optimizer=other))


def test_checkpoint_without_optimizer_key_resumes_as_sgd(trained, tmp_path):
    """Checkpoints written before the optimiser was a setting were SGD runs and still resume."""
    model, train, _, _ = trained
    kw = dict(steps=6, batch_tokens=64, progress=False)
    straight = train_tuned_lens(model, train, **kw)
    _run_until(model, train, tmp_path, stop_after=3, **kw)
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert saved["settings"].pop("optimizer") == "sgd"
    torch.save(saved, tmp_path / "checkpoint.pt")
    resumed = train_tuned_lens(model, train, checkpoint_dir=tmp_path, checkpoint_every=3, **kw)
    assert torch.equal(resumed.A, straight.A) and torch.equal(resumed.b, straight.b)
    with pytest.raises(ValueError, match="another run"):
        train_tuned_lens(model, train, checkpoint_dir=tmp_path, checkpoint_every=3, **dict(kw, optimizer="adam"))


def test_adam_lens_lowers_heldout_kl_and_is_recorded(trained):
    model, train, held, sgd = trained
    adam = train_tuned_lens(model, train, steps=60, batch_tokens=128, optimizer="adam", lr=0.01, progress=False)
    logit = lens_kl(model, LogitLens(), held)
    assert np.all(lens_kl(model, adam, held) < 0.8 * logit)
    assert adam.training["optimizer"] == "adam" and adam.training["momentum"] is None
    assert sgd.training["optimizer"] == "sgd" and sgd.training["nesterov"] is True
    assert not torch.allclose(adam.A, sgd.A)
    # Adam's first step is -lr * sign(gradient) per coordinate (bias-corrected moments, A = 0)
    one = train_tuned_lens(model, train, steps=1, batch_tokens=64, optimizer="adam", lr=0.01, progress=False)
    moved = one.A.abs()[one.A != 0]
    assert moved.numel() > 0.9 * one.A.numel()
    assert (moved - 0.01).abs().quantile(0.9) < 1e-4
    with pytest.raises(ValueError, match="optimizer must be"):
        train_tuned_lens(model, train, steps=2, optimizer="lbfgs", progress=False)


def _run_until(model, train, directory, stop_after, **kw):
    """Train, interrupted (KeyboardInterrupt) right after the checkpoint of step ``stop_after``."""
    import interp_toolkit.lens.train as T

    real = T.atomic_write_bytes

    def write_then_stop(path, data):
        real(path, data)
        raise KeyboardInterrupt

    T.atomic_write_bytes = write_then_stop
    try:
        with pytest.raises(KeyboardInterrupt):
            train_tuned_lens(model, train, checkpoint_dir=directory, checkpoint_every=stop_after, **kw)
    finally:
        T.atomic_write_bytes = real
    assert torch.load(directory / "checkpoint.pt", weights_only=False)["step"] == stop_after


def test_lens_layer_means_closed_forms(trained):
    """A lens's probabilities sum to 1 at every layer; a statistic of the output alone is the
    same at every layer and equals its direct mean."""
    from interp_toolkit.lens.train import lens_layer_means

    model, _, held, lens = trained
    ones = lens_layer_means(model, lens, held, lambda log_f, log_q: log_q.exp().sum(-1), batch=100)
    np.testing.assert_allclose(ones, 1.0, rtol=1e-5)
    entropy = lens_layer_means(model, lens, held, lambda log_f, log_q: -(log_f.exp() * log_f).sum(-1), batch=100)
    with torch.no_grad():
        log_f = as_adapter(model).logits_from_resid(held.final).float().log_softmax(-1)
    direct = float(-(log_f.exp() * log_f).sum(-1).mean())
    np.testing.assert_allclose(entropy, direct, rtol=1e-5)


def test_every_kth_window_keeps_whole_windows(trained):
    _, train, _, _ = trained
    n, T = train.n_tokens // train.seq_len, train.seq_len
    third = train.every_kth_window(3)
    assert third.n_tokens == len(range(0, n, 3)) * T and third.n_sequences == len(range(0, n, 3))
    for j, w in enumerate(range(0, n, 3)):
        assert torch.equal(third.pre[j * T:(j + 1) * T], train.pre[w * T:(w + 1) * T])
        assert torch.equal(third.final[j * T:(j + 1) * T], train.final[w * T:(w + 1) * T])
    assert torch.equal(train.every_kth_window(1).pre, train.pre)
    with pytest.raises(ValueError, match="k must be"):
        train.every_kth_window(0)


def test_empty_corpus_errors(tiny_gpt2):
    with pytest.raises(ValueError, match="empty"):
        collect_states(tiny_gpt2, ["", "  "], progress=False)
    with pytest.raises(ValueError, match="fewer than one window"):
        collect_states(tiny_gpt2, ["ab"], seq_len=16, progress=False)


# ---------------------------------------------------------------------- CLI, quick_lens
def test_cli_lens_table_html_json(capsys, tmp_path, monkeypatch):
    from interp_toolkit import cli

    monkeypatch.setenv("INTERP_TOOLKIT_CACHE", str(tmp_path / "cache"))
    out, js = tmp_path / "r.html", tmp_path / "r.json"
    assert cli.main(["lens", "the cat sat", "-m", "tiny-random-llama", "--out", str(out), "--json", str(js),
                     "--target", "a", "--site", "resid_pre"]) == 0
    text = capsys.readouterr().out
    assert "resid_pre[1]" in text and "output" in text and "target rank" in text
    assert out.read_text().count("data:image/png;base64") >= 3
    r = load_result(js)
    assert r.site == "resid_pre" and r.targets is not None
    assert cli.main(["lens", "x", "-m", "tiny-random-llama", "--lens", "tuned"]) == 2
    assert "benchmarks/lens_train.py" in capsys.readouterr().err
    assert cli.main(["lens", "x", "-m", "tiny-random-llama", "--target", "abc"]) == 2
    assert "not one" in capsys.readouterr().err


def test_quick_lens_logit_and_cached_tuned(trained, tmp_path, monkeypatch):
    from interp_toolkit.lens import lens_dir, quick_lens

    model, _, _, lens = trained
    r = quick_lens(model, "the cat")
    assert r.lens["lens"] == "logit" and r.top_ids.shape[:3] == (1, 3, 7)
    assert "<img" in r.report().render()
    monkeypatch.setenv("INTERP_TOOLKIT_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="lens_train"):
        quick_lens(model, "the cat", lens="tuned")
    lens.save(lens_dir("tiny-random-llama"))
    t = quick_lens(model, "the cat", lens="tuned")
    assert t.lens["lens"] == "tuned" and t.lens["convention"] == "tuned"
    assert not np.array_equal(t.top_probs, r.top_probs)
    with pytest.raises(ValueError, match="prompt"):
        quick_lens(model, "")


# ---------------------------------------------------------------------- real model
def test_smollm2_quick_lens_is_fast_and_ends_at_the_output(smollm2):
    import time

    from interp_toolkit.lens import quick_lens

    prompt = "The capital of France is Paris, and the capital of Italy is the city of"
    a = as_adapter(smollm2)
    assert 12 <= a.as_tokens(prompt).shape[1] <= 24
    t0 = time.perf_counter()
    r = quick_lens(smollm2, prompt)
    seconds = time.perf_counter() - t0
    logits = a.forward(a.as_tokens(prompt))[0].detach()
    top = logits.softmax(-1).topk(5, -1)
    np.testing.assert_array_equal(r.top_ids[0, -1], top.indices.numpy())
    np.testing.assert_allclose(r.top_probs[0, -1], top.values.numpy(), atol=1e-5)
    assert r.str_tokens[0][4] == " is" and r.text(r.out_top_ids[0, 4, 0]) == " Paris"
    assert seconds < 30, seconds
    assert "<img" in r.report().render()
