"""Geometry reductions and analyses against plain linear algebra, planted structure and
reference implementations (scikit-learn, from the ``geometry`` extra)."""

from __future__ import annotations

import importlib
import re
import os

import numpy as np
import pytest
import torch

from interp_toolkit.adapter import as_adapter
from interp_toolkit.core import load_result
from interp_toolkit.geometry import (GeometryResult, analyze, capture, circularity, collect, fit_pca, fit_umap,
                                     iter_rows, make_inputs, pca_exact, pca_of_store, pca_randomized,
                                     pca_streaming, project, quick_geometry, run_geometry, selection)
from interp_toolkit.geometry.helix import helix_model
from interp_toolkit.geometry.stats import logistic_fit, probe_accuracy, same_group_neighbour_rate, silhouette


def extra(module: str):
    """A module of the ``geometry`` extra: required under CI, skipped elsewhere if absent."""
    if os.environ.get("CI"):
        return importlib.import_module(module)
    return pytest.importorskip(module, reason="pip install 'interp_toolkit[geometry]'")


def _low_rank(n=300, d=40, r=5, noise=0.05, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, r)) @ (rng.standard_normal((r, d)) * np.arange(r, 0, -1)[:, None]) \
        + noise * rng.standard_normal((n, d)) + 3.0


def _same_subspace(A, B, tol=1e-6):
    np.testing.assert_allclose(np.abs(A @ B.T), np.eye(len(A)), atol=tol)


def test_pca_methods_equal_the_covariance_eigendecomposition():
    X = _low_rank()
    w, V = np.linalg.eigh(np.cov(X, rowvar=False))  # the plain reference
    w, V = w[::-1][:4], V[:, ::-1][:, :4].T
    for fit in (pca_exact(X, 4), pca_streaming(np.array_split(X, 7), 4), pca_randomized(X, 4),
                fit_pca(X, 4), fit_pca(iter(np.array_split(X, 3)), 4)):
        np.testing.assert_allclose(fit.explained_variance, w, rtol=1e-6, err_msg=fit.method)
        _same_subspace(fit.components, V, 1e-6)
        np.testing.assert_allclose(fit.mean, X.mean(0), rtol=1e-9)
    a, b = pca_exact(X, 4), pca_streaming(np.array_split(X, 7), 4)
    np.testing.assert_allclose(a.components, b.components, atol=1e-8)  # signs fixed the same way
    np.testing.assert_allclose(a.total_variance, np.trace(np.cov(X, rowvar=False)))
    # transform: without centring X Vᵀ (default), with centring (X - μ) Vᵀ
    np.testing.assert_allclose(a.transform(X), X @ a.components.T)
    np.testing.assert_allclose(a.transform(X, center=True), (X - X.mean(0)) @ a.components.T)
    np.testing.assert_allclose(a.transform(X, center=True).var(0, ddof=1), w, rtol=1e-6)


def test_pca_bad_input():
    X = np.random.default_rng(0).standard_normal((5, 3))
    with pytest.raises(ValueError, match="asked for 6 components"):
        pca_exact(X, 6)
    with pytest.raises(ValueError, match="asked for 4 components but the data has 5 points in 3"):
        pca_streaming([X], 4)
    with pytest.raises(ValueError, match="at least 2 points"):
        pca_exact(X[:1], 1)
    with pytest.raises(ValueError, match="unknown PCA method"):
        fit_pca(X, 2, method="svd")
    with pytest.raises(ValueError, match="dims"):
        pca_exact(X, 2).transform(np.zeros((2, 4)))


def test_two_planted_clusters_are_recovered():
    rng = np.random.default_rng(0)
    d = 30
    u = rng.standard_normal(d)
    u /= np.linalg.norm(u)
    y = np.repeat([0, 1], 200)
    X = rng.standard_normal((400, d)) + np.where(y[:, None] == 1, 6.0, -6.0) * u
    fit = pca_streaming(np.array_split(X, 5), 2)
    assert abs(fit.components[0] @ u) > 0.99
    pc1 = fit.transform(X, center=True)[:, 0]
    assert ((pc1 > 0) == (y == 1)).mean() in (0.0, 1.0)
    assert probe_accuracy(X, y) == 1.0
    # closed form for large d: within-cluster distance ≈ √(2d), between ≈ √(12² + 2d)
    a, b = np.sqrt(2 * d), np.sqrt(144 + 2 * d)
    assert silhouette(X, y) == pytest.approx((b - a) / b, abs=0.03)
    Z = rng.standard_normal((400, d))  # no structure: chance
    assert 0.3 < probe_accuracy(Z, y, seed=1) < 0.7 and abs(silhouette(Z, y)) < 0.05


