"""Case studies: part of speech, multi-token fact recall, multiple choice — and early exit.

Items are built from shipped, self-written CC0 data (see ``data/lens_cases_en.md``):

* **Part of speech** — prefixes of the 200 passages of ``strace_eval_en.jsonl`` cut at a word
  boundary; the target is the first token of the next word, labelled *function* if the word
  (lower-cased, punctuation stripped) is in ``FUNCTION_WORDS`` (a closed-class list:
  determiners, pronouns, prepositions, conjunctions, auxiliaries and modals, particles) or
  is punctuation, else *content* (alphabetic words only).
* **Fact recall** — ``lens_facts_en.jsonl`` (194 facts, 9 relations). Each answer of 1–3 tokens is
  teacher-forced: item j decodes the prompt plus answer tokens ``< j`` and targets token j.
* **Multiple choice** — each fact as a four-option question (three distractors from the same
  relation); the correct letter cycles A, B, C, D, so answers are balanced before filtering.

As in the paper, only items the model gets right are kept (the output's top-1 is the target;
for facts, every token of the answer); ``CaseStudy`` records how many remain. Depths are
earliest-decision layers of the target (first crossing and persistent) on the k grid.
Early exit: the lens at layer l used as the model's output — accuracy (target is the top-1)
over all items and KL(output ‖ lens).
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from ..adapter import as_adapter
from ..core import Result, new_figure, register_result
from .decode import run_lenses
from .metrics import K_GRID, decision_depths, depth_lines

FUNCTION_WORDS = frozenset("""
a an the this that these those my your his her its our their some any no every each either neither
all both half several many much few little more most other another such what which whose
i me you he him she it we us they them myself yourself himself herself itself ourselves themselves
who whom whoever whatever whichever someone something anyone anything everyone everything nobody nothing
of in on at by for with from to into onto over under above below between among through during before
after since until till about against along around across behind beyond near off out up down upon
within without toward towards via per than like as
and or but nor so yet if because although though while whereas unless whether once when where how why then
be am is are was were been being have has had having do does did doing
will would shall should can could may might must ought
not there here too also very just only even still already
""".split())

CASES = ("pos", "facts", "mc")


def load_facts() -> list[dict]:
    """The shipped facts: ``{"relation", "subject", "prompt", "answer"}`` (answer with its leading space)."""
    text = resources.files("interp_toolkit.data").joinpath("lens_facts_en.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def word_class(word: str) -> str | None:
    """``"function"``, ``"content"`` or None (mixed tokens such as numbers are left out)."""
    w = word.lower().strip(string.punctuation + "“”‘’")
    if w in FUNCTION_WORDS or (word and all(c in string.punctuation for c in word)):
        return "function"
    if w.isalpha():
        return "content"
    return None


def pos_items(texts, n_per_class: int = 150, seed: int = 0, min_words: int = 4) -> list[dict]:
    """Prefix/next-word items, up to ``n_per_class`` of each class (random but seeded)."""
    cands: dict[str, list] = {"function": [], "content": []}
    for t in texts:
        words = t.split()
        for w in range(min_words, len(words)):
            c = word_class(words[w])
            if c is not None:
                cands[c].append({"prompt": " ".join(words[:w]), "answer": " " + words[w], "group": c})
    rng = np.random.default_rng(seed)
    out = []
    for c, items in cands.items():
        pick = rng.choice(len(items), size=min(n_per_class, len(items)), replace=False)
        out += [items[i] for i in sorted(pick)]
    return out


def _mc_block(prompt: str, right: str, wrong: list[str], letter: int) -> tuple[str, str]:
    """One question: the options with ``right`` at ``letter`` (0–3), and the answer letter."""
    opts = list(wrong)
    opts.insert(letter, right)
    body = "\n".join(f"{'ABCD'[i]}. {o}" for i, o in enumerate(opts))
    return f"{prompt}:\n{body}\nAnswer:", "ABCD"[letter]


def mc_items(facts: list[dict], seed: int = 0, shots: int = 2) -> list[dict]:
    """Four-option questions from the facts, correct letter cycling A-D.

    With ``shots`` > 0 each question follows that many solved questions of other relations
    (a fixed example per relation), whose answer letters differ from the question's own
    (``letter + 1``, ``letter + 3``, … mod 4): the format is shown, the answer is not copied.
    """
    rng = np.random.default_rng(seed)
    by_rel: dict[str, list] = {}
    for f in facts:
        by_rel.setdefault(f["relation"], []).append(f)
    pools = {rel: sorted({f["answer"].strip() for f in fs}) for rel, fs in by_rel.items()}
    rels = [rel for rel in by_rel if len(pools[rel]) >= 4]
    if shots and len(rels) <= shots:
        raise ValueError(f"{shots} shots need more than {shots} relations with four answers")
    shot_wrong = {}
    for rel in rels:  # one fixed example per relation: its first fact, distractors drawn once
        f = by_rel[rel][0]
        shot_wrong[rel] = list(rng.choice([a for a in pools[rel] if a != f["answer"].strip()], 3, replace=False))
    out, letter = [], 0
    for k, rel in enumerate(rels):
        answers = pools[rel]
        for f in by_rel[rel]:
            right = f["answer"].strip()
            wrong = list(rng.choice([a for a in answers if a != right], 3, replace=False))
            question, answer = _mc_block(f["prompt"], right, wrong, letter % 4)
            prefix = ""
            for j in range(shots):
                other = rels[(k + 1 + j) % len(rels)]
                ex = by_rel[other][0]
                q, a = _mc_block(ex["prompt"], ex["answer"].strip(), shot_wrong[other], (letter + 1 + 2 * j) % 4)
                prefix += f"{q} {a}\n\n"
            out.append({"prompt": prefix + question, "answer": " " + answer, "group": answer, "relation": rel,
                        "shots": shots})
            letter += 1
    return out


def _first_token(adapter, text: str) -> int:
    ids = adapter.tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"{text!r} has no tokens")
    return ids[0]


def fact_items(adapter, facts: list[dict], max_tokens: int = 3) -> list[dict]:
    """Teacher-forced items: prompt tokens + answer tokens < j → target answer token j."""
    out = []
    for fi, f in enumerate(facts):
        prompt = adapter.to_tokens(f["prompt"])[0].tolist()
        ans = adapter.tokenizer(f["answer"], add_special_tokens=False)["input_ids"]
        if not 1 <= len(ans) <= max_tokens:
            continue
        for j, t in enumerate(ans):
            out.append({"tokens": prompt + ans[:j], "target": t, "fact": fi, "n_answer": len(ans), "index": j,
                        "group": "first token" if j == 0 else "later token"})
    return out


@register_result
@dataclass
class CaseStudy(Result):
    """Earliest-decision depths by group on the kept (correct) items, and early exit on all items."""

    kind = "lens_case"
    format_version = 1
    title = "Guess-then-Refine case study"

    meta: dict
    case: str
    lens: str
    layers: list
    n_items: int
    n_kept: int
    groups: list                      # per kept item
    ks: np.ndarray
    first_depth: np.ndarray           # [n_kept, K]
    persistent_depth: np.ndarray      # [n_kept, K]
    exit_accuracy: np.ndarray         # [L + 1] over all items; last = output
    exit_kl: np.ndarray               # [L] over all items
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> "CaseStudy":
        d = dict(d)
        for key in ("ks", "first_depth", "persistent_depth"):
            d[key] = np.asarray(d[key], np.int64)
        for key in ("exit_accuracy", "exit_kl"):
            d[key] = np.asarray(d[key], np.float64)
        return cls(**d)

    def depth(self, group: str, k: int = 1, persistent: bool = False) -> float:
        """Mean earliest-decision layer / number of layers for ``group`` at the grid k' ≤ k."""
        j = int(np.searchsorted(self.ks, k, side="right")) - 1
        sel = np.array(self.groups) == group
        if not sel.any():
            return float("nan")
        d = (self.persistent_depth if persistent else self.first_depth)[sel, j]
        return float(d.mean() / len(self.layers))

    def group_counts(self) -> dict:
        return {str(g): int(c) for g, c in zip(*np.unique(self.groups, return_counts=True))}

    def summary(self) -> str:
        lines = [f"{self.case}: {self.lens} lens, {self.n_kept} of {self.n_items} items kept (model right): "
                 f"{self.group_counts()}"]
        for g in sorted(set(self.groups)):
            lines.append(f"  {g:<12} depth k=1 first {self.depth(g):.2f} / stays {self.depth(g, persistent=True):.2f}, "
                         f"k=10 first {self.depth(g, 10):.2f}")
        for key, v in self.extra.items():
            if key.endswith("_depth"):
                lines.append(f"  {key}: {v:.2f}")
        acc = self.exit_accuracy
        lines.append("early exit accuracy by layer: " + " ".join(f"{a:.2f}" for a in acc[:-1]) + f" | output {acc[-1]:.2f}")
        return "\n".join(lines)

    def _plots(self):
        return {"depth": _plot_depth, "early_exit": _plot_exit}


