"""Causal prefix reuse by position: compute each distinct masked prefix of the prompt once.

Under causal attention the activations at position ``p`` depend only on the tokens and the
masks at positions ``≤ p``. Every mask site edits one position at a time: the keep column of
a row at position ``p`` is ``keep[row, p, ...]`` for the per-position sites (embed, z, q, k,
v, attn_out, mlp_out, resid_*, skip_*; a broadcast position axis gives every position the
same column) and ``keep[row, :, p, :]`` (destination ``p``) for attention patterns. A
per-row reference contributes its values at ``p`` the same way. Two rows whose columns agree
at all positions ``< p`` therefore share every activation, key and value there.

Plan. Each row's columns are replaced by integer ids (equal column ⇔ equal id). Rows are
sorted lexicographically by their id sequence (earlier positions most significant: the
trie is the same whatever order the caller gave the rows in; results go back to the
caller's order). The sorted rows form a radix trie: a node is a position range ``[a, b)``
shared by a run of consecutive rows that agree on ``[0, b)``; its children start at ``b``,
where those rows first disagree; a leaf ends at ``n_pos`` and holds rows whose masks are
identical. Computed token positions: ``Σ_nodes (b − a)``, against ``n_rows · n_pos`` for the
dense forward (``ReusePlan``).

Run. Nodes with the same ``[a, b)`` run as one batched forward of the tokens ``[a, b)``
whose key/value cache is gathered from their parents' caches (positions ``[0, a)``), with
the hooks of one representative row of each node; masks and references are sliced to the
absolute positions ``[a, b)`` (patterns to destinations ``[a, b)`` and sources ``[0, b)``),
so each hook sees the values the dense forward would see there. Leaves give the final
residual; for outputs at every position the segments of a leaf's ancestors are joined.

Memory. Rows are taken in trie order into chunks whose trie holds at most
``max_batch_tokens`` token positions, counting every node's full cache ``b`` (its segment
and the prefix copy it attends to): no forward of a chunk processes or attends to more
positions than that, and a node's cache is freed once its children have run.

Model classes: HookedTransformer (through its ``past_kv_cache``). On a class without a
key/value cache forward (``ModelAdapter.supports_kv_cache``, e.g. TransformerBridge) the
kernel uses the dense path and says so in ``ReusePlan.mode``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..adapter import ModelAdapter
from .masks import MaskError, MaskSpec

# ---------------------------------------------------------------------- columns


def _pos_columns(site: str, keep: Tensor, n_pos: int) -> Tensor:
    """``[rows, n_pos, F]``: what this site's mask does at each (destination) position."""
    if site == "pattern":  # [rows, head, dest, src] -> per destination: [head, src]
        r, h, d, s = keep.shape
        cols = keep.permute(0, 2, 1, 3).reshape(r, d, h * s)
    else:  # [rows, pos, ...]
        r, p = keep.shape[:2]
        cols = keep.reshape(r, p, -1)
    return cols.expand(-1, n_pos, -1) if cols.shape[1] == 1 else cols


def _ids(cols: Tensor) -> Tensor:
    """Integer id per ``[rows, n_pos]`` entry, equal exactly where the column vectors are."""
    r, p, f = cols.shape
    if f == 0:
        return torch.zeros((r, p), dtype=torch.long)
    if cols.is_floating_point() and cols.dtype not in (torch.float32, torch.float64):
        cols = cols.float()
    flat = np.ascontiguousarray(cols.reshape(r * p, f).numpy())
    if flat.dtype.kind == "f":
        flat = flat + flat.dtype.type(0)  # −0.0 → +0.0: equal values, equal bytes
    rows = flat.view(np.dtype((np.void, flat.dtype.itemsize * f))).ravel()  # one opaque value per row
    inverse = np.unique(rows, return_inverse=True)[1]
    return torch.from_numpy(inverse.reshape(r, p).astype(np.int64))