def test_same_group_neighbour_rate_on_planted_and_random_groups():
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(5), 40)
    centres = rng.standard_normal((5, 20)) * 10
    rate, chance = same_group_neighbour_rate(centres[g] + rng.standard_normal((200, 20)), g, k=5)
    assert rate == 1.0 and chance == pytest.approx(39 / 199)
    rate, chance = same_group_neighbour_rate(rng.standard_normal((200, 20)), g, k=5)
    assert abs(rate - chance) < 0.06
    # brute force on a small case: cosine neighbours by sorting
    X = rng.standard_normal((12, 3))
    gg = rng.integers(0, 3, 12)
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    want = np.mean([np.mean(gg[np.argsort(-(U @ U[i]))[1:4]] == gg[i]) for i in range(12)])
    assert same_group_neighbour_rate(X, gg, k=3)[0] == pytest.approx(want)


def test_planted_helix_is_circular_and_line_or_noise_is_not():
    rng = np.random.default_rng(0)
    P, d = 80, 50
    Q = np.linalg.qr(rng.standard_normal((d, 3)))[0]
    t = np.linspace(0, 1, P)
    helix = np.stack([np.cos(4 * np.pi * t), np.sin(4 * np.pi * t), 0.5 * t], 1) @ Q.T + 0.02 * rng.standard_normal((P, d))
    c = pca_exact(helix, 3).transform(helix, center=True)
    pair = circularity(c[:, :2])
    assert pair["circular"] and abs(pair["turns"] - 2) < 0.1 and pair["radius_cv"] < 0.1
    line = np.outer(t, rng.standard_normal(2)) + 1e-3 * rng.standard_normal((P, 2))
    assert not circularity(line)["circular"]
    assert not circularity(rng.standard_normal((P, 2)))["circular"]
    with pytest.raises(ValueError, match="at least 3 points"):
        circularity(np.zeros((2, 2)))


def test_probe_and_silhouette_match_scikit_learn():
    sk_metrics = extra("sklearn.metrics")
    sk_lin = extra("sklearn.linear_model")
    rng = np.random.default_rng(1)
    X = rng.standard_normal((300, 8)) + np.repeat([[0.0], [1.2]], 150, 0)
    y = np.repeat([0, 1], 150)
    assert silhouette(X, y) == pytest.approx(sk_metrics.silhouette_score(X, y), abs=1e-9)
    Xs = (X - X.mean(0)) / X.std(0)
    ours = logistic_fit(X, y, l2=1e-2)(X)
    ref = sk_lin.LogisticRegression(C=1 / (1e-2 * len(X)), tol=1e-10, max_iter=5000).fit(Xs, y).predict(Xs)
    assert (ours == ref).mean() > 0.99


@pytest.fixture
def store(tiny_gpt2, tmp_path):
    a = as_adapter(tiny_gpt2)
    texts = ["the quick brown fox jumps over the lazy dog", "a second sentence, long enough for this",
             "and a third one to make three sequences", "four texts make a shard boundary appear"]
    return capture(a, make_inputs(a, "text", texts=texts, seq_len=12), tmp_path, dtype="float32",
                   max_batch_tokens=24, progress=False)


def test_rows_and_store_pca_equal_a_plain_twin(store):
    X1 = np.stack([store.load("attn_out", l) for l in (0, 1)])  # [L, n, pos, d]
    sel = selection(store, ["attn_out"], [0, 1], positions=1, unit_norm=True)
    X, lab = collect(store, sel)
    ref = X1[:, :, 1:] / np.linalg.norm(X1[:, :, 1:], axis=-1, keepdims=True)
    for (li, l) in enumerate((0, 1)):
        m = lab[:, 1] == l
        np.testing.assert_allclose(X[m].reshape(4, 11, -1), ref[li], rtol=1e-6, atol=1e-9)
    assert set(lab[:, 3]) == set(range(1, 12))
    # averages: samples → position-averaged states; positions and layers likewise
    avg, lab2 = collect(store, selection(store, ["attn_out"], [0, 1], average=("samples", "layers")))
    np.testing.assert_allclose(avg, X1.mean((0, 1)), rtol=1e-6, atol=1e-9)
    assert (lab2[:, :3] == [0, -1, -1]).all()
    pavg, _ = collect(store, selection(store, ["attn_out"], [0], average="positions"))
    np.testing.assert_allclose(pavg, X1[0].mean(1), rtol=1e-6, atol=1e-9)
    # streamed PCA over shards equals the exact one on everything in RAM
    s = pca_of_store(store, sel, 3)
    e = pca_of_store(store, sel, 3, method="exact")
    np.testing.assert_allclose(s.components, e.components, atol=1e-6)
    coords, lab3 = project(store, sel, s)
    np.testing.assert_allclose(coords, X @ s.components.T, atol=1e-9)
    assert (lab3 == lab).all()
    with pytest.raises(ValueError, match="unknown average"):
        selection(store, average="tokens")


