"""Training a tuned lens offline on CPU: hidden states computed once, then SGD on the translators.

Recipe (tuned-lens's, scaled down): translators zero-initialised; loss
``Σ_i mean_tokens KL(f ‖ q_i)`` with ``f = softmax(U(norm(h_final)))`` the model's output and
``q_i = softmax(U(norm(T_i(resid_pre[i]))))``; SGD with Nesterov momentum 0.9, lr 1.0,
weight decay 1e-3, lr decayed linearly to 0, gradient norm clipped to 1.0.

Scaling: ``collect_states`` runs the model once over the corpus (windows of ``seq_len``
tokens) and keeps ``resid_pre[0..L-1]`` and the final residual ``[N, L, d]`` / ``[N, d]``
(``storage_dtype``, e.g. bfloat16 for real models). Each step draws ``batch_tokens`` rows
with a generator seeded by ``(seed, step)``, so a run resumed from a checkpoint is
bit-identical to an uninterrupted one. The unembedding dominates the cost
(4·B·d·|V| flops per layer and step); ``vocab_subset=K`` restricts the training loss to the
K tokens with the highest mean output probability over the training states (both
distributions renormalised on them) — held-out KL (``lens_kl``) is always over the full
vocabulary.
"""

from __future__ import annotations

import contextlib
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from ..adapter import as_adapter
from ..core import atomic_write_bytes
from ..core.numerics import flushed_denormals
from .decode import kl_div
from .tuned import TunedLens, unembed_hash


