"""The exercise build: markers, generated files, `build --check`, and the course's consistency."""

import importlib.util
import io
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from minialign.course import build as build_lib
from minialign.course.markers import (CHAPTERS, REPO_DIR, MarkerError, exercises_in_source,
                                      find_exercises)
from minialign.course.questions import Key, Question, all_questions


def test_committed_files_are_up_to_date():
    run = subprocess.run([sys.executable, "-m", "minialign.course", "build", "--check"],
                         capture_output=True, text=True, cwd=REPO_DIR, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def test_check_shows_a_diff_when_stale(tmp_path):
    shutil.copytree(REPO_DIR / "minialign", tmp_path / "minialign",
                    ignore=shutil.ignore_patterns("__pycache__"))
    out = io.StringIO()
    assert build_lib.build(tmp_path, out=out) == 0
    assert build_lib.build(tmp_path, check=True, out=io.StringIO()) == 0
    path = tmp_path / "exercises" / "ch02_gpt.py"
    path.write_text(path.read_text().replace("about 10 minutes", "about 11 minutes"))
    (tmp_path / "solutions" / "ch01_tokenizer.py").unlink()
    out = io.StringIO()
    assert build_lib.build(tmp_path, check=True, out=out) == 1
    report = out.getvalue()
    assert "-    # exercise ch02.gather_logprobs · difficulty ★☆☆ · about 11 minutes" in report
    assert "solutions/ch01_tokenizer.py: missing" in report
    assert "python -m minialign.course build" in report


def test_build_refuses_to_overwrite_student_work(tmp_path):
    shutil.copytree(REPO_DIR / "minialign", tmp_path / "minialign",
                    ignore=shutil.ignore_patterns("__pycache__"))
    assert build_lib.build(tmp_path, out=io.StringIO()) == 0
    path = tmp_path / "exercises" / "ch01_tokenizer.py"
    path.write_text(path.read_text().replace(
        'raise NotImplementedError("exercise ch01.merge: write this body")', "return ids"))
    assert build_lib.build(tmp_path, out=io.StringIO()) == 1
    assert "return ids" in path.read_text()
    assert build_lib.build(tmp_path, force=True, out=io.StringIO()) == 0
    assert "return ids" not in path.read_text()


def _import(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


@pytest.mark.parametrize("folder", ["exercises", "solutions"])
def test_generated_files_import_on_their_own(folder):
    exercises = find_exercises()
    for number, chapter in CHAPTERS.items():
        path = REPO_DIR / folder / chapter.filename
        chapter_exercises = [e for e in exercises if e.chapter == number]
        if not path.exists():
            assert not chapter_exercises
            continue
        module = _import(path, f"generated_{folder}_{number}")
        for e in chapter_exercises:
            obj = module
            for part in e.qualname.split("."):
                obj = getattr(obj, part)
            assert callable(obj)
        questions = [q for q in all_questions() if q.chapter == number]
        if questions:
            expected = {q.id: (q.answer_literal if folder == "solutions" else None)
                        for q in questions}
            assert module.ANSWERS == expected


def test_stubs_raise_not_implemented_with_the_exercise_id():
    module = _import(REPO_DIR / "exercises" / "ch02_gpt.py", "generated_stub_check")
    with pytest.raises(NotImplementedError, match=r"exercise ch02\.gather_logprobs"):
        module.gather_logprobs(None, None)
    text = (REPO_DIR / "exercises" / "ch02_gpt.py").read_text()
    assert "python -m minialign.grade --impl exercises --chapter 2" in text
    assert "This file is yours: edit it." in text
    assert "python -m minialign pretrain --impl exercises" in text  # train with it
    assert "Library code: minialign/model.py, minialign/pretrain.py." in text
    assert "Try first" in text
    assert "difficulty ★★☆ · about 20 minutes" in text


LIBRARY = {
    "alpha.py": '''
        """A fake library module."""

        import math
        from dataclasses import dataclass

        import torch.nn.functional as F

        from .beta import helper

        SCALE = 2.0


        def _private():
            return 1


        def double(x):
            """Twice x: (B,) -> (B,)."""
            # >>> exercise: chapter=1 difficulty=1 minutes=5
            # hint: multiply by SCALE
            #   (a continued hint line)
            return x * SCALE + 0 * _private()
            # <<< exercise


        def quadruple(x):
            """Four times x, by calling double twice."""
            # >>> exercise: chapter=1 difficulty=2 minutes=10
            return double(double(x)) + 0 * math.pi * helper()
            # <<< exercise


        @dataclass
        class Controller:
            """A class whose update is the exercise."""

            value: float = 1.0

            def scale(self):
                return self.value * 2

            def update(self, factor):
                """Multiply value by factor and return it."""
                # >>> exercise: chapter=1 difficulty=3 minutes=20
                self.value = F.relu(self.value * factor)
                return self.value
                # <<< exercise
    ''',
    "beta.py": '''
        def helper():
            return 0
    ''',
}


def test_build_from_a_fake_library(tmp_path):
    lib = tmp_path / "minialign"
    lib.mkdir()
    for name, text in LIBRARY.items():
        (lib / name).write_text(textwrap.dedent(text).lstrip())
    exercises = find_exercises(lib)
    assert [e.id for e in exercises] == ["ch01.double", "ch01.quadruple",
                                          "ch01.Controller.update"]
    files = build_lib.render_all(lib)
    stub = files["exercises/ch01_tokenizer.py"]
    full = files["solutions/ch01_tokenizer.py"]
    # the two files differ only inside the regions
    assert stub.count("raise NotImplementedError") == 3
    assert "return double(double(x))" in full and "return double(double(x))" not in stub
    # hints stay in the stub
    assert "# hint: multiply by SCALE\n    #   (a continued hint line)\n    raise" in stub
    # the class comes whole, with only the marked method stubbed
    assert "    def scale(self):\n        return self.value * 2" in stub
    assert 'raise NotImplementedError("exercise ch01.Controller.update: write this body")' in stub
    assert "@dataclass\nclass Controller:" in stub
    # imports: the module's own import lines, library names, nothing for local definitions
    for line in ["import math", "from dataclasses import dataclass",
                 "import torch.nn.functional as F", "from minialign.alpha import SCALE, _private",
                 "from minialign.beta import helper"]:
        assert line + "\n" in stub and line + "\n" in full, line
    assert "import double" not in full  # quadruple calls the student's double
    compile(stub, "stub", "exec")
    compile(full, "full", "exec")


@pytest.mark.parametrize("body, error", [
    ('    """Doc."""\n    # >>> exercise: chapter=1 difficulty=1 minutes=5\n    return 1\n',
     "lacks"),  # no end marker -> counted as unpaired
    ('    """Doc."""\n    x = 1\n    # >>> exercise: chapter=1 difficulty=1 minutes=5\n'
     '    return x\n    # <<< exercise\n', "outside its exercise region"),
    ('    # >>> exercise: chapter=1 difficulty=1 minutes=5\n    return 1\n    # <<< exercise\n',
     "no docstring"),
    ('    """Doc."""\n    # >>> exercise: chapter=9 difficulty=1 minutes=5\n    return 1\n'
     '    # <<< exercise\n', "chapter=9"),
    ('    """Doc."""\n    # >>> exercise: chapter=1 level=1 minutes=5\n    return 1\n'
     '    # <<< exercise\n', "unknown marker attribute"),
])
def test_marker_errors_are_readable(body, error):
    source = "def f():\n" + body
    with pytest.raises(MarkerError) as info:
        exercises_in_source(source, Path("fake.py"))
    message = str(info.value)
    assert "fake.py:" in message
    if error != "lacks":
        assert error in message


def test_question_answers_fit_their_options():
    with pytest.raises(ValueError):
        Question("q9.1", "choice", "?", ("a", "b"), Key("c", "", {"a": "", "b": ""}))
    with pytest.raises(ValueError):
        Question("q9.1", "order", "?", ("a", "b"), Key(("a", "a"), "", {"a": "", "b": ""}))
    with pytest.raises(ValueError):  # every wrong option needs its feedback, the right one none
        Question("q9.1", "choice", "?", ("a", "b"), Key("a", "", {"a": "", "b": ""}))
    q = all_questions()[0]
    assert q.grade(None)[0] == "not attempted"
    assert q.grade(q.answer.upper())[0] == "passed"
    assert q.grade(f"({q.answer})")[0] == "passed"
    assert q.grade("banana")[0] == "failed"
    order = next(q for q in all_questions() if q.kind == "order")
    assert order.grade(list(order.answer))[0] == "passed"
    assert order.grade("".join(order.answer))[0] == "passed"
    assert order.grade(", ".join(order.answer).upper())[0] == "passed"
    assert order.grade(list(reversed(order.answer)))[0] == "failed"
    assert "exactly once" in order.grade(["a"] * len(order.answer))[1]
