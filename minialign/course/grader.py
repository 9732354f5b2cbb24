"""The grader: run the checks of every exercise and question against a folder, and report.

    python -m minialign.grade                                  the repository's exercises/
    python -m minialign.grade --impl solutions --chapter 2
    python -m minialign.grade --impl path/to/student --format gradescope --out results.json
    python -m minialign.grade --submissions path/to/class --out grades.csv

A folder holds chapter files with the generated names (ch01_tokenizer.py, ...). For each
chapter: the concept questions are graded from the `ANSWERS` dict, read without running the file;
an exercise whose body is still the untouched stub is "not attempted" without running anything;
the others are checked one by one in a sandboxed child (see runner.py and sandbox.py), which is
replaced after a crash or a timeout. Chapters (and students) are graded in parallel, two at a
time by default. Grading is all or nothing per item; points are in rubric.json.

The report lists, per item: points earned / possible, passed / failed / not attempted, what went
wrong (in which case), a hint naming the mistake it looks like, and what the student's code
printed (truncated). Formats: text, JSON, CSV (one row per student per item) and Gradescope's
results.json. The exit code is 0 whatever the grades; 2 for a usage error.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import os
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .checks import Check, CheckFailed, load_all_checks
from .markers import CHAPTERS, REPO_DIR, Exercise, find_exercises
from .questions import Question, questions_for
from .report import (FAILED, NOT_ATTEMPTED, PASSED, RENDERERS, Item, Report, pass_rates,
                     render_text, write_atomic)
from .runner import (GraderError, Limits, NotAttempted, Session, Student, StudentProblem,
                     truncate)
from .sandbox import parse_salvaging

RUBRIC_PATH = Path(__file__).with_name("rubric.json")
MAX_FILE_BYTES = 1_000_000  # a chapter file larger than this is not graded


@dataclass
class Rubric:
    exercises: dict
    questions: dict
    time_limit_s: float

    def points(self, item_id: str) -> float:
        entry = (self.questions if item_id.startswith("q") else self.exercises).get(item_id, 1)
        return float(entry["points"] if isinstance(entry, dict) else entry)

    def time_limit(self, item_id: str) -> float:
        entry = self.exercises.get(item_id)
        if isinstance(entry, dict) and "time_limit_s" in entry:
            return float(entry["time_limit_s"])
        return self.time_limit_s


def load_rubric(path: Path = RUBRIC_PATH) -> Rubric:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return Rubric(data.get("exercises", {}), data.get("questions", {}),
                  float(data.get("time_limit_s", 10)))


@dataclass
class Settings:
    limits: Limits
    rubric: Rubric
    jobs: int = 2  # chapters graded at the same time
    time_limit: float | None = None  # seconds per exercise; overrides the rubric's limits
    strict: bool = False  # re-raise errors of the checks themselves (for the course's tests)


# ==============================================================================================
# grading


def resolve_impl(impl: str | os.PathLike) -> Path:
    """'solutions' / 'exercises' -> the repository's folders; anything else is a path."""
    if str(impl) in ("solutions", "exercises"):
        candidates = [REPO_DIR / str(impl), Path.cwd() / str(impl), Path.cwd().parent / str(impl)]
        return next((c for c in candidates if c.is_dir()), candidates[0])
    folder = Path(impl).expanduser()
    if folder.is_dir() and not any(folder.glob("ch[0-9][0-9]_*.py")) \
            and (folder / "exercises").is_dir():
        return folder / "exercises"  # a whole copy of the repository was submitted
    return folder


def gradable_chapters() -> list[int]:
    exercises = find_exercises()
    return sorted({e.chapter for e in exercises} | {n for n in CHAPTERS if questions_for(n)})