def _plot_depth(c: CaseStudy):
    fig, ax = new_figure(figsize=(6, 3.4))
    depth_lines(ax, c.ks, c.first_depth, c.persistent_depth, c.groups, what="target")
    ax.set_title(f"{c.case}, {c.lens} lens (dashed: stays ≤ k)", fontsize=9)
    return fig


def _plot_exit(c: CaseStudy):
    fig, ax = new_figure(figsize=(6, 3.2))
    ax.plot(c.layers, c.exit_accuracy[:-1], marker="o", ms=3, label="accuracy")
    ax.axhline(c.exit_accuracy[-1], color="grey", ls=":", label="model")
    ax.set_xlabel("exit layer")
    ax.set_ylabel("accuracy")
    ax2 = ax.twinx()
    ax2.plot(c.layers, c.exit_kl, color="C3", marker="s", ms=2, label="KL to output")
    ax2.set_ylabel("KL(output ‖ lens), nats")
    ax.set_title(f"early exit: {c.case}, {c.lens} lens", fontsize=9)
    ax.legend(fontsize=7, loc="center right")
    return fig


def run_case(model, case: str, lens=None, **kwargs) -> CaseStudy:
    """Build the items of ``case`` ∈ {pos, facts, mc}, decode them, keep the correct ones
    (keywords as ``run_cases``)."""
    return run_cases(model, case, [lens], **kwargs)[0]


