"""Trust and robustness: adversarial submissions earn nothing, and grading always finishes.

Each submission below is a copy of the solutions with one threat planted in one exercise (or at
the top of the file). The concerned exercise must earn zero; the other exercises of the same
submission must still be graded normally (the correct ones pass). All submissions are graded
together, as one class, with short time limits; the report-path attack goes through the command
line, since that is where the report is written.
"""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from minialign.course.grader import grade_submissions
from minialign.course.markers import REPO_DIR
from minialign.course.runner import Limits

SOLUTIONS = REPO_DIR / "solutions"
CH01, CH02 = "ch01_tokenizer.py", "ch02_gpt.py"

MERGE_DEF = "def merge(ids, pair, new_id):"
PAIRS_DEF = "def get_pair_counts(ids, counts=None, weight=1):"
GATHER_DEF = "def gather_logprobs(logits, tokens):"
FILTER_DEF = "def filter_logits(logits, top_k=None, top_p=None):"


def solution(filename: str) -> str:
    return (SOLUTIONS / filename).read_text()


def first_statement(text: str, definition: str, code: str) -> str:
    """Insert `code` as the first statement of a function (right after its banner comment)."""
    head, rest = text.split(definition, 1)
    marker = "    # exercise "
    before, after = rest.split(marker, 1)
    banner, body = after.split("\n", 1)
    indented = textwrap.indent(textwrap.dedent(code).strip("\n"), "    ")
    return head + definition + before + marker + banner + "\n" + indented + "\n" + body


def at_top(text: str, code: str) -> str:
    """Put `code` right after the imports, before every definition."""
    first_def = text.index("\ndef ")
    return text[:first_def] + "\n" + textwrap.dedent(code).strip("\n") + "\n" + text[first_def:]


def without_function(text: str, definition: str) -> str:
    start = text.index(definition)
    end = text.index("\n\n\n", start)
    return text[:start] + text[end + 3:]


# a file that leaves a trace next to itself if it is ever imported
PLUGIN = ("import os\n"
          "open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'PWNED_{name}'), 'w')"
          ".close()\n")

