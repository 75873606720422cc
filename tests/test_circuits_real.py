"""Circuit tasks and discovery on SmolLM2 (real model; small)."""

from __future__ import annotations

import pytest

from interp_toolkit.circuits import TASKS, build_task, discover_circuit

pytestmark = [pytest.mark.real, pytest.mark.hooked_only, pytest.mark.slow]


@pytest.mark.parametrize("name", sorted(TASKS))
def test_tasks_solved_by_smollm2(smollm2, name):
    data = build_task(smollm2, name, n_prompts=8, seed=0)
    assert data.accuracy >= 0.8 and data.n_prompts == 8
    assert all(b.clean.shape == b.corrupt.shape for b in data.batches)
    for b in data.batches:  # per prompt the correct and incorrect answer sets are disjoint
        for good, bad in zip(b.correct.tolist(), b.incorrect.tolist()):
            assert not ({t for t in good if t >= 0} & {t for t in bad if t >= 0})


def test_ioi_circuit_smollm2(smollm2, tmp_path):
    from interp_toolkit import cli

    res = discover_circuit(smollm2, "ioi", ["eap", "random"], n_prompts=1, sizes=[0.05, 1.0], max_batch_tokens=512,
                           n_attention_heads=2)
    assert res.curves["eap"]["f"][-1] == pytest.approx(1.0, abs=1e-3)
    assert res.curves["eap"]["f"][0] > res.curves["random"]["f"][0]
    assert cli.main(["circuit", "--task", "ioi", "--method", "random", "--n-prompts", "1", "--sizes", "1",
                     "--backend", "hooked", "--json", str(tmp_path / "c.json")]) == 0
