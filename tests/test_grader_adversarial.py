"""Trust and robustness: adversarial submissions earn nothing, and grading always finishes.

Each submission below is a copy of the solutions with one threat planted in one exercise (or at
the top of the file). The concerned exercise must earn zero; the other exercises of the same
submission must still be graded normally (the correct ones pass). All submissions are graded
together, as one class, with short time limits, from inside the class folder (so that folders
named `solutions` and `exercises` are the students'); the report-path attack and the exit code
go through the command line, since that is where reports are written.

Some guarantees hold only where the machine provides the mechanism (see isolation.py): the
attacks that need namespaces (reading a classmate's file, the solutions or the real library,
signalling every process) or a cgroup (memory of the whole submission) are planted only there.
"""

import csv
import io
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from minialign.course import isolation
from minialign.course.grader import RefusedAsRoot, grade_submissions, write_report
from minialign.course.markers import REPO_DIR
from minialign.course.report import render_csv, render_gradescope, render_json, render_text
from minialign.course.runner import Limits

SOLUTIONS = REPO_DIR / "solutions"
CH01, CH02, CH04 = "ch01_tokenizer.py", "ch02_gpt.py", "ch04_reward.py"
NAMESPACES = isolation.namespaces_work(not isolation.is_root())
CGROUPS = bool(isolation.cgroup_parents())
MARK = "7123.25"  # `sleep MARK`: a process a submission tried to leave behind

MERGE_DEF = "def merge(ids, pair, new_id):"
PAIRS_DEF = "def get_pair_counts(ids, counts=None, weight=1):"
GATHER_DEF = "def gather_logprobs(logits, tokens):"
FILTER_DEF = "def filter_logits(logits, top_k=None, top_p=None):"
STEP_DEF = "def pretrain_step("


def solution(filename: str) -> str:
    return (SOLUTIONS / filename).read_text()


