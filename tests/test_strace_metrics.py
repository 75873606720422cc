"""s-Trace metrics on hand-made distributions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from interp_toolkit.strace import metrics as M


def test_tv_kl_entropy():
    p = np.array([0.5, 0.3, 0.2, 0.0])
    q = np.array([[0.5, 0.3, 0.2, 0.0], [0.0, 0.0, 0.0, 1.0], [0.25, 0.35, 0.2, 0.2]])
    np.testing.assert_allclose(M.total_variation(p, q), [0.0, 1.0, 0.25])
    kl = M.kl_divergence(p, q)
    assert kl[0] == pytest.approx(0.0, abs=1e-12) and kl[1] > 10
    assert kl[2] == pytest.approx(0.5 * math.log(2) + 0.3 * math.log(0.3 / 0.35))
    assert M.entropy([0.25] * 4) == pytest.approx(math.log(4))
    assert M.entropy([1.0, 0.0]) == 0.0


def test_nucleus_sizes():
    p = np.array([0.6, 0.25, 0.1, 0.05])
    n = M.nucleus_sizes(p)
    assert n[50] == 1 and n[60] == 1 and n[70] == 2 and n[90] == 3 and n[99] == 4


def test_shared_nucleus():
    p = np.array([0.6, 0.25, 0.1, 0.05])
    same = p.copy()
    # the 90% nucleus of q is {0, 1} (0.95 ≥ 0.9) but p needs {0, 1, 2}
    shifted = np.array([0.7, 0.25, 0.02, 0.03])
    swapped_tail = np.array([0.6, 0.25, 0.05, 0.1])
    wrong_top = np.array([0.3, 0.6, 0.05, 0.05])
    s = M.shared_nucleus(p, np.stack([same, shifted, swapped_tail, wrong_top]))
    assert s[0] == 99
    assert M.shared_nucleus(p, np.array([0.7, 0.25, 0.03, 0.02]))[0] == 99  # same order at 99%
    assert s[1] == 80  # 80%: p needs {0,1} (0.85), q needs {0,1} (0.95 ≥ .8, 0.7 < .8)
    assert s[2] == 80  # 90%: p's nucleus {0,1,2}, q's {0,1,3}: differ; 80%: {0,1} both
    assert s[3] == 0


def test_required_sizes():
    sizes = [1e-3, 1e-2, 0.1, 1.0]
    scores = [0, 10, 60, 99]
    r = M.required_sizes(sizes, scores)
    assert r[1] == 1e-2 and r[10] == 1e-2 and r[20] == 0.1 and r[60] == 0.1 and r[80] == 1.0
    assert math.isnan(M.required_sizes([0.1, 1.0], [0, 5])[10])


def test_auc_tv_trapezoid_over_log10():
    sizes = [1e-3, 1e-2, 1e-1, 1.0]
    assert M.auc_tv(sizes, [1, 1, 1, 1]) == pytest.approx(3.0)
    assert M.auc_tv(sizes, [1, 0.5, 0.5, 0]) == pytest.approx(0.75 + 0.5 + 0.25)
    assert M.auc_tv([1e-5, 1.0], [1.0, 0.0]) == pytest.approx(2.5)


def test_composition():
    cls = np.array([0, 1, 2, 0, 0])
    order = np.array([4, 1, 0, 2, 3])
    comp = M.composition(cls, order, [0, 1, 2, 5], 3)
    assert np.isnan(comp[0]).all()
    np.testing.assert_allclose(comp[1], [1, 0, 0])
    np.testing.assert_allclose(comp[2], [0.5, 0.5, 0])
    np.testing.assert_allclose(comp[3], [0.6, 0.2, 0.2])


def test_unigram_encoding():
    freq = np.array([0.5, 0.2, 0.0, 0.1, 0.2 - 1e-3])
    follows = np.array([0.4, 0.3, 0.2, 0.05, 0.25])  # ranks the known tokens like freq
    against = follows[[3, 4, 2, 0, 1]]
    s = M.unigram_encoding(np.stack([follows, against]), freq)
    assert s[0] == pytest.approx(1.0)
    assert s[1] < 0
    assert np.isnan(M.unigram_encoding(follows, None)).all()


def test_spearman_matches_scipy():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    x, y = rng.random((3, 50)), rng.random(50)
    ours = M.spearman_rows(x, y)
    for i in range(3):
        assert ours[i] == pytest.approx(spearmanr(x[i], y).statistic)
