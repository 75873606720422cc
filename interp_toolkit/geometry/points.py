"""The capture points of the latent-geometry analysis and where each is read.

Per block ``l`` (in order of computation)::

    norm1       ln1(resid_pre[l])          what attention reads (gain and bias applied)
    attn_out    blocks.l.hook_attn_out     what attention adds to the stream
    resid_mid   blocks.l.hook_resid_mid    resid_pre[l] + attn_out[l]
    norm2       ln2(resid_mid[l])          what the MLP reads
    mlp_out     blocks.l.hook_mlp_out      what the MLP adds
    resid_post  blocks.l.hook_resid_post   resid_mid[l] + mlp_out[l]

and once per model ``embed`` (the stream entering block 0: token plus any learned position
embedding) and ``final_norm`` (the final norm's output, what the unembedding reads).
Every point is a ``[batch, pos, d_model]`` tensor.
"""

from __future__ import annotations

from typing import Iterable, Sequence

BLOCK_POINTS = ("norm1", "attn_out", "resid_mid", "norm2", "mlp_out", "resid_post")
MODEL_POINTS = ("embed", "final_norm")
POINTS = ("embed",) + BLOCK_POINTS + ("final_norm",)

# adapter site each block point is read from (norm points: the norm's input)
BLOCK_SOURCE = {"norm1": "resid_pre", "attn_out": "attn_out", "resid_mid": "resid_mid",
                "norm2": "resid_mid", "mlp_out": "mlp_out", "resid_post": "resid_post"}
NORM_OF = {"norm1": "ln1", "norm2": "ln2"}


def check_points(points: Iterable[str] | None) -> tuple[str, ...]:
    """Validate point names (``None`` → all, in computation order)."""
    if points is None:
        return POINTS
    if isinstance(points, str):
        points = [points]
    points = tuple(points)
    if not points:
        raise ValueError("no capture points given")
    bad = [p for p in points if p not in POINTS]
    if bad:
        raise ValueError(f"unknown capture point(s) {bad}; known: {list(POINTS)}")
    return tuple(p for p in POINTS if p in points)


def check_layers(layers: Iterable[int] | None, n_layers: int) -> tuple[int, ...]:
    """Validate block indices (``None`` → every block; negative counts from the end)."""
    if layers is None:
        return tuple(range(n_layers))
    out = []
    for l in layers:
        if not -n_layers <= int(l) < n_layers:
            raise ValueError(f"layer {l} out of range for a {n_layers}-layer model")
        out.append(int(l) % n_layers)
    if not out:
        raise ValueError("no layers given")
    return tuple(sorted(set(out)))


def key(point: str, layer: int | None = None) -> str:
    """Tensor name in a shard: ``"attn_out.3"``, or ``"embed"`` for a model point."""
    return point if point in MODEL_POINTS else f"{point}.{layer}"


def keys(points: Sequence[str], layers: Sequence[int]) -> list[str]:
    """Every (point, layer) tensor name, model points once."""
    return [key(p) if p in MODEL_POINTS else key(p, l) for p in points for l in
            ((None,) if p in MODEL_POINTS else layers)]
