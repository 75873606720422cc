"""Edge-scoring methods on the circuit graph, behind one registry (``METHODS``).

Every method returns one score per edge of ``CircuitGraph`` (``[E]``, averaged over the
task's prompts); circuits are chosen by ``|score|``. For an edge ``e = (s → r)`` with
``o_s`` the sender's output, ``r_s`` its ablation value (the corrupt run by default), ``g_r``
the metric's gradient with respect to the receiver input and ``M`` the task metric:

    exact               M(clean run with only e patched) − M(clean)        one row per edge
                        (graphs with more than ``max_edges`` edges: per node, below)
    exact (per node)    min(|δ_s|, |δ_n(r)|), δ_x = M(every edge out of x patched) − M(clean),
                        n(r) the node of the receiver (logits: |δ_s|); ``n_prompts`` limits
                        the prompts (the cost is one row per edge or node and prompt)
    eap                 Σ_pos (r_s − o_s)_clean · g_r |clean                first order (EAP)
    eap-ig-inputs       Σ_pos (r_s − o_s)_clean · mean_α g_r(α): the inputs' embeddings
                        interpolated, x(α) = r + α·(clean − r), α at midpoints, r the
                        ablation value of the embedding (the corrupt prompt's by default)
    eap-ig-activations  Σ_pos mean_α (r_s − o_s(α)) · g_r(α): every edge's keep set to α —
                        integrated gradients of the edge masks, so Σ_e score = M(∅) − M(full)
                        (completeness) for any number of steps' limit
    strace              s-Trace's per-position L1 edge weights aggregated onto the edges:
                        Σ_pos w_s(pos) · R(s → r, pos) · J_r(pos), w_s the local weight of the
                        sender's write, R the product of residual-edge weights between the
                        two residual states, J_r the importance flowing through the
                        receiver's read (queries read the destination position, keys and
                        values the source; s-Trace follows values only); clean prompt only
    greedy              exact greedy growth over nodes from the empty circuit (a circuit of
                        nodes keeps every edge between its nodes, the input and the logits;
                        one edge alone rarely reaches the logits, one node does): step t adds
                        the head or MLP n maximising M(C_t ∪ {n}) (mean over prompts, every
                        candidate in one batched masked forward; ties within 1e-9 go to the
                        larger node |EAP|, the sum over its edges); candidates = the ``pool``
                        nodes of largest |EAP|; ``max_steps`` steps. Node score: the t-th
                        added node gets ``steps − t + 2`` (> 1), the others their last marginal
                        gain rescaled into [0, 1); an edge's score is the smaller of its two
                        nodes' (input and logits: above all), so top-n selection takes the
                        edges among the first nodes first
    random              i.i.d. uniform (seeded): a control

Gradient methods run ``engine.masked_forward_with_grads`` with the receiver inputs as
captured hooks, one prompt per row; scores are reduced chunk by chunk (no
``[rows, pos, receivers, d_model]`` gradient is kept).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from ..adapter import ModelAdapter, as_adapter
from ..engine import MaskSpec, masked_forward, masked_forward_with_grads
from ..engine.edges import head_outputs
from .graph import RECEIVER_KINDS, CircuitGraph
from .metrics import SetLogitDiff
from .tasks import PromptBatch, TaskData

ABLATIONS = ("corrupt", "zero", "mean")
METHODS: dict[str, Callable] = {}


class MethodError(ValueError):
    """Unknown method or bad method options."""


def method(name):
    def register(fn):
        METHODS[name] = fn
        return fn
    return register


def get_method(name: str) -> Callable:
    if name not in METHODS:
        raise MethodError(f"unknown method {name!r}; choose from {sorted(METHODS)}")
    return METHODS[name]


@dataclass
class Setting:
    """What every method needs: the model, its graph, the task, the ablation."""

    adapter: ModelAdapter
    graph: CircuitGraph
    task: TaskData
    ablation: str = "corrupt"
    max_batch_tokens: int = 2048
    seed: int = 0
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.ablation not in ABLATIONS:
            raise MethodError(f"unknown ablation {self.ablation!r}; choose from {ABLATIONS}")
        reason = self.adapter.edge_input_support
        if reason is not None:
            raise NotImplementedError(reason)

    # -------------------------------------------------------------- sender outputs
    def sender_hooks(self) -> list[str]:
        a = self.adapter
        names = [a.hook_name("embed")] + ([a.hook_name("pos_embed")] if a.positional == "standard" else [])
        for l in range(a.n_layers):
            names += [a.hook_name("z", l), a.hook_name("mlp_out", l)]
        return names

    def receiver_hooks(self) -> list[tuple[str, str, int]]:
        """``(hook, kind, layer)`` of every receiver input in forward order."""
        a, out = self.adapter, []
        for l in range(a.n_layers):
            out += [(a.hook_name(f"{k}_input", l), k, l) for k in ("q", "k", "v")]
            out.append((a.hook_name("mlp_in", l), "mlp", l))
        out.append((a.hook_name("resid_post", a.n_layers - 1), "logits", a.n_layers))
        return out

    @torch.no_grad()
    def outputs_from(self, acts: dict[str, Tensor]) -> Float[Tensor, "n pos sender d_model"]:
        """Stack sender outputs from activations at ``sender_hooks`` (embed + pos, z W_O, mlp_out)."""
        a = self.adapter
        emb = acts[a.hook_name("embed")]
        if a.positional == "standard":
            emb = emb + acts[a.hook_name("pos_embed")]
        parts = [emb[:, :, None]]
        for l in range(a.n_layers):
            parts += [head_outputs(a, acts[a.hook_name("z", l)], l), acts[a.hook_name("mlp_out", l)][:, :, None]]
        return torch.cat(parts, 2)

    @torch.no_grad()
    def run(self, tokens: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Last-position logits and the sender activations of a plain forward (cached per
        prompt tensor: the methods ask for the same clean / corrupt runs many times)."""
        key = ("run", id(tokens))
        if key not in self._cache:
            logits, cache = self.adapter.run_with_cache(tokens.to(self.adapter.device), names=self.sender_hooks())
            self._cache[key] = (tokens, logits[:, -1], {k: v for k, v in cache.items()})
        return self._cache[key][1:]

    def reference(self, batch: PromptBatch) -> dict[str, Tensor] | None:
        """Ablation values at the sender hooks, one row per prompt (None: zero ablation)."""
        key = ("ref", id(batch))
        if key not in self._cache:
            if self.ablation == "zero":
                self._cache[key] = None
            elif self.ablation == "corrupt":
                self._cache[key] = self.run(batch.corrupt)[1]
            else:  # mean over the batch's clean prompts, per position
                acts = self.run(batch.clean)[1]
                self._cache[key] = {k: v.mean(0, keepdim=True).expand_as(v) for k, v in acts.items()}
        return self._cache[key]

    def ref_embed(self, batch: PromptBatch) -> Tensor:
        """The ablation value of the token embeddings ``[n, pos, d_model]`` (the start of the
        EAP-IG inputs path)."""
        ref = self.reference(batch)
        emb = self.run(batch.clean)[1][self.adapter.hook_name("embed")]
        return torch.zeros_like(emb) if ref is None else ref[self.adapter.hook_name("embed")]

    def ref_outputs(self, batch: PromptBatch) -> Tensor:
        ref = self.reference(batch)
        clean = self.run(batch.clean)[1]
        if ref is None:
            return torch.zeros_like(self.outputs_from(clean))
        return self.outputs_from(ref)


