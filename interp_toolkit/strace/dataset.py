"""s-Trace over many inputs: resumable runs, per-input parquet rows, aggregate statistics.

``trace_dataset(model, texts, out_dir)`` traces every text as a sweep (``interp_toolkit.sweeps``:
the registered ``trace`` analysis, ``trace_work`` per input) into the parquet store at
``out_dir``. Run it again with the same directory and it skips inputs already done (a crash
loses at most the input in progress); a different configuration in the same directory is
refused. ``DatasetResult`` holds the table (one row per input) and computes the aggregates;
it also reads runs of the earlier layout (``config.json`` + ``parts/``), which
``migrate_parts_run`` copies into a store.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..adapter import as_adapter
from ..core import Page, Result, dumps, register_result
from ..sweeps import LocalRunner, SweepStore, run_sweep
from ..sweeps.items import WorkItem, canonical
from ..sweeps.registry import register_analysis
from . import plots
from .evaluate import check_conditions, check_controls, trace
from .graph import EDGE_TYPES
from .importance import check_final_norm, check_mode
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
    def load(cls, path, model: str | None = None) -> "DatasetResult":
        """From a sweep store (``trace_dataset``'s ``out_dir`` or ``interp-toolkit sweep trace
        --out``; ``model`` picks one when it holds several), a run directory of the earlier
        layout (``config.json`` + ``parts/``), or a file written by ``save``."""
        path = Path(path)
        if path.is_dir() and (path / "sweep.json").exists():
            store = SweepStore(path)
            config = store.manifest()["config"]
            runs = results_by_model(store.table(), config)
            if model is None and len(runs) > 1:
                raise ValueError(f"{path} holds models {sorted(runs)}; pass model=")
            if model is not None and model not in runs:
                raise ValueError(f"{path} holds no rows of model {model!r} (models: {sorted(runs)})")
            r = runs[model] if model is not None else next(iter(runs.values()), cls(pd.DataFrame(), config))
            r.out_dir = path
            return r
        if path.is_dir():
            table, config = read_parts_run(path)
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


# ---------------------------------------------------------------------- the sweep
def check_trace_config(config: dict) -> dict:
    """The s-Trace sweep config, validated, with defaults: ``sizes`` (the full graph added),
    ``mode``, ``conditions``, ``seed``, ``ablate_attention`` (True; False only to measure the
    reference's defect), ``controls`` ("reference" or "strict", see ``trace``), ``final_norm``
    ("all" or "mlp") and ``unigram`` (``"auto"``: wordfreq table; ``"none"``: skipped;
    ``"custom"``: a table passed in the item options as ``token_freq``)."""
    known = {"sizes", "mode", "conditions", "seed", "ablate_attention", "controls", "final_norm", "unigram"}
    bad = sorted(set(config) - known)
    if bad:
        raise ValueError(f"unknown s-Trace sweep settings {bad}; known: {sorted(known)}")
    unigram = config.get("unigram", "auto")
    if unigram not in ("auto", "none", "custom"):
        raise ValueError(f"unigram must be 'auto', 'none' or 'custom', not {unigram!r}")
    return {"sizes": list(check_sizes(config.get("sizes", SIZE_GRID))), "mode": check_mode(config.get("mode", "l1")),
            "conditions": list(check_conditions(config.get("conditions", CONDITIONS))),
            "seed": int(config.get("seed", 0)), "ablate_attention": bool(config.get("ablate_attention", True)),
            "controls": check_controls(config.get("controls", "reference")),
            "final_norm": check_final_norm(config.get("final_norm", "all")), "unigram": unigram}


def trace_work(adapter, item, state=None) -> dict:
    """One sweep item: s-Trace ``item.text`` in ``adapter`` → one ``result_row``."""
    cfg = item.config
    kw = dict(item.options)
    if cfg["unigram"] == "none":
        kw["token_freq"] = None
    elif cfg["unigram"] == "custom" and "token_freq" not in kw:
        raise RuntimeError("unigram='custom' needs the token_freq table in the item options")
    r = trace(adapter, item.text, sizes=cfg["sizes"], mode=cfg["mode"], conditions=cfg["conditions"],
              seed=cfg["seed"], ablate_attention=cfg["ablate_attention"], controls=cfg["controls"],
              final_norm=cfg["final_norm"], keep_subgraphs=(), **kw)
    return result_row(item.index, item.text, r)


def dataset_config(manifest_config: dict, table: pd.DataFrame) -> dict:
    """``DatasetResult.config`` of one model's rows of a sweep store."""
    model = json.loads(table["model_meta"].iloc[0]) if len(table) else {}
    return {**manifest_config, "model": model}


def results_by_model(table: pd.DataFrame, config: dict) -> dict[str, DatasetResult]:
    """One ``DatasetResult`` per model in a sweep table."""
    return {m: DatasetResult(t.reset_index(drop=True), dataset_config(config, t))
            for m, t in table.groupby("model", sort=False)}


def summarize_trace(table: pd.DataFrame) -> dict:
    """Per model: inputs, median TV at 1e-3/1e-2/1e-1, ρ(entropy, AUC-TV); and the
    cross-model ρ of AUC-TV between the first two models."""
    cfg = json.loads(table["config"].iloc[0])
    runs = results_by_model(table, cfg)
    out = {}
    for m, r in runs.items():
        if r.n == 0:
            out[m] = {"n": 0}
            continue
        out[m] = {"n": r.n, "tv_median": {f"{k:g}": float(v) for k, v in r.tv_at()["median"].items()},
                  "entropy_auc": r.entropy_auc_spearman()}
    if len(runs) >= 2:
        a, b = list(runs.values())[:2]
        try:
            out["cross_model"] = cross_model_rho(a, b)
        except ValueError as exc:
            out["cross_model"] = str(exc)
    return out


def report_trace(table: pd.DataFrame, path, command: str | None = None) -> Path:
    """The dataset page (``report.dataset_page``) of every model in a sweep table."""
    runs = results_by_model(table, json.loads(table["config"].iloc[0]))
    return dataset_page([r for r in runs.values() if r.n], command=command).write(path)


def _register_sweep() -> None:
    register_analysis("trace", trace_work, check_config=check_trace_config, summarize=summarize_trace,
                      report=report_trace, bad_input=(ValueError,),
                      help="s-Trace per input (one row per input and model)")


_register_sweep()


def trace_dataset(model, texts: Sequence[str], out_dir=None, *, sizes=SIZE_GRID, mode: str = "l1",
                  conditions=CONDITIONS, seed: int = 0, resume: bool = True, progress: bool = True,
                  max_inputs: int | None = None, time_budget_s: float | None = None,
                  **trace_kwargs) -> DatasetResult:
    """s-Trace every text; per-input rows saved under ``out_dir`` (resumable).

    A sweep (``interp_toolkit.sweeps``) of one loaded model on the local runner: rows go to
    the parquet store at ``out_dir`` (see ``sweeps.store``); ``DatasetResult.load(out_dir)``
    reads it back.

    Args:
        model: HookedTransformer, TransformerBridge or ModelAdapter.
        texts: the inputs (strings); input ids are their positions.
        out_dir: run directory; None keeps everything in a temporary directory (no resume).
        sizes, mode, conditions, seed: as in ``trace`` (recorded in every row's config).
        resume: skip inputs already saved in ``out_dir`` (same configuration required);
            False deletes the saved rows and starts again.
        progress: tqdm progress bar.
        max_inputs: stop after this many inputs are done (counting resumed ones).
        time_budget_s: stop starting new inputs after this many seconds.
        trace_kwargs: ``ablate_attention`` and ``token_freq`` (None: no unigram encoding; a
            table: recorded as ``unigram="custom"``) change the result and are part of the
            config; the rest (``max_batch_tokens``, ``prefix_reuse`` …) go to ``trace``.

    Inputs that ``trace`` rejects (too long, a single token) get a row with ``error`` set
    and are left out of the aggregates.
    """
    adapter = as_adapter(model)
    texts = list(texts)
    if any(not isinstance(t, str) for t in texts):
        raise TypeError("texts must be strings")
    options = dict(trace_kwargs)
    config = {"sizes": sizes, "mode": mode, "conditions": conditions, "seed": seed,
              "ablate_attention": options.pop("ablate_attention", True),
              "controls": options.pop("controls", "reference"), "final_norm": options.pop("final_norm", "all")}
    if "token_freq" in options:
        tf = options.pop("token_freq")
        config["unigram"] = "none" if tf is None else "auto" if tf == "auto" else "custom"
        if config["unigram"] == "custom":
            options["token_freq"] = tf
    tmp = None
    if out_dir is None:
        tmp = out_dir = tempfile.mkdtemp(prefix="strace-")
    out_dir = Path(out_dir)
    try:
        if not resume:
            SweepStore(out_dir).clear()
        run = run_sweep("trace", [(str(i), t) for i, t in enumerate(texts)], [adapter.name], out_dir,
                        config=config, options=options, runner=LocalRunner({adapter.name: adapter}),
                        progress=progress, max_total=max_inputs, time_budget_s=time_budget_s,
                        allow_download=True)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return DatasetResult(run.table, {**run.config, "model": adapter.meta}, None if tmp else out_dir)


# ---------------------------------------------------------------------- the earlier layout
def read_parts_run(path) -> tuple[pd.DataFrame, dict]:
    """Table and config of a run in the layout written before sweeps existed
    (``config.json`` + ``parts/<index>.parquet``, one row per input)."""
    path = Path(path)
    config = json.loads((path / "config.json").read_text())
    parts = sorted((path / "parts").glob("*.parquet"))
    table = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True) if parts else pd.DataFrame()
    return table, config


