"""Frequency buckets and Guess-then-Refine metrics against brute-force loops on small arrays."""

from __future__ import annotations

import numpy as np
import pytest

from interp_toolkit.core import load_result
from interp_toolkit.lens.frequency import FrequencyTable, bucket_of_rank, from_corpus
from interp_toolkit.lens.metrics import K_GRID, DepthMetrics, bucket_shares, decision_depths, flip_rates


def test_k_grid_is_the_papers():
    assert K_GRID[0] == 1 and K_GRID[-1] == 10_000 and np.all(np.diff(K_GRID) > 0)
    assert len(K_GRID) == len(set(int(x) for x in np.logspace(0, 4, 200)))


def test_bucket_edges():
    np.testing.assert_array_equal(bucket_of_rank([1, 10, 11, 100, 101, 1000, 1001, 50_000]), [0, 0, 1, 1, 2, 2, 3, 3])


def test_frequency_table_ranks_shares_and_corpus(tiny_gpt2):
    counts = np.zeros(2000)
    counts[:1500] = np.arange(1500, 0, -1)
    t = FrequencyTable("toy", "toy", int(counts.sum()), counts[np.random.default_rng(0).permutation(2000)])
    srt = np.sort(t.counts)[::-1]
    for top, share in t.shares().items():
        assert share == pytest.approx(srt[:top].sum() / srt.sum())
    ranks = t.ranks
    for v in np.random.default_rng(1).choice(2000, 50):
        brute = 1 + sum(1 for u in range(2000) if t.counts[u] > t.counts[v] or (t.counts[u] == t.counts[v] and u < v))
        assert ranks[v] == brute
    table = from_corpus(tiny_gpt2, ["abba", "cab"], "toy")
    ids = tiny_gpt2.tokenizer("a", add_special_tokens=False)["input_ids"][0]
    assert table.n_tokens == 7 and table.counts[ids] == 3 and table.ranks[ids] == 1
    with pytest.raises(ValueError, match="empty"):
        from_corpus(tiny_gpt2, ["", " "], "nothing")


@pytest.mark.parametrize("seed", [0, 1])
def test_metrics_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, L, V = 40, 6, 30
    final = rng.integers(0, V, n)
    top1 = np.where(rng.random((n, L)) < 0.4, final[:, None], rng.integers(0, V, (n, L)))
    buckets = rng.integers(0, 4, V)
    rank = rng.integers(1, 60, (n, L))
    rank[rng.random((n, L)) < 0.3] = 1
    tb = buckets[top1]
    share = bucket_shares(tb)
    rate, count = flip_rates(top1, final, tb)
    for l in range(L):
        for b in range(4):
            members = [i for i in range(n) if buckets[top1[i, l]] == b]
            assert share[l, b] == pytest.approx(len(members) / n)
            assert count[l, b] == len(members)
            if members:
                assert rate[l, b] == pytest.approx(sum(top1[i, l] != final[i] for i in members) / len(members))
            else:
                assert np.isnan(rate[l, b])
    ks = np.array([1, 2, 5, 10, 30, 100])
    first, persistent = decision_depths(rank, ks)
    for i in range(n):
        for j, k in enumerate(ks):
            brute_first = next((l for l in range(L) if rank[i, l] <= k), L)
            brute_stay = next((l for l in range(L + 1) if all(rank[i, m] <= k for m in range(l, L))), L)
            assert first[i, j] == brute_first and persistent[i, j] == brute_stay
    assert np.all(persistent >= first)


def test_depth_metrics_from_lens(tiny_gpt2, tmp_path):
    from interp_toolkit.lens import run_lens

    prompts = ["the cat sat", "on a mat", "hello there", "one two three", "abc", "xyz"]
    r = run_lens(tiny_gpt2, prompts, positions="last")
    freq = from_corpus(tiny_gpt2, ["the cat sat on the mat and ate a hat"] * 3, "toy")
    m = DepthMetrics.from_lens(r, freq, groups=["a", "b"] * 3)
    assert m.bucket_share.shape == (3, 4) and np.allclose(m.bucket_share.sum(1), 1)
    # the output row: the last decoded layer is the output (resid_post of the last block)
    np.testing.assert_allclose(m.bucket_share[-1], m.bucket_share[-2])
    assert np.all(m.first_depth <= len(r.layers) - 1)  # the last layer always has rank 1
    back = load_result(m.save(tmp_path / "m.json"))
    np.testing.assert_array_equal(back.first_depth, m.first_depth)
    assert "flip rate" in m.summary() and m.to_html().count("<img") == 3
    with pytest.raises(ValueError, match="group labels"):
        DepthMetrics.from_lens(r, freq, groups=["a"])