def _repeat(ref: dict[str, Tensor] | None, k: int) -> dict[str, Tensor] | None:
    return None if ref is None else {n: v.repeat_interleave(k, 0) for n, v in ref.items()}


def _edge_table(graph: CircuitGraph) -> dict[tuple[str, int], np.ndarray]:
    """``(receiver kind, layer) -> edge ids`` shaped ``[head, sender]`` (q/k/v) or ``[sender]``."""
    out = {}
    kind, layer = graph.receiver_kind, graph.receiver_layer
    for k, name in enumerate(RECEIVER_KINDS):
        for l in np.unique(layer[kind == k]):
            ids = np.nonzero((kind == k) & (layer == l))[0]
            out[(name, int(l))] = ids.reshape(graph.n_heads, -1) if name in ("q", "k", "v") else ids
    return out


def gradient_scores(st: Setting, batch: PromptBatch, steps: int, spec_fn: Callable[[int], tuple],
                    diff: Callable[[Tensor, dict], Tensor]) -> np.ndarray:
    """``Σ_rows Σ_pos diff · g_r`` per edge, divided by ``steps`` (rows are prompt × step).

    ``spec_fn(n_rows) -> (MaskSpec, reference)`` sets the rows' interpolation;
    ``diff(prompt_idx, sender_acts) -> [rows, pos, sender, d_model]`` the sender differences.
    """
    a, graph = st.adapter, st.graph
    table = _edge_table(graph)
    n_rows = batch.n * steps
    spec, ref = spec_fn(n_rows)
    senders, receivers = st.sender_hooks(), st.receiver_hooks()
    scores = np.zeros(graph.n_edges)
    chunk_acts: dict[str, Tensor] = {}
    recv = {h: (k, l) for h, k, l in receivers}

    def reduce(hook, idx, act, grad):
        if hook in senders:
            chunk_acts[hook] = act
            return None
        kind, l = recv[hook]
        if "D" not in chunk_acts:
            chunk_acts["D"] = diff(idx // steps, chunk_acts)
        D = chunk_acts["D"]
        ids = table[(kind, l)]
        n_up = ids.shape[-1]
        if kind in ("q", "k", "v"):
            c = torch.einsum("bpsd,bphd->hs", D[:, :, :n_up].double(), grad.double())
        else:
            c = torch.einsum("bpsd,bpd->s", D[:, :, :n_up].double(), grad.double())
        scores[ids] += c.cpu().numpy()
        if hook == receivers[-1][0]:
            chunk_acts.clear()
        return None

    metric = batch.metric().repeat(steps)
    tokens = batch.clean.repeat_interleave(steps, 0).to(a.device)
    masked_forward_with_grads(a, tokens, spec, metric, senders + [h for h, _, _ in receivers], reference=ref,
                              max_batch_tokens=st.max_batch_tokens, reduce=reduce,
                              prompt_index=torch.arange(n_rows))
    return scores / steps


def _midpoints(steps: int) -> Tensor:
    if not isinstance(steps, int) or steps < 1:
        raise MethodError(f"steps must be a positive int, got {steps!r}")
    return (torch.arange(steps, dtype=torch.float32) + 0.5) / steps


def _fixed_diff(st: Setting, batch: PromptBatch):
    D = (st.ref_outputs(batch) - st.outputs_from(st.run(batch.clean)[1])).float()
    return lambda prompt_idx, acts: D[prompt_idx.to(D.device)]


def _over_task(st: Setting, per_batch: Callable[[PromptBatch], np.ndarray], progress: bool) -> np.ndarray:
    batches = st.task.batches
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="scoring", unit="batch")
    total = sum(per_batch(b) for b in batches)
    return np.asarray(total) / st.task.n_prompts