def ch02_without_step() -> str:
    """The chapter 2 solutions without pretrain_step: its check trains a model, which needs
    more than the 3 s these submissions are graded with (the step is not what they test)."""
    return without_function(solution(CH02), STEP_DEF)


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
        {CH02: first_statement(ch02_without_step(), GATHER_DEF,
                               "waste = torch.ones(5 * 2**30)  # 20 GB")},
        {"ch02.gather_logprobs": "failed", "ch02.causal_self_attention": "passed",
         "ch02.filter_logits": "passed", "ch02.pretrain_step": "failed"}),
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
        {CH02: first_statement(first_statement(ch02_without_step(), GATHER_DEF, """
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
         "ch02.causal_self_attention": "passed", "ch02.pretrain_step": "failed"}),
    "monkeypatched_testing_helpers": (
        {CH02: at_top(first_statement(ch02_without_step(), GATHER_DEF,
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
         "ch02.filter_logits": "passed", "ch02.pretrain_step": "failed"}),
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


WRONG_MERGE = solution(CH01).replace("            i += 2", "            i += 1")
BOTH_PASS = {"ch01.merge": "passed", "ch01.get_pair_counts": "passed"}
NOTHING = {"ch01.merge": "failed", "ch01.get_pair_counts": "failed"}

# a folder -> {relative path: link target}; "@ROOT@" is the class folder
LINKS = {
    "link_to_solutions": {CH01: str(SOLUTIONS / CH01)},
    "link_to_a_classmate": {CH01: "@ROOT@/exception/" + CH01},
    "link_through_proc": {CH01: "/proc/self/cwd/solutions/" + CH01},
    "exercises_folder_is_a_link": {"exercises": str(SOLUTIONS)},
    "folder_is_a_link": {".": str(SOLUTIONS)},
}
SUBMISSIONS.update({
    # 1. links are never followed (the whole folder, one file, or a sub-folder)
    "link_to_solutions": ({}, NOTHING),
    "link_to_a_classmate": ({}, NOTHING),
    "link_through_proc": ({}, NOTHING),
    "exercises_folder_is_a_link": ({}, {"ch01.merge": "not attempted",
                                        "ch01.get_pair_counts": "not attempted"}),
    "folder_is_a_link": ({}, NOTHING),
    # 2. a student's folder is the student's, whatever its name
    "solutions": ({CH01: WRONG_MERGE}, {"ch01.merge": "failed", "ch01.get_pair_counts": "passed"}),
    "exercises": ({CH01: solution(CH01)}, BOTH_PASS),
    # 3. what a student's code sends cannot break or forge a report
    "surrogates_and_escapes": (
        {CH01: first_statement(solution(CH01), MERGE_DEF, """
            import sys
            sys.stdout.write("\\x1b[2J\\x1b]0;pwned\\x07 cleared your screen\\r\\n")
            raise ValueError("\\ud800 \\x1b[31mred\\x1b[0m \\x1b]8;;http://x\\x07link \\u202egnp.")
        """)},
        {"ch01.merge": "failed", "ch01.get_pair_counts": "passed"}),
    # 4. processes do not outlive grading; a fork bomb costs only its exercise
    "daemons_in_new_sessions": (
        {CH01: at_top(solution(CH01), f"""
            import os
            def _chain(n):
                if n and os.fork() == 0:
                    os.setsid()
                    if os.fork() == 0:
                        _chain(n - 1)
                        os.execv("/bin/sleep", ["sleep", "{MARK}"])
                    os._exit(0)
            _chain(20)
        """)}, BOTH_PASS),
    "fork_bomb": (
        {CH01: first_statement(solution(CH01), PAIRS_DEF, """
            import os
            for _ in range(2000):
                try:
                    os.fork()
                except OSError:
                    pass
        """)}, {"ch01.get_pair_counts": "failed", "ch01.merge": "passed"}),
    # 5. writes go to a private folder that is removed
    "writes_to_shared_tmp": (
        {CH01: at_top(solution(CH01), """
            import os
            for _folder in ("/tmp", "/var/tmp", "/dev/shm"):
                try:
                    with open(os.path.join(_folder, "PWNED_tmp_@ROOTNAME@"), "w") as _f:
                        _f.write("left behind")
                except OSError:
                    pass
        """)}, BOTH_PASS),
    # 10. read as Python reads; a bad byte or statement costs only what it touches
    "utf8_bom": ({CH01: "\ufeff" + solution(CH01)}, BOTH_PASS),
    "latin1_cookie": (
        {CH01: ("# -*- coding: latin-1 -*-\n# café\n" + solution(CH01)).encode("latin-1", "replace")},
        BOTH_PASS),
    "nul_byte_in_a_docstring": (
        {CH01: solution(CH01).replace('    """Replace every', '    """\0Replace every', 1)},
        {"ch01.merge": "failed", "ch01.get_pair_counts": "passed"}),
    "six_crashing_statements": (
        {CH01: at_top(solution(CH01), "import os\n" + "os._exit(3)\n" * 6)}, BOTH_PASS),
    # 12. the library is not the answer key while its chapter is graded
    "delegates_to_the_library": (
        {CH04: solution(CH04).replace("import torch\n", "import importlib\nimport minialign.reward"
                                      "\nimport torch\n", 1)
         .replace("def ranking_loss(rewards, mask=None):",
                  "def ranking_loss(rewards, mask=None):\n"
                  "    from minialign.reward import ranking_loss as rl\n"
                  "    return rl(rewards, mask)\n\n\ndef _unused(rewards, mask=None):")
         .replace("def preference_accuracy(chosen_rewards, rejected_rewards) -> float:",
                  "def preference_accuracy(chosen_rewards, rejected_rewards) -> float:\n"
                  "    module = importlib.import_module('minialign.' + 'reward')\n"
                  "    return getattr(module, 'preference_' + 'accuracy')(chosen_rewards, "
                  "rejected_rewards)\n\n\ndef _unused2(chosen_rewards, rejected_rewards):")
         + "\nbradley_terry_loss = minialign.reward.bradley_terry_loss\n"},
        {"ch04.bradley_terry_loss": "failed", "ch04.ranking_loss": "failed",
         "ch04.preference_accuracy": "failed", "ch04.last_token_scores": "passed",
         # the solution's reward_step, calling the delegating ranking_loss: no credit either
         "ch04.reward_step": "failed"}),
})
if NAMESPACES:
    SUBMISSIONS.update({
        # 6 and 12: student code sees neither classmates, nor the solutions, nor the library
        "reads_what_is_not_its_own": (
            {CH01: WRONG_MERGE + textwrap.dedent(f"""
                for _path in ["@ROOT@/exercises/{CH01}", "{SOLUTIONS / CH01}",
                              "{REPO_DIR / 'minialign' / 'tokenizer.py'}"]:
                    try:
                        with open(_path) as _f:
                            _text = _f.read().replace("from .", "from minialign.")
                        exec(_text, globals())  # a complete merge, if it could be read
                    except Exception:
                        pass
            """)},
            {"ch01.merge": "failed", "ch01.get_pair_counts": "passed"}),
        # 6: signals reach nothing outside the submission
        "signals_everything": (
            {CH01: first_statement(solution(CH01), MERGE_DEF, f"""
                import os, signal
                for _pid in [-1, os.getppid(), {os.getpid()}] + [
                        int(p) for p in os.listdir("/proc") if p.isdigit()]:
                    if _pid != os.getpid():
                        try:
                            os.kill(_pid, signal.SIGKILL)
                        except OSError:
                            pass
                raise RuntimeError("killed what it could")
            """)},
            {"ch01.merge": "failed", "ch01.get_pair_counts": "passed"}),
    })
if CGROUPS:
    SUBMISSIONS["memory_across_processes"] = (  # 5: the memory limit is the submission's
        {CH01: first_statement(solution(CH01), MERGE_DEF, """
            import os
            children = []
            for _ in range(6):
                pid = os.fork()
                if pid == 0:
                    block = bytearray(b"x") * (700 * 2**20)
                    os._exit(0)
                children.append(pid)
            if not all(os.waitpid(pid, 0)[1] == 0 for pid in children):
                raise MemoryError("a child process ran out of memory")
        """)}, {"ch01.merge": "failed", "ch01.get_pair_counts": "passed"})


def _write_class(root: Path, names) -> None:
    for name in names:
        files, _ = SUBMISSIONS[name]
        folder = root / name
        if LINKS.get(name, {}).get("."):
            folder.symlink_to(LINKS[name]["."])
            continue
        folder.mkdir()
        for filename, text in files.items():
            if isinstance(text, str):
                text = text.replace("@ROOTNAME@", root.name).replace("@ROOT@", str(root))
                text = text.encode("utf-8", "surrogatepass")
            (folder / filename).write_bytes(text)
        for filename, target in LINKS.get(name, {}).items():
            (folder / filename).symlink_to(target.replace("@ROOT@", str(root)))


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    root = tmp_path_factory.mktemp("class")
    _write_class(root, SUBMISSIONS)
    limits = Limits(load_s=4, memory_mb=1024)
    start = time.monotonic()
    here = os.getcwd()
    os.chdir(root)  # "./solutions" must still be the student's folder
    try:
        graded = grade_submissions(".", [1, 2, 4], time_limit=3, limits=limits, strict=True)
    finally:
        os.chdir(here)
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
            assert item.points == 0 and (item.status == "not attempted" or name in LINKS), item


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


# ==============================================================================================
# what the class fixture leaves behind, and what it says


def test_no_process_cgroup_or_file_is_left_behind(reports):
    _, root = reports
    sleepers = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if MARK.encode() in f.read():
                    sleepers.append(entry)
        except OSError:
            continue
    assert sleepers == []
    mine = f"-{os.getpid()}-"  # the grader's folders and cgroups carry its pid
    assert [p for p in os.listdir(tempfile_dir()) if p.startswith("minialign-") and mine in p] == []
    for controller in ("pids", "memory"):
        folder = isolation.cgroup_parents().get(controller)
        if folder is not None:
            assert [p for p in os.listdir(folder) if mine in p] == []
    if NAMESPACES or isolation.is_root():
        for folder in ("/tmp", "/var/tmp", "/dev/shm"):
            assert not os.path.exists(os.path.join(folder, f"PWNED_tmp_{root.name}"))


def tempfile_dir():
    import tempfile

    return tempfile.gettempdir()


def test_every_message_is_safe_in_every_format(reports):
    graded, _ = reports
    item = graded["surrogates_and_escapes"].item("ch01.merge")
    assert "\\ud800" in item.message and "red" in item.message
    for text in (render_text(r) for r in graded.values()):
        text.encode("utf-8")  # a lone surrogate would raise here
        assert "\x1b" not in text and "\u202e" not in text and "\r" not in text
    render_csv(list(graded.values())).encode("utf-8")
    render_json(list(graded.values())).encode("utf-8")
    for report in graded.values():
        render_gradescope(report).encode("utf-8")


def test_links_and_folder_names(reports):
    graded, _ = reports
    for name in ("link_to_solutions", "link_to_a_classmate", "link_through_proc",
                 "folder_is_a_link"):
        assert "link" in graded[name].item("ch01.merge").message, name
    assert graded["solutions"].item("ch01.merge").status == "failed"  # not the repository's


def test_encodings_and_bad_bytes_cost_only_what_they_touch(reports):
    graded, _ = reports
    nul = graded["nul_byte_in_a_docstring"]
    assert "nul" in " ".join(nul.notes.get(1, [])).lower()
    assert nul.item("q1.1").status == "passed"  # the questions are still graded
    notes = " ".join(graded["six_crashing_statements"].notes.get(1, []))
    assert notes.count("was skipped") == 6


def test_delegating_to_the_library_earns_nothing_and_says_why(reports):
    graded, _ = reports
    report = graded["delegates_to_the_library"]
    notes = " ".join(report.notes.get(4, []))
    assert "minialign.reward.bradley_terry_loss" in notes and "ranking_loss" in notes
    for exercise_id in ("ch04.bradley_terry_loss", "ch04.ranking_loss",
                        "ch04.preference_accuracy"):
        assert "library's version" in report.item(exercise_id).message, exercise_id


def test_the_report_says_how_student_code_was_isolated(reports):
    graded, _ = reports
    note = graded["exercises"].notes[0][0]
    assert note.startswith("student code ran")
    assert ("namespaces" in note) == NAMESPACES and ("cgroup" in note) == CGROUPS


# ==============================================================================================
# the command line, the report path, the wire


def test_a_class_from_the_command_line_exits_0_with_every_row(tmp_path):
    root = tmp_path / "class"
    root.mkdir()
    _write_class(root, ["solutions", "surrogates_and_escapes", "exercises"])
    out = tmp_path / "grades.csv"
    run = subprocess.run([sys.executable, "-m", "minialign.grade", "--submissions", ".",
                          "--chapter", "1", "--out", str(out), "--time-limit", "5"],
                         capture_output=True, cwd=root, timeout=600,
                         env=dict(os.environ, PYTHONPATH=str(REPO_DIR)))
    assert run.returncode == 0, run.stderr.decode("utf-8", "replace")
    assert b"\x1b" not in run.stdout + run.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    students = {row["student"] for row in rows}
    assert students == {"solutions", "surrogates_and_escapes", "exercises"}
    points = {(r["student"], r["item"]): float(r["points"]) for r in rows}
    assert points[("solutions", "ch01.merge")] == 0
    assert points[("exercises", "ch01.merge")] > 0


def test_a_folder_in_the_way_of_the_report_does_not_lose_it(tmp_path, capsys):
    blocked = tmp_path / "results.json"
    blocked.mkdir()
    written = write_report(blocked, "{}\n")
    assert written != blocked and written.read_text() == "{}\n"
    assert str(written) in capsys.readouterr().err


def test_compressed_frames_are_refused():
    import numpy as np

    from minialign.course import wire

    buffer = io.BytesIO()
    np.savez_compressed(buffer, a0=np.zeros(50 * 2**20, dtype=np.uint8))  # 50 MB in ~50 KB
    with pytest.raises(wire.ProtocolError, match="compressed"):
        wire.unpack(b"{}", buffer.getvalue())


# ==============================================================================================
# without namespaces or cgroups (a laptop, a container): still graded, and honest about it


def test_without_isolation_root_is_refused_for_a_class_unless_allowed(tmp_path, capsys):
    root = tmp_path / "class"
    root.mkdir()
    _write_class(root, ["solutions"])
    limits = Limits(load_s=10, namespaces=False, cgroups=False)
    probe = isolation.Isolation(limits)
    probe.close()
    if probe.as_root:  # root, and Python unreadable by any other user
        with pytest.raises(RefusedAsRoot, match="allow-root"):
            grade_submissions(root, [1], time_limit=5, limits=limits)
        limits.allow_root = True
        assert "AS ROOT" in probe.describe()
    (report,) = grade_submissions(root, [1], time_limit=5, limits=limits)
    assert report.item("ch01.merge").status == "failed"
    assert report.item("ch01.get_pair_counts").status == "passed"
    assert report.notes[0][0] == probe.describe()
    if probe.as_root:
        assert "AS ROOT" in capsys.readouterr().err


@pytest.mark.skipif(not isolation.is_root(), reason="needs root to run as another uid")
def test_without_namespaces_a_workers_uid_is_cleaned_up_after_it(tmp_path):
    from minialign.course.sandbox import kill_uid

    uid = isolation.LAST_UID
    left = Path("/tmp") / f"PWNED_uid_{tmp_path.name}"
    left.write_text("left behind")
    os.chown(left, uid, uid)
    sleeper = subprocess.Popen(["/bin/sleep", MARK], user=uid, group=uid,
                               start_new_session=True)
    try:
        kill_uid(uid)
        assert sleeper.wait(timeout=10) == -9
        isolation.remove_files_of(uid)
        assert not left.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
        left.unlink(missing_ok=True)
