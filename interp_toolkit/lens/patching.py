"""Activation patching of the decision: does the state the lens reads the answer from carry it?

For a pair of prompts of one token length, a *source* s and a *target* t whose outputs differ
(top-1 tokens y_s ≠ y_t), patch the source's state at one layer and the last position into the
target's run and read the output::

    h_t^l[last] ← h_s^l[last]        (site resid_pre or resid_post of layer l; every other
                                      position and layer stays the target's)
    transfer(l)   = [argmax softmax(f(t; l)) = y_s]     the output now says the source's answer
    p_source(l)   = softmax(f(t; l))[y_s]

Rows = pairs × layers, all through ``engine.masked_forward`` (keep 0 at the last position of
one layer's site, the source's activations as a per-prompt ``Reference``). The *causal
decision layer* of a pair is the first layer l from which transfer holds at every later layer
(the last resid_post always transfers: the output reads only that state); it is compared with
the lens's decision layer of the source prompt (first layer from which the lens's top-1 equals
y_s at every later layer). The lens reads what is *decodable*; patching shows from where the
last position's state alone *decides* — later layers can still read other positions, so the
causal layer can come after the lens's.

Pairs: prompts grouped by token length; in each group of n ≥ 2, target i takes source
(i + 1) mod n; pairs whose outputs agree are dropped (the patch could not show a transfer).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from ..adapter import as_adapter
from ..core import Page, Result, html_table, img_tag, register_result
from ..core.figures import new_figure
from ..core.report import meta_line
from ..engine import MaskSpec, Reference, masked_forward
from .sweep import decision_layer

PATCH_SITES = ("resid_pre", "resid_post")


def first_stable_layer(flags: np.ndarray) -> int:
    """First index l with ``flags[l:]`` all true (``len(flags)`` when the last is false)."""
    bad = np.flatnonzero(~np.asarray(flags, dtype=bool))
    return 0 if len(bad) == 0 else int(bad[-1]) + 1


def pair_prompts(lengths: Sequence[int]) -> list[tuple[int, int]]:
    """``(source, target)`` index pairs: within each group of equal length, target i takes
    source (i + 1) mod n (groups of one prompt give no pair)."""
    groups: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        groups.setdefault(int(n), []).append(i)
    pairs = []
    for idx in groups.values():
        if len(idx) > 1:
            pairs += [(idx[(j + 1) % len(idx)], idx[j]) for j in range(len(idx))]
    return pairs


@register_result
@dataclass
class DecisionPatching(Result):
    """Per layer: the share of pairs whose output becomes the source's answer, and its mean
    probability; per pair: the causal decision layer and the lens's decision layer."""

    kind = "lens_decision_patching"
    format_version = 1
    title = "Activation patching of the decision layer"

    meta: dict
    site: str
    layers: list
    n_prompts: int
    sources: list                  # prompt index of each pair's source
    targets: list                  # prompt index of each pair's target
    prompts: list                  # the texts
    answers: list                  # the source's output token (text), per pair
    transfer: np.ndarray           # [pairs, L] bool
    p_source: np.ndarray           # [pairs, L]
    causal_layer: np.ndarray       # [pairs]
    lens_layer: np.ndarray         # [pairs] the logit lens's decision layer of the source
    dropped_same_output: int = 0
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> "DecisionPatching":
        d = dict(d)
        d["transfer"] = np.asarray(d["transfer"], bool).reshape(len(d["sources"]), len(d["layers"]))
        d["p_source"] = np.asarray(d["p_source"], np.float64).reshape(len(d["sources"]), len(d["layers"]))
        d["causal_layer"] = np.asarray(d["causal_layer"], np.int64)
        d["lens_layer"] = np.asarray(d["lens_layer"], np.int64)
        return cls(**d)

    @property
    def n_pairs(self) -> int:
        return len(self.sources)

    def transfer_rate(self) -> np.ndarray:
        """``[L]`` share of pairs whose patched output is the source's answer."""
        return self.transfer.mean(0) if self.n_pairs else np.full(len(self.layers), np.nan)

    def lens_decided(self) -> np.ndarray:
        """``[L]`` share of pairs whose source the lens has decided by each layer."""
        L = len(self.layers)
        return np.array([(self.lens_layer <= l).mean() if self.n_pairs else np.nan for l in range(L)])

    def summary(self) -> str:
        L = len(self.layers)
        if not self.n_pairs:
            return f"decision patching ({self.site}): no pair of equal length with different outputs"
        c, k = self.causal_layer / L, self.lens_layer / L
        rate = self.transfer_rate()
        return (f"decision patching at {self.site}, last position: {self.n_pairs} pairs "
                f"({self.dropped_same_output} dropped: same output)\n"
                f"  transfer rate by layer: " + " ".join(f"{r:.2f}" for r in rate) + "\n"
                f"  causal decision depth {c.mean():.2f} (median {np.median(c):.2f}); lens decision depth "
                f"{k.mean():.2f} (median {np.median(k):.2f}); causal ≥ lens in {(self.causal_layer >= self.lens_layer).mean():.0%} of pairs")

    def _plots(self):
        return {"transfer": plot_transfer}

    def report(self) -> Page:
        page = Page(self.title)
        page.section("Summary", f"<pre>{self.summary()}</pre>", meta_line(self.meta),
                     guide="Each pair patches the source prompt's state at one layer (last position) into the "
                           "target prompt's run. Blue: share of pairs whose output becomes the source's answer. "
                           "Grey: share of sources the logit lens has already decided by that layer. A blue curve "
                           "to the right of the grey one means the answer is decodable before the last position's "
                           "state alone decides the output.")
        if self.n_pairs:
            page.add(img_tag(plot_transfer(self), "transfer rate by layer"))
            rows = [[self.prompts[t][-60:], self.prompts[s][-60:], a, int(cl), int(ll)]
                    for s, t, a, cl, ll in list(zip(self.sources, self.targets, self.answers, self.causal_layer,
                                                    self.lens_layer))[:12]]
            page.section("Pairs (first 12)", html_table(["target (end)", "source (end)", "source answer",
                                                         "causal layer", "lens layer"], rows, left=(0, 1, 2)))
        return page


