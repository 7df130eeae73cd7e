"""Answer extraction: every benchmark's legacy rule and lmms-eval's current one, on tricky outputs."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import pytest

from file_modules import load_file_module
from recot.eval.api import item_rng
from recot.eval.extract import (
    longvideobench_choice,
    mcq_letter,
    mlvu_legacy,
    videomme_legacy,
    vnbench_legacy,
    vniah_legacy_correct,
)

TRICKY = ["A.", "(B) foo", "The answer is C", "", "Z"]


def test_mlvu_legacy_takes_the_character_before_the_first_parenthesis() -> None:
    # "A." has no ")" so the whole string is compared with the letter: wrong, as published.
    assert [mlvu_legacy(s) for s in TRICKY] == ["A.", "B", "The answer is C", "", "Z"]
    assert mlvu_legacy("  A) the cat ") == "A"
    assert mlvu_legacy("C") == "C"
    assert mlvu_legacy(")x") == "x"  # index -1: Python wraps to the last character


def test_videomme_legacy_first_capital_letter() -> None:
    assert [videomme_legacy(s) for s in TRICKY] == ["A", "B", "C", "", ""]
    assert videomme_legacy("Based on the video, D") == "B"  # the first capital A-D anywhere
    # The concatenated phrases of the published list never match, so "The best option is" stays.
    assert videomme_legacy("The best option is D") == "D"
    assert videomme_legacy("the people in this clip are walking along a road near some tall trees") == ""
    assert videomme_legacy("The correct answer is (A) apples") == "A"


def test_mcq_letter_current_rule() -> None:
    assert [mcq_letter(s) for s in TRICKY] == ["A", "B", "C", "", ""]
    assert mcq_letter("I think B is wrong; the answer is D.") == "D"  # ends with a standalone letter: priority 9
    assert mcq_letter("Based on the video") == "B"  # nothing marked: the fallback takes any capital A-D
    assert mcq_letter("Answer: (C) because (A) is wrong") == "A"  # two "(X)": the later one wins
    assert mcq_letter("Dogs run (A) or (B)") == "B"  # "Do..." is no standalone D


def test_mcq_letter_priorities_hand_checked() -> None:
    # start (10) beats everything.
    assert mcq_letter("C. the answer is (A)") == "C"
    # parentheses (6) beat period (5): "(B)" and "D." -> B; position breaks ties within one format.
    assert mcq_letter("xx (B) yy D. zz") == "B"
    assert mcq_letter("xx (B) yy (D) zz") == "D"
    # punctuation stripped from both ends, one character after another.
    assert mcq_letter('"A"') == "A"
    assert mcq_letter("E.", choices=tuple("ABCD")) == ""
    assert mcq_letter("E.", choices=tuple("ABCDE")) == "E"


def _lmms_mcq_module():
    """lmms-eval's mcq_extract.py loaded on its own (importing the package takes seconds)."""
    spec = importlib.util.find_spec("lmms_eval")
    if spec is None or spec.origin is None:
        pytest.skip("lmms-eval is not installed (the eval extra)")
    path = Path(spec.origin).parent / "tasks" / "_task_utils" / "mcq_extract.py"
    return load_file_module(path, "lmms_mcq_extract")


def test_mcq_letter_equals_lmms_eval_on_random_strings() -> None:
    lmms = _lmms_mcq_module()
    rng = random.Random(0)
    pieces = list("ABCDEabcde .,:;()!?'\"") + ["the answer is ", "I choose ", "Best option: ", "答案是", "\n"]
    for _ in range(5000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        assert mcq_letter(text) == lmms.extract_mcq_answer(text, ["A", "B", "C", "D"]), repr(text)


def test_longvideobench_parser_and_seeded_fallback() -> None:
    rng = random.Random(0)
    assert [longvideobench_choice(s, 4, rng)[0] for s in TRICKY[:3]] == ["A", "B", "C"]
    assert longvideobench_choice("The best option is E", 5, rng) == ("E", False)
    assert longvideobench_choice("E", 4, rng) == ("E", False)  # beyond the 4 options, as published
    # No letter: a random option from a generator seeded by (seed, item id), the same in every run.
    first = longvideobench_choice("", 4, item_rng(0, "q1"))
    assert first[1] and first == longvideobench_choice("Z", 4, item_rng(0, "q1"))
    draws = {longvideobench_choice("", 4, item_rng(0, f"q{i}"))[0] for i in range(50)}
    assert draws == {"A", "B", "C", "D"}  # spread over the options, never E
    many_words = "one two three four five six seven eight nine ten eleven"
    assert longvideobench_choice(many_words, 5, item_rng(1, "x"))[1]


def test_vnbench_legacy() -> None:
    assert [vnbench_legacy(s) for s in TRICKY] == ["A", "B", "C", "", "Z"]
    assert vnbench_legacy("The answer is (D) cow. A") == "D"  # inside the first (...)
    assert vnbench_legacy("DA") == "A"  # A, B, C, D are checked in that order
    assert vnbench_legacy("sheep. B") == "sheep"  # text before the first "."


def test_vniah_legacy_check() -> None:
    assert vniah_legacy_correct("D) reading", "D")
    assert vniah_legacy_correct("(D) reading", "D")
    assert not vniah_legacy_correct("The answer is (D) reading", "A")  # "answer" is lowercase
    assert not vniah_legacy_correct("A wrong) D", "D")  # only the text before the first ")"
    assert [vniah_legacy_correct(s, "C") for s in TRICKY] == [False, False, True, False, False]