def grade(impl="exercises", chapters=None, *, student: str | None = None,
          time_limit: float | None = None, memory_mb: int | None = None, jobs: int | None = None,
          strict: bool = False, limits: Limits | None = None) -> Report:
    """Grade one folder. chapters: list of numbers, or None for every chapter."""
    folder = resolve_impl(impl)
    settings = _settings(time_limit, memory_mb, jobs, strict, limits)
    name = student or (str(impl) if str(impl) in ("solutions", "exercises") else folder.name)
    return _grade_folders([(name, folder)], chapters, settings)[0]


def grade_submissions(folder, chapters=None, *, time_limit: float | None = None,
                      memory_mb: int | None = None, jobs: int | None = None, strict: bool = False,
                      limits: Limits | None = None) -> list[Report]:
    """Grade every sub-folder of `folder` (one per student), sorted by name."""
    settings = _settings(time_limit, memory_mb, jobs, strict, limits)
    students = [(p.name, resolve_impl(p)) for p in sorted(Path(folder).iterdir())
                if p.is_dir() and not p.name.startswith((".", "_"))]
    return _grade_folders(students, chapters, settings)


def _settings(time_limit, memory_mb, jobs, strict, limits) -> Settings:
    limits = limits or Limits()
    if memory_mb:
        limits.memory_mb = int(memory_mb)
    return Settings(limits=limits, rubric=load_rubric(), time_limit=time_limit,
                    jobs=jobs or min(2, os.cpu_count() or 1), strict=strict)


def _grade_folders(students, chapters, settings: Settings) -> list[Report]:
    checks = load_all_checks()  # every trusted module is imported before any child starts
    exercises = [e for e in find_exercises() if e.id in checks]
    available = gradable_chapters()
    chapters = available if chapters is None else [int(c) for c in chapters]
    unknown = [c for c in chapters if c not in available]
    if unknown:
        raise ValueError(f"no exercises or questions in chapter(s) {unknown}; "
                         f"chapters: {available}")
    unchecked = [e.id for e in find_exercises() if e.id not in checks and e.chapter in chapters]
    jobs = [(s, name, folder, ch) for s, (name, folder) in enumerate(students) for ch in chapters]
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, settings.jobs)) as pool:
        results = list(pool.map(lambda job: _grade_chapter_safely(job[2], job[3], exercises,
                                                                  settings), jobs))
    wall = time.monotonic() - start
    reports = [Report(name, str(folder), []) for name, folder in students]
    for (s, _, _, ch), (items, notes, seconds) in zip(jobs, results):
        reports[s].items.extend(items)
        if notes:
            reports[s].notes[ch] = notes
        reports[s].seconds += seconds
    for report in reports:
        if unchecked:
            report.notes.setdefault(0, []).append(
                f"not graded yet (no check written): {', '.join(unchecked)}")
        if len(reports) == 1:
            report.seconds = wall
    return reports


def _grade_chapter_safely(folder: Path, number: int, all_exercises, settings: Settings):
    """_grade_chapter, except that a bug of the grader costs this chapter, not the class."""
    try:
        return _grade_chapter(folder, number, all_exercises, settings)
    except Exception as e:  # noqa: BLE001
        if settings.strict:
            raise
        traceback.print_exc()
        message = f"internal error of the grader ({type(e).__name__}: {e}); please report it"
        items = [_item(ex.id, number, "exercise", ex.qualname, 0,
                       settings.rubric.points(ex.id), FAILED, message)
                 for ex in all_exercises if ex.chapter == number]
        items += [_item(q.id, number, "question", _title(q), 0, settings.rubric.points(q.id),
                        FAILED, message) for q in questions_for(number)]
        return items, [message], 0.0


