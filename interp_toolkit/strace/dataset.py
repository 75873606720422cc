"""s-Trace over many inputs: resumable runs, per-input parquet rows, aggregate statistics.

``trace_dataset(model, texts, out_dir)`` traces every text and writes one parquet file per
input under ``out_dir/parts/`` (atomically), plus ``out_dir/config.json``. Run it again
with the same directory and it skips inputs already done (a crash loses at most the input
in progress); a different configuration in the same directory is refused.
``DatasetResult`` holds the table (one row per input) and computes the aggregates.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..adapter import as_adapter
from ..core import Page, Result, atomic_write_bytes, atomic_write_text, dumps, register_result
from . import plots
from .evaluate import check_conditions, trace
from .graph import EDGE_TYPES
from .importance import check_mode
from .metrics import MINIMAL_CORE, NUCLEUS_TARGETS, auc_tv, spearman
from .metrics import cross_model_rho as _cross_model_rho
from .report import dataset_page
from .results import CONDITIONS, TraceResult
from .stratify import SIZE_GRID, check_sizes

EVAL_SET = "strace_eval_en.jsonl"
DEPTH_COLUMNS = ("depth_q1", "depth_q2", "depth_q3", "depth_q4")
TYPE_COLUMNS = tuple(f"type_{t}" for t in EDGE_TYPES)


def load_eval_set(n: int | None = None) -> list[str]:
    """The bundled English evaluation set (200 self-written passages of ≤ 40 words, CC0;
    see ``interp_toolkit/data/strace_eval_en.md``); the first ``n`` if given."""
    text = resources.files("interp_toolkit").joinpath("data", EVAL_SET).read_text(encoding="utf-8")
    texts = [json.loads(line)["text"] for line in text.splitlines() if line.strip()]
    return texts[:n] if n is not None else texts


def text_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def result_row(index: int, text: str, r: TraceResult) -> dict:
    """One table row (scalars and per-stratum lists) from a trace."""
    row = {"index": index, "text": text, "text_hash": text_hash(text), "error": None,
           "n_pos": r.n_pos, "n_edges": r.n_edges, "n_nodes": r.n_nodes, "entropy": r.entropy,
           "full_top1": r.full_top[0][1], "full_top1_p": r.full_top[0][2],
           "unigram_full": r.unigram_full, "unigram": list(r.unigram),
           "stratum_top1": list(r.stratum_top)}
    for c in r.conditions:
        row[f"auc_tv_{c}"] = r.auc_tv[c]
        row[f"tv_{c}"] = list(r.tv[c])
        row[f"kl_{c}"] = list(r.kl[c])
        row[f"nucleus_{c}"] = list(r.nucleus[c])
    for k, v in r.required_size.items():
        row[f"required_size_{k}"] = v
    comp_t = np.asarray(r.composition_type, dtype=float)
    comp_d = np.asarray(r.composition_depth, dtype=float)
    for i, name in enumerate(TYPE_COLUMNS):
        row[name] = comp_t[:, i].tolist()
    for i, name in enumerate(DEPTH_COLUMNS):
        row[name] = comp_d[:, i].tolist()
    for k, v in r.timings.items():
        row[f"time_{k}"] = v
    return row


@register_result
@dataclass
class DatasetResult(Result):
    """Per-input table of an s-Trace run and its aggregates.

    Attributes:
        table: one row per input (see ``result_row``); rows with ``error`` set failed.
        config: sizes, mode, conditions, seed, model metadata of the run.
        out_dir: where the run lives (None for an in-memory result).
    """

    table: pd.DataFrame
    config: dict
    out_dir: Path | None = None
    _ok: pd.DataFrame | None = field(default=None, repr=False)

    kind = "strace-dataset"
    format_version = 1
    title = "s-Trace over a dataset"

    @property
    def sizes(self) -> list[float]:
        return list(self.config["sizes"])

    @property
    def ok(self) -> pd.DataFrame:
        """Rows that traced without error, ordered by input index, with the AUC-KL columns
        (derived once, on first use; ``table`` is not meant to change afterwards)."""
        if self._ok is None:
            t = self.table
            if "error" in t:
                t = t[t["error"].isna()]
            t = t.sort_values("index").reset_index(drop=True)
            for c in self.config.get("conditions", ()):  # ∫ KL d log10 s, like AUC-TV
                if f"kl_{c}" in t and f"auc_kl_{c}" not in t:
                    t[f"auc_kl_{c}"] = [auc_tv(self.sizes, v) for v in t[f"kl_{c}"]]
            self._ok = t
        return self._ok

    @property
    def n(self) -> int:
        return len(self.ok)

    def matrix(self, column: str) -> np.ndarray:
        """A per-stratum list column as ``[n_inputs, n_strata]``."""
        return np.array([np.asarray(v, dtype=float) for v in self.ok[column]])

    # ------------------------------------------------------------------ aggregates
    def tv_summary(self, condition: str = "trace") -> pd.DataFrame:
        """Median, IQR and mean of TV per stratum size."""
        m = self.matrix(f"tv_{condition}")
        return pd.DataFrame({"size": self.sizes, "median": np.median(m, 0), "q25": np.quantile(m, 0.25, 0),
                             "q75": np.quantile(m, 0.75, 0), "mean": m.mean(0)}).set_index("size")

    def tv_at(self, sizes=(1e-3, 1e-2, 1e-1), condition: str = "trace") -> pd.DataFrame:
        s = self.tv_summary(condition)
        return s.loc[[min(s.index, key=lambda x: abs(math.log10(x) - math.log10(q))) for q in sizes]]

    def entropy_auc_spearman(self, condition: str = "trace") -> dict:
        """Spearman ρ(entropy of the full output, AUC-TV) across inputs, with its p-value."""
        return self.entropy_spearman(f"auc_tv_{condition}")

    def entropy_spearman(self, column: str) -> dict:
        """Spearman ρ between the full output's entropy and any per-input scalar column
        (inputs where it is NaN left out), e.g. ``required_size_10``."""
        t = self.ok[["entropy", column]].astype(float)
        return spearman(t["entropy"], t[column])

    def composition_curves(self) -> pd.DataFrame:
        """Mean share of each edge type and depth quartile per stratum size (nan-mean)."""
        out = {"size": self.sizes}
        for col in TYPE_COLUMNS + DEPTH_COLUMNS:
            out[col] = [_nanmean(c) for c in self.matrix(col).T]
        return pd.DataFrame(out).set_index("size")

    def early_share(self, size: float = MINIMAL_CORE) -> dict:
        """Share of edges from the first quarter / first half of the layers in the stratum of
        ``size`` (default: the minimal core, 1e-3): mean and median over inputs."""
        k = int(np.argmin([abs(math.log10(s) - math.log10(size)) for s in self.sizes]))
        q1 = self.matrix("depth_q1")[:, k]
        half = q1 + self.matrix("depth_q2")[:, k]
        q1_ok = q1[~np.isnan(q1)]
        return {"size": self.sizes[k], "first_quarter_mean": _nanmean(q1),
                "first_quarter_median": float(np.median(q1_ok)) if q1_ok.size else math.nan,
                "first_half_mean": _nanmean(half),
                "empty_strata": int(np.isnan(q1).sum())}

    def unigram_curve(self) -> pd.DataFrame:
        """Mean unigram-frequency encoding per stratum size, and of the full model."""
        m = self.matrix("unigram")
        return pd.DataFrame({"size": self.sizes, "mean": [_nanmean(c) for c in m.T],
                             "full_model": _nanmean(self.ok["unigram_full"])}).set_index("size")

    def required_sizes(self) -> pd.DataFrame:
        """Median required stratum size per nucleus target (and how many inputs reach it)."""
        rows = []
        for k in NUCLEUS_TARGETS:
            col = f"required_size_{k}"
            v = self.ok[col].astype(float) if col in self.ok else pd.Series(dtype=float)
            rows.append({"target": k, "median_size": float(v.median()), "reached": int(v.notna().sum())})
        return pd.DataFrame(rows).set_index("target")

    def timings(self) -> pd.DataFrame:
        cols = [c for c in self.ok.columns if c.startswith("time_")]
        return self.ok[cols].describe().T[["mean", "50%", "min", "max"]]

    def two_phase(self) -> dict:
        """Numbers behind the reference's two-phase picture: in the construction band
        (1e-4..1e-2) the strata are dominated by early layers and already fix the head of
        the distribution; in the refinement band (1e-2..1) later layers and attention join
        and TV falls towards 0."""
        comp = self.composition_curves()
        tv = self.tv_summary()
        sizes = np.array(self.sizes)

        def band(lo, hi):
            return (sizes >= lo) & (sizes <= hi)

        con, ref = band(1e-4, 1e-2), band(1e-2, 1.0)
        late = comp["depth_q3"] + comp["depth_q4"]
        return {
            "construction_early_half_share": _nanmean((comp["depth_q1"] + comp["depth_q2"])[con]),
            "refinement_late_half_share": _nanmean(late[ref]),
            "construction_attention_share": _nanmean(comp["type_attention"][con]),
            "refinement_attention_share": _nanmean(comp["type_attention"][ref]),
            "tv_median_1e-2": float(tv["median"].iloc[int(np.argmin(abs(sizes - 1e-2)))]),
            "tv_median_1e-4": float(tv["median"].iloc[int(np.argmin(abs(sizes - 1e-4)))]),
            "nucleus_10_reached_by_1e-2": float((self.ok.get("required_size_10", pd.Series(dtype=float))
                                                 .astype(float) <= 1e-2).mean()),
        }

    def stats(self) -> dict:
        """The headline aggregates as a dict (TV at 1e-3/1e-2/1e-1, entropy ρ, early share,
        the two-phase numbers)."""
        return {"n": self.n, "model": self.config.get("model", {}).get("name"),
                "tv_at": self.tv_at().to_dict(orient="index"), "entropy_auc": self.entropy_auc_spearman(),
                "early_share": self.early_share(), "two_phase": self.two_phase()}

    def summary(self) -> str:
        rho = self.entropy_auc_spearman()
        lines = [f"s-Trace of {self.n} inputs ({len(self.table) - self.n} rejected) on "
                 f"{self.config.get('model', {}).get('name')}",
                 self.tv_at((1e-3, 1e-2, 1e-1)).round(3).to_string(),
                 f"Spearman rho(entropy, AUC-TV) = {rho['rho']:.3f} (p = {rho['p']:.2g}, n = {rho['n']})"]
        return "\n".join(lines)

    def _plots(self):
        return {"tv": plots.plot_dataset_tv, "composition": plots.plot_composition,
                "entropy": plots.plot_entropy_auc, "unigram": plots.plot_unigram}

    def report(self, command: str | None = None) -> Page:
        return dataset_page([self], command=command)

    # ------------------------------------------------------------------ io
    def to_dict(self) -> dict:
        """The table by column (per-stratum cells as lists) and the config; ``out_dir`` is
        where the run lives, not part of the result."""
        return {"table": _columns(self.table), "config": self.config}

    @classmethod
    def from_dict(cls, d: dict) -> "DatasetResult":
        return cls(pd.DataFrame(d["table"]), d["config"], None)

    @classmethod
    def load(cls, path) -> "DatasetResult":
        """From a run directory (``trace_dataset``'s ``out_dir``) or a file written by ``save``."""
        path = Path(path)
        if path.is_dir():
            config = json.loads((path / "config.json").read_text())
            parts = sorted((path / "parts").glob("*.parquet"))
            table = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True) if parts else pd.DataFrame()
            return cls(table, config, path)
        return super().load(path)


