"""Exercises that are not transcription: from ★★ on, the stub states the contract and the
grader holds the hints, gentlest first, the last one the formula (docs/authoring.md).

The rule, checked on the committed exercise files:
  * no `# hint:` line in the stub of a ★★/★★★ exercise (a ★ warm-up keeps its hints);
  * every ★★/★★★ exercise but the training steps has at least two hints, and the tokens of
    its formula listed in FORMULAS appear in its hints and nowhere in its stub (docstring
    included);
  * `python -m minialign.grade --hints N` shows the first N hints of an exercise not passed,
    and without it the report shows none.
"""

import ast
import json
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

from minialign.course import build as build_lib
from minialign.course.grader import attach_hints, grade, hint_count
from minialign.course.markers import CHAPTERS, REPO_DIR, find_exercises
from minialign.course.report import render_gradescope, render_text

EXERCISES = find_exercises()
BY_ID = {e.id: e for e in EXERCISES}

# the formula of each ★★/★★★ exercise as tokens: absent from its stub, present in its hints
FORMULAS = {
    "ch02.causal_self_attention": ["sqrt(hs)", "softmax(q"],
    "ch02.filter_logits": ["topk", "cumsum", "scatter"],
    "ch03.sft_loss": ["logits[:, :-1]", "labels[:, 1:]", "ignore_index"],
    "ch04.ranking_loss": ["triu_indices", "sigmoid(r_i - r_j)"],
    "ch05.kl_penalized_rewards": ["-kl_coef * (logprobs"],
    "ch05.compute_gae": ["delta_t", "V_{t+1}", "gamma * lam * A"],
    "ch05.policy_loss": ["exp(logprobs - old_logprobs)", "max(-A", "clip(ratio"],
    "ch06.dpo_loss": ["sigmoid(beta * h)", "1 / (2 * beta)"],
    "ch07.best_of_n_distribution": ["F(r_i)", "F_<(r_i)"],
    "ch08.group_advantages": ["(r - mean) / (std + eps)"],
    "ch08.aggregate_loss": ["torch.where(mask, per_token_loss, 0.0)", "clamp(min=1)"],
    "ch08.clipped_token_loss": ["max(-A", "clip(rho"],
    "ch08.grpo_loss": ["masked_mean(", "clipped & (advantages"],
}
# the training steps: their docstrings state the contract and the edge cases, and their checks
# name the usual mistakes; hints are optional
SCORING_STEPS = {"ch05.score_rollout"}


def _is_step(exercise) -> bool:
    import inspect

    return exercise.id in SCORING_STEPS or \
        "optimizer" in inspect.signature(exercise.reference()).parameters


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def _stub_text(exercise) -> str:
    """The exercise's function in the committed exercise file: signature, docstring, stub."""
    path = REPO_DIR / "exercises" / CHAPTERS[exercise.chapter].filename
    source = path.read_text(encoding="utf-8")
    nodes = ast.parse(source).body
    for part in exercise.qualname.split("."):
        node = next(n for n in nodes if getattr(n, "name", None) == part)
        nodes = getattr(node, "body", [])
    lines = source.splitlines()
    return "\n".join(lines[node.lineno - 1: node.end_lineno])


HARD = [e for e in EXERCISES if e.difficulty >= 2]


@pytest.mark.parametrize("exercise", HARD, ids=[e.id for e in HARD])
def test_hard_stubs_hold_no_hint_and_no_formula(exercise):
    stub = _stub_text(exercise)
    assert "raise NotImplementedError" in stub  # the committed file is an untouched stub
    assert "# hint:" not in stub, f"{exercise.id}: its stub shows its hints"
    if _is_step(exercise):
        return
    assert exercise.id in FORMULAS, \
        f"{exercise.id} is a ★★/★★★ exercise: list its formula's tokens in FORMULAS"
    assert len(exercise.hints) >= 2, f"{exercise.id}: give hints, gentlest first, then formula"
    hints = _squash(" ".join(exercise.hints))
    for token in FORMULAS[exercise.id]:
        assert token in hints, f"{exercise.id}: {token!r} is not in its hints"
        assert token not in _squash(stub), f"{exercise.id}: its stub gives {token!r} away"


def test_warm_ups_keep_their_hints_in_the_stub():
    warm = [e for e in EXERCISES if e.difficulty == 1 and e.hints]
    assert warm  # ch08.rloo_advantages has one
    for e in warm:
        assert "# hint: " + e.hints[0][:30] in _stub_text(e)


