"""Every exercise marked in the library is graded: a check, rubric points, two mutants.

When you add an exercise marker, this test names what is still missing (see docs/authoring.md).
A chapter whose author has not started its checks yet (no minialign/course/checks_chNN.py) is
reported as an expected failure, with the list of what it needs; once the checks file exists,
every exercise of the chapter must be complete.
"""

import importlib.util
import sys
from pathlib import Path

import pytest

from minialign.course.checks import load_all_checks
from minialign.course.grader import load_rubric
from minialign.course.markers import find_exercises
from minialign.course.questions import all_questions


def _mutants():
    spec = importlib.util.spec_from_file_location("minialign_test_mutants_c",
                                                  Path(__file__).with_name("mutants.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.MUTANTS


EXERCISES = find_exercises()
COURSE_DIR = Path(__file__).resolve().parent.parent / "minialign" / "course"


@pytest.mark.parametrize("exercise", EXERCISES, ids=[e.id for e in EXERCISES])
def test_every_exercise_is_graded(exercise, request):
    if not (COURSE_DIR / f"checks_ch{exercise.chapter:02d}.py").exists():
        request.applymarker(pytest.mark.xfail(
            reason=f"chapter {exercise.chapter} has no checks module yet", strict=False))
    missing = []
    if exercise.id not in load_all_checks():
        missing.append(f"a check: @exercise({exercise.id!r}) in minialign/course/"
                       f"checks_ch{exercise.chapter:02d}.py")
    if exercise.id not in load_rubric().exercises:
        missing.append(f"points in minialign/course/rubric.json: \"{exercise.id}\": N")
    n = sum(m.exercise == exercise.id for m in _mutants())
    if n < 2:
        missing.append(f"at least 2 mutants in tests/mutants.py (has {n})")
    assert not missing, f"{exercise.id} (minialign/{exercise.module}.py:{exercise.start}) " \
                        f"needs " + "; ".join(missing)


def test_rubric_names_only_existing_items():
    rubric = load_rubric()
    exercise_ids = {e.id for e in EXERCISES}
    question_ids = {q.id for q in all_questions()}
    assert set(rubric.exercises) - exercise_ids == set()
    assert set(rubric.questions) ^ question_ids == set()
    assert set(load_all_checks()) - exercise_ids == set()