def _columns(table: pd.DataFrame) -> dict:
    """A table as ``{column: [cells]}`` (JSON-safe through ``core.to_jsonable``)."""
    return {c: list(table[c]) for c in table.columns}


def _nanmean(x) -> float:
    x = np.asarray(x, dtype=float)
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else math.nan


def cross_model_rho(a: DatasetResult, b: DatasetResult, condition: str = "trace") -> dict:
    """Spearman ρ of AUC-TV between two runs on the inputs they share (matched by text)."""
    return _cross_model_rho(a.ok, b.ok, condition)


def _config(adapter, sizes, mode, conditions, seed) -> dict:
    return {"sizes": list(sizes), "mode": mode, "conditions": list(conditions), "seed": seed,
            "model": adapter.meta}


_MATCH_KEYS = ("sizes", "mode", "conditions", "seed")


def trace_dataset(model, texts: Sequence[str], out_dir=None, *, sizes=SIZE_GRID, mode: str = "l1",
                  conditions=CONDITIONS, seed: int = 0, resume: bool = True, progress: bool = True,
                  max_inputs: int | None = None, time_budget_s: float | None = None,
                  **trace_kwargs) -> DatasetResult:
    """s-Trace every text; per-input rows saved under ``out_dir`` (resumable).

    Args:
        model: HookedTransformer, TransformerBridge or ModelAdapter.
        texts: the inputs (strings).
        out_dir: run directory; None keeps everything in memory (no resume).
        sizes, mode, conditions, seed: as in ``trace`` (recorded in ``config.json``).
        resume: skip inputs already saved in ``out_dir`` (same configuration required);
            False deletes the saved rows and starts again.
        progress: tqdm progress bar.
        max_inputs: stop after this many inputs are done (counting resumed ones).
        time_budget_s: stop starting new inputs after this many seconds.
        trace_kwargs: passed to ``trace`` (``max_batch_tokens``, ``prefix_reuse`` …).

    Inputs that ``trace`` rejects (too long, a single token) get a row with ``error`` set
    and are left out of the aggregates.
    """
    adapter = as_adapter(model)
    sizes = check_sizes(sizes)
    mode = check_mode(mode)
    conditions = check_conditions(conditions)
    texts = list(texts)
    if any(not isinstance(t, str) for t in texts):
        raise TypeError("texts must be strings")
    config = _config(adapter, sizes, mode, conditions, seed)
    config["trace_kwargs"] = {k: v for k, v in trace_kwargs.items() if isinstance(v, (bool, int, float, str, type(None)))}
    parts_dir = None
    done: dict[int, pd.DataFrame] = {}
    if out_dir is not None:
        out_dir = Path(out_dir)
        parts_dir = out_dir / "parts"
        parts_dir.mkdir(parents=True, exist_ok=True)
        cfg_path = out_dir / "config.json"
        if cfg_path.exists() and resume:
            old = json.loads(cfg_path.read_text())
            diff = [k for k in _MATCH_KEYS if old.get(k) != config[k]]
            if old.get("trace_kwargs", {}).get("ablate_attention", True) != trace_kwargs.get("ablate_attention", True):
                diff.append("ablate_attention")
            if old.get("model", {}).get("name") != config["model"].get("name"):
                diff.append("model")
            if diff:
                raise ValueError(f"{out_dir} holds a run with another configuration ({', '.join(diff)} differ); "
                                 "use another directory or resume=False")
        if not resume:
            for p in parts_dir.glob("*.parquet"):
                p.unlink()
        atomic_write_text(cfg_path, dumps(config, indent=1))
        for p in parts_dir.glob("*.parquet"):
            row = pd.read_parquet(p)
            i = int(row["index"].iloc[0])
            if i < len(texts) and row["text_hash"].iloc[0] == text_hash(texts[i]):
                done[i] = row
    rows = dict(done)
    todo = [i for i in range(len(texts)) if i not in done]
    if max_inputs is not None:
        todo = todo[: max(0, max_inputs - len(done))]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc=f"s-Trace {config['model'].get('name', '')}", unit="input")
    t_start = time.perf_counter()
    for i in todo:
        if time_budget_s is not None and time.perf_counter() - t_start > time_budget_s:
            break
        try:
            r = trace(adapter, texts[i], sizes=sizes, mode=mode, conditions=conditions, seed=seed,
                      keep_subgraphs=(), **trace_kwargs)
            row = pd.DataFrame([result_row(i, texts[i], r)])
        except ValueError as exc:  # bad input: record and go on
            row = pd.DataFrame([{"index": i, "text": texts[i], "text_hash": text_hash(texts[i]),
                                 "error": f"{type(exc).__name__}: {exc}"}])
        rows[i] = row
        if parts_dir is not None:
            atomic_write_bytes(parts_dir / f"{i:06d}.parquet", row.to_parquet(index=False))
        if bar is not None:
            bar.update(1)
            if "auc_tv_trace" in row:
                bar.set_postfix(auc=f"{row['auc_tv_trace'].iloc[0]:.2f}", s=f"{row['time_evaluate'].iloc[0]:.1f}")
    if bar is not None:
        bar.close()
    table = pd.concat([rows[i] for i in sorted(rows)], ignore_index=True) if rows else pd.DataFrame()
    return DatasetResult(table, config, out_dir)
