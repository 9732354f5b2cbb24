"""What an instructor gets from the grader: concept questions for credit, versions of the
exercise files, the handout, and the class reports (summaries per student and per item).

The report renderers are tested on hand-made reports (no grading); the rest grades chapter 1
only, which takes a few seconds per student.
"""

import csv
import io
import json
import re
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest

from minialign.course import build as build_lib
from minialign.course import grader as grader_lib
from minialign.course.grader import grade, grade_questions, grade_submissions, load_rubric
from minialign.course.markers import REPO_DIR
from minialign.course.questions import (all_questions, answer_key_json, library_key,
                                        load_answer_key, questions_for)
from minialign.course.report import (CSV_COLUMNS, Item, Report, pass_rates, render_csv,
                                     render_gradescope, render_items_csv, render_students_csv)
from minialign.course.sandbox import parse_salvaging
from minialign.course.versions import current_items, file_version, load_history

SOLUTIONS = REPO_DIR / "solutions"
CH01 = "ch01_tokenizer.py"


def _grade_cli(*args, cwd=REPO_DIR):
    return subprocess.run([sys.executable, "-m", "minialign.grade", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


# ==============================================================================================
# concept questions: feedback that does not give the answer away


def test_every_question_has_a_key_with_feedback_for_every_wrong_option():
    questions = all_questions()
    assert questions and all(q.key is not None for q in questions)
    for q in questions:
        right = q.options[q.labels.index(q.answer)] if q.kind == "choice" else None
        wrong_answers = ([label for label in q.labels if label != q.answer]
                         if q.kind == "choice" else [list(reversed(q.answer)),
                                                     list(q.answer[1:]) + [q.answer[0]]])
        for given in wrong_answers:
            result = q.grade(given)
            assert result.status == "failed", (q.id, given)
            assert result.hint, f"{q.id}: no feedback for {given}"
            assert result.explanation == ""  # the explanation gives the answer away
            assert f'"{q.answer}"' not in result.message  # the right letter is never named
            if right:
                assert right[:40] not in result.hint
            assert q.grade(given, release=True).explanation == q.explanation
        passed = q.grade(q.answer_literal)
        assert (passed.status, passed.hint, passed.explanation) == ("passed", "", q.explanation)


def test_order_feedback_is_about_the_first_item_out_of_place():
    q = next(q for q in all_questions() if q.kind == "order")
    given = list(q.answer)
    given[1], given[2] = given[2], given[1]  # the first item stays in place
    result = q.grade(given)
    assert result.hint.startswith(f"{given[1]}) ")
    assert result.hint[3:] == q.key.why_not[given[1]]


def _changed_key(tmp_path):
    """A key file in which q1.1's right answer is "a" (the library says "c")."""
    data = json.loads(answer_key_json(library_key()))
    entry = data["questions"]["q1.1"]
    entry["answer"] = "a"
    entry["explanation"] = "ANSWER A EXPLAINED"
    entry["why_not"] = {"b": "not b", "c": "C IS WRONG IN THIS KEY", "d": "not d"}
    path = tmp_path / "key.json"
    path.write_text(json.dumps(data))
    return path


def test_a_key_that_does_not_fit_is_refused(tmp_path):
    data = json.loads(answer_key_json(library_key()))
    for change, words in [(lambda d: d["questions"]["q1.1"].update(answer="z"), "does not fit"),
                          (lambda d: d["questions"].update({"q9.9": d["questions"]["q1.1"]}),
                           "no such question"),
                          (lambda d: d["questions"]["q1.1"]["why_not"].pop("a"), "why_not")]:
        broken = json.loads(json.dumps(data))
        change(broken)
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(broken))
        with pytest.raises(ValueError, match=words):
            load_answer_key(path)
    assert _grade_cli("--chapter", "1", "--answer-key", str(tmp_path / "bad.json")) \
        .returncode == 2


def test_grading_for_credit_uses_the_instructors_key(tmp_path):
    key = load_answer_key(_changed_key(tmp_path))
    report = grade("solutions", [1], answer_key=key, strict=True)
    q = report.item("q1.1")  # the solutions answer "c"
    assert (q.status, q.hint, q.explanation) == ("failed", "C IS WRONG IN THIS KEY", "")
    assert report.item("q1.2").status == "passed" and report.item("q1.2").explanation
    released = grade("solutions", [1], answer_key=key, release_explanations=True, strict=True)
    assert released.item("q1.1").explanation == "ANSWER A EXPLAINED"


def test_without_a_key_answers_are_read_but_not_graded():
    tree = parse_salvaging((SOLUTIONS / CH01).read_text(), CH01)[0]
    no_key = SimpleNamespace(answer_key={}, release_explanations=False)
    items = grade_questions(tree, questions_for(1), load_rubric(), no_key)
    assert {i.status for i in items} == {"not graded"}
    assert all(i.max_points == 0 and "instructor" in i.message for i in items)


# ==============================================================================================
# the handout and versions


def test_handout_has_no_solutions_and_no_key(tmp_path):
    out = io.StringIO()
    assert build_lib.write_handout(tmp_path / "h", library=True, out=out) == 0
    handout = tmp_path / "h"
    files = sorted(p.name for p in (handout / "exercises").iterdir())
    assert files == sorted(p.name for p in (REPO_DIR / "exercises").glob("ch*.py"))
    assert not (handout / "solutions").exists()
    assert not (handout / "minialign" / "course" / "answer_key.py").exists()
    assert (handout / "minialign" / "course" / "questions.py").exists()
    text = (handout / "exercises" / CH01).read_text()
    assert file_version(text) == max(load_history(), key=int)
    assert re.search(r'"q1\.1": None', text)
    # a student's work is never overwritten
    (handout / "exercises" / CH01).write_text(text.replace(
        'raise NotImplementedError("exercise ch01.merge: write this body")', "return ids"))
    assert build_lib.write_handout(tmp_path / "h", out=io.StringIO()) == 1
    # grading inside the handout: the answers are read, not marked (no key there)
    answered = (handout / "exercises" / CH01).read_text().replace('"q1.1": None', '"q1.1": "c"')
    (handout / "exercises" / CH01).write_text(answered)
    run = _grade_cli("--chapter", "1", "--format", "json", cwd=handout)
    assert run.returncode == 0, run.stderr
    items = {i["id"]: i for i in json.loads(run.stdout)["items"]}
    assert items["q1.1"]["status"] == "not graded" and items["q1.1"]["max_points"] == 0


def test_an_older_file_is_graded_against_the_items_of_its_version(tmp_path, monkeypatch):
    items = current_items()
    older = [i for i in items if i not in ("ch01.merge", "q1.3")]
    monkeypatch.setattr(grader_lib, "load_history", lambda: {"1": older, "2": items})
    solution = (SOLUTIONS / CH01).read_text()
    header = re.compile(r"^Version \d+ of the minialign exercise set\.$", re.MULTILINE)
    assert header.search(solution)
    for name, line in [("v1", "Version 1 of the minialign exercise set."),
                       ("v2", "Version 2 of the minialign exercise set."),
                       ("v7", "Version 7 of the minialign exercise set."), ("none", "")]:
        (tmp_path / name).mkdir()
        (tmp_path / name / CH01).write_text(header.sub(line, solution))
    reports = {r.student: r for r in grade_submissions(tmp_path, [1], strict=True)}
    v1 = reports["v1"]
    assert v1.item("ch01.merge").status == v1.item("q1.3").status == "not handed out"
    assert v1.item("ch01.merge").max_points == 0 and v1.percent == 100
    assert {i.version for i in v1.items} == {"1"}
    assert v1.max_score < reports["v2"].max_score == reports["none"].max_score
    for name in ("v2", "none", "v7"):
        assert {i.status for i in reports[name].items} == {"passed"}, name
    assert any("version 7" in n for n in reports["v7"].notes[1])
    students = {r["student"]: r for r in csv.DictReader(io.StringIO(
        render_students_csv(list(reports.values()))))}
    assert students["v1"]["not_handed_out"] == "2" and students["v1"]["versions"] == "1"


def test_build_records_a_version_when_the_items_change(tmp_path):
    shutil.copytree(REPO_DIR / "minialign", tmp_path / "minialign",
                    ignore=shutil.ignore_patterns("__pycache__"))
    versions = tmp_path / "minialign" / "course" / "versions.json"
    data = json.loads(versions.read_text())
    latest = max(data["versions"], key=int)
    data["versions"][latest] = data["versions"][latest][1:]  # as if an item was added since
    versions.write_text(json.dumps(data))
    assert build_lib.build(tmp_path, out=io.StringIO()) == 0  # writes the files, records it
    out = io.StringIO()
    assert build_lib.build(tmp_path, check=True, out=out) == 0, out.getvalue()
    new = str(int(latest) + 1)
    assert sorted(json.loads(versions.read_text())["versions"], key=int) == \
        sorted(data["versions"], key=int) + [new]  # every earlier version kept, one added
    assert file_version((tmp_path / "exercises" / CH01).read_text()) == new
    # and --check fails while the change is not recorded
    data = json.loads(versions.read_text())
    del data["versions"][new]
    versions.write_text(json.dumps(data))
    out = io.StringIO()
    assert build_lib.build(tmp_path, check=True, out=out) == 1
    assert f"record version {new}" in out.getvalue()


# ==============================================================================================
# class reports on hand-made reports


def _item(item_id, status, points=1.0, hint="", kind="exercise", explanation=""):
    return Item(item_id, 1, kind, item_id, points if status == "passed" else 0.0,
                0.0 if status == "not handed out" else points, status, "msg", hint,
                explanation=explanation)


@pytest.fixture()
def klass():
    mask_hint = "looks like the causal mask is missing"
    return [
        Report("ada", "ada", [_item("ch01.merge", "passed"),
                              _item("q1.1", "passed", kind="question", explanation="EXPL")]),
        Report("bob", "bob", [_item("ch01.merge", "failed", hint=mask_hint),
                              _item("q1.1", "failed", kind="question", hint="WHY NOT B")]),
        Report("cy", "cy", [_item("ch01.merge", "failed", hint=mask_hint),
                            _item("q1.1", "not attempted", kind="question")],
               notes={0: ["ran in a sandbox"], 1: ["line 3: SyntaxError: invalid syntax"]}),
        Report("=di", "=di", [_item("ch01.merge", "not attempted"),
                              _item("q1.1", "not handed out", kind="question")]),
    ]


def test_csv_has_file_problems_and_explanations_apart_from_hints(klass):
    rows = list(csv.DictReader(io.StringIO(render_csv(klass))))
    assert list(rows[0]) == CSV_COLUMNS
    problem = [r for r in rows if r["kind"] == "file"]
    assert [(r["student"], r["item"], r["status"]) for r in problem] == \
        [("cy", CH01, "problem")]
    assert "SyntaxError" in problem[0]["message"]
    assert [(r["kind"], r["status"]) for r in rows if r["message"] == "ran in a sandbox"] == \
        [("note", "note")]
    ada_q = next(r for r in rows if r["student"] == "ada" and r["item"] == "q1.1")
    assert (ada_q["hint"], ada_q["explanation"]) == ("", "EXPL")
    assert {r["student"] for r in rows} >= {"'=di"}  # no spreadsheet formula from a name


def test_summary_per_student_and_per_item(klass):
    students = {r["student"]: r for r in csv.DictReader(io.StringIO(render_students_csv(klass)))}
    assert (students["ada"]["score"], students["ada"]["max_score"]) == ("2.0", "2.0")
    assert students["cy"]["file_problems"] == "1" and students["bob"]["failed"] == "2"
    assert students["'=di"]["not_handed_out"] == "1" and students["'=di"]["max_score"] == "1.0"
    assert students["bob"]["ch01"] == "0.0"
    items = {r["item"]: r for r in csv.DictReader(io.StringIO(render_items_csv(klass)))}
    merge = items["ch01.merge"]
    assert (merge["students"], merge["attempted"], merge["passed"], merge["pass_rate"]) == \
        ("4", "3", "1", "33.3")
    assert merge["common_hints"] == "2x looks like the causal mask is missing"
    q = items["q1.1"]
    assert (q["students"], q["attempted"], q["common_hints"]) == ("3", "2", "1x WHY NOT B")
    table = pass_rates(klass)
    assert re.search(r"ch01\.merge\s+4\s+3\s+1\s+33%\s+2x looks like", table)


def test_gradescope_shows_the_explanation_apart(klass):
    tests = json.loads(render_gradescope(klass[1]))["tests"]
    assert "Why not: WHY NOT B" in tests[1]["output"]
    tests = json.loads(render_gradescope(klass[0]))["tests"]
    assert "Why: EXPL" in tests[1]["output"]


def test_the_guides_recipes_run_as_written(klass, tmp_path, monkeypatch):
    guide = (REPO_DIR / "docs" / "instructors.md").read_text()
    assert "pandas" not in guide
    recipes = [b for b in re.findall(r"```python\n(.*?)```", guide, re.S) if "csv." in b]
    assert recipes
    (tmp_path / "grades.csv").write_text(render_csv(klass))
    (tmp_path / "grades-students.csv").write_text(render_students_csv(klass))
    (tmp_path / "grades-items.csv").write_text(render_items_csv(klass))
    monkeypatch.chdir(tmp_path)
    for recipe in recipes:
        exec(compile(recipe, "docs/instructors.md", "exec"), {})
    gradebook = list(csv.reader((tmp_path / "gradebook.csv").open()))
    assert gradebook[0] == ["student", "ch01.merge", "q1.1"] and len(gradebook) == 5


# ==============================================================================================
# a class from the command line


def test_class_in_gradescope_format_and_a_syntax_error_in_the_csv(tmp_path):
    klass = tmp_path / "class"
    solution = (SOLUTIONS / CH01).read_text()
    broken = solution.replace("def merge(ids, pair, new_id):", "def merge(ids, pair, new_id)")
    for name, text in [("alice", solution), ("bob", broken)]:
        (klass / name).mkdir(parents=True)
        (klass / name / CH01).write_text(text)
    assert _grade_cli("--submissions", str(klass), "--format", "text").returncode == 2
    out = tmp_path / "gs"
    run = _grade_cli("--submissions", str(klass), "--chapter", "1", "--format", "gradescope",
                     "--out", str(out))
    assert run.returncode == 0, run.stderr
    alice = json.loads((out / "alice" / "results.json").read_text())
    bob = json.loads((out / "bob" / "results.json").read_text())
    assert alice["score"] == alice["max_score"] > bob["score"]
    assert "SyntaxError" in bob["output"] or "syntax" in bob["output"].lower()
    students = {r["student"]: r for r in csv.DictReader((out / "grades-students.csv").open())}
    assert students["bob"]["file_problems"] != "0" and students["alice"]["file_problems"] == "0"
    run = _grade_cli("--submissions", str(klass), "--chapter", "1", "--out",
                     str(tmp_path / "grades.csv"))
    rows = list(csv.DictReader((tmp_path / "grades.csv").open()))
    assert any(r["student"] == "bob" and r["kind"] == "file" and r["status"] == "problem"
               for r in rows)
    assert (tmp_path / "grades-items.csv").exists()