def _grade_chapter(folder: Path, number: int, all_exercises, settings: Settings):
    start = time.monotonic()
    chapter = CHAPTERS[number]
    exercises = [e for e in all_exercises if e.chapter == number]
    questions = questions_for(number)
    rubric = settings.rubric
    path = Path(folder) / chapter.filename
    source, problem = _read_source(path)
    if source is None:
        status = NOT_ATTEMPTED if not path.exists() else FAILED
        items = [_item(e.id, number, "exercise", e.qualname, 0, rubric.points(e.id), status,
                       problem) for e in exercises]
        items += [_item(q.id, number, "question", _title(q), 0, rubric.points(q.id), status,
                        problem) for q in questions]
        return items, [], time.monotonic() - start

    tree, parse_problems = parse_salvaging(source, str(path))
    notes = [f"line {p['line']}: {p['message']}" if p.get("line") else p["message"]
             for p in parse_problems]
    to_run = [e for e in exercises if not is_untouched_stub(tree, e)]
    items = []
    session = Session(path, source, [e.qualname for e in to_run], settings.limits,
                      cpu_s=int(sum(_limit(e, settings) for e in to_run)
                                + settings.limits.load_s + 60)) if to_run else None
    try:
        for e in exercises:
            if e in to_run:
                items.append(_grade_exercise(session, e, settings))
            else:
                items.append(_item(e.id, number, "exercise", e.qualname, 0, rubric.points(e.id),
                                   NOT_ATTEMPTED, "the body is still the stub that raises "
                                   "NotImplementedError: write it"))
        if session is not None:
            notes += [f"line {p.get('line')}: {p.get('message')}" for p in session.problems
                      if "SyntaxError" not in str(p.get("message"))]
            printed = truncate(session.load_output, settings.limits.output_chars).strip()
            if printed:
                notes.append("your file printed while loading:\n" + printed)
            if session.load_failure:
                notes.append(session.load_failure)
    finally:
        if session is not None:
            session.close()
    items += grade_questions(tree, questions, rubric)
    return items, notes, time.monotonic() - start


def _limit(exercise: Exercise, settings: Settings) -> float:
    return settings.time_limit or settings.rubric.time_limit(exercise.id)


def _grade_exercise(session: Session, exercise: Exercise, settings: Settings) -> Item:
    spec = load_all_checks()[exercise.id]
    item = _item(exercise.id, exercise.chapter, "exercise", exercise.qualname, 0,
                 settings.rubric.points(exercise.id), FAILED)
    start = time.monotonic()
    check = None
    started = False
    try:
        if not session.ensure_loaded():
            item.message = session.load_failure
            return item
        problem = _definition_problem(session, exercise)
        if problem:
            item.message, item.hint = problem
            return item
        session.start_exercise(_limit(exercise, settings))
        started = True
        check = Check(exercise, Student(session))
        spec.fn(check)
        item.status, item.points = PASSED, item.max_points
    except NotAttempted as e:
        if session.calls <= 1:
            item.status = NOT_ATTEMPTED
            item.message = "your function raises NotImplementedError: write its body"
        else:
            item.message = _in_case(check, e.message + " (part of the function is still to "
                                                       "write?)")
    except (StudentProblem, CheckFailed) as e:
        item.message = _in_case(check, e.message)
        item.hint = e.hint
    except GraderError as e:
        item.message = f"the grader could not run your code: {e}"
        print(f"minialign.grade: {exercise.id}: {e}", file=sys.stderr)
    except Exception as e:  # a bug in the check itself, not the student's fault
        if settings.strict:
            raise
        item.message = (f"internal error in the check of {exercise.id} ({type(e).__name__}: {e}); "
                        f"please report it to the course staff")
        traceback.print_exc()
    finally:
        item.output = session.output().strip() if started else ""
        item.seconds = round(time.monotonic() - start, 3)
    return item