@method("eap")
def eap(st: Setting, progress: bool = False) -> np.ndarray:
    def one(batch):
        return gradient_scores(st, batch, 1, lambda n: (MaskSpec.full(n), None), _fixed_diff(st, batch))
    return _over_task(st, one, progress)


@method("eap-ig-inputs")
def eap_ig_inputs(st: Setting, steps: int = 5, progress: bool = False) -> np.ndarray:
    alphas = _midpoints(steps)

    def one(batch):
        corrupt_embed = st.ref_embed(batch)

        def spec_fn(n):
            keep = alphas.repeat(batch.n)[:, None]  # row i·steps + k: α_k
            return (MaskSpec(n).set("embed", None, keep),
                    {"hook_embed": corrupt_embed.repeat_interleave(steps, 0)})
        return gradient_scores(st, batch, steps, spec_fn, _fixed_diff(st, batch))
    return _over_task(st, one, progress)


@method("eap-ig-activations")
def eap_ig_activations(st: Setting, steps: int = 5, progress: bool = False) -> np.ndarray:
    alphas = _midpoints(steps)
    E = st.graph.n_edges

    def one(batch):
        ref = _repeat(st.reference(batch), steps)
        ref_out = st.ref_outputs(batch).float()

        def spec_fn(n):
            return st.graph.spec(alphas.repeat(batch.n)[:, None].expand(n, E)), ref

        def diff(prompt_idx, acts):  # r_s − o_s(α), o_s read in this very forward
            return ref_out[prompt_idx.to(ref_out.device)] - st.outputs_from(acts).float()
        return gradient_scores(st, batch, steps, spec_fn, diff)
    return _over_task(st, one, progress)