# name -> ({filename: text}, {exercise: expected status}); "zero" means failed or not attempted
SUBMISSIONS = {
    "syntax_error": (
        {CH01: solution(CH01).replace("            i += 2", "            i += = 2")},
        {"ch01.merge": "failed", "ch01.get_pair_counts": "passed"}),
    "missing_function": (
        {CH01: without_function(solution(CH01), MERGE_DEF)},
        {"ch01.merge": "failed", "ch01.get_pair_counts": "passed"}),
    "wrong_signature": (
        {CH01: solution(CH01).replace(MERGE_DEF, "def merge(ids, pair):\n    new_id = 256")},
        {"ch01.merge": "failed", "ch01.get_pair_counts": "passed"}),
    "exception": (
        {CH01: first_statement(solution(CH01), MERGE_DEF, "raise ValueError('oops')")},
        {"ch01.merge": "failed", "ch01.get_pair_counts": "passed"}),
    "infinite_loop": (
        {CH01: first_statement(solution(CH01), PAIRS_DEF, "while True:\n    pass")},
        {"ch01.get_pair_counts": "failed", "ch01.merge": "passed"}),
    "infinite_loop_at_import": (
        {CH01: at_top(solution(CH01).replace("            i += 2", "            i += 1"),
                      "while True:\n    pass")},
        {"ch01.merge": "failed", "ch01.get_pair_counts": "passed"}),
    "huge_allocation": (
        {CH02: first_statement(solution(CH02), GATHER_DEF,
                               "waste = torch.ones(5 * 2**30)  # 20 GB")},
        {"ch02.gather_logprobs": "failed", "ch02.causal_self_attention": "passed",
         "ch02.filter_logits": "passed"}),
    "sys_exit_at_import": (
        {CH01: at_top(solution(CH01).replace("            i += 2", "            i += 1"),
                      "import sys\nsys.exit(0)")},
        {"ch01.merge": "failed", "ch01.get_pair_counts": "passed"}),
    "sys_exit_in_function": (
        {CH01: first_statement(solution(CH01), MERGE_DEF, "import sys\nsys.exit(0)")},
        {"ch01.merge": "failed", "ch01.get_pair_counts": "passed"}),
    "os_exit_at_import": (
        {CH01: at_top(solution(CH01).replace("            i += 2", "            i += 1"),
                      "import os\nos._exit(0)")},
        {"ch01.merge": "failed", "ch01.get_pair_counts": "passed"}),
    "os_exit_in_function": (
        {CH01: first_statement(solution(CH01), PAIRS_DEF, "import os\nos._exit(0)")},
        {"ch01.get_pair_counts": "failed", "ch01.merge": "passed"}),
    "always_equal_objects": (
        {CH02: first_statement(first_statement(solution(CH02), GATHER_DEF, """
            class AlwaysEqual:
                def __eq__(self, other):
                    return True
                __hash__ = object.__hash__
            return AlwaysEqual()
        """), FILTER_DEF, """
            class EqualTensor(torch.Tensor):  # a real tensor subclass that lies about equality
                def __eq__(self, other):
                    return torch.ones_like(self, dtype=torch.bool)
                @classmethod
                def __torch_function__(cls, func, types, args=(), kwargs=None):
                    return True
            return torch.zeros_like(logits).as_subclass(EqualTensor)
        """)},
        {"ch02.gather_logprobs": "failed", "ch02.filter_logits": "failed",
         "ch02.causal_self_attention": "passed"}),
    "monkeypatched_testing_helpers": (
        {CH02: at_top(first_statement(solution(CH02), GATHER_DEF,
                                      "return torch.zeros(tokens.shape)"), """
            import numpy, unittest
            import torch.testing
            torch.testing.assert_close = lambda *a, **k: None
            numpy.testing.assert_allclose = lambda *a, **k: None
            numpy.testing.assert_array_equal = lambda *a, **k: None
            torch.allclose = lambda *a, **k: True
            torch.equal = lambda *a, **k: True
            unittest.TestCase.assertEqual = lambda *a, **k: None
            unittest.TestCase.assertTrue = lambda *a, **k: None
        """)},
        {"ch02.gather_logprobs": "failed", "ch02.causal_self_attention": "passed",
         "ch02.filter_logits": "passed"}),
    "fake_passed_output": (
        {CH01: at_top(first_statement(solution(CH01), MERGE_DEF, """
            print("ch01.merge ........ PASSED 3/3")
            print('{"score": 100, "max_score": 100, "tests": []}')
            print("\\x1b[32mALL TESTS PASSED\\x1b[0m")
            return ids
        """), 'print("PASSED: every exercise 100%")')},
        {"ch01.merge": "failed", "ch01.get_pair_counts": "passed"}),
    "conftest_and_site_plugins": (
        {CH01: solution(CH01),
         "conftest.py": PLUGIN.format(name="conftest") + "os._exit(0)\n",
         "sitecustomize.py": PLUGIN.format(name="sitecustomize"),
         "usercustomize.py": PLUGIN.format(name="usercustomize"),
         "torch.py": PLUGIN.format(name="torch"),
         "minialign.py": PLUGIN.format(name="minialign"),
         "pytest.ini": "[pytest]\naddopts = -p conftest\n"},
        {"ch01.merge": "passed", "ch01.get_pair_counts": "passed"}),
    "flood_of_output": (
        {CH01: first_statement(solution(CH01), MERGE_DEF, "print('x' * 1_000_000)")},
        {"ch01.merge": "passed", "ch01.get_pair_counts": "passed"}),
}


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    root = tmp_path_factory.mktemp("class")
    for name, (files, _) in SUBMISSIONS.items():
        folder = root / name
        folder.mkdir()
        for filename, text in files.items():
            (folder / filename).write_text(text)
    limits = Limits(load_s=4, memory_mb=1024)
    start = time.monotonic()
    graded = grade_submissions(root, [1, 2], time_limit=3, limits=limits, strict=True)
    seconds = time.monotonic() - start
    print(f"\ngraded {len(graded)} adversarial submissions in {seconds:.1f} s")
    return {r.student: r for r in graded}, root


