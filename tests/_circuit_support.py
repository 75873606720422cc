"""A task no model can really solve, for tests of task filtering and circuit sweeps."""

from __future__ import annotations

from interp_toolkit.circuits import tasks as tasks_mod


def coin_examples(adapter, n, rng):
    """Digits as answers after four random letters: a random model is right about half the time."""
    out = []
    for _ in range(n):
        a, b = rng.sample("0123456789", 2)
        out.append(tasks_mod.Example("".join(rng.sample("abcdefgh", 4)), "".join(rng.sample("abcdefgh", 4)),
                                     [a], [b], 0))
    return out
