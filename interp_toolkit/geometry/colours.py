"""Depth-shaded colours shared by the static and interactive geometry figures."""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps


def depth_colours(kind: str, n: int) -> np.ndarray:
    """``n`` RGBA colours from light to dark: blue for attention, red for MLP."""
    cmap = colormaps["Blues" if kind == "attn" else "Reds"]
    return cmap(np.linspace(0.35, 1.0, max(n, 1)))
