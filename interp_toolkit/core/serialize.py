"""One JSON converter and atomic writes for every saved file of the toolkit."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch


def to_jsonable(x: Any) -> Any:
    """JSON-safe copy of ``x``.

    NaN/±inf floats → None; tuples → lists; dict keys → str; NumPy arrays/scalars and torch
    tensors → (nested) lists of Python numbers; dataclasses (and objects with ``to_dict``)
    through their dict. Floats keep their shortest round-trip repr, so float64 is exact.
    """
    if x is None or isinstance(x, (bool, str, int)):
        return x
    if isinstance(x, float):
        return None if not math.isfinite(x) else x
    if hasattr(x, "to_dict") and callable(x.to_dict):
        return to_jsonable(x.to_dict())
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return to_jsonable({f.name: getattr(x, f.name) for f in dataclasses.fields(x)})
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if isinstance(x, torch.Tensor):
        return to_jsonable(x.detach().cpu().double().tolist() if x.is_floating_point() else x.detach().cpu().tolist())
    if isinstance(x, np.ndarray):
        return to_jsonable(x.tolist())
    if isinstance(x, np.generic):
        return to_jsonable(x.item())
    if isinstance(x, (Path, torch.dtype, torch.device)):
        return str(x)
    raise TypeError(f"cannot convert {type(x).__name__} to JSON")


def dumps(x: Any, indent: int | None = None) -> str:
    """``json.dumps(to_jsonable(x))``, strict (no NaN literals in the output)."""
    return json.dumps(to_jsonable(x), indent=indent, allow_nan=False)


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, then rename).

    The folder is created when missing; a crash leaves either the old file or the new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path, text: str) -> Path:
    """``atomic_write_bytes`` of UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))
