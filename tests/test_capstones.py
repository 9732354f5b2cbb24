"""The capstones (minialign/course/capstone.py): a chapter's functions train a policy together,
and the grader measures the trained policy with the gold reward.

One class of students is graded in one go (chapters 5 and 6, capstones on, two sandboxes at a
time): the solutions, which must pass both; each capstone mutant of tests/mutants.py (a PPO
whose policy loss has the wrong sign, a DPO with chosen and rejected swapped: they train, and
the measurement must fail them); a hostile submission whose training leaves the starting policy
as it was and reports made-up numbers, or sends numbers back instead of the parameters; and the
untouched exercises.
"""

import importlib.util
import sys
import time
from pathlib import Path

import pytest

from minialign.course.capstone import CAPSTONES, capstones_for
from minialign.course.grader import grade_submissions, load_rubric
from minialign.course.markers import CHAPTERS, REPO_DIR
from minialign.course.report import render_text

SOLUTIONS, EXERCISES = REPO_DIR / "solutions", REPO_DIR / "exercises"
CH05, CH06 = CHAPTERS[5].filename, CHAPTERS[6].filename

# hostile files (one function written, so that the file runs): the training "runs" at once and
# leaves the policy as it was, with made-up statistics ...
FAKE_PPO = """
import minialign.ppo as _ppo


def whiten(x, mask, shift_mean=True):
    return x


_ppo.ppo_loop = lambda *args, **kwargs: [{"objective/scores": 1.0, "gold": 1.0}] * 20
"""
# ... or skips the training and sends numbers back instead of the trained parameters
FAKE_DPO = """
import minialign.course.capstone as _capstone


def implicit_rewards(policy_logps, ref_logps, beta):
    return beta * (policy_logps - ref_logps)


_capstone.train_dpo = lambda *args, **kwargs: {"gold_reward_mean": 1.0, "gain": 0.9}
"""


def _mutants():
    spec = importlib.util.spec_from_file_location("minialign_test_mutants_capstones",
                                                  Path(__file__).with_name("mutants.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.CAPSTONE_MUTANTS


MUTANTS = _mutants()


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("capstones")
    files = {"solutions": {CH05: (SOLUTIONS / CH05).read_text(),
                           CH06: (SOLUTIONS / CH06).read_text()},
             "untouched": {CH05: (EXERCISES / CH05).read_text(),
                           CH06: (EXERCISES / CH06).read_text()},
             "hostile": {CH05: FAKE_PPO, CH06: FAKE_DPO}}
    for n, m in enumerate(MUTANTS):
        name = CHAPTERS[int(m.exercise[2:4])].filename
        text = (SOLUTIONS / name).read_text()
        assert text.count(m.find) == 1, f"stale capstone mutant {m.description!r}"
        files[f"mutant{n}"] = {name: text.replace(m.find, m.replace)}
    for student, chapter_files in files.items():
        (root / student).mkdir()
        for name, text in chapter_files.items():
            (root / student / name).write_text(text)
    start = time.monotonic()
    reports = {r.student: r for r in grade_submissions(root, [5, 6], strict=True)}
    runs = [f"{name} {i.id} {i.seconds:.0f} s" for name, r in sorted(reports.items())
            for i in r.items if i.kind == "capstone" and i.seconds]
    print(f"\ngraded {len(reports)} students' chapters 5 and 6 with the capstones in "
          f"{time.monotonic() - start:.1f} s; the capstones took: {', '.join(runs)}")
    return reports


def test_the_solutions_pass_both_capstones(graded):
    report = graded["solutions"]
    for capstone in CAPSTONES:
        item = report.item(capstone.id)
        assert (item.status, item.kind) == ("passed", "capstone"), item.message
        assert item.points == item.max_points == load_rubric().points(capstone.id) > 0
        assert f"at least {capstone.margin:+.2f}" in item.message  # the numbers measured
    assert report.score == report.max_score


@pytest.mark.parametrize("index", range(len(MUTANTS)),
                         ids=[f"{m.exercise}:{m.description}" for m in MUTANTS])
def test_a_broken_implementation_trains_and_fails(graded, index):
    m = MUTANTS[index]
    item = graded[f"mutant{index}"].item(m.exercise)
    assert (item.status, item.points) == ("failed", 0)
    assert "for yours after training" in item.message  # it trained, and was measured
    assert m.hint.lower() in item.hint.lower(), (item.message, item.hint)


def test_made_up_numbers_earn_nothing(graded):
    report = graded["hostile"]
    ppo, dpo = report.item("ch05.ppo_capstone"), report.item("ch06.dpo_capstone")
    assert (ppo.status, ppo.points, dpo.status, dpo.points) == ("failed", 0, "failed", 0)
    assert "exactly the starting one" in ppo.hint  # the policy came back unchanged
    assert "could not be read back" in dpo.message  # numbers, not parameters
    text = render_text(report)  # the report says why, in words, under each capstone
    assert "ch05.ppo_capstone" in text and "hint: the trained policy is exactly" in text


def test_untouched_exercises_do_not_attempt_the_capstones(graded):
    report = graded["untouched"]
    for capstone in CAPSTONES:
        item = report.item(capstone.id)
        assert (item.status, item.points) == ("not attempted", 0)
        assert "write them first" in item.message
    assert report.score == 0


def test_the_rubric_and_the_chapter_files_state_each_capstone():
    rubric = load_rubric()
    assert set(rubric.capstones) == {c.id for c in CAPSTONES}
    for capstone in CAPSTONES:
        assert capstone in capstones_for(capstone.chapter)
        assert 30 <= rubric.time_limit(capstone.id) <= 120
        assert f"at least {capstone.margin:.2f}" in capstone.description
        header = (EXERCISES / CHAPTERS[capstone.chapter].filename).read_text()[:3000]
        assert f"Capstone {capstone.id}" in header
