"""User cache for converted model weights, written atomically."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import platformdirs

COMPLETE_MARKER = "CONVERSION_COMPLETE"


def cache_root() -> Path:
    """``$INTERP_TOOLKIT_CACHE`` if set, else the platform's user cache dir."""
    env = os.environ.get("INTERP_TOOLKIT_CACHE")
    root = Path(env) if env else Path(platformdirs.user_cache_dir("interp_toolkit"))
    return root.expanduser()


def converted_dir(name: str) -> Path:
    """Where the fp32 Hugging Face copy of an offline model lives."""
    return cache_root() / "models" / f"{name}-fp32"


def is_cached(name: str) -> bool:
    return (converted_dir(name) / COMPLETE_MARKER).exists()


@contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success rename it to ``target``.

    A conversion killed half-way leaves only a ``.tmp-*`` directory, never a
    ``target`` that later loads. The marker file is written last, inside the
    temporary directory, so ``is_cached`` is true only for complete copies.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; a cache entry is not
    try:
        yield tmp
        (tmp / COMPLETE_MARKER).write_text("ok\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
