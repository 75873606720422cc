"""Peak memory of a block of code: CUDA's allocator statistics on a GPU, the C heap on a CPU."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import threading

import torch

__all__ = ["peak_memory", "heap_in_use_reader"]


@contextlib.contextmanager
def peak_memory(device, interval_s: float = 0.005):
    """Peak memory in use above the block's start, in MB, written to the yielded ``{"mb": …}``.

    On CUDA: ``max_memory_allocated − memory_allocated(start)`` (exact).  On a CPU: the bytes
    the C heap has handed out and not yet taken back (glibc ``mallinfo2``: ``uordblks +
    hblkhd``, which is what torch's CPU allocator draws on), sampled every ``interval_s`` and
    once more at the block's end; an allocation shorter than the interval can be missed.  The
    heap count does not depend on whether freed pages are still resident, which the process's
    resident set does (a block can reuse pages freed before it without the resident set
    growing).  Where glibc is absent the resident set is sampled instead; NaN where neither
    can be read.
    """
    out = {"mb": 0.0}
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        yield out
        out["mb"] = (torch.cuda.max_memory_allocated(device) - start) / 2**20
        return
    read = heap_in_use_reader() or _rss_reader()
    if read is None:
        out["mb"] = float("nan")
        yield out
        return
    start = read()
    peak = [start]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], read())
            stop.wait(interval_s)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        stop.set()
        thread.join()
        peak[0] = max(peak[0], read())  # what the block still holds at its end counts too
        out["mb"] = max(0.0, (peak[0] - start) / 2**20)


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def heap_in_use_reader():
    """A function returning the C heap's bytes in use (glibc ≥ 2.33), or None elsewhere."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        mallinfo2 = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = _Mallinfo2
    mallinfo2.argtypes = []

    def read() -> int:
        info = mallinfo2()
        return int(info.uordblks + info.hblkhd)
    return read


def _rss_reader():
    """A function returning the process's resident set in bytes (``/proc`` on Linux, else
    psutil when installed), or None."""
    if os.path.exists("/proc/self/statm"):
        page = os.sysconf("SC_PAGE_SIZE")

        def read():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * page
        return read
    try:
        import psutil
    except ImportError:
        return None
    proc = psutil.Process()
    return lambda: proc.memory_info().rss