def plot_transfer(r: DecisionPatching):
    fig, ax = new_figure(figsize=(6, 3.4))
    ax.plot(r.layers, r.transfer_rate(), marker="o", ms=3, color="C0", label="patched output = source's answer")
    if r.n_pairs:
        ax.plot(r.layers, r.p_source.mean(0), color="C0", ls="--", label="mean p(source's answer)")
    ax.step(r.layers, r.lens_decided(), where="post", color="grey", label="lens has decided (source)")
    ax.set_xlabel(f"layer patched ({r.site}, last position)")
    ax.set_ylabel("share of pairs")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"decision patching, {r.n_pairs} pairs", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    return fig


@torch.no_grad()
def decision_patching(model, prompts: Sequence[str], *, site: str = "resid_post", layers: Sequence[int] | None = None,
                      max_batch_tokens: int | None = None, progress: bool | None = None) -> DecisionPatching:
    """Patch each source's last-position state at each layer into its target (module docstring).

    Args:
        prompts: texts; pairs are formed among prompts of equal token length.
        site: ``resid_pre`` or ``resid_post``.
        layers: layers to patch (default all).
    """
    from .decode import run_lens

    adapter = as_adapter(model)
    if site not in PATCH_SITES:
        raise ValueError(f"site must be one of {PATCH_SITES}, not {site!r}")
    prompts = list(prompts)
    if len(prompts) < 2:
        raise ValueError("decision patching needs at least two prompts (pairs of equal token length)")
    L = adapter.n_layers
    layers = list(range(L)) if layers is None else [int(l) for l in layers]
    for l in layers:
        if not 0 <= l < L:
            raise ValueError(f"layer {l} out of range for a {L}-layer model")
    toks = [adapter.to_tokens(p)[0].cpu() for p in prompts]
    # one pass of the lens over every prompt: each output's top-1 and its lens decision layer
    read = run_lens(adapter, prompts, site=site, layers=layers, positions="last", k=1, progress=False)
    out_top = read.out_top_ids[:, 0, 0].astype(np.int64)
    decided = np.array([decision_layer(read.top_ids[i, :, 0, 0], int(out_top[i])) for i in range(len(prompts))])
    pairs = pair_prompts([len(t) for t in toks])
    kept = [(s, t) for s, t in pairs if out_top[s] != out_top[t]]
    names = [adapter.hook_name(site, l) for l in layers]
    transfer = np.zeros((len(kept), len(layers)), bool)
    p_src = np.zeros((len(kept), len(layers)))
    by_len: dict[int, list[int]] = {}
    for j, (s, t) in enumerate(kept):
        by_len.setdefault(len(toks[t]), []).append(j)
    for T, js in by_len.items():
        src = torch.stack([toks[kept[j][0]] for j in js]).to(adapter.device)
        tgt = torch.stack([toks[kept[j][1]] for j in js]).to(adapter.device)
        _, cache = adapter.run_with_cache(src, names=names, return_type=None)
        ref = Reference({n: cache[n] for n in names}, per_prompt=True)
        n, K = len(js), len(layers)
        spec = MaskSpec(K * n)
        for i, (l, name) in enumerate(zip(layers, names)):
            keep = torch.ones(K * n, T, dtype=torch.bool)
            keep[i * n:(i + 1) * n, T - 1] = False  # rows i·n … i·n + n − 1 patch layer l
            spec.set(site, l, keep)
        answers = sorted({int(out_top[kept[j][0]]) for j in js})
        col = {y: c for c, y in enumerate(answers)}
        ids = torch.as_tensor(answers, device=adapter.device)

        def read(logits, ids=ids):  # [chunk, vocab] -> [chunk, 1 + U]: top-1 id, p of each answer
            return torch.cat([logits.argmax(-1, keepdim=True).double(), logits.softmax(-1)[:, ids].double()], -1)
        out = masked_forward(adapter, tgt, spec, reference=ref, output=read, prompt_index=torch.arange(n).repeat(K),
                             max_batch_tokens=max_batch_tokens, progress=progress)
        out = out.double().cpu().numpy().reshape(K, n, -1)
        for a, j in enumerate(js):
            ys = int(out_top[kept[j][0]])
            transfer[j] = out[:, a, 0].astype(np.int64) == ys
            p_src[j] = out[:, a, 1 + col[ys]]
    lens_layer = decided[[src for src, _ in kept]].astype(np.int64) if kept else np.zeros(0, np.int64)
    causal = np.array([first_stable_layer(row) for row in transfer], np.int64)
    return DecisionPatching(
        meta={**adapter.meta}, site=site, layers=layers, n_prompts=len(prompts), sources=[s for s, _ in kept],
        targets=[t for _, t in kept], prompts=prompts, answers=[adapter.to_string(int(out_top[s])) for s, _ in kept],
        transfer=transfer, p_source=p_src, causal_layer=causal, lens_layer=lens_layer,
        dropped_same_output=len(pairs) - len(kept))