def edge_effects(st: Setting, keep: Tensor, progress: bool = False, rows_per_call: int = 256) -> np.ndarray:
    """Mean over the task's prompts of ``M(rows of keep) − M(clean)``: ``keep [K, E]`` -> ``[K]``."""
    K = keep.shape[0]
    total = np.zeros(K)
    blocks = [(b, s) for b in st.task.batches for s in range(0, K, max(1, rows_per_call // b.n))]
    if progress:
        from tqdm.auto import tqdm

        blocks = tqdm(blocks, desc="exact effects", unit="block")
    for batch, start in blocks:
        sub = keep[start:start + max(1, rows_per_call // batch.n)]
        vals = evaluate_keeps(st, batch, sub)  # [k, n]
        clean = vals_clean(st, batch)
        total[start:start + sub.shape[0]] += (vals - clean[None]).sum(1)
    return total / st.task.n_prompts


def evaluate_keeps(st: Setting, batch: PromptBatch, keep: Tensor, metric_fn=None) -> np.ndarray:
    """The metric of each edge-keep row on each prompt: ``keep [K, E]`` -> ``[K, n]``."""
    K, n = keep.shape[0], batch.n
    spec = st.graph.spec(keep.repeat_interleave(n, 0) if K > 1 else keep.expand(n, -1))
    metric = (batch.metric() if metric_fn is None else metric_fn(batch))
    ref = st.reference(batch)
    rows_ref = None if ref is None else {k: v.repeat(K, *([1] * (v.ndim - 1))) for k, v in ref.items()}
    tokens = batch.clean.repeat(K, 1)
    # row j·n + i is keep row j on prompt i
    out = masked_forward(st.adapter, tokens.to(st.adapter.device), spec, reference=rows_ref,
                         output=_tile_metric(metric, K), max_batch_tokens=st.max_batch_tokens,
                         prompt_index=torch.arange(K * n), prefix_reuse=False)
    return out.reshape(K, n).double().cpu().numpy()


def _tile_metric(metric, K: int):
    """The per-prompt metric for ``K`` blocks of the prompts (row j·n + i: prompt i)."""
    idx = torch.arange(K * metric_rows(metric)) % metric_rows(metric)
    return metric.for_rows(idx)


def metric_rows(metric) -> int:
    for attr in ("correct", "clean_log_probs"):
        if hasattr(metric, attr):
            return getattr(metric, attr).shape[0]
    raise MethodError(f"cannot tell how many prompts the metric {metric!r} is for")


def vals_clean(st: Setting, batch: PromptBatch) -> np.ndarray:
    """The metric of the clean run per prompt (all edges kept)."""
    key = ("clean", id(batch))
    if key not in st._cache:
        logits = st.run(batch.clean)[0]
        st._cache[key] = batch.metric()(logits).double().cpu().numpy()
    return st._cache[key]


def first_prompts(st: Setting, n: int | None) -> Setting:
    """The setting restricted to the task's first ``n`` prompts (None: all)."""
    if n is None or n >= st.task.n_prompts:
        return st
    if n < 1:
        raise MethodError(f"n_prompts must be >= 1, got {n}")
    batches, left = [], n
    for b in st.task.batches:
        if left <= 0:
            break
        batches.append(b.select(range(min(left, b.n))))
        left -= batches[-1].n
    task = TaskData(st.task.name, batches, st.task.accuracy, st.task.template_accuracy, st.task.kept_templates,
                    st.task.examples[:n], st.task.seed)
    return Setting(st.adapter, st.graph, task, st.ablation, st.max_batch_tokens, st.seed)


@method("exact")
def exact(st: Setting, max_edges: int = 3000, n_prompts: int | None = None, progress: bool = False) -> np.ndarray:
    st = first_prompts(st, n_prompts)
    g = st.graph
    if g.n_edges <= max_edges:
        keep = torch.ones(g.n_edges, g.n_edges, dtype=torch.bool)
        keep.fill_diagonal_(False)
        return edge_effects(st, keep, progress)
    # per node: every edge out of one sender patched
    S = g.n_senders
    keep = torch.ones(S, g.n_edges, dtype=torch.bool)
    keep[torch.as_tensor(g.sender), torch.arange(g.n_edges)] = False
    node = np.abs(edge_effects(st, keep, progress))
    rnode = g.receiver_node_ids
    recv = np.where(rnode >= 0, node[np.maximum(rnode, 0)], np.inf)
    return np.minimum(node[g.sender], recv)


def node_keep(graph: CircuitGraph, nodes: np.ndarray) -> np.ndarray:
    """Edge keep rows of node sets: ``nodes [K, S]`` bool (sender indices; the input, sender 0,
    always kept) -> ``[K, E]``: an edge is kept when its sender and its receiver's node are in
    the set (the logits always are)."""
    nodes = np.asarray(nodes, dtype=bool).copy()
    nodes[:, 0] = True
    rnode = graph.receiver_node_ids
    recv = np.where(rnode[None] >= 0, nodes[:, np.maximum(rnode, 0)], True)
    return nodes[:, graph.sender] & recv


def greedy_order(st: Setting, max_steps: int = 32, pool: int = 256, n_prompts: int | None = None,
                 progress: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The exact greedy circuit over nodes (see the module docstring).

    Returns:
        ``(order [steps], metric [steps], candidates [P], last_gain [P])``: the nodes (sender
        indices: heads and MLPs) in the order they were added, the mean metric M(C_t) after
        each addition, the candidate nodes and their marginal gain M(C ∪ {n}) − M(C) at the
        last step (−inf once added).
    """
    st = first_prompts(st, n_prompts)
    g = st.graph
    if max_steps < 1 or pool < 1:
        raise MethodError(f"max_steps and pool must be >= 1, got {max_steps}, {pool}")
    # candidates by descending node |EAP| (sum over the edges out of and into the node): the
    # pool on large graphs, and the order that breaks exact ties
    e = np.abs(eap(st))
    node_eap = np.bincount(g.sender, e, g.n_senders)
    rnode = g.receiver_node_ids
    node_eap += np.bincount(np.maximum(rnode, 0), np.where(rnode >= 0, e, 0.0), g.n_senders)
    cand = (1 + np.argsort(-node_eap[1:], kind="stable"))[:pool]
    current = np.zeros(g.n_senders, dtype=bool)
    chosen = np.zeros(len(cand), dtype=bool)
    gains = np.full(len(cand), -np.inf)

    def metric_of(node_rows: np.ndarray) -> np.ndarray:
        keep = torch.as_tensor(node_keep(g, node_rows))
        total = np.zeros(len(node_rows))
        for b in st.task.batches:
            total += evaluate_keeps(st, b, keep).sum(1)
        return total / st.task.n_prompts

    base = float(metric_of(current[None])[0])
    order, metric = [], []
    steps = range(min(max_steps, len(cand)))
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="exact greedy", unit="node")
    for _ in steps:
        left = np.flatnonzero(~chosen)
        rows = np.repeat(current[None], len(left), 0)
        rows[np.arange(len(left)), cand[left]] = True
        m = metric_of(rows)
        gains[:] = -np.inf
        gains[left] = m - base
        best = float(m.max())
        j = left[int(np.flatnonzero(m >= best - 1e-9 * max(1.0, abs(best)))[0])]  # ties: larger |EAP|
        chosen[j] = True
        current[cand[j]] = True
        base = best
        order.append(int(cand[j]))
        metric.append(base)
    gains[chosen] = -np.inf
    return np.asarray(order), np.asarray(metric), cand, gains


@method("greedy")
def greedy(st: Setting, max_steps: int = 32, pool: int = 256, n_prompts: int | None = None,
           progress: bool = False) -> np.ndarray:
    order, _, cand, gains = greedy_order(st, max_steps, pool, n_prompts, progress)
    g = st.graph
    node = np.zeros(g.n_senders)
    rest = np.isfinite(gains)
    if rest.any():
        x = gains[rest]
        node[cand[rest]] = 0.999 * (x - x.min()) / (x.max() - x.min() + 1e-12)
    node[order] = len(order) - np.arange(len(order)) + 1.0
    node[0] = len(order) + 2.0  # the input is always in the circuit
    rnode = g.receiver_node_ids
    recv = np.where(rnode >= 0, node[np.maximum(rnode, 0)], len(order) + 2.0)  # so are the logits
    return np.minimum(node[g.sender], recv)


@method("random")
def random_scores(st: Setting, progress: bool = False) -> np.ndarray:
    return np.random.default_rng(st.seed).random(st.graph.n_edges)


@method("strace")
def strace_scores(st: Setting, progress: bool = False) -> np.ndarray:
    from .strace_scores import strace_edge_scores

    total = np.zeros(st.graph.n_edges)
    for batch in st.task.batches:
        for i in range(batch.n):
            total += strace_edge_scores(st.adapter, st.graph, batch.clean[i:i + 1])
    return total / st.task.n_prompts
