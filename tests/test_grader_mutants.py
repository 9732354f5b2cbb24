"""CI gate: every deliberately broken variant of the solutions (tests/mutants.py) is caught.

All mutants are graded in one go, as a class of students (one folder per mutant holding only
the mutated chapter file), so the sandboxes start in parallel.
"""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from minialign.course.grader import grade_submissions
from minialign.course.markers import CHAPTERS, REPO_DIR, find_exercises

SOLUTIONS = REPO_DIR / "solutions"


def _load_mutants():
    spec = importlib.util.spec_from_file_location("minialign_test_mutants",
                                                  Path(__file__).with_name("mutants.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.MUTANTS


MUTANTS = _load_mutants()


def _chapter_file(exercise_id: str) -> str:
    return CHAPTERS[int(exercise_id[2:4])].filename


def test_every_mutant_snippet_is_found_exactly_once():
    stale = []
    for m in MUTANTS:
        text = (SOLUTIONS / _chapter_file(m.exercise)).read_text()
        if text.count(m.find) != 1:
            stale.append(f"{m.exercise} ({m.description}): snippet found {text.count(m.find)} "
                         f"times in solutions/{_chapter_file(m.exercise)}:\n{m.find!r}")
    assert not stale, "stale mutants, update tests/mutants.py:\n" + "\n".join(stale)


def test_every_graded_exercise_has_two_mutants():
    from minialign.course.checks import load_all_checks

    checks = load_all_checks()
    counts = {e.id: sum(m.exercise == e.id for m in MUTANTS) for e in find_exercises()
              if e.id in checks}
    assert {k: v for k, v in counts.items() if v < 2} == {}


@pytest.fixture(scope="module")
def class_grading(tmp_path_factory):
    """The mutants graded as one class: (a report per mutant, None where its snippet is stale;
    whether torch's global generator was left as it was)."""
    root = tmp_path_factory.mktemp("mutants")
    names = []
    for n, m in enumerate(MUTANTS):
        filename = _chapter_file(m.exercise)
        text = (SOLUTIONS / filename).read_text()
        if text.count(m.find) != 1:
            names.append(None)  # reported by the test above
            continue
        folder = root / f"m{n:02d}"
        folder.mkdir()
        (folder / filename).write_text(text.replace(m.find, m.replace))
        names.append(folder.name)
    chapters = sorted({int(m.exercise[2:4]) for m in MUTANTS})
    # the capstones (a training run each) are graded by test_capstones.py, with their mutants
    torch.manual_seed(0)
    before = torch.get_rng_state()
    reports = {r.student: r for r in grade_submissions(root, chapters, strict=True,
                                                        capstones=False)}
    return [reports.get(name) for name in names], torch.equal(torch.get_rng_state(), before)


@pytest.fixture(scope="module")
def mutant_reports(class_grading):
    return class_grading[0]


def test_grading_a_class_leaves_torchs_global_generator_as_it_was(class_grading):
    # The students' chapters are checked in parallel threads, and a reference step seeds torch's
    # global generator and builds its model from it while holding fixtures.GLOBAL_RANDOM_STATE.
    # A draw on the trusted side outside that lock (and outside fork_rng, which would restore
    # the state) can land inside such a run and change the reference that every student is
    # then compared with (it is remembered): once, each student's correct PPO update failed.
    # Every such draw also moves the global state, which is what this sees.
    assert class_grading[1], ("the grader drew from torch's global generator outside "
                              "fixtures.GLOBAL_RANDOM_STATE and torch.random.fork_rng")


@pytest.mark.parametrize("index", range(len(MUTANTS)),
                         ids=[f"{m.exercise}:{m.description}" for m in MUTANTS])
def test_mutant_is_caught(mutant_reports, index):
    m = MUTANTS[index]
    report = mutant_reports[index]
    assert report is not None, "stale mutant (snippet not found)"
    item = report.item(m.exercise)
    assert item.status == "failed", f"not caught: {m.description}"
    assert item.points == 0
    if m.hint:
        assert m.hint.lower() in item.hint.lower(), \
            f"caught, but the hint is {item.hint!r} (message: {item.message})"