def _definition_problem(session: Session, exercise: Exercise):
    """(message, hint) when the student's file lacks the function or changed its signature."""
    info = session.info.get(exercise.qualname) or {"kind": "missing"}
    filename = session.path.name
    keep = "keep the name and the signature given in the exercise file"
    if info.get("kind") == "missing":
        lost = [p for p in session.problems
                if set(p.get("names") or []) & {exercise.name, exercise.qualname.split(".")[0]}]
        why = f" (line {lost[0]['line']}: {lost[0]['message']})" if lost else ""
        return f"{exercise.qualname} is not defined in {filename}{why}", keep
    if info.get("kind") != "function":
        what = str(info.get("type", info.get("kind")))[:100]
        return f"{exercise.qualname} in {filename} is a {what}, not a function", keep
    reference = inspect.signature(exercise.reference())
    expected = [[p.name, p.kind.name] for p in reference.parameters.values()]
    if info.get("params") != expected:
        return (f"the signature changed: expected {exercise.name}{reference}, found "
                f"{exercise.name}{str(info.get('signature', '?'))[:300]}", keep)
    return None


def _in_case(check, message: str) -> str:
    case = check.case_name if check is not None else ""
    return f'in case "{case}": {message}' if case else message


def _item(item_id, chapter, kind, title, points, max_points, status, message="") -> Item:
    return Item(item_id, chapter, kind, title, points, max_points, status, message)


def _read_source(path: Path):
    """(text, "") or (None, why not)."""
    if not path.is_file():
        return None, f"{path.name} not found in {path.parent}"
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        return None, f"{path.name} is {size} bytes; files over {MAX_FILE_BYTES} are not graded"
    try:
        return path.read_bytes().decode("utf-8"), ""
    except UnicodeDecodeError:
        return None, f"{path.name} is not UTF-8 text"


def is_untouched_stub(tree, exercise: Exercise) -> bool:
    """True when the file binds the exercise's name once, to a def whose body is only
    `raise NotImplementedError(...)` (after the docstring): nothing to run."""
    if tree is None:
        return False
    root = exercise.qualname.split(".")[0]
    bound = [_bound_names(node) for node in tree.body]
    if any("*" in names for names in bound):
        return False  # globals()[...] = ..., exec(...): only running the file can tell
    binders = [node for node, names in zip(tree.body, bound) if root in names]
    if len(binders) != 1:
        return False
    node = binders[0]
    if exercise.is_method:
        if not isinstance(node, ast.ClassDef):
            return False
        methods = [m for m in node.body if exercise.name in _bound_names(m)]
        if len(methods) != 1:
            return False
        node = methods[0]
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return False
    body = node.body[1:] if ast.get_docstring(node) is not None else node.body
    if len(body) != 1 or not isinstance(body[0], ast.Raise):
        return False
    exc = body[0].exc
    target = exc.func if isinstance(exc, ast.Call) else exc
    return isinstance(target, ast.Name) and target.id == "NotImplementedError"


def _bound_names(node) -> set[str]:
    """Names a top-level statement may bind (generous: more names only means running the file)."""
    names = set()
    for sub in ast.walk(node):
        if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(sub.name)
        elif isinstance(sub, ast.Name) and not isinstance(sub.ctx, ast.Load):
            names.add(sub.id)
        elif isinstance(sub, ast.alias):
            names.add((sub.asname or sub.name).split(".")[0])
        elif isinstance(sub, (ast.Global, ast.Nonlocal)):
            names.update(sub.names)
        elif isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) \
                and sub.func.id in ("globals", "setattr", "exec", "eval", "vars"):
            names.add("*")
    return names


# ==============================================================================================
# concept questions


