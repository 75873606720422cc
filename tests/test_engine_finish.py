"""Row-wise metrics on blocks of last-position logits give what one block gives, and the
blocked log-odds equal the formula on the whole tensor."""

from __future__ import annotations

import torch
from _engine_support import single_thread  # noqa: F401  (autouse fixture)
from backends import DEFAULT_BACKEND

from interp_toolkit.engine import MaskSpec, masked_forward
from interp_toolkit.engine import kernel
from interp_toolkit.interactions.values import log_odds
from interp_toolkit.models import tiny_model


def test_blocked_metric_equals_one_block(monkeypatch):
    model = tiny_model("llama", backend=DEFAULT_BACKEND, n_layers=2, d_vocab=64, dtype=torch.float64)
    tokens = torch.tensor([[3, 9, 14, 2, 7, 11]])
    spec = MaskSpec(40)
    spec.set("resid_pre", 1, torch.rand(40, 6, generator=torch.Generator().manual_seed(0)) > 0.5)
    calls = []

    def metric(logits):
        calls.append(logits.shape[0])
        return logits.log_softmax(-1)[:, 5]
    whole = masked_forward(model, tokens, spec, output=metric)
    assert calls == [40]
    monkeypatch.setattr(kernel, "FINISH_LOGITS_BYTES", 7 * 64 * 8)  # 7 rows of float64 logits
    calls.clear()
    blocked = masked_forward(model, tokens, spec, output=metric)
    assert calls == [7] * 5 + [5]
    torch.testing.assert_close(blocked, whole, rtol=0, atol=0)


def test_log_odds_blocked_equals_formula():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 300, 5000, generator=g) * 4
    logits[0, 0, 7] = 60.0  # p ≈ 1: the formula must not form 1 − p
    x = logits.double()
    others = x.clone()
    others[..., 7] = -torch.inf
    want = x[..., 7] - torch.logsumexp(others, -1)
    got = log_odds(logits, 7)
    assert got.shape == (3, 300) and got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert logits[0, 0, 7] == 60.0  # the input is not modified (nor a float64 one)
    torch.testing.assert_close(log_odds(x, 7), want, rtol=0, atol=0)
    assert x[0, 0, 7] == 60.0