@pytest.mark.slow  # numba compiles UMAP on first use (~20 s)
def test_umap_separates_two_clusters():
    extra("umap")
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 60)
    X = rng.standard_normal((120, 16)) + np.where(y[:, None] == 1, 1.0, -1.0) * np.eye(16)[0] * 8
    emb = fit_umap(X, seed=0)
    assert emb.shape == (120, 2)
    assert probe_accuracy(emb, y) == 1.0


def test_analysis_numbers_and_result_round_trip(store, tmp_path):
    res = analyze(store)
    # norms table: the plain mean of the norms
    k = res.norm_keys.index("resid_post.1")
    np.testing.assert_allclose(res.norms[k], np.linalg.norm(store.load("resid_post", 1), axis=-1).mean(0), rtol=1e-5)
    r0 = res.pos0_ratio("resid_post")
    np.testing.assert_allclose(r0, res.norms[[k - 1, k], 0] / res.norms[[k - 1, k], 1:].mean(1))
    s = res.separability
    assert s["layers"] == [0, 1] and all(0 <= a <= 1 for a in s["probe_accuracy"])
    assert res.grid["coords"].shape == (12, 6) and len(res.grid["pairs"]) == 15
    q = res.sequence
    assert q["layers"] == [0, 1] and all(0 <= x <= 1 for x in q["rate"]) and q["chance"][0] == pytest.approx(10 / 43)
    res.save(tmp_path / "g.json")
    back = load_result(tmp_path / "g.json")
    assert isinstance(back, GeometryResult) and back.summary() == res.summary()
    np.testing.assert_allclose(back.grid["coords"], res.grid["coords"])
    for kind in back.plot_kinds:
        assert back.plot(kind).axes
    extra("plotly")
    html = back.to_html()
    assert html.count("<img") == len(back.plot_kinds)
    assert html.count('class="plotly-graph-div"') == 1  # the attn/MLP scatter (the 3-D curve needs WebGL)
    fig3d = back.plot("pc_pairs", interactive=True)
    np.testing.assert_allclose(fig3d.data[0].x, back.grid["coords"][:, 0])
    assert html.count('data-bundle="plotly"') == 1  # plotly.js once, inlined
    assert re.search(r"<script[^>]*\bsrc=", html) is None  # nothing fetched


def test_helix_found_in_planted_positions_and_not_in_random_ones(backend, tmp_path):
    toks = torch.randint(4, 64, (6, 48), generator=torch.Generator().manual_seed(0))
    from interp_toolkit.geometry import InputSet
    from interp_toolkit.models import tiny_model

    helix = analyze(capture(helix_model(backend, n_ctx=48), InputSet(toks, "text"), tmp_path / "h", progress=False))
    assert helix.helix["circular"] and {helix.helix["i"], helix.helix["j"]} == {0, 1}
    assert 0.8 < helix.helix["turns"] <= 1.0
    plain = analyze(capture(tiny_model("gpt2", backend=backend, n_ctx=48), InputSet(toks, "text"), tmp_path / "p",
                            progress=False))
    assert plain.helix["n_circular"] == 0


def test_vocab_mode_token_norms(tiny_llama):
    res = run_geometry(tiny_llama, mode="vocab", points=["attn_out", "mlp_out", "resid_post"], progress=False)
    t = res.token_norms
    assert t["norms"].shape == (64, 2) and t["tokens"].tolist() == list(range(64))
    assert res.str_tokens[5] == as_adapter(tiny_llama).to_str_tokens(torch.tensor([5]))[0]
    assert "token_norms" in res.plot_kinds and res.grid is None


def test_quick_geometry_one_prompt(tiny_llama):
    res = quick_geometry(tiny_llama, "the cat sat on the mat and looked at the garden for a while", max_tokens=12)
    assert (res.n_seq, res.seq_len) == (1, 12) and res.points == ["attn_out", "mlp_out", "resid_post"]
    assert res.grid is not None and res.separability is not None and res.sequence is None  # one sequence
    page = res.report().render()
    assert page.count("<img") == len(res.plot_kinds) >= 4
