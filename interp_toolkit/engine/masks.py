"""Mask specification for the batched masked forward.

A ``MaskSpec`` holds, for ``n_rows`` batch rows, keep-masks at model *sites*. A keep value
``m`` (bool or float in [0, 1]) at an activation ``x`` means

    x' = m · x + (1 − m) · r

where ``r`` is the ablation value: zero by default, or the reference activation at the same
hook (a mean over a dataset, or a clean/corrupted run: activation patching). Sites and the
per-row keep shape (any axis may be 1 to broadcast)::

    site         hook                       keep per row        meaning
    embed        hook_embed                 [pos]               input-token mask; r = baseline
    pattern      blocks.l.attn.hook_pattern [head, dest, src]   attention edges, post-softmax,
                                                                no renormalisation
                                                                ([head,1,1] whole head,
                                                                 [head,dest,1] head × position)
    z            blocks.l.attn.hook_z       [pos, head]         head outputs per position
    q            blocks.l.attn.hook_q       [pos, head]         queries (before rotary)
    k / v        blocks.l.attn.hook_k / _v  [pos, kv_head]      keys / values (one per key-value
                                                                head under grouped-query attention)
    attn_out     blocks.l.hook_attn_out     [pos]
    mlp_out      blocks.l.hook_mlp_out      [pos]               MLP node
    resid_pre    blocks.l.hook_resid_pre    [pos]
    resid_mid    blocks.l.hook_resid_mid    [pos]
    resid_post   blocks.l.hook_resid_post   [pos]
    skip_attn    (at resid_mid)             [pos]               residual path around attention:
                                                                resid_mid −= (1−m)(resid_pre − r)
    skip_mlp     (at resid_post)            [pos]               residual path around the MLP:
                                                                resid_post −= (1−m)(resid_mid − r)

Edge sites (path patching of one sender's contribution into one receiver's input). Senders
are the components that write to the residual stream, in the order ``sender_index`` gives:
0 the embedding (token + learned position embedding), then per layer ``l`` its query heads
``1 + l·(H+1) + h`` (output ``z_h W_O[h]``) and its MLP ``1 + l·(H+1) + H`` (``mlp_out``).
Receivers are the inputs a component reads, taken before its norm (the model runs with one
copy of the residual per receiver, ``ModelAdapter.edge_inputs``)::

    site         receiver input                 keep per row
    edge_q       blocks.l.hook_q_input          [pos, head, sender]   query input of each head
    edge_k       blocks.l.hook_k_input          [pos, head, sender]   key input (per query head)
    edge_v       blocks.l.hook_v_input          [pos, head, sender]   value input (per query head)
    edge_mlp     blocks.l.hook_mlp_in           [pos, sender]         MLP input
    edge_logits  (final residual, before the final norm)  [pos, sender]   (no layer)

A keep ``m`` of edge (s → r) means ``input_r' = input_r + (1 − m)·(r_s − o_s)``: ``o_s`` is
the sender's output in this forward (after every edit upstream of it) and ``r_s`` its
reference value (the reference's ``hook_embed`` (+ ``hook_pos_embed``), ``hook_z`` through
``W_O``, ``hook_mlp_out``; zero where absent). The sender axis has one entry per sender of
the model (``n_senders``); entries of senders that are not upstream of the receiver (same
or later layer; for attention the same layer too) are ignored. Edge masks touch layer 0 (the
senders' outputs are recorded from the embedding on), so rows with edges are never started
above it.

For the skip paths only the skip connection is cut; the sublayer still reads its input.
``r`` for ``skip_attn`` is the reference ``resid_pre`` (zero without a reference), for
``skip_mlp`` the reference ``resid_mid``.

Masks are stored per (site, layer) as one tensor ``[n_rows, *keep_shape]`` (bool where the
mask is binary: 1 byte per entry); the kernel converts one chunk's mask at one layer at a
time to the model dtype, inside the hook.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import torch
from jaxtyping import Bool, Float
from torch import Tensor

# site -> (names of the keep axes, is it per-layer)
SITE_AXES: dict[str, tuple[tuple[str, ...], bool]] = {
    "embed": (("pos",), False),
    "pattern": (("head", "dest", "src"), True),
    "z": (("pos", "head"), True),
    "q": (("pos", "head"), True),
    "k": (("pos", "kv_head"), True),
    "v": (("pos", "kv_head"), True),
    "attn_out": (("pos",), True),
    "mlp_out": (("pos",), True),
    "resid_pre": (("pos",), True),
    "resid_mid": (("pos",), True),
    "resid_post": (("pos",), True),
    "skip_attn": (("pos",), True),
    "skip_mlp": (("pos",), True),
    "edge_q": (("pos", "head", "sender"), True),
    "edge_k": (("pos", "head", "sender"), True),
    "edge_v": (("pos", "head", "sender"), True),
    "edge_mlp": (("pos", "sender"), True),
    "edge_logits": (("pos", "sender"), False),
}
EDGE_SITES = ("edge_q", "edge_k", "edge_v", "edge_mlp", "edge_logits")


def n_senders(n_layers: int, n_heads: int) -> int:
    """Senders of the edge sites: the embedding, then per layer its heads and its MLP."""
    return 1 + n_layers * (n_heads + 1)


def sender_index(n_layers: int, n_heads: int, kind: str, layer: int | None = None,
                 head: int | None = None) -> int:
    """Index of a sender on the edge sites' sender axis (``kind``: embed, head, mlp)."""
    if kind == "embed":
        return 0
    if layer is None or not 0 <= layer < n_layers:
        raise MaskError(f"sender layer {layer!r} out of range for {n_layers} layers")
    if kind == "mlp":
        return 1 + layer * (n_heads + 1) + n_heads
    if kind == "head" and head is not None and 0 <= head < n_heads:
        return 1 + layer * (n_heads + 1) + head
    raise MaskError(f"unknown sender {kind!r} (layer {layer}, head {head})")