def run_cases(model, case: str, lenses, *, n_per_class: int = 150, max_items: int | None = None,
              site: str = "resid_post", max_batch_tokens: int = 2048, progress: bool = True) -> list[CaseStudy]:
    """``run_case`` for several lenses from one forward per chunk (``max_items``: the first
    items only; multiple-choice letters stay balanced as they cycle A-D)."""
    adapter = as_adapter(model)
    if case not in CASES:
        raise ValueError(f"case must be one of {CASES}, got {case!r}")
    if case == "pos":
        from ..strace.dataset import load_eval_set

        items = pos_items(load_eval_set(), n_per_class)
        prompts = [it["prompt"] for it in items]
        targets = [_first_token(adapter, it["answer"]) for it in items]
    elif case == "facts":
        items = fact_items(adapter, load_facts())
        prompts = [it["tokens"] for it in items]
        targets = [it["target"] for it in items]
    else:
        items = mc_items(load_facts())
        prompts = [it["prompt"] for it in items]
        targets = [_first_token(adapter, it["answer"]) for it in items]
    if max_items is not None:
        items, prompts, targets = items[:max_items], prompts[:max_items], targets[:max_items]
    results = run_lenses(model, prompts, lenses, site=site, positions="last", targets=targets, k=1,
                         max_batch_tokens=max_batch_tokens, progress=progress)
    return [_case_study(adapter, case, items, r) for r in results]


def _case_study(adapter, case: str, items: list[dict], r) -> CaseStudy:
    right = r.target_rank[:, -1] == 1
    if case == "facts":  # a fact counts only if every answer token is right
        ok_fact: dict[int, bool] = {}
        for it, ok in zip(items, right):
            ok_fact[it["fact"]] = ok_fact.get(it["fact"], True) and bool(ok)
        right = np.array([ok_fact[it["fact"]] for it in items])
    keep = np.flatnonzero(right)
    first, persistent = decision_depths(r.target_rank[keep, :-1])
    extra: dict = {"site": r.site}
    if case == "facts":
        groups = [f"{items[i]['n_answer']}-tok #{items[i]['index'] + 1}" for i in keep]
        extra["n_facts_kept"] = len({items[i]["fact"] for i in keep})
        extra["n_facts"] = len({it["fact"] for it in items})
    elif case == "mc":
        groups = [items[i]["group"] for i in keep]
        letters = np.array([_first_token(adapter, f" {x}") for x in "ABCD"])
        top1 = r.top1[keep, :, 0]
        is_letter = np.isin(top1, letters)
        L = len(r.layers)
        fmt_first = np.where(is_letter.any(1), is_letter.argmax(1), L)
        fmt_stay = np.array([next((l for l in range(L + 1) if is_letter[i, l:].all()), L) for i in range(len(keep))])
        extra.update(format_first_depth=float(fmt_first.mean() / L) if len(keep) else float("nan"),
                     format_persistent_depth=float(fmt_stay.mean() / L) if len(keep) else float("nan"),
                     answer_first_depth=float(first[:, 0].mean() / L) if len(keep) else float("nan"),
                     answer_persistent_depth=float(persistent[:, 0].mean() / L) if len(keep) else float("nan"),
                     answers_before_filter={x: sum(1 for it in items if it["group"] == x) for x in "ABCD"})
    else:
        groups = [items[i]["group"] for i in keep]
    kl = np.array([np.nanmean(r.kl[:, l, 0]) for l in range(len(r.layers))])
    return CaseStudy(meta=r.meta, case=case, lens=r.lens_name, layers=list(r.layers), n_items=len(items),
                     n_kept=len(keep), groups=groups, ks=K_GRID.copy(), first_depth=first,
                     persistent_depth=persistent, exit_accuracy=(r.target_rank == 1).mean(0), exit_kl=kl, extra=extra)