def test_build_leaves_hard_hints_to_the_grader(tmp_path):
    lib = tmp_path / "minialign"
    lib.mkdir()
    (lib / "alpha.py").write_text(textwrap.dedent('''
        def double(x):
            """Twice x."""
            # >>> exercise: chapter=1 difficulty=1 minutes=5
            # hint: add x to itself
            return x + x
            # <<< exercise


        def triple(x):
            """Three times x."""
            # >>> exercise: chapter=1 difficulty=2 minutes=5
            # hint: a sum of three
            # hint: the formula is x + x + x,
            #       or 3 * x
            return 3 * x
            # <<< exercise
    ''').lstrip())
    double, triple = find_exercises(lib)
    assert double.hints == ("add x to itself",)
    assert triple.hints == ("a sum of three", "the formula is x + x + x, or 3 * x")
    files = build_lib.render_all(lib)
    stub, full = files["exercises/ch01_tokenizer.py"], files["solutions/ch01_tokenizer.py"]
    assert "# hint: add x to itself" in stub  # a warm-up keeps its hint
    assert "a sum of three" not in stub and "3 * x" not in stub  # a ★★ one does not
    assert "--hints 1" in stub  # the header says how to ask for them
    assert "# hint: add x to itself\n    return x + x" in full
    assert "· about 5 minutes\n    return 3 * x" in full  # ch01.triple: no hint either


def test_hint_count():
    assert [hint_count(h) for h in (None, False, 0, 1, "2", True, "all")] == [0, 0, 0, 1, 2,
                                                                              -1, -1]
    for bad in ("some", -1, "1.5"):
        with pytest.raises(ValueError):
            hint_count(bad)


def test_cli_hints_for_an_unattempted_exercise(tmp_path):
    folder = tmp_path / "student"
    folder.mkdir()
    shutil.copy(REPO_DIR / "exercises" / "ch05_ppo.py", folder)
    gae = BY_ID["ch05.compute_gae"]
    command = [sys.executable, "-m", "minialign.grade", "--impl", str(folder), "--chapter", "5"]

    plain = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0, plain.stderr
    assert _squash(gae.hints[0]) not in _squash(plain.stdout)
    assert "delta_t" not in plain.stdout and "Stuck? Add --hints 1" in plain.stdout

    one = subprocess.run(command + ["--hints", "1"], capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    text = _squash(one.stdout)
    assert "ch05.compute_gae 0 / 4 not attempted" in text
    assert f"hints 1 of {len(gae.hints)} (gentlest first, --hints 2 for the next):" in text
    assert _squash("1. " + gae.hints[0]) in text
    assert _squash(gae.hints[-1]) not in text and "delta_t" not in text  # not the formula yet

    every = subprocess.run(command + ["--hints", "--format", "json"], capture_output=True,
                           text=True, timeout=300)
    assert every.returncode == 0, every.stderr
    item = next(i for i in json.loads(every.stdout)["items"] if i["id"] == "ch05.compute_gae")
    assert item["hints"] == list(gae.hints) and item["hints_left"] == 0
    assert any("delta_t" in h for h in item["hints"])  # the last one gives the formula

    bad = subprocess.run(command + ["--hints", "some"], capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and "--hints" in bad.stderr


def test_hints_only_for_exercises_not_passed(tmp_path):
    folder = tmp_path / "student"
    folder.mkdir()
    source = (REPO_DIR / "solutions" / "ch08_grpo.py").read_text(encoding="utf-8")
    wrong = "    centered = rewards - rewards.mean(dim=1, keepdim=True)  # (P, G)"
    assert source.count(wrong) == 1
    (folder / "ch08_grpo.py").write_text(source.replace(wrong, "    centered = rewards"))
    report = grade(folder, chapters=[8], strict=True, hints=2)
    status = {i.id: i.status for i in report.items}
    assert status["ch08.group_advantages"] == "failed"
    failed = report.item("ch08.group_advantages")
    hints = BY_ID["ch08.group_advantages"].hints
    assert failed.hints == list(hints[:2]) and failed.hints_left == len(hints) - 2
    passed = report.item("ch08.clipped_token_loss")
    assert passed.status == "passed" and passed.hints == [] and passed.hints_left == 0
    text = render_text(report)
    assert "1. " + hints[0][:40] in text and "Stuck?" not in text
    assert "Hints:\n1. " + hints[0] in json.loads(render_gradescope(report))["tests"][
        [i.id for i in report.items].index("ch08.group_advantages")]["output"]
    # asking again for every hint of the same report
    assert attach_hints(report, "all").item("ch08.group_advantages").hints == list(hints)