def migrate_parts_run(old_dir, out_dir) -> int:
    """Copy an earlier-layout s-Trace run into the sweep store at ``out_dir`` (created, or
    one with the same config). Each row gets the key of the sweep item that would have made
    it — input id = the input's index, same text, model name and config — so a later
    ``sweep trace`` over the same inputs resumes from it. Returns the rows written.
    The old directory is only read."""
    table, old = read_parts_run(old_dir)
    tk = old.get("trace_kwargs", {})
    config = check_trace_config({"sizes": old["sizes"], "mode": old["mode"], "conditions": old["conditions"],
                                 "seed": old["seed"], "ablate_attention": tk.get("ablate_attention", True),
                                 "unigram": "none" if "token_freq" in tk and tk["token_freq"] is None else "auto"})
    meta = old.get("model", {})
    model = meta.get("name")
    if not model:
        raise ValueError(f"{old_dir}/config.json records no model name")
    store = SweepStore(out_dir)
    store.create("trace", config)
    for rec in table.to_dict(orient="records"):
        item = WorkItem("trace", str(int(rec["index"])), int(rec["index"]), rec["text"], model, config)
        rec.update({"key": item.key, "analysis": "trace", "input_id": item.input_id, "model": model,
                    "config": canonical(config), "seed": config["seed"], "model_meta": dumps(meta),
                    "versions": json.dumps({"migrated_from": str(old_dir)}), "seconds": math.nan, "host": None})
        store.write_row(rec)
    store.compact()
    return len(table)
