"""The concept questions as a whole: enough per chapter, the source's own examples quizzed, no
length cue to the right option, and the keys of the questions that ask for a number computed
by the library's own code (so that a key cannot drift from what the code does)."""

import dataclasses
import math
import re

import pytest
import torch

from minialign import dpo, grpo, tokenizer
from minialign.course.questions import all_questions

QUESTIONS = all_questions()
CHOICE = [q for q in QUESTIONS if q.kind == "choice"]


def _right(q) -> str:
    return q.options[q.labels.index(q.answer)]


def _right_is_longest(q) -> bool:
    """A tie for the longest counts as longest: a student who picks the longest would get it."""
    return len(_right(q)) >= max(len(o) for o in q.options)


def _question(pattern: str):
    """The one question whose text matches pattern."""
    found = [q for q in QUESTIONS if re.search(pattern, q.text)]
    assert len(found) == 1, f"{pattern!r}: {[q.id for q in found]}"
    return found[0]


def test_every_chapter_has_at_least_four_questions():
    counts = {ch: sum(q.chapter == ch for q in QUESTIONS) for ch in range(1, 9)}
    assert min(counts.values()) >= 4, counts


def test_the_right_option_is_not_a_length_cue():
    longest = [q.id for q in CHOICE if _right_is_longest(q)]
    assert len(longest) / len(CHOICE) <= 0.40, longest
    for chapter in range(1, 9):  # and no chapter leans on it either
        qs = [q for q in CHOICE if q.chapter == chapter]
        assert sum(_right_is_longest(q) for q in qs) <= len(qs) / 2, chapter


def test_the_length_cue_check_can_fail():
    q = next(q for q in CHOICE if not _right_is_longest(q))
    options = list(q.options)
    options[q.labels.index(q.answer)] += " and so on" * 30
    assert _right_is_longest(dataclasses.replace(q, options=tuple(options)))


def test_the_feverish_child_is_quizzed():
    q = _question(r"fever")
    assert "doctor" in _right(q)
    assert all("doctor" not in o for o in q.options if o != _right(q))


def test_the_stereotype_joke_is_quizzed():
    q = _question(r"all programmers are")
    assert _right(q).startswith("Harmlessness")


def test_a_pretrained_model_continuing_text_is_quizzed():
    q = _question(r"pretrained model often writes another question")
    assert "continue web text" in _right(q)


# ----------------------------------------------------------------------------------------------
# questions that ask for a number: the key is what the library computes


def test_dpo_loss_question_matches_dpo_loss():
    q = _question(r"What is the DPO loss of this pair")
    numbers = [float(x) for x in re.findall(r"-?\d+\.\d+", q.text)]
    beta, pc, pr, rc, rr = numbers  # beta, policy chosen/rejected, reference chosen/rejected
    losses, _, _ = dpo.dpo_loss(*(torch.tensor([x]) for x in (pc, pr, rc, rr)), beta=beta)
    assert float(_right(q)) == pytest.approx(losses.item(), abs=5e-4)
    for option in q.options:  # every other option is a different number
        if option != _right(q):
            assert abs(float(option) - losses.item()) > 0.01


def test_initial_loss_question_matches_ln_v():
    q = _question(r"vocabulary of 4,096 tokens")
    value = float(re.search(r"\d+\.\d+", _right(q)).group())
    assert value == pytest.approx(math.log(4096), abs=0.05)


def test_first_merge_question_matches_get_pair_counts():
    q = _question(r"Which pair does it merge first")
    chunks = {c: int(n) for c, n in re.findall(r"'(\w+)' (\d+)", q.text)}
    assert len(chunks) == 5
    counts = {}
    for chunk, n in chunks.items():
        tokenizer.get_pair_counts(list(chunk.encode()), counts, n)
    best = max(counts, key=counts.get)
    assert _right(q).startswith(f"'{chr(best[0])}' + '{chr(best[1])}'")
    assert f"{counts[best]} occurrences" in _right(q)


def test_group_advantages_question_matches_group_advantages():
    q = _question(r"GRPO advantages")
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    advantages = grpo.group_advantages(rewards, eps=0.0)[0].tolist()
    assert [float(x) for x in re.findall(r"-?\d+\.\d+", _right(q))] == \
        pytest.approx(advantages, abs=1e-3)