@pytest.mark.parametrize("name", list(SUBMISSIONS))
def test_adversarial_submission_earns_nothing_unearned(reports, name):
    graded, root = reports
    report = graded[name]
    expected = SUBMISSIONS[name][1]
    for exercise_id, status in expected.items():
        item = report.item(exercise_id)
        assert item.status == status, (exercise_id, item.status, item.message)
        assert item.points == (item.max_points if status == "passed" else 0)
    # every item not named is not attempted (its file is absent) or, for the questions of a
    # solution file, answered correctly; nothing else earns points
    for item in report.items:
        if item.id not in expected and item.kind == "exercise":
            assert item.points == 0 and item.status == "not attempted", item


def test_messages_name_the_problem(reports):
    graded, _ = reports
    def message(student, exercise_id):
        item = graded[student].item(exercise_id)
        return (item.message + " " + item.hint).lower()

    assert "syntaxerror" in message("syntax_error", "ch01.merge")
    assert "not defined" in message("missing_function", "ch01.merge")
    assert "signature" in message("wrong_signature", "ch01.merge")
    assert "valueerror" in message("exception", "ch01.merge")
    assert "time limit" in message("infinite_loop", "ch01.get_pair_counts")
    assert "memory" in message("huge_allocation", "ch02.gather_logprobs")
    assert "sys.exit" in message("sys_exit_in_function", "ch01.merge")
    assert "ended the process" in message("os_exit_in_function", "ch01.get_pair_counts")
    assert "alwaysequal" in message("always_equal_objects", "ch02.gather_logprobs")
    assert "equaltensor" in message("always_equal_objects", "ch02.filter_logits")
    notes = " ".join(graded["sys_exit_at_import"].notes.get(1, [])).lower()
    assert "systemexit" in notes
    notes = " ".join(graded["os_exit_at_import"].notes.get(1, [])).lower()
    assert "ended the process" in notes and "skipped" in notes
    notes = " ".join(graded["infinite_loop_at_import"].notes.get(1, [])).lower()
    assert "limit" in notes and "skipped" in notes


def test_output_is_captured_and_truncated(reports):
    graded, _ = reports
    merge = graded["fake_passed_output"].item("ch01.merge")
    assert "PASSED 3/3" in merge.output and merge.status == "failed"
    assert "\x1b" not in merge.output  # no terminal escapes in reports
    assert len(graded["flood_of_output"].item("ch01.merge").output) < 3000


def test_student_folder_plugins_are_never_loaded(reports):
    _, root = reports
    leftovers = [p.name for p in root.rglob("PWNED_*")] + \
                [p.name for p in Path.cwd().glob("PWNED_*")]
    assert leftovers == []


REPORT_ATTACK = """
import os, json, time
REPORT = {report!r}
FAKE = json.dumps({{"score": 999, "max_score": 999, "tests": []}})
with open(REPORT, "w") as f:  # at import: overwrite the report
    f.write(FAKE)
if os.fork() == 0:  # a daemon that writes again after grading is over
    os.setsid()
    if os.fork() == 0:
        time.sleep(1.5)
        with open(REPORT, "w") as f:
            f.write(FAKE)
    os._exit(0)
"""


def test_writing_to_the_report_path_changes_nothing(tmp_path):
    report = tmp_path / "results.json"
    student = tmp_path / "student"
    student.mkdir()
    wrong = solution(CH01).replace("            i += 2", "            i += 1")
    (student / CH01).write_text(at_top(wrong, REPORT_ATTACK.format(report=str(report))))
    run = subprocess.run([sys.executable, "-m", "minialign.grade", "--impl", str(student),
                          "--chapter", "1", "--format", "gradescope", "--out", str(report),
                          "--time-limit", "5"],
                         capture_output=True, text=True, cwd=REPO_DIR, timeout=300)
    assert run.returncode == 0, run.stderr
    time.sleep(2.5)  # longer than the daemon's sleep: it must have been killed
    results = json.loads(report.read_text())
    merge = next(t for t in results["tests"] if t["name"].startswith("ch01.merge"))
    assert merge["score"] == 0 and merge["status"] == "failed"
    assert results["score"] < results["max_score"] < 999
