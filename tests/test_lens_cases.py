"""Case-study item builders and the keep-only-correct filter, on tiny models."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from interp_toolkit.adapter import as_adapter
from interp_toolkit.lens.cases import (FUNCTION_WORDS, fact_items, load_facts, mc_items, pos_items, run_case,
                                       word_class)


def test_word_classes():
    assert word_class("The") == "function" and word_class("of,") == "function" and word_class(",") == "function"
    assert word_class("valley") == "content" and word_class("Marlow.") == "content"
    assert word_class("1990") is None
    assert {"the", "of", "and", "would", "not"} <= FUNCTION_WORDS and "house" not in FUNCTION_WORDS


def test_datasets_sizes_and_balance():
    facts = load_facts()
    assert 150 <= len(facts) <= 300 and all(f["answer"].startswith(" ") for f in facts)
    mc = mc_items(facts)
    assert 100 <= len(mc) <= 300
    counts = Counter(it["answer"] for it in mc)
    assert max(counts.values()) - min(counts.values()) <= 1  # balanced A/B/C/D
    for it in mc[:40:3] + mc[-10:]:
        letter = it["answer"].strip()
        blocks = it["prompt"].split("\n\n")
        assert len(blocks) == 3 and it["prompt"].endswith("Answer:")  # two solved examples, then the question
        question = blocks[-1]
        line = next(x for x in question.splitlines() if x.startswith(f"{letter}. "))
        right = next(f for f in facts if question.startswith(f["prompt"] + ":"))["answer"].strip()
        assert line == f"{letter}. {right}"
        for shot in blocks[:-1]:
            shown = shot.rsplit("Answer: ", 1)[1]
            f = next(f for f in facts if shot.startswith(f["prompt"] + ":"))
            assert f["relation"] != it["relation"] and shown != letter
            assert f"{shown}. {f['answer'].strip()}" in shot.splitlines()
    zero = mc_items(facts, shots=0)
    assert len(zero) == len(mc) and all("\n\n" not in it["prompt"] for it in zero)
    texts = ["the cat sat on the mat and then it ran far away from the big dog"]
    items = pos_items(texts, n_per_class=3)
    assert Counter(it["group"] for it in items) == {"function": 3, "content": 3}
    for it in items:
        words = texts[0].split()
        n = len(it["prompt"].split())
        assert words[n] == it["answer"].strip() and word_class(words[n]) == it["group"]


def test_fact_items_teacher_forcing(tiny_gpt2):
    a = as_adapter(tiny_gpt2)
    facts = [{"prompt": "abc", "answer": " de"}, {"prompt": "x", "answer": " abcdef"}]
    items = fact_items(a, facts, max_tokens=3)
    assert [it["tokens"] for it in items] == [
        a.to_tokens("abc")[0].tolist(),
        a.to_tokens("abc")[0].tolist() + a.tokenizer(" ", add_special_tokens=False)["input_ids"],
        a.to_tokens("abc")[0].tolist() + a.tokenizer(" d", add_special_tokens=False)["input_ids"]]
    assert [it["group"] for it in items] == ["first token", "later token", "later token"]


@pytest.mark.parametrize("case", ["pos", "mc"])
def test_keep_only_correct_and_early_exit(tiny_llama, case):
    torch.set_num_threads(1)
    c = run_case(tiny_llama, case, n_per_class=15, progress=False)
    a = as_adapter(tiny_llama)
    from interp_toolkit.lens.cases import _first_token
    from interp_toolkit.strace.dataset import load_eval_set

    items = pos_items(load_eval_set(), 15) if case == "pos" else mc_items(load_facts())
    right = []
    with torch.no_grad():
        for it in items:
            logits = a.forward(a.as_tokens(it["prompt"]))[0, -1]
            right.append(int(logits.argmax()) == _first_token(a, it["answer"]))
    assert c.n_items == len(items) and c.n_kept == sum(right)
    assert c.exit_accuracy[-1] == pytest.approx(np.mean(right))
    assert c.first_depth.shape == (c.n_kept, len(c.ks)) and "early exit" in c.summary()
    assert c.to_html().count("<img") == 2


def test_unknown_case(tiny_gpt2):
    with pytest.raises(ValueError, match="case"):
        run_case(tiny_gpt2, "poetry")
