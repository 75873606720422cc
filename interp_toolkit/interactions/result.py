"""Result dataclasses of an interaction study on the shared result layer (``core.Result``:
versioned JSON files written atomically, figures, HTML reports).

``InteractionResult`` and ``Comparison`` are saved results; ``Baseline`` and
``Sparsification`` are parts of them, stored as nested dicts. Arrays are float64 NumPy
arrays indexed by subset bit mask (see ``transforms``); JSON keeps float64 values exactly
(shortest round-trip repr).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..core import Page, Result, register_result, to_jsonable
from .analysis import flat, shapley_from_interactions
from .players import Players, PlayerTokens
from .plots import plot_comparison, plot_strength_by_order
from .report import comparison_page, result_page
from .transforms import subset_of


def _arr(x) -> list:
    return np.asarray(x, dtype=np.float64).tolist()


@dataclass
class Baseline:
    """The embedding that replaces masked players, and how it was obtained."""

    kind: str
    vector: torch.Tensor
    init: str | None = None
    seed: int | None = None
    epochs: int | None = None
    lr: float | None = None
    momentum: float | None = None
    draws: int | None = None
    history: list[float] = field(default_factory=list)
    eval_history: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("kind", "init", "seed", "epochs", "lr", "momentum", "draws")}
        d["history"] = list(self.history)
        d["eval_history"] = list(self.eval_history)
        d["vector"] = self.vector.detach().double().cpu().tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Baseline":
        d = dict(d)
        d["vector"] = torch.tensor(d["vector"], dtype=torch.float32)
        return cls(**d)


@dataclass
class Sparsification:
    """AND-OR decomposition of v + q: I_and, I_or with the learnt γ (split) and q (noise).

    ``i_and``/``i_or``/``gamma``/``q`` are ``[2^n]`` float64 arrays; ``l1`` = ‖I_and‖₁ + ‖I_or‖₁.
    """

    i_and: np.ndarray
    i_or: np.ndarray
    gamma: np.ndarray
    q: np.ndarray
    l1: float
    method: str
    q_bound: float
    seconds: float = 0.0
    info: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(round(np.log2(len(self.i_and))))

    def to_dict(self) -> dict:
        return {"i_and": _arr(self.i_and), "i_or": _arr(self.i_or), "gamma": _arr(self.gamma),
                "q": _arr(self.q), "l1": float(self.l1), "method": self.method,
                "q_bound": float(self.q_bound), "seconds": float(self.seconds), "info": self.info}

    @classmethod
    def from_dict(cls, d: dict) -> "Sparsification":
        d = dict(d)
        for k in ("i_and", "i_or", "gamma", "q"):
            d[k] = np.asarray(d[k], dtype=np.float64)
        return cls(**d)


@register_result
@dataclass
class InteractionResult(Result):
    """AND-OR interactions of one prompt in one model.

    ``v`` holds v(x_S) for every subset (relative to v(∅) when ``relative``; the raw v(∅) is
    ``v_empty``). Player i is ``players.words[i]`` at token positions ``tokens.positions[i]``.
    """

    players: Players
    tokens: PlayerTokens
    target_id: int
    target: str
    model: dict
    baseline: Baseline
    v: np.ndarray
    v_empty: float
    relative: bool
    sparsification: Sparsification
    timings: dict = field(default_factory=dict)
    dtype: str = "float64"

    kind = "interactions"
    format_version = 1
    title = "AND-OR interactions"

    def positions_note(self) -> str:
        """`` (computed of dense token positions computed)`` where the values were computed
        with causal prefix reuse and recorded it; empty otherwise."""
        t = self.timings
        if "computed_positions" not in t:
            return ""
        return f" ({t['computed_positions']} of {t['dense_positions']} token positions computed)"

    @property
    def n(self) -> int:
        return self.players.n

    @property
    def prompt(self) -> str:
        return self.players.prompt

    @property
    def i_and(self) -> np.ndarray:
        return self.sparsification.i_and

    @property
    def i_or(self) -> np.ndarray:
        return self.sparsification.i_or

    def label(self, mask: int) -> str:
        """Words of the subset with bit mask ``mask``."""
        words = [self.players.words[i].text for i in subset_of(mask)]
        return "{" + ", ".join(words) + "}" if words else "∅"

    def top(self, k: int = 10, include_empty: bool = False) -> list[dict]:
        """The ``k`` strongest interactions (AND and OR together) as dicts."""
        f = flat(self, include_empty)
        top = np.argsort(-np.abs(f["values"]), kind="stable")[:k]
        return [{"kind": str(f["kinds"][i]), "mask": int(f["masks"][i]), "order": int(f["orders"][i]),
                 "words": self.label(int(f["masks"][i])), "value": float(f["values"][i])} for i in top]

    def shapley(self) -> np.ndarray:
        return shapley_from_interactions(self.i_and, self.i_or)

    def summary(self) -> str:
        lines = [f"{self.model.get('name')}: {self.prompt!r} -> {self.target!r}   n = {self.n}, "
                 f"v(N) - v(empty) = {self.v[-1] - self.v[0]:+.3f}, L1 = {self.sparsification.l1:.3f} "
                 f"({self.sparsification.method})"]
        lines += [f"  {row['kind']:<3} {row['value']:+8.3f}  {row['words']}" for row in self.top(10)]
        return "\n".join(lines)

    def _plots(self):
        return {"strength": plot_strength_by_order}

    def report(self) -> Page:
        return result_page(self)

    def to_dict(self) -> dict:
        return {"players": self.players.to_dict(),
                "tokens": self.tokens.to_dict(), "target_id": self.target_id, "target": self.target,
                "model": self.model, "baseline": self.baseline.to_dict(), "v": _arr(self.v),
                "v_empty": float(self.v_empty), "relative": self.relative,
                "sparsification": self.sparsification.to_dict(), "timings": to_jsonable(self.timings),
                "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: dict) -> "InteractionResult":
        return cls(players=Players.from_dict(d["players"]), tokens=PlayerTokens(**d["tokens"]),
                   target_id=int(d["target_id"]), target=d["target"], model=d["model"],
                   baseline=Baseline.from_dict(d["baseline"]), v=np.asarray(d["v"], dtype=np.float64),
                   v_empty=float(d["v_empty"]), relative=bool(d["relative"]),
                   sparsification=Sparsification.from_dict(d["sparsification"]),
                   timings=d.get("timings", {}), dtype=d.get("dtype", "float64"))


@register_result
@dataclass
class Comparison(Result):
    """The same prompt, players and target word in two (or more) models, with sharing metrics
    (``analysis.sharing``) and optionally a joint extraction (``joint``)."""

    results: list[InteractionResult]
    sharing: dict
    joint: list[Sparsification] | None = None
    joint_sharing: dict | None = None
    settings: dict = field(default_factory=dict)

    kind = "interactions-comparison"
    format_version = 1
    title = "Shared interactions"

    def summary(self) -> str:
        parts = [r.summary() for r in self.results]
        for name, figures in (("separate", self.sharing), ("joint", self.joint_sharing)):
            if figures is not None:
                parts.append(f"sharing ({name} extraction): " + ", ".join(
                    f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items()))
        return "\n".join(parts)

    def _plots(self):
        return {"comparison": plot_comparison}

    def report(self) -> Page:
        return comparison_page(self)

    def to_dict(self) -> dict:
        return to_jsonable({"results": [r.to_dict() for r in self.results], "sharing": self.sharing,
                            "joint": None if self.joint is None else [j.to_dict() for j in self.joint],
                            "joint_sharing": self.joint_sharing, "settings": self.settings})

    @classmethod
    def from_dict(cls, d: dict) -> "Comparison":
        joint = None if d.get("joint") is None else [Sparsification.from_dict(j) for j in d["joint"]]
        return cls(results=[InteractionResult.from_dict(r) for r in d["results"]], sharing=d["sharing"],
                   joint=joint, joint_sharing=d.get("joint_sharing"), settings=d.get("settings", {}))