def column_ids(adapter: ModelAdapter, masks: MaskSpec, reference, n_pos: int, site_hooks) -> Int[Tensor, "row pos"]:
    """Per row and position, an id of everything the masks (and per-row references) do at
    that position; rows with equal ids on ``[0, p)`` share all activations there.
    ``site_hooks(adapter, site, layer)``: the hooks whose reference values a site reads."""
    parts = []
    for (site, layer), keep in masks.entries.items():
        parts.append(_ids(_pos_columns(site, keep.cpu(), n_pos)))
        if reference is None or masks.n_rows == 1:
            continue
        for hook in site_hooks(adapter, site, layer):
            v = reference.values.get(hook)
            if v is not None and v.shape[0] == masks.n_rows:  # per-row reference values
                site_of = "pattern" if hook.endswith(("hook_pattern", "hook_attn_scores")) else "pos"
                parts.append(_ids(_pos_columns(site_of, v.detach().cpu().float(), n_pos)))
    if not parts:
        return torch.zeros((masks.n_rows, n_pos), dtype=torch.long)
    return _ids(torch.stack(parts, -1))


# ---------------------------------------------------------------------- trie


@dataclass
class Node:
    """Trie node: rows ``order[lo:hi]`` agree on positions ``[0, b)``; this node computes
    ``[a, b)`` from its parent's cache (``parent`` −1: no cache)."""

    a: int
    b: int
    lo: int
    hi: int
    parent: int
    children: list[int] = field(default_factory=list)


@dataclass
class ReusePlan:
    """What causal prefix reuse computes for one prompt.

    Attributes:
        n_rows, n_pos: the batch and the prompt length.
        computed_positions: token positions computed (Σ over trie nodes of ``b − a``).
        dense_positions: ``n_rows · n_pos`` (what the dense forward computes).
        n_nodes: trie nodes; n_chunks: memory chunks; n_forwards: batched forwards.
        mode: ``"causal"`` or ``"dense"`` (what ran: dense where the model class has no
            key/value cache forward, or ``auto`` found no gain).
    """

    n_rows: int
    n_pos: int
    computed_positions: int
    dense_positions: int
    n_nodes: int
    n_chunks: int
    n_forwards: int = 0
    mode: str = "causal"

    @property
    def saving(self) -> float:
        """Dense positions per computed position (≥ 1 when reuse pays)."""
        return self.dense_positions / max(self.computed_positions, 1)

    def as_dict(self) -> dict:
        return {"n_rows": self.n_rows, "n_pos": self.n_pos, "computed_positions": self.computed_positions,
                "dense_positions": self.dense_positions, "n_nodes": self.n_nodes, "n_chunks": self.n_chunks,
                "n_forwards": self.n_forwards, "mode": self.mode}