def read_answers(tree) -> tuple[dict, str]:
    """The ANSWERS dict of a file, read from its syntax tree (the file is not run).

    Understood: `ANSWERS = {...}`, `ANSWERS["q1.1"] = "b"` and `ANSWERS.update({...})` with
    literal values. Returns (answers, problem)."""
    answers: dict = {}
    problem = ""
    for stmt in tree.body if tree is not None else []:
        try:
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                target = stmt.targets[0]
                if isinstance(target, ast.Name) and target.id == "ANSWERS":
                    value = ast.literal_eval(stmt.value)
                    if not isinstance(value, dict):
                        raise ValueError("not a dict")
                    answers = dict(value)
                elif isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name) \
                        and target.value.id == "ANSWERS":
                    answers[ast.literal_eval(target.slice)] = ast.literal_eval(stmt.value)
            elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
                call = stmt.value
                if isinstance(call.func, ast.Attribute) and call.func.attr == "update" \
                        and isinstance(call.func.value, ast.Name) \
                        and call.func.value.id == "ANSWERS" and len(call.args) == 1:
                    answers.update(ast.literal_eval(call.args[0]))
        except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
            problem = (f"line {stmt.lineno}: ANSWERS must hold plain values written out "
                       f"(\"b\", [\"c\", \"a\"]), not computed ones")
    return answers, problem


def grade_questions(tree, questions: list[Question], rubric: Rubric) -> list[Item]:
    answers, problem = read_answers(tree)
    items = []
    for q in questions:
        given = answers.get(q.id)
        status, message = q.grade(given)
        if status == NOT_ATTEMPTED and problem:
            message = problem
        item = _item(q.id, q.chapter, "question", _title(q), 0, rubric.points(q.id), status,
                     message)
        if status == PASSED:
            item.points = item.max_points
        if given is not None:
            item.hint = q.explanation
        items.append(item)
    return items


def _title(q: Question) -> str:
    return q.text if len(q.text) <= 70 else q.text[:67].rstrip() + "..."



# ==============================================================================================
# command line


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m minialign.grade",
        description="Grade minialign exercises and concept questions.")
    parser.add_argument("--impl", default="exercises",
                        help="'exercises' (default), 'solutions', or a student's folder")
    parser.add_argument("--chapter", type=int, action="append",
                        help="grade this chapter only (repeat for several; default: all)")
    parser.add_argument("--format", choices=sorted(RENDERERS), default="text")
    parser.add_argument("--out", help="write the report here (atomically, once grading is over)")
    parser.add_argument("--submissions", metavar="DIR",
                        help="grade every sub-folder of DIR (one per student) into one CSV "
                             "(or JSON) report; prints the pass rate of each item")
    parser.add_argument("--student", help="the student's name in the report")
    parser.add_argument("--time-limit", type=float, metavar="S",
                        help="seconds per exercise (default: from rubric.json)")
    parser.add_argument("--memory-mb", type=int, metavar="MB",
                        help="memory a student's code may use on top of torch (default 2048)")
    parser.add_argument("--jobs", type=int, help="chapters graded at the same time (default 2)")
    args = parser.parse_args(argv)

    try:
        if args.submissions:
            if not Path(args.submissions).is_dir():
                parser.error(f"--submissions {args.submissions}: not a folder")
            if args.format in ("text", "gradescope"):
                args.format = "csv"
            reports = grade_submissions(args.submissions, args.chapter,
                                        time_limit=args.time_limit, memory_mb=args.memory_mb,
                                        jobs=args.jobs)
            out = args.out or ("grades.csv" if args.format == "csv" else "grades.json")
            write_atomic(out, RENDERERS[args.format](reports))
            print(pass_rates(reports))
            print(f"wrote {out}")
            return 0
        folder = resolve_impl(args.impl)
        if not folder.is_dir():
            parser.error(f"--impl {args.impl}: no such folder ({folder})")
        report = grade(args.impl, args.chapter, student=args.student, time_limit=args.time_limit,
                       memory_mb=args.memory_mb, jobs=args.jobs)
    except ValueError as e:
        parser.error(str(e))
    text = RENDERERS[args.format](report)
    try:
        _emit(args, report, text)
    except BrokenPipeError:  # `... | head`
        sys.stderr.close()
    return 0


def _emit(args, report: Report, text: str) -> None:
    if args.out:
        write_atomic(args.out, text)
        if args.format != "text":
            print(render_text(report))
        print(f"wrote {args.out}")
    else:
        print(text, end="" if text.endswith("\n") else "\n")