def upstream_senders(n_heads: int, site: str, layer: int | None, n_layers: int) -> int:
    """How many senders (a prefix of the sender axis) write before the receiver of ``site``
    at ``layer`` reads: attention inputs read layers < l, the MLP also layer l's heads."""
    if site == "edge_logits":
        return n_senders(n_layers, n_heads)
    if site == "edge_mlp":
        return 1 + layer * (n_heads + 1) + n_heads
    return 1 + layer * (n_heads + 1)
SITES = tuple(SITE_AXES)

Key = tuple[str, int | None]


class MaskError(ValueError):
    """A mask that does not fit the model or the prompt."""


@dataclass
class MaskSpec:
    """Per-row keep masks over model sites (see module docstring).

    Attributes:
        n_rows: number of batch rows (masked variants of the prompt).
        entries: ``(site, layer) -> keep[n_rows, *keep_shape]``; ``layer`` is None for embed.
        labels: optional one label per row (kept through ``concat`` and ``select``).
    """

    n_rows: int
    entries: dict[Key, Tensor] = field(default_factory=dict)
    labels: list | None = None

    def __post_init__(self):
        if not isinstance(self.n_rows, int) or self.n_rows < 0:
            raise MaskError(f"n_rows must be a non-negative int, got {self.n_rows!r}")
        for key, keep in list(self.entries.items()):
            self.entries[key] = self._check(key, keep)
        if self.labels is not None and len(self.labels) != self.n_rows:
            raise MaskError(f"{len(self.labels)} labels for {self.n_rows} rows")

    # ------------------------------------------------------------------ building
    def _check(self, key: Key, keep: Tensor) -> Tensor:
        site, layer = key
        if site not in SITE_AXES:
            raise MaskError(f"unknown site {site!r}; known sites: {SITES}")
        axes, per_layer = SITE_AXES[site]
        if per_layer and (layer is None or int(layer) < 0):
            raise MaskError(f"site {site!r} needs a layer >= 0, got {layer!r}")
        if not per_layer and layer is not None:
            raise MaskError(f"site {site!r} takes no layer")
        keep = torch.as_tensor(keep)
        if keep.ndim != 1 + len(axes):
            raise MaskError(
                f"{site} keep must have shape [rows, {', '.join(axes)}] (size 1 broadcasts), "
                f"got {tuple(keep.shape)}"
            )
        if keep.shape[0] != self.n_rows:
            raise MaskError(f"{site} keep has {keep.shape[0]} rows, the spec has {self.n_rows}")
        if keep.dtype != torch.bool:
            if not keep.is_floating_point():
                keep = keep.to(torch.float32)
            if torch.isnan(keep).any():
                raise MaskError(f"{site} keep contains NaN")
            if keep.numel() and (keep.min() < 0 or keep.max() > 1):
                raise MaskError(f"{site} keep values must lie in [0, 1]")
        return keep

    def set(self, site: str, layer: int | None, keep) -> "MaskSpec":
        """Set (replace) the keep mask at ``(site, layer)``; returns self for chaining."""
        key = (site, None if layer is None else int(layer))
        self.entries[key] = self._check(key, keep)
        return self

    @classmethod
    def full(cls, n_rows: int, labels: list | None = None) -> "MaskSpec":
        """``n_rows`` rows that keep everything (the unmasked model)."""
        return cls(n_rows, {}, labels)

    @classmethod
    def from_heads(cls, keep: Bool[Tensor, "row layer head"], labels=None) -> "MaskSpec":
        """Whole-head masks ``keep[row, layer, head]`` (zeroes the head's attention pattern)."""
        keep = torch.as_tensor(keep)
        spec = cls(keep.shape[0], labels=labels)
        for l in range(keep.shape[1]):
            if not bool(keep[:, l].all()):
                spec.set("pattern", l, keep[:, l, :, None, None])
        return spec

    @classmethod
    def from_mlps(cls, keep: Bool[Tensor, "row layer pos"], labels=None) -> "MaskSpec":
        """MLP masks ``keep[row, layer, pos]`` (pos may be 1: whole MLP)."""
        keep = torch.as_tensor(keep)
        spec = cls(keep.shape[0], labels=labels)
        for l in range(keep.shape[1]):
            if not bool(keep[:, l].all()):
                spec.set("mlp_out", l, keep[:, l])
        return spec

    @classmethod
    def from_tokens(cls, keep: Bool[Tensor, "row pos"], labels=None) -> "MaskSpec":
        """Input-token masks ``keep[row, pos]``; masked tokens take the baseline embedding."""
        keep = torch.as_tensor(keep)
        return cls(keep.shape[0], {("embed", None): keep}, labels)

    @classmethod
    def concat(cls, specs: Sequence["MaskSpec"]) -> "MaskSpec":
        """Stack specs row-wise (sites missing in one spec keep everything there)."""
        if not specs:
            raise MaskError("concat needs at least one MaskSpec")
        n = sum(s.n_rows for s in specs)
        keys: list[Key] = []
        for s in specs:
            keys += [k for k in s.entries if k not in keys]
        entries = {}
        for key in keys:
            parts = [s.entries.get(key) for s in specs]
            shape = _broadcast_shape([p.shape[1:] for p in parts if p is not None])
            dtype = torch.bool if all(p is None or p.dtype == torch.bool for p in parts) else torch.float32
            full = []
            for s, p in zip(specs, parts):
                if p is None:
                    full.append(torch.ones((s.n_rows, *shape), dtype=dtype))
                else:
                    full.append(p.to(dtype).expand(s.n_rows, *shape))
            entries[key] = torch.cat(full)
        labels = None
        if any(s.labels is not None for s in specs):
            labels = []
            for s in specs:
                labels += s.labels if s.labels is not None else [None] * s.n_rows
        return cls(n, entries, labels)

    # ------------------------------------------------------------------ reading
    def select(self, rows: slice | Sequence[int] | Tensor) -> "MaskSpec":
        """The sub-spec of the given rows."""
        if isinstance(rows, slice):
            idx = torch.arange(self.n_rows)[rows]
        else:
            idx = torch.as_tensor(rows, dtype=torch.long)
        entries = {k: v[idx] for k, v in self.entries.items()}
        labels = [self.labels[i] for i in idx.tolist()] if self.labels is not None else None
        return MaskSpec(len(idx), entries, labels)

    def chunks(self, rows_per_chunk: int) -> Iterator[tuple[slice, "MaskSpec"]]:
        for start in range(0, self.n_rows, rows_per_chunk):
            sl = slice(start, min(start + rows_per_chunk, self.n_rows))
            yield sl, self.select(sl)

    def pruned(self) -> "MaskSpec":
        """The same spec without entries that keep everything in every row (no-ops)."""
        entries = {k: v for k, v in self.entries.items() if not bool(_keeps_all(v).all())}
        return MaskSpec(self.n_rows, entries, self.labels)

    def row_start_layers(self, n_layers: int) -> Tensor:
        """Per row, the first layer whose computation the row's masks change (``n_layers``
        for a row that keeps everything, 0 for rows with an input mask)."""
        start = torch.full((self.n_rows,), n_layers, dtype=torch.long)
        for (site, layer), keep in self.entries.items():
            touched = ~_keeps_all(keep)
            first = 0 if layer is None or site in EDGE_SITES else layer
            start[touched] = torch.clamp(start[touched], max=first)
        return start

    def has_edges(self) -> bool:
        """Does the spec hold edge masks (the forward then needs ``edge_inputs``)?"""
        return any(site in EDGE_SITES for site, _ in self.entries)

    def layers_touched(self) -> list[int]:
        return sorted({l for (_, l) in self.entries if l is not None})

    def first_touched_layer(self) -> int | None:
        """Smallest layer whose computation a mask changes (0 for input masks; None if none).

        Rows with this value ``l`` share layers ``< l`` with the unmasked model, so the
        kernel can run those once and start the batch at ``l``.
        """
        if not self.entries:
            return None
        if any(site == "embed" or site in EDGE_SITES for site, _ in self.entries):
            return 0
        return min(l for (_, l) in self.entries if l is not None)

    def validate(self, n_layers: int, n_heads: int, n_pos: int, n_kv_heads: int | None = None) -> None:
        """Raise MaskError if a mask does not fit a model with these sizes and a prompt of
        ``n_pos`` tokens."""
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        sizes = {"head": n_heads, "kv_head": n_kv_heads, "dest": n_pos, "src": n_pos, "pos": n_pos,
                 "sender": n_senders(n_layers, n_heads)}
        kinds = {"head": "heads", "kv_head": "key-value heads", "sender": "senders: embedding, heads, MLPs"}
        for (site, layer), keep in self.entries.items():
            if layer is not None and layer >= n_layers:
                raise MaskError(f"{site} mask at layer {layer}, but the model has {n_layers} layers")
            axes, _ = SITE_AXES[site]
            for ax, size in zip(axes, keep.shape[1:]):
                if size not in (1, sizes[ax]):
                    raise MaskError(
                        f"{site} (layer {layer}) mask has {size} along {ax!r}; expected 1 or "
                        f"{sizes[ax]} ({kinds.get(ax, 'prompt length')})"
                    )

    def n_bytes(self) -> int:
        return sum(v.numel() * v.element_size() for v in self.entries.values())

    def __repr__(self) -> str:
        sites = ", ".join(f"{s}@{l}" if l is not None else s for s, l in self.entries)
        return f"MaskSpec(n_rows={self.n_rows}, sites=[{sites}], {self.n_bytes() / 1e6:.2f} MB)"


def _broadcast_shape(shapes: Iterable[torch.Size]) -> tuple[int, ...]:
    shapes = list(shapes)
    try:
        return tuple(torch.broadcast_shapes(*shapes))
    except RuntimeError as exc:
        raise MaskError(f"cannot stack masks of shapes {shapes}") from exc


def _keeps_all(keep: Tensor) -> Bool[Tensor, "row"]:
    """Per row: does this keep mask keep everything (a no-op)?"""
    flat = keep.reshape(keep.shape[0], -1)
    return flat.all(1) if keep.dtype == torch.bool else (flat == 1).all(1)


def keep_as_float(keep: Tensor, dtype: torch.dtype, device) -> Float[Tensor, "..."]:
    return keep.to(device=device, dtype=dtype)