def sort_rows(ids: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``order`` (rows in lexicographic order of their ids, position 0 most significant)
    and ``lcp[i]``: positions on which sorted rows ``i − 1`` and ``i`` agree (``lcp[0] = 0``)."""
    x = ids.numpy()
    n_rows, n_pos = x.shape
    order = np.lexsort(x.T[::-1]) if n_pos else np.arange(n_rows)
    s = x[order]
    lcp = np.zeros(n_rows, dtype=np.int64)
    if n_rows > 1:
        diff = s[1:] != s[:-1]
        lcp[1:] = np.where(diff.any(1), diff.argmax(1), n_pos)
    return order, lcp


def build_trie(lcp: np.ndarray, lo: int, hi: int, n_pos: int) -> list[Node]:
    """Radix trie of the sorted rows ``[lo, hi)`` (node 0 is the root, starting at 0)."""
    nodes: list[Node] = []
    stack = [(lo, hi, 0, -1)]
    while stack:
        l, h, a, parent = stack.pop()
        b = n_pos if h - l == 1 else int(lcp[l + 1:h].min())
        idx = len(nodes)
        nodes.append(Node(a, b, l, h, parent))
        if parent >= 0:
            nodes[parent].children.append(idx)
        if b >= n_pos:
            continue
        cuts = [l, *(np.flatnonzero(lcp[l + 1:h] == b) + l + 1).tolist(), h]
        for c0, c1 in zip(cuts[:-1], cuts[1:]):
            stack.append((c0, c1, b, idx))
    return nodes


def chunk_nodes(nodes: list[Node], budget: int) -> list[list[int]]:
    """Split the trie's nodes into chunks run one after the other, leaves in row order.

    A node holds its full key/value cache (``b`` positions: its segment and the copy of its
    parent's cache it attends to) until its last child has run; caches still needed by later
    chunks are those of the next leaf's computed ancestors. A chunk is closed before its
    held and new positions would pass ``budget``."""
    leaves = sorted((n.lo, i) for i, n in enumerate(nodes) if not n.children)
    done: set[int] = set()
    chunks: list[list[int]] = []
    cur: list[int] = []
    cost = 0
    for _, leaf in leaves:
        path, i = [], leaf
        while i >= 0 and i not in done:
            path.append(i)
            i = nodes[i].parent
        held = 0
        while i >= 0:  # computed ancestors: caches kept for this leaf
            held += nodes[i].b
            i = nodes[i].parent
        add = sum(nodes[j].b for j in path)
        if cur and cost + add > budget:
            chunks.append(cur)
            cur, cost = [], held
        if not cur and held + add > budget:
            raise MaskError(
                f"memory budget of {budget} tokens is too small for one prefix group: a row of the "
                f"trie needs {held + add} positions of segments and key/value cache; raise "
                f"max_batch_tokens (or run without position reuse)")
        cur += path[::-1]
        done.update(path)
        cost += add
    if cur:
        chunks.append(cur)
    return chunks


def plan(adapter: ModelAdapter, masks: MaskSpec, reference, n_pos: int, budget: int, kernel):
    """``(order, nodes, chunks, ReusePlan)``: rows in trie order, the trie over them and the
    chunks of node indices to run. ``kernel``: the kernel's helpers (see ``dispatch``)."""
    ids = column_ids(adapter, masks, reference, n_pos, kernel.site_hooks)
    order, lcp = sort_rows(ids)
    nodes = build_trie(lcp, 0, masks.n_rows, n_pos)
    chunks = chunk_nodes(nodes, budget)
    n_forwards = sum(len({(nodes[i].a, nodes[i].b) for i in c if nodes[i].b > nodes[i].a}) for c in chunks)
    stats = ReusePlan(masks.n_rows, n_pos, sum(n.b - n.a for n in nodes), masks.n_rows * n_pos, len(nodes),
                      len(chunks), n_forwards)
    return order, nodes, chunks, stats


# ---------------------------------------------------------------------- slicing


def slice_spec(spec: MaskSpec, a: int, b: int) -> MaskSpec:
    """The masks as the hooks of a forward over positions ``[a, b)`` see them (patterns:
    destinations ``[a, b)``, sources ``[0, b)``); broadcast axes stay broadcast."""
    entries = {}
    for (site, layer), keep in spec.entries.items():
        if site == "pattern":
            keep = keep[:, :, a:b] if keep.shape[2] > 1 else keep
            keep = keep[..., :b] if keep.shape[3] > 1 else keep
        elif keep.shape[1] > 1:
            keep = keep[:, a:b]
        entries[(site, layer)] = keep
    out = MaskSpec.__new__(MaskSpec)  # already checked: skip re-validation
    out.n_rows, out.entries, out.labels = spec.n_rows, entries, None
    return out


class SlicedReference:
    """A ``Reference`` seen by a forward over positions ``[a, b)`` of an ``n_pos`` prompt."""

    def __init__(self, reference, a: int, b: int, n_pos: int):
        self.reference, self.a, self.b, self.n_pos = reference, a, b, n_pos

    def get(self, hook: str, rows, n_rows: int, n_pos: int, device, dtype, *args, **kwargs) -> Tensor | None:
        v = self.reference.get(hook, rows, n_rows, self.n_pos, device, dtype, *args, **kwargs)
        if v is None or v.ndim < 2:
            return v
        if hook.endswith(("hook_pattern", "hook_attn_scores")):
            return v[:, :, self.a:self.b, :self.b]
        return v[:, self.a:self.b]


# ---------------------------------------------------------------------- run


def _gather(parts: list[tuple[list[Tensor], Tensor]]) -> list[Tensor]:
    """Concatenate ``tensors[l][index]`` over the parts, per layer."""
    n_layers = len(parts[0][0])
    return [torch.cat([t[l].index_select(0, idx) for t, idx in parts]) for l in range(n_layers)]


@torch.no_grad()
def run_causal(adapter: ModelAdapter, tokens: Tensor, masks: MaskSpec, reference, output, metric_input,
               budget: int, kernel, progress: bool | None = None, planned=None) -> tuple[Tensor, ReusePlan]:
    """Evaluate every row of ``masks`` with causal prefix reuse; same contract and result as
    the dense ``kernel.masked_forward`` (rows in the order of ``masks``), plus the plan.
    ``kernel``: the kernel's helpers (see ``dispatch``)."""
    build_hooks, finish = kernel.build_hooks, kernel.finish
    n_pos = tokens.shape[1]
    order, nodes, chunks, stats = planned if planned is not None else plan(adapter, masks, reference, n_pos,
                                                                           budget, kernel)
    need_all = output in ("logits", "log_probs", "final_resid") or (
        callable(output) and metric_input in ("logits", "final_resid"))
    order_t = torch.as_tensor(order, dtype=torch.long)
    result = None
    bar = None
    if progress if progress is not None else stats.n_forwards > 8:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(nodes), desc="masked forward (causal reuse)", unit="node")
    kv: dict[int, tuple[list[Tensor], list[Tensor], int]] = {}  # node -> (keys, values, index)
    seg: dict[int, Tensor] = {}  # node -> final residual [b − a, d] (outputs at every position)
    left = {i: len(n.children) for i, n in enumerate(nodes)}
    with adapter.lean_cached_forward():  # one weight layout for all the forwards below
        for chunk in chunks:
            groups: dict[tuple[int, int], list[int]] = {}
            for i in chunk:
                groups.setdefault((nodes[i].a, nodes[i].b), []).append(i)
            for (a, b) in sorted(groups):  # parents (smaller a) before children
                ids = groups[(a, b)]
                if b == a:  # a root of length 0: rows differ at position 0
                    continue
                reps = order_t[[nodes[i].lo for i in ids]]  # one row per node (all agree on [0, b))
                spec = slice_spec(masks.select(reps), a, b)
                ref = None if reference is None else SlicedReference(reference, a, b, n_pos)
                hooks = build_hooks(adapter, spec, ref, reps, masks.n_rows, b - a)
                parents = [nodes[i].parent for i in ids]
                if a == 0:
                    cache = adapter.kv_cache(batch=len(ids))
                else:
                    runs = [(ps[0], torch.tensor([kv[p][2] for p in ps], device=adapter.device))
                            for ps in _in_order(parents, kv)]
                    cache = adapter.kv_cache(_gather([(kv[p][0], idx) for p, idx in runs]),
                                             _gather([(kv[p][1], idx) for p, idx in runs]))
                inp = tokens[:, a:b].expand(len(ids), -1)
                resid = adapter.forward(inp, fwd_hooks=hooks, stop_at_layer=adapter.n_layers, return_type=None,
                                        past_kv_cache=cache)
                keys, values = adapter.kv_cache_tensors(cache)
                del cache
                for j, i in enumerate(ids):
                    if nodes[i].children:
                        kv[i] = (keys, values, j)
                    if need_all:
                        seg[i] = resid[j]
                for p in parents:
                    if p >= 0:
                        left[p] -= 1
                        if left[p] == 0:  # every child has run: free the parent's cache
                            kv.pop(p, None)
                if b == n_pos:  # leaves: every row of a leaf has the same masks
                    full = torch.stack([_path_resid(nodes, seg, i) for i in ids]) if need_all else resid
                    out = finish(adapter, full, output, metric_input)
                    if result is None:
                        result = out.new_empty((masks.n_rows, *out.shape[1:]))
                    counts = torch.tensor([nodes[i].hi - nodes[i].lo for i in ids])
                    rows = torch.cat([order_t[nodes[i].lo:nodes[i].hi] for i in ids]).to(out.device)
                    result[rows] = out.repeat_interleave(counts.to(out.device), dim=0)
                    if need_all:
                        for i in ids:
                            seg.pop(i, None)
                if bar is not None:
                    bar.update(len(ids))
    if bar is not None:
        bar.close()
    return result, stats


def _in_order(parents: list[int], kv) -> list[list[int]]:
    """Runs of consecutive parents that live in the same cache tensors (batch order kept)."""
    runs: list[list[int]] = []
    for p in parents:
        if runs and kv[runs[-1][0]][0] is kv[p][0]:
            runs[-1].append(p)
        else:
            runs.append([p])
    return runs


def _path_resid(nodes: list[Node], seg: dict[int, Tensor], i: int) -> Float[Tensor, "pos d_model"]:
    parts = []
    while i >= 0:
        if nodes[i].b > nodes[i].a:
            parts.append(seg[i])
        i = nodes[i].parent
    return torch.cat(parts[::-1])


# ---------------------------------------------------------------------- entry from the kernel


def dense_cost(adapter: ModelAdapter, masks: MaskSpec, n_pos: int, prefix_reuse: bool) -> float:
    """Token positions × layers / n_layers that the dense path computes (layer prefix reuse
    counted: a row starting at layer ``l`` costs ``(n_layers − l) / n_layers`` of a forward)."""
    if not prefix_reuse:
        return float(masks.n_rows * n_pos)
    starts = masks.row_start_layers(adapter.n_layers).float()
    return float(((adapter.n_layers - starts) / adapter.n_layers).sum() * n_pos) + n_pos


AUTO_MAX_RATIO = 0.7  # ``auto`` takes causal reuse when its cost is at most this share of dense
# Fixed cost of one batched forward (hooks, weight re-layouts, kernel launches) in token
# positions of work, per device type: small on CPU, large on a GPU, where a forward of a
# small model is bound by launches rather than arithmetic.
FORWARD_COST = {"cpu": 48}
FORWARD_COST_OTHER = 4096


def dispatch(adapter: ModelAdapter, tokens: Tensor, masks: MaskSpec, reference, output, metric_input,
             budget: int, mode, prefix_reuse: bool, progress, plan_out: dict | None, kernel) -> Tensor | None:
    """The kernel's hook: run with causal prefix reuse, or return None for the dense path.

    ``mode``: True (reuse wherever the model class allows) or ``"auto"``: only when
    ``computed + F·forwards ≤ AUTO_MAX_RATIO · (dense + F·dense forwards)``, with the dense
    work counted after layer prefix reuse and ``F`` the device's ``FORWARD_COST`` (and not
    when the budget cannot hold one prefix group).
    ``plan_out``: filled with ``ReusePlan.as_dict()`` of what ran. ``kernel``: the kernel's
    helpers ``build_hooks``, ``finish``, ``site_hooks`` and ``rows_per_chunk`` (passed in, so
    this module does not import the kernel that calls it).
    """
    if mode not in (True, "auto"):
        raise ValueError(f"position_reuse must be False, True or 'auto', got {mode!r}")
    n_pos = tokens.shape[1]
    try:
        planned = plan(adapter, masks, reference, n_pos, budget, kernel)
    except MaskError:
        if mode is True and adapter.supports_kv_cache:
            raise
        planned = None
    use = planned is not None and adapter.supports_kv_cache
    if use and mode == "auto":
        stats = planned[3]
        f = FORWARD_COST.get(adapter.device.type, FORWARD_COST_OTHER)
        dense = dense_cost(adapter, masks, n_pos, prefix_reuse) + f * math.ceil(
            masks.n_rows / kernel.rows_per_chunk(n_pos, budget))
        use = stats.computed_positions + f * stats.n_forwards <= AUTO_MAX_RATIO * dense
    if not use:
        if plan_out is not None:
            plan_out.update(planned[3].as_dict() if planned is not None else {})
            plan_out["mode"] = "dense"
        return None
    out, stats = run_causal(adapter, tokens, masks, reference, output, metric_input, budget, kernel, progress,
                            planned)
    if plan_out is not None:
        plan_out.update(stats.as_dict())
    return out
