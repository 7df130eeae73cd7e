"""Answer extraction: from a model's free-form output to an option letter.

Each benchmark scored its outputs with its own small rule, and lmms-eval
replaced most of them on 2026-04-11 with one shared extractor. Published
numbers from 2024-2025 (Video-XL-Pro's included) used the old rules, so both
are here (``EXTRACTORS``):

- ``legacy``: the rule each benchmark used in 2025 (``mlvu_legacy``,
  ``videomme_legacy``, ``longvideobench_choice``, ``vnbench_legacy``,
  ``vniah_legacy_correct``);
- ``current``: lmms-eval's shared rule (``mcq_letter``); LongVideoBench keeps
  its own parser in current lmms-eval, so it has no other rule.

The rules reproduce the published behaviour exactly, quirks included (each
quirk is named where it is implemented); they are specifications, so
"improving" them would change the scores.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

EXTRACTORS = ("legacy", "current")
LETTERS = "ABCDEFGH"


# ----- legacy, per benchmark ----------------------------------------------------------
def mlvu_legacy(output: str) -> str:
    """MLVU in lmms-eval 2025-03 to 2026-04 (and MLVU's own ``check_ans``).

    The character just before the first ``)``; without a ``)``, the whole
    stripped output. "A" -> "A", "A) foo" -> "A", but "A. foo" stays "A. foo"
    (scored wrong: the comparison with the answer letter is exact).
    """
    s = output.strip()
    if ")" in s:
        # Python indexing kept as published: a leading ")" gives s[-1], the last character.
        return s[s.index(")") - 1]
    return s


# The published list misses two commas, so two pairs of phrases are concatenated and never match.
_VIDEOMME_PREFIXES = (
    "The best answer is",
    "The correct answer is",
    "The answer is",
    "The answer",
    "The best option isThe correct option is",
    "Best answer:Best option:",
)


def videomme_legacy(output: str) -> str:
    """Video-MME in lmms-eval up to 2026-04-11 (and the Video-XL authors' fork).

    Remove answer phrases, then the first capital A-D anywhere ("Based on ..."
    gives "B"); "" when there is none, or when more than 10 words hold none.
    """
    s = output.strip()
    for prefix in _VIDEOMME_PREFIXES:
        s = s.replace(prefix, "")
    if len(s.split()) > 10 and not re.search("[ABCD]", s):
        return ""
    match = re.search("[ABCD]", s)
    return match[0] if match else ""


_LVB_PREFIXES = (
    "The best answer is",
    "The correct answer is",
    "The answer is",
    "The answer",
    "The best option is",
    "The correct option is",
    "Best answer:",
    "Best option:",
)


def longvideobench_choice(output: str, num_options: int, rng: random.Random) -> tuple[str, bool]:
    """LongVideoBench's parser (lmms-eval, unchanged through 2026): ``(letter, random_fallback)``.

    Remove answer phrases, then the first capital A-E; when there is none (or
    more than 10 words hold none) a random option letter drawn from ``rng``.
    The first A-E may lie beyond the options ("E" with 4 options), as published.
    """
    s = output.strip()
    for prefix in _LVB_PREFIXES:
        s = s.replace(prefix, "")
    choices = list(LETTERS[:num_options])
    if len(s.split()) > 10 and not re.search("[ABCDE]", s):
        return rng.choice(choices), True
    match = re.search("[ABCDE]", s)
    if match is None:
        return rng.choice(choices), True
    return match[0], False


def vnbench_legacy(output: str) -> str:
    """VNBench as the Video-XL authors ran it, then scored by VNBench's ``eval.py``.

    Video-XL keeps what is inside the first "(...)" (else the whole output);
    ``eval.py`` keeps the text before the first "." and returns the first of
    A, B, C, D (checked in that order) that occurs in it, else that text.
    """
    match = re.search(r"\(([^)]*)\)", output)
    pred = match.group(1) if match else output
    pred = pred.split(".")[0]
    for letter in "ABCD":
        if letter in pred:
            return letter
    return pred


def vniah_legacy_checked_text(output: str) -> str:
    """The part of a V-NIAH output Video-XL's tester looks in: the text before the first ")"."""
    return output.split(")")[0]


def vniah_legacy_correct(output: str, answer: str) -> bool:
    """Video-XL's V-NIAH check: the answer letter occurs in the text before the first ")"."""
    return answer in vniah_legacy_checked_text(output)


# ----- current lmms-eval (2026-04-11 on) ------------------------------------------------
_ANSWER_PHRASES = (
    "the answer is", "answer is", "the correct answer is", "correct answer is", "the best answer is",
    "best answer is", "the correct option is", "correct option is", "the best option is", "best option is",
    "the choice is", "choice is", "the correct choice is", "correct choice is", "i choose", "i select", "i pick",
    "my answer is", "my choice is", "옵션", "정답은", "답은", "답:", "答案是", "答案为", "选", "答えは",
)  # fmt: skip

# (format, template, priority): how sure a letter written this way is the intended answer.
_MARKED_FORMATS = (
    ("parentheses", "({})", 6),
    ("period", "{}.", 5),
    ("colon", "{}:", 4),
    ("right_paren", "{})", 3),
    ("space", "{} ", 2),
)
_PRIORITY = {"start": 10, "end": 9, "phrase": 7, **{name: p for name, _, p in _MARKED_FORMATS}, "fallback": 0}


def mcq_letter(output: str, choices: Sequence[str] = tuple("ABCD")) -> str:
    """lmms-eval's shared multiple-choice extractor (MLVU and Video-MME since 2026-04-11).

    Every way a letter can be written is a candidate with a priority: the
    output starts with it (10), ends with it (9), follows an answer phrase
    (7), "(X)" (6), "X." (5), "X:" (4), "X)" (3), "X " (2); a bare letter
    anywhere (0) counts only when nothing else does. The highest priority
    wins, then the later position. "" when no letter is found.
    """
    if not output or not output.strip():
        return ""
    text = output.strip()
    for char in ",.!?;:'\"":  # one character after the other, as published
        text = text.strip(char)
    text = f" {text} "
    candidates: list[tuple[int, int, str]] = []  # (priority, position, letter), in discovery order

    def add(letter: str, position: int, kind: str) -> None:
        candidates.append((_PRIORITY[kind], position, letter))

    for kind, template, _ in _MARKED_FORMATS:
        for letter in choices:
            marked = template.format(letter)
            if marked in text:
                add(letter, text.rfind(marked), kind)
    lowered = text.lower()
    for phrase in _ANSWER_PHRASES:
        at = lowered.find(phrase)
        if at == -1:
            continue
        for letter in choices:
            # Any later occurrence of the capital letter counts, even inside a word ("the answer is Apples").
            position = text.find(letter, at + len(phrase))
            if position != -1:
                add(letter, position, "phrase")
    core = text.strip()
    for letter in choices:
        if core.startswith(letter) and (len(core) == 1 or not core[1].isalpha()):
            add(letter, 0, "start")
    for letter in choices:
        if core.endswith(letter) and (len(core) == 1 or not core[-2].isalpha()):
            add(letter, len(text) - 1, "end")
    if not candidates:
        for letter in choices:
            if letter in text:
                add(letter, text.rfind(letter), "fallback")
    if not candidates:
        return ""
    # max() keeps the first of equal candidates, as the published stable sort does.
    return max(candidates, key=lambda c: (c[0], c[1]))[2]