@dataclass
class TrainingStates:
    """Residual states of a corpus: ``pre[N, L, d]`` = resid_pre of each layer, ``final[N, d]``."""

    pre: Tensor
    final: Tensor
    n_sequences: int
    seq_len: int

    @property
    def n_tokens(self) -> int:
        return self.pre.shape[0]

    def at(self, site: str, layer: int) -> Tensor:
        """States at ``site`` of block ``layer`` (resid_post[l] = resid_pre[l+1]; the last is final)."""
        if site == "resid_pre":
            return self.pre[:, layer]
        if site == "resid_post":
            return self.pre[:, layer + 1] if layer + 1 < self.pre.shape[1] else self.final
        raise ValueError(f"training states hold resid_pre and resid_post only, not {site!r}")

    def every_kth_window(self, k: int) -> "TrainingStates":
        """Windows 0, k, 2k, ... (whole ``seq_len`` windows): a 1/k sample of the corpus with its mix of texts."""
        if k < 1:
            raise ValueError(f"k must be >= 1, not {k}")
        rows = torch.arange(self.n_tokens).view(-1, self.seq_len)[::k].flatten()
        return TrainingStates(self.pre[rows], self.final[rows], rows.numel() // self.seq_len, self.seq_len)

    def split(self, n_heldout: int) -> tuple["TrainingStates", "TrainingStates"]:
        """(train, held-out): the last ``n_heldout`` tokens (whole windows at the end) held out."""
        if not 0 < n_heldout < self.n_tokens:
            raise ValueError(f"held-out size {n_heldout} must lie in (0, {self.n_tokens})")
        cut = self.n_tokens - n_heldout
        a = TrainingStates(self.pre[:cut], self.final[:cut], self.n_sequences, self.seq_len)
        b = TrainingStates(self.pre[cut:], self.final[cut:], self.n_sequences, self.seq_len)
        return a, b


def corpus_windows(adapter, texts: Sequence[str], seq_len: int, max_tokens: int | None = None) -> Tensor:
    """Token windows ``[n, seq_len]`` cut from the texts joined by blank lines (the last partial one dropped)."""
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise ValueError("the corpus is empty: no text to train or count on")
    if adapter.tokenizer is None:
        raise ValueError("this model has no tokenizer")
    ids = adapter.tokenizer("\n\n".join(texts), add_special_tokens=False)["input_ids"]
    seq_len = min(seq_len, adapter.n_ctx)
    if max_tokens is not None:
        ids = ids[: max_tokens]
    n = len(ids) // seq_len
    if n == 0:
        raise ValueError(f"the corpus has {len(ids)} tokens, fewer than one window of {seq_len}")
    return torch.tensor(ids[: n * seq_len]).view(n, seq_len)


@torch.no_grad()
def collect_states(model, texts: Sequence[str], *, seq_len: int = 128, max_tokens: int | None = None,
                   batch: int = 8, storage_dtype=torch.float32, progress: bool = True) -> TrainingStates:
    """Run the model once over the corpus and keep every layer's resid_pre and the final residual."""
    adapter = as_adapter(model)
    windows = corpus_windows(adapter, texts, seq_len, max_tokens)
    L = adapter.n_layers
    names = adapter.hook_names("resid_pre") + [adapter.hook_name("resid_post", L - 1)]
    pre, final = [], []
    for i in tqdm(range(0, len(windows), batch), desc="hidden states", disable=not progress):
        toks = windows[i:i + batch].to(adapter.device)
        _, cache = adapter.run_with_cache(toks, names)
        pre.append(torch.stack([cache[n] for n in names[:-1]], 2).flatten(0, 1).to("cpu", storage_dtype))
        final.append(cache[names[-1]].flatten(0, 1).to("cpu", storage_dtype))
        del cache
    return TrainingStates(torch.cat(pre), torch.cat(final), len(windows), windows.shape[1])


@contextlib.contextmanager
def _frozen(module):
    """Model parameters without gradients inside the block (restored after)."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def top_vocab(adapter, states: TrainingStates, k: int, batch: int = 512, max_tokens: int = 4096) -> Tensor:
    """The ``k`` token ids with the highest mean output probability over ``states`` (at most
    ``max_tokens`` of them, evenly spaced), as sorted ids."""
    rows = torch.linspace(0, states.n_tokens - 1, min(max_tokens, states.n_tokens)).long()
    mass = torch.zeros(adapter.d_vocab)
    with torch.no_grad():
        for i in range(0, len(rows), batch):
            h = states.final[rows[i:i + batch]].to(adapter.device, adapter.dtype)
            mass += adapter.logits_from_resid(h).float().softmax(-1).sum(0).cpu()
    return mass.topk(min(k, adapter.d_vocab)).indices.sort().values


def _batch_indices(n: int, size: int, seed: int, step: int) -> Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return torch.randint(n, (size,), generator=g)


def _step_loss(adapter, lens: TunedLens, states: TrainingStates, idx: Tensor, vocab) -> Tensor:
    dt = adapter.dtype
    with torch.no_grad():
        log_f = adapter.unembed(adapter.final_norm(states.final[idx].to(adapter.device, dt)), vocab).float().log_softmax(-1)
    total = 0.0
    for i in range(lens.n_layers):
        h = states.pre[idx, i].to(adapter.device, dt)
        log_q = adapter.unembed(adapter.final_norm(lens.translate(h, i)), vocab).float().log_softmax(-1)
        total = total + kl_div(log_f, log_q).mean()
    return total


def train_tuned_lens(model, states: TrainingStates, *, steps: int = 100, batch_tokens: int = 256,
                     lr: float = 1.0, momentum: float = 0.9, weight_decay: float = 1e-3, clip: float = 1.0,
                     vocab_subset: int | None = None, seed: int = 0, optimizer: str = "sgd", checkpoint_dir=None,
                     checkpoint_every: int = 10, corpus: str = "", eval_states: TrainingStates | None = None,
                     eval_every: int = 0, flush_denormals: bool = True, progress: bool = True) -> TunedLens:
    """Fit a tuned lens (``"tuned"`` convention) to ``states``; resumable from ``checkpoint_dir``.

    A checkpoint (``checkpoint.pt``: translators, momentum, step, run settings) is written every
    ``checkpoint_every`` steps; a later call with the same settings continues from it. With
    ``eval_states`` and ``eval_every``, the held-out mean KL over layers (``lens_kl``, full
    vocabulary) is measured every ``eval_every`` steps and at the end; the curve goes to
    ``training["heldout_curve"]`` as ``[step, mean KL]`` pairs (steps of this call only).
    ``flush_denormals`` reads and writes subnormal floats as zero during training
    (``core.numerics``): tail probabilities below e^-87 otherwise slow the backward pass ~4x on
    Gemma 3 and change nothing above 1.2e-38.
    ``optimizer="adam"`` replaces the recipe's SGD with Adam (betas 0.9, 0.999; ``momentum`` unused;
    ``weight_decay`` as an L2 term), a second optimiser to check where the recipe's clipped
    steps are heading: Adam's steps are ~lr per coordinate whatever the gradient's norm.
    """
    adapter = as_adapter(model)
    if steps < 1 or batch_tokens < 1:
        raise ValueError("steps and batch_tokens must be >= 1")
    if states.n_tokens == 0:
        raise ValueError("no training states")
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be 'sgd' or 'adam', not {optimizer!r}")
    L, d = adapter.n_layers, adapter.d_model
    if tuple(states.pre.shape[1:]) != (L, d):
        raise ValueError(f"states have shape {tuple(states.pre.shape[1:])}, the model needs ({L}, {d})")
    settings = {"steps": steps, "batch_tokens": batch_tokens, "optimizer": optimizer, "lr": lr,
                "momentum": momentum if optimizer == "sgd" else None, "nesterov": optimizer == "sgd",
                "weight_decay": weight_decay, "clip": clip, "vocab_subset": vocab_subset, "seed": seed,
                "n_train_tokens": states.n_tokens, "seq_len": states.seq_len, "corpus": corpus,
                "loss": "sum over layers of mean KL(output || lens)", "schedule": "linear decay to 0",
                "init": "zeros", "flush_denormals": flush_denormals}
    A = torch.zeros(L, d, d, device=adapter.device, dtype=adapter.dtype, requires_grad=True)
    b = torch.zeros(L, d, device=adapter.device, dtype=adapter.dtype, requires_grad=True)
    if optimizer == "sgd":
        opt = torch.optim.SGD([A, b], lr=lr, momentum=momentum, nesterov=True, weight_decay=weight_decay)
    else:
        opt = torch.optim.Adam([A, b], lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / steps)
    lens = TunedLens(A, b, model_meta=adapter.meta, unembed_sha256=unembed_hash(adapter))
    vocab = top_vocab(adapter, states, vocab_subset).to(adapter.device) if vocab_subset else None
    start, seconds = 0, 0.0
    ckpt = Path(checkpoint_dir) / "checkpoint.pt" if checkpoint_dir is not None else None
    if ckpt is not None and ckpt.exists():
        saved = torch.load(ckpt, weights_only=False)
        if {"optimizer": "sgd", **saved["settings"]} != settings or saved["unembed_sha256"] != lens.unembed_sha256:
            raise ValueError(f"{ckpt} belongs to another run (settings or model differ); use a fresh checkpoint_dir")
        with torch.no_grad():
            A.copy_(saved["A"]), b.copy_(saved["b"])
        opt.load_state_dict(saved["opt"]), sched.load_state_dict(saved["sched"])
        start, seconds = saved["step"], saved["seconds"]
    losses, curve = [], []
    bar = tqdm(range(start, steps), desc="tuned lens", disable=not progress, initial=start, total=steps)
    with _frozen(adapter.model), flushed_denormals(flush_denormals):
        for step in bar:
            t0 = time.perf_counter()
            idx = _batch_indices(states.n_tokens, batch_tokens, seed, step)
            loss = _step_loss(adapter, lens, states, idx, vocab)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([A, b], clip)
            opt.step()
            sched.step()
            seconds += time.perf_counter() - t0
            losses.append(loss.item() / L)
            bar.set_postfix(kl=f"{losses[-1]:.3f}")
            if eval_states is not None and eval_every > 0 and ((step + 1) % eval_every == 0 or step + 1 == steps):
                curve.append([step + 1, float(lens_kl(adapter, lens, eval_states).mean())])
            if ckpt is not None and ((step + 1) % checkpoint_every == 0 or step + 1 == steps):
                buf = io.BytesIO()
                torch.save({"A": A.detach(), "b": b.detach(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                            "step": step + 1, "seconds": seconds, "settings": settings,
                            "unembed_sha256": lens.unembed_sha256}, buf)
                atomic_write_bytes(ckpt, buf.getvalue())
    training = dict(settings, tokens_seen=steps * batch_tokens, train_seconds=round(seconds, 2),
                    first_mean_kl=losses[0] if losses else None, final_mean_kl=losses[-1] if losses else None)
    if curve:
        training["heldout_curve"] = curve
    if vocab is not None:
        training["vocab_ids_sha256"] = _ids_hash(vocab)
    return TunedLens(A.detach().clone(), b.detach().clone(), model_meta=adapter.meta,
                     unembed_sha256=lens.unembed_sha256, training=training)


def _ids_hash(ids: Tensor) -> str:
    import hashlib

    return hashlib.sha256(ids.cpu().numpy().astype(np.int64).tobytes()).hexdigest()[:16]


@torch.no_grad()
@flushed_denormals()
def lens_layer_means(model, lens, states: TrainingStates, stat: Callable[[Tensor, Tensor], Tensor],
                     site: str = "resid_pre", batch: int = 256) -> Float[np.ndarray, "L"]:
    """Mean over ``states`` of ``stat(log_f, log_q)`` per layer: ``log_f [B, V]`` the output's and
    ``log_q [B, V]`` the lens's log-probabilities (full vocabulary, float32), ``stat`` giving one
    value per token ``[B]`` (subnormal floats flushed to zero, ``core.numerics``)."""
    adapter = as_adapter(model)
    lens.check(adapter)
    L = adapter.n_layers
    total = np.zeros(L)
    for s in range(0, states.n_tokens, batch):
        sl = slice(s, s + batch)
        log_f = adapter.logits_from_resid(states.final[sl].to(adapter.device, adapter.dtype)).float().log_softmax(-1)
        for l in range(L):
            h = states.at(site, l)[sl].to(adapter.device, adapter.dtype)
            log_q = lens.logits(adapter, h, site, l).float().log_softmax(-1)
            total[l] += float(stat(log_f, log_q).sum())
    return total / states.n_tokens


def lens_kl(model, lens, states: TrainingStates, site: str = "resid_pre",
            batch: int = 256) -> Float[np.ndarray, "L"]:
    """Mean KL(output ‖ lens) per layer over ``states`` (full vocabulary), nats."""
    return lens_layer_means(model, lens, states, kl_div, site, batch)
