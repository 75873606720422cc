"""The edge-level circuit graph of a model (the standard edge-patching graph).

Nodes: ``input`` (token + position embedding), every attention head ``L{l}H{h}`` (query
heads; grouped key/value heads are ungrouped, so each query head has its own key and value
inputs), every MLP ``MLP{l}``, and ``logits``. A node writes to the residual stream (a
*sender*: input, heads, MLPs) and/or reads from it through *receiver inputs*: a head reads
three (``.q``, ``.k``, ``.v``), an MLP one, the logits one. There is an edge from every
sender to every receiver input downstream of it in the residual stream::

    receiver           senders upstream
    L{l}H{h}.q/k/v     input, heads and MLPs of layers < l
    MLP{l}             input, heads and MLPs of layers < l, heads of layer l
    logits             every sender

so ``n_edges = Σ_l [3·H·(1 + l(H+1)) + (1 + l(H+1) + H)] + 1 + L(H+1)``. Edge ``e`` is the
pair ``(sender[e], receiver[e])``; ``spec(keep)`` turns per-row edge keeps ``[rows, E]``
into the engine's edge-site ``MaskSpec`` (``engine.masks``: ``input_r' = input_r +
(1 − m_e)·(r_s − o_s)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from ..engine import MaskSpec
from ..engine.masks import n_senders, upstream_senders

#: receiver kinds, in the order of ``CircuitGraph.receiver_kind``
RECEIVER_KINDS = ("q", "k", "v", "mlp", "logits")
_SITE = {"q": "edge_q", "k": "edge_k", "v": "edge_v", "mlp": "edge_mlp", "logits": "edge_logits"}


@dataclass(frozen=True)
class CircuitGraph:
    """Edges of the circuit graph of an ``n_layers`` × ``n_heads`` model (see module docstring).

    Arrays (one entry per edge, ordered by receiver in forward order, then sender):
    ``sender`` (index on the engine's sender axis), ``receiver`` (receiver index),
    ``receiver_kind`` (index into ``RECEIVER_KINDS``), ``receiver_layer``,
    ``receiver_head`` (-1 for MLP and logits).
    """

    n_layers: int
    n_heads: int

    @cached_property
    def _arrays(self) -> dict[str, np.ndarray]:
        L, H = self.n_layers, self.n_heads
        cols = {k: [] for k in ("sender", "receiver", "receiver_kind", "receiver_layer", "receiver_head")}
        r = 0

        def add(n_up, kind, layer, head):
            nonlocal r
            cols["sender"].append(np.arange(n_up))
            for k, v in (("receiver", r), ("receiver_kind", RECEIVER_KINDS.index(kind)),
                         ("receiver_layer", layer), ("receiver_head", head)):
                cols[k].append(np.full(n_up, v))
            r += 1

        for l in range(L):
            for kind in ("q", "k", "v"):
                for h in range(H):
                    add(upstream_senders(H, "edge_q", l, L), kind, l, h)
            add(upstream_senders(H, "edge_mlp", l, L), "mlp", l, -1)
        add(n_senders(L, H), "logits", L, -1)
        return {k: np.concatenate(v).astype(np.int64) for k, v in cols.items()}

    # ------------------------------------------------------------------ sizes / arrays
    @property
    def sender(self) -> np.ndarray:
        return self._arrays["sender"]

    @property
    def receiver(self) -> np.ndarray:
        return self._arrays["receiver"]

    @property
    def receiver_kind(self) -> np.ndarray:
        return self._arrays["receiver_kind"]

    @property
    def receiver_layer(self) -> np.ndarray:
        return self._arrays["receiver_layer"]

    @property
    def receiver_head(self) -> np.ndarray:
        return self._arrays["receiver_head"]

    @property
    def n_edges(self) -> int:
        return int(self.sender.shape[0])

    @property
    def n_senders(self) -> int:
        return n_senders(self.n_layers, self.n_heads)

    @property
    def n_receivers(self) -> int:
        return int(self.receiver[-1]) + 1

    @staticmethod
    def expected_edges(n_layers: int, n_heads: int) -> int:
        """Closed form of ``n_edges`` (module docstring)."""
        L, H = n_layers, n_heads
        return sum(3 * H * (1 + l * (H + 1)) + (1 + l * (H + 1) + H) for l in range(L)) + 1 + L * (H + 1)

    # ------------------------------------------------------------------ names
    def sender_name(self, s: int) -> str:
        if s == 0:
            return "input"
        l, j = divmod(s - 1, self.n_heads + 1)
        return f"MLP{l}" if j == self.n_heads else f"L{l}H{j}"

    @cached_property
    def sender_names(self) -> list[str]:
        return [self.sender_name(s) for s in range(self.n_senders)]

    def receiver_name(self, e: int) -> str:
        kind = RECEIVER_KINDS[self.receiver_kind[e]]
        l, h = int(self.receiver_layer[e]), int(self.receiver_head[e])
        if kind == "logits":
            return "logits"
        if kind == "mlp":
            return f"MLP{l}"
        return f"L{l}H{h}.{kind}"

    def edge_name(self, e: int) -> str:
        return f"{self.sender_names[self.sender[e]]}->{self.receiver_name(e)}"

    def receiver_node(self, e: int) -> str:
        """The node a receiver input belongs to (``L3H1.q`` -> ``L3H1``)."""
        return self.receiver_name(e).split(".")[0]

    @cached_property
    def receiver_node_ids(self) -> np.ndarray:
        """Per edge, the sender index of the node its receiver belongs to (logits: -1)."""
        kind = self.receiver_kind
        l, h = self.receiver_layer, self.receiver_head
        node = 1 + l * (self.n_heads + 1) + np.where(kind == RECEIVER_KINDS.index("mlp"), self.n_heads, h)
        return np.where(kind == RECEIVER_KINDS.index("logits"), -1, node)

    def edge_index(self, sender: str, receiver: str) -> int:
        """Index of the edge ``sender -> receiver`` (names as ``edge_name`` writes them)."""
        name = f"{sender}->{receiver}"
        hits = [e for e in range(self.n_edges) if self.edge_name(e) == name]
        if not hits:
            raise KeyError(f"no edge {name!r} in the graph")
        return hits[0]

    # ------------------------------------------------------------------ masks
    def spec(self, keep: Bool[Tensor, "row edge"] | Float[Tensor, "row edge"]) -> MaskSpec:
        """Edge-site ``MaskSpec`` from per-row edge keeps (1 keep, 0 patch to the reference)."""
        keep = torch.as_tensor(keep)
        if keep.ndim != 2 or keep.shape[1] != self.n_edges:
            raise ValueError(f"edge keep must be [rows, {self.n_edges}], got {tuple(keep.shape)}")
        R, S, H = keep.shape[0], self.n_senders, self.n_heads
        spec = MaskSpec(R)
        dtype = keep.dtype
        kind, layer, head, send = (torch.as_tensor(a) for a in (self.receiver_kind, self.receiver_layer,
                                                                 self.receiver_head, self.sender))
        for k, name in enumerate(RECEIVER_KINDS):
            sel_kind = kind == k
            for l in (range(self.n_layers) if name != "logits" else [self.n_layers]):
                sel = sel_kind & (layer == l)
                if not bool(sel.any()):
                    continue
                kk = keep[:, sel]
                if bool((kk == 1).all()):
                    continue
                if name in ("q", "k", "v"):
                    full = torch.ones(R, H, S, dtype=dtype)
                    full[:, head[sel], send[sel]] = kk
                    spec.set(_SITE[name], l, full[:, None])
                else:
                    full = torch.ones(R, S, dtype=dtype)
                    full[:, send[sel]] = kk
                    spec.set(_SITE[name], None if name == "logits" else l, full[:, None])
        return spec
