"""Choosing players (words) in a prompt; no model needed."""

import pytest

from interp_toolkit.interactions.players import PlayerError, Players

PROMPT = "The Eiffel Tower is a famous landmark that stands in the French capital city of"


def test_default_choice_prefers_content_words_near_the_end():
    p = Players.from_prompt(PROMPT, n=6)
    assert p.texts == ["famous", "landmark", "stands", "French", "capital", "city"]
    for w in p.words:
        assert PROMPT[w.start:w.end] == w.text


def test_default_choice_adds_function_words_when_needed():
    p = Players.from_prompt("The cat is on the mat", n=4)
    assert p.n == 4 and {"cat", "mat"} <= set(p.texts)
    assert Players.from_prompt("Hi there", n=10).n == 2  # fewer words than n: all of them


def test_given_words_indices_and_spans():
    p = Players.from_prompt(PROMPT, ["Eiffel", "French", "city"])
    assert p.texts == ["Eiffel", "French", "city"]
    # repeated words are matched left to right
    q = Players.from_prompt("the cat saw the dog", ["the", "the"])
    assert [w.start for w in q.words] == [0, 12]
    assert Players.from_prompt(PROMPT, [1, 2]).texts == ["Eiffel", "Tower"]
    assert Players.from_prompt(PROMPT, [(4, 10)]).texts == ["Eiffel"]


def test_bad_players_are_clear_errors():
    with pytest.raises(PlayerError, match="'Berlin' not found"):
        Players.from_prompt(PROMPT, ["Eiffel", "Berlin"])
    with pytest.raises(PlayerError, match="overlap"):
        Players.from_prompt(PROMPT, [(4, 10), (8, 16)])
    with pytest.raises(PlayerError, match="out of range"):
        Players.from_prompt(PROMPT, [99])
    with pytest.raises(PlayerError, match=r"2\^21 = 2,097,152 masked forwards"):
        Players.from_prompt(" ".join(f"w{i}" for i in range(30)), n=21)
    with pytest.raises(PlayerError, match="no words"):
        Players.from_prompt("...", n=3)


def test_round_trip():
    p = Players.from_prompt(PROMPT, n=4)
    assert Players.from_dict(p.to_dict()) == p
