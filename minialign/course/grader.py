"""The grader: run the checks of every exercise and question against a folder, and report.

    python -m minialign.grade                                  the repository's exercises/
    python -m minialign.grade --impl solutions --chapter 2
    python -m minialign.grade --impl path/to/student --format gradescope --out results.json
    python -m minialign.grade --submissions path/to/class --out grades.csv

A folder holds chapter files with the generated names (ch01_tokenizer.py, ...). For each
chapter: the concept questions are graded from the `ANSWERS` dict, read without running the file;
an exercise whose body is still the untouched stub is "not attempted" without running anything;
the others are checked one by one in a sandboxed child (see runner.py, sandbox.py and
isolation.py), which is replaced after a crash or a timeout. Then a chapter's capstone, if it
has one (capstone.py: chapters 5 and 6), trains a small policy with every function the student
wrote, in a fresh child, and the trained policy is measured here with the gold reward
(`--no-capstones` leaves them out). Chapters (and students) are graded in parallel, two at a
time by default. Grading is all or nothing per item; points are in rubric.json.

A submission is read as regular files only, never through a link, never outside its folder, and
decoded as Python does (a coding cookie, a UTF-8 BOM). With `--submissions DIR` every sub-folder
is a student's, whatever its name. Every string in a report that came from student code is
cleaned first (`runner.clean`), and reports are written once every student process is dead.

The report lists, per item: points earned / possible, passed / failed / not attempted, what went
wrong (in which case), a hint naming the mistake it looks like, and what the student's code
printed (truncated). With `--hints [N]` (`hints=` in `grade`), each exercise not passed also
shows its first N hints, or all of them: they are written in the library's exercise region,
gentlest first, the last one down to the formula (see markers.py); without it the report
gives no exercise's formula away. Formats: text, JSON, CSV (one row per student per item)
and Gradescope's results.json. The exit code is 0 whatever the grades; 2 for a usage error.
"""

from __future__ import annotations

import argparse
import ast
import errno
import inspect
import io
import json
import os
import stat
import sys
import tokenize
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .capstone import Capstone, capstones_for
from .checks import Check, CheckFailed, load_all_checks
from .checks_capstones import check_capstone, start as capstone_start
from .markers import CHAPTERS, REPO_DIR, Exercise, find_exercises
from .questions import Question, load_answer_key, questions_for
from .report import (FAILED, NOT_ATTEMPTED, NOT_HANDED_OUT, PASSED, RENDERERS, Item, Report,
                     pass_rates, render_gradescope, render_items_csv, render_students_csv,
                     render_text, write_atomic)
from .versions import file_version, load_history
from .isolation import Isolation
from .runner import (GraderError, Limits, NotAttempted, Session, Student, StudentProblem, clean,
                     truncate)
from .sandbox import parse_salvaging
from .stublib import STUB_MESSAGE, library_uses

RUBRIC_PATH = Path(__file__).with_name("rubric.json")
MAX_FILE_BYTES = 1_000_000  # a chapter file larger than this is not graded


@dataclass
class Rubric:
    exercises: dict
    questions: dict
    time_limit_s: float
    capstones: dict = field(default_factory=dict)  # capstone.py: a chapter's functions together

    def points(self, item_id: str) -> float:
        section = self.questions if item_id.startswith("q") else \
            self.capstones if item_id in self.capstones else self.exercises
        entry = section.get(item_id, 1)
        return float(entry["points"] if isinstance(entry, dict) else entry)

    def time_limit(self, item_id: str) -> float:
        entry = self.capstones.get(item_id, self.exercises.get(item_id))
        if isinstance(entry, dict) and "time_limit_s" in entry:
            return float(entry["time_limit_s"])
        return self.time_limit_s


def load_rubric(path: Path = RUBRIC_PATH) -> Rubric:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return Rubric(data.get("exercises", {}), data.get("questions", {}),
                  float(data.get("time_limit_s", 10)), data.get("capstones", {}))


@dataclass
class Settings:
    limits: Limits
    rubric: Rubric
    jobs: int = 2  # chapters graded at the same time
    time_limit: float | None = None  # seconds per exercise; overrides the rubric's limits
    strict: bool = False  # re-raise errors of the checks themselves (for the course's tests)
    hide: tuple = ()  # folders student code must not see (the submissions, the report's)
    isolation: Isolation | None = None  # set while grading
    whole_class: bool = False  # grading --submissions: a student's folder may not be a link
    answer_key: dict | None = None  # concept questions' key (--answer-key); None: the library's
    release_explanations: bool = False  # explain the right answer after a wrong one too
    capstones: bool = True  # run the capstones (training runs: see capstone.py)


class RefusedAsRoot(ValueError):
    """A class would be graded with student code running as root."""


# ==============================================================================================
# grading


def resolve_impl(impl: str | os.PathLike) -> Path:
    """'solutions' / 'exercises' -> the repository's folders; anything else is a path (its
    `exercises` sub-folder when it is a whole copy of the repository)."""
    if str(impl) in ("solutions", "exercises"):
        candidates = [REPO_DIR / str(impl), Path.cwd() / str(impl), Path.cwd().parent / str(impl)]
        return next((c for c in candidates if c.is_dir()), candidates[0])
    return student_folder(Path(impl).expanduser())


def student_folder(folder: Path) -> Path:
    """The folder holding a student's chapter files: `folder`, or its `exercises` sub-folder
    when the student handed in a whole copy of the repository (a real folder, not a link)."""
    sub = folder / "exercises"
    if folder.is_dir() and not any(folder.glob("ch[0-9][0-9]_*.py")) \
            and sub.is_dir() and not sub.is_symlink():
        return sub
    return folder


def gradable_chapters() -> list[int]:
    exercises = find_exercises()
    return sorted({e.chapter for e in exercises} | {n for n in CHAPTERS if questions_for(n)})


def grade(impl="exercises", chapters=None, *, student: str | None = None,
          time_limit: float | None = None, memory_mb: int | None = None, jobs: int | None = None,
          strict: bool = False, limits: Limits | None = None, report_path=None,
          answer_key: dict | None = None, release_explanations: bool = False,
          hints=None, capstones: bool = True) -> Report:
    """Grade one folder. chapters: list of numbers, or None for every chapter.
    report_path: where the report will be written (its folder is hidden from student code).
    answer_key: the questions' key (questions.load_answer_key); None: the library's, if any.
    hints: None (no exercise hints), N (the first N hints of each exercise not passed) or
    "all"; see `attach_hints`. capstones=False leaves the capstones (training runs) out."""
    folder = resolve_impl(impl)
    settings = _settings(time_limit, memory_mb, jobs, strict, limits, report_path, folder)
    settings.answer_key, settings.release_explanations = answer_key, release_explanations
    settings.capstones = capstones
    name = student or (str(impl) if str(impl) in ("solutions", "exercises") else folder.name)
    return attach_hints(_grade_folders([(name, folder)], chapters, settings)[0], hints)


def grade_submissions(folder, chapters=None, *, time_limit: float | None = None,
                      memory_mb: int | None = None, jobs: int | None = None, strict: bool = False,
                      limits: Limits | None = None, report_path=None,
                      answer_key: dict | None = None,
                      release_explanations: bool = False, hints=None,
                      capstones: bool = True) -> list[Report]:
    """Grade every sub-folder of `folder` (one per student, whatever its name), sorted by name.
    A sub-folder that is a link is not followed: its report says so."""
    settings = _settings(time_limit, memory_mb, jobs, strict, limits, report_path, folder)
    settings.answer_key, settings.release_explanations = answer_key, release_explanations
    settings.capstones = capstones
    students = [(p.name, p if p.is_symlink() else student_folder(p))
                for p in sorted(Path(folder).iterdir())
                if (p.is_dir() or p.is_symlink()) and not p.name.startswith((".", "_"))]
    reports = _grade_folders(students, chapters, settings, whole_class=True)
    return [attach_hints(report, hints) for report in reports]


def _settings(time_limit, memory_mb, jobs, strict, limits, report_path, graded) -> Settings:
    limits = limits or Limits()
    if memory_mb:
        limits.memory_mb = int(memory_mb)
    hide = [Path(graded).resolve()]
    if report_path is not None:
        hide.append(Path(report_path).resolve().parent)
    return Settings(limits=limits, rubric=load_rubric(), time_limit=time_limit,
                    jobs=jobs or min(2, os.cpu_count() or 1), strict=strict, hide=tuple(hide))


def _grade_folders(students, chapters, settings: Settings, whole_class=False) -> list[Report]:
    checks = load_all_checks()  # every trusted module is imported before any child starts
    exercises = [e for e in find_exercises() if e.id in checks]
    available = gradable_chapters()
    chapters = available if chapters is None else [int(c) for c in chapters]
    unknown = [c for c in chapters if c not in available]
    if unknown:
        raise ValueError(f"no exercises or questions in chapter(s) {unknown}; "
                         f"chapters: {available}")
    unchecked = [e.id for e in find_exercises() if e.id not in checks and e.chapter in chapters]
    isolation = Isolation(settings.limits, hide=settings.hide)
    try:
        if isolation.as_root:
            if whole_class and not settings.limits.allow_root:
                raise RefusedAsRoot(
                    f"refusing to grade a class as root: {isolation.describe()}. Run the "
                    f"grader as an ordinary user, install Python where other users can read "
                    f"it, or pass --allow-root if you accept that")
            print(f"minialign.grade: warning: {isolation.describe()}", file=sys.stderr)
        settings.isolation, settings.whole_class = isolation, whole_class
        jobs = [(s, name, folder, ch) for s, (name, folder) in enumerate(students)
                for ch in chapters]
        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=max(1, settings.jobs)) as pool:
            results = list(pool.map(lambda job: _grade_chapter_safely(job[2], job[3], exercises,
                                                                      settings), jobs))
        wall = time.monotonic() - start
    finally:
        isolation.close()  # every worker is closed (its processes dead) by now
    reports = [Report(clean(name), clean(folder), []) for name, folder in students]
    for (s, _, _, ch), (items, notes, seconds) in zip(jobs, results):
        reports[s].items.extend(_clean_item(item) for item in items)
        if notes:
            reports[s].notes[ch] = [clean(note) for note in notes]
        reports[s].seconds += seconds
    for report in reports:
        report.notes.setdefault(0, []).append(isolation.describe())
        if unchecked:
            report.notes[0].append(f"not graded yet (no check written): {', '.join(unchecked)}")
        if len(reports) == 1:
            report.seconds = wall
    return reports


def _clean_item(item: Item) -> Item:
    """The boundary: every text of an item may hold what student code sent or printed."""
    for name in ("title", "message", "hint", "output"):
        setattr(item, name, clean(getattr(item, name)))
    return item


def hint_count(hints) -> int | None:
    """How many hints `hints` asks for: 0 for none (None, False, 0), N for a whole number
    N >= 1, -1 for every one ("all" or True). Raises ValueError for anything else."""
    if hints is None or hints is False or hints == 0:
        return 0
    if hints is True or str(hints).strip().lower() == "all":
        return -1
    try:
        n = int(str(hints).strip())
    except ValueError:
        n = -2
    if n < 0:
        raise ValueError(f"--hints takes a number of hints (1, 2, ...) or 'all', not {hints!r}")
    return n


def attach_hints(report: Report, hints=None) -> Report:
    """Give each exercise of the report that is not passed (failed or not attempted) its first
    N hints (`hints`: see hint_count), and say how many are left. Hints are trusted text from
    the library's exercise regions (markers.py), gentlest first, the last one the formula."""
    n = hint_count(hints)
    by_id = {e.id: e for e in find_exercises()}
    for item in report.items:
        exercise = by_id.get(item.id)
        if item.kind != "exercise" or exercise is None or item.status not in (FAILED,
                                                                               NOT_ATTEMPTED):
            continue
        shown = list(exercise.hints if n == -1 else exercise.hints[:n])
        item.hints, item.hints_left = shown, len(exercise.hints) - len(shown)
    return report


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
        items += [_item(c.id, number, "capstone", c.title, 0, settings.rubric.points(c.id),
                        FAILED, message) for c in _capstones(number, settings)]
        return items, [message], 0.0


def _grade_chapter(folder: Path, number: int, all_exercises, settings: Settings):
    start = time.monotonic()
    chapter = CHAPTERS[number]
    exercises = [e for e in all_exercises if e.chapter == number]
    questions = questions_for(number)
    rubric = settings.rubric
    path = Path(folder) / chapter.filename
    if settings.whole_class and Path(folder).is_symlink():
        source, problem, missing = None, f"{Path(folder).name} is a link, not a folder: " \
                                         f"links are not followed", False
    else:
        source, problem, missing = _read_source(Path(folder), chapter.filename)
    if source is None:
        status = NOT_ATTEMPTED if missing else FAILED
        items = [_item(e.id, number, "exercise", e.qualname, 0, rubric.points(e.id), status,
                       problem) for e in exercises]
        items += [_item(q.id, number, "question", _title(q), 0, rubric.points(q.id), status,
                        problem) for q in questions]
        items += [_item(c.id, number, "capstone", c.title, 0, rubric.points(c.id), status,
                        problem) for c in _capstones(number, settings)]
        return items, [], time.monotonic() - start

    tree, parse_problems = parse_salvaging(source, str(path))
    handed = handed_out(source, number, exercises, questions)  # the items of the file's version
    exercises, questions = handed.exercises, handed.questions
    capstones = handed.capstones_of(_capstones(number, settings))
    notes = ([problem] if problem else []) + handed.notes
    notes += [f"line {p['line']}: {p['message']}" if p.get("line") else p["message"]
              for p in parse_problems]
    for exercise_id, lines in library_uses(tree, exercises).items():
        name = next(e for e in exercises if e.id == exercise_id)
        notes.append(f"line {', '.join(map(str, sorted(set(lines))))}: uses "
                     f"minialign.{name.module}.{name.qualname}, the library's own version of "
                     f"exercise {exercise_id}; while chapter {number} is graded it is a stub "
                     f"that raises NotImplementedError, so it earns nothing: write your own")
    to_run = [e for e in exercises if not is_untouched_stub(tree, e)]
    items = []
    session = Session(path, source, [e.qualname for e in to_run], settings.limits,
                      cpu_s=int(sum(_limit(e, settings) for e in to_run)
                                + sum(rubric.time_limit(c.id) for c in capstones)
                                + settings.limits.load_s + 60),
                      isolation=settings.isolation, chapter=number) if to_run else None
    try:
        for e in exercises:
            if e in to_run:
                items.append(_grade_exercise(session, e, settings))
            else:
                items.append(_item(e.id, number, "exercise", e.qualname, 0, rubric.points(e.id),
                                   NOT_ATTEMPTED, "the body is still the stub that raises "
                                   "NotImplementedError: write it"))
        items += [_grade_capstone(session, c, to_run, settings) for c in capstones]
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
    items += grade_questions(tree, questions, rubric, settings)
    return handed.complete(items), notes, time.monotonic() - start


def _limit(exercise: Exercise, settings: Settings) -> float:
    return settings.time_limit or settings.rubric.time_limit(exercise.id)


def _capstones(number: int, settings: Settings) -> list[Capstone]:
    return capstones_for(number) if settings.capstones else []


def _grade_capstone(session: Session | None, capstone: Capstone, written: list[Exercise],
                    settings: Settings) -> Item:
    """A capstone (capstone.py): the chapter's functions that the student wrote train a policy
    together, in a fresh sandboxed process; the trained policy is measured here. Its time limit
    is the rubric's (`--time-limit` is the exercises'), for the training run as a whole."""
    item = _item(capstone.id, capstone.chapter, "capstone", capstone.title, 0,
                 settings.rubric.points(capstone.id), FAILED)
    if session is None:  # every function of the chapter is still the stub
        item.status = NOT_ATTEMPTED
        item.message = (f"the capstone trains with your functions of chapter {capstone.chapter}: "
                        f"write them first. {capstone.description}")
        return item
    start = time.monotonic()
    started = False
    try:
        capstone_start()  # the starting policy (built once per process), before the clock runs
        start = time.monotonic()
        session.restart()  # a process of its own: nothing left by the checks, its own CPU time
        if not session.ensure_loaded():
            item.message = session.load_failure
            return item
        session.start_exercise(settings.rubric.time_limit(capstone.id))
        started = True
        item.message = check_capstone(session, capstone, written)
        item.status, item.points = PASSED, item.max_points
    except (StudentProblem, CheckFailed) as e:
        item.message = f"{e.message}\n({capstone.description})"
        item.hint = e.hint
    except GraderError as e:
        item.message = f"the grader could not run your code: {e}"
        print(f"minialign.grade: {capstone.id}: {e}", file=sys.stderr)
    except Exception as e:  # a bug in the capstone itself, not the student's fault
        if settings.strict:
            raise
        item.message = (f"internal error in the capstone {capstone.id} ({type(e).__name__}: "
                        f"{e}); please report it to the course staff")
        traceback.print_exc()
    finally:
        item.output = session.output().strip() if started else ""
        item.seconds = round(time.monotonic() - start, 3)
    return item


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
        if STUB_MESSAGE.split("{")[0] in e.message:
            item.message = _in_case(check, f"your code calls the library's version: {e.message}")
            item.hint = "write the function yourself; the library's version is the answer key"
        elif session.calls <= 1:
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


def _read_source(folder: Path, relative: str):
    """(text, problem, missing) for folder/relative, read as a regular file reached without
    following any link below `folder`, decoded as Python would (PEP 263 cookie, UTF-8 BOM).
    text is None when the file cannot be graded (missing: it is absent); problem is set when
    the file was read but some bytes were not valid in its encoding."""
    name = Path(relative).name
    try:
        fd = _open_below(folder, relative)
    except FileNotFoundError:
        return None, f"{name} not found in {folder}", True
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            return None, f"{relative} is (or passes through) a link: links are not followed", \
                False
        return None, f"{name} could not be read ({e.strerror})", False
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            return None, f"{name} is not a regular file", False
        if info.st_size > MAX_FILE_BYTES:
            return None, (f"{name} is {info.st_size} bytes; files over {MAX_FILE_BYTES} are not "
                          f"graded"), False
        data = f.read(MAX_FILE_BYTES + 1)[:MAX_FILE_BYTES]
    return (*decode_source(data), False)


def _open_below(folder: Path, relative: str) -> int:
    """A read-only fd of folder/relative; every part below `folder` must be a real folder or
    file, not a link (O_NOFOLLOW, part by part); a FIFO does not block the open."""
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        *folders, filename = Path(relative).parts
        for part in folders:
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | nofollow, dir_fd=fd)
            os.close(fd)
            fd = inner
        return os.open(filename, os.O_RDONLY | nofollow | getattr(os, "O_NONBLOCK", 0),
                       dir_fd=fd)
    finally:
        os.close(fd)


def decode_source(data: bytes) -> tuple[str, str]:
    """(text, problem): bytes decoded as Python decodes a file (a coding cookie on the first
    two lines, a UTF-8 BOM, UTF-8 otherwise). Invalid bytes, or a cookie naming an unknown
    encoding, cost only the lines they are on: they become U+FFFD, which breaks at most the
    definition that holds them."""
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        problem = ""
    except SyntaxError as e:
        encoding, problem = "utf-8", f"{e.msg}; the file was read as UTF-8"
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        text = data.decode(encoding, "replace")
        line = data[:e.start].count(b"\n") + 1
        problem = problem or (f"line {line}: bytes that are not valid {encoding} were replaced "
                              f"by \ufffd")
    if text.startswith("\ufeff"):  # a BOM a cookie did not already remove
        text = text[1:]
    return text, problem


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


def grade_questions(tree, questions: list[Question], rubric: Rubric,
                    settings: Settings | None = None) -> list[Item]:
    """Mark the answers of a file against the key: settings.answer_key when given (for credit),
    else the library's. A right answer shows the explanation; a wrong one says why the option
    chosen is wrong (item.hint) and shows the explanation only when the instructor released it.
    Without any key the answers are read but not marked, and count for nothing ("not graded")."""
    key = settings.answer_key if settings is not None else None
    release = settings.release_explanations if settings is not None else False
    answers, problem = read_answers(tree)
    items = []
    for q in questions:
        if key is not None:
            q = q.with_key(key.get(q.id))
        given = answers.get(q.id)
        result = q.grade(given, release=release)
        message = problem if result.status == NOT_ATTEMPTED and problem else result.message
        points = rubric.points(q.id) if q.key is not None else 0.0
        item = _item(q.id, q.chapter, "question", _title(q), 0, points, result.status, message)
        if result.status == PASSED:
            item.points = item.max_points
        item.hint, item.explanation = result.hint, result.explanation
        items.append(item)
    return items


def _title(q: Question) -> str:
    return q.text if len(q.text) <= 70 else q.text[:67].rstrip() + "..."


# ==============================================================================================
# versions of the exercise files


@dataclass
class HandedOut:
    """What a chapter file was handed out with (see versions.py)."""

    version: str  # the version in the file's header; "" when it names none
    exercises: list  # the exercises and questions of its version, to grade
    questions: list
    left_out: list[Item]  # items added after that version: "not handed out", 0 of 0 points
    notes: list[str]
    handed: frozenset | None = None  # the ids of its version's items; None: every item

    def capstones_of(self, capstones: list) -> list:
        """The capstones its version handed out; the others join the items not handed out."""
        if self.handed is None:
            return list(capstones)
        self.left_out += [_item(c.id, c.chapter, "capstone", c.title, 0, 0, NOT_HANDED_OUT,
                                _not_handed_out(self.version))
                          for c in capstones if c.id not in self.handed]
        return [c for c in capstones if c.id in self.handed]

    def complete(self, items: list[Item]) -> list[Item]:
        """The graded items, then those not handed out, all marked with the file's version."""
        items = items + self.left_out
        for item in items:
            item.version = self.version
        return items


def handed_out(source: str, number: int, exercises: list, questions: list) -> HandedOut:
    """Split a chapter's items into those the file's version handed out and those added later.
    A file that names no version, or one this grader does not know, gets every item."""
    version = file_version(source)
    items = load_history().get(version) if version else None
    notes = []
    if version and items is None:
        notes.append(f"the header names version {version} of the exercise set, which this "
                     f"grader does not know: graded against every current item")
    if items is None:
        return HandedOut(version, exercises, questions, [], notes)
    keep = set(items)
    message = _not_handed_out(version)
    left_out = [_item(e.id, number, "exercise", e.qualname, 0, 0, NOT_HANDED_OUT, message)
                for e in exercises if e.id not in keep]
    left_out += [_item(q.id, number, "question", _title(q), 0, 0, NOT_HANDED_OUT, message)
                 for q in questions if q.id not in keep]
    return HandedOut(version, [e for e in exercises if e.id in keep],
                     [q for q in questions if q.id in keep], left_out, notes, frozenset(keep))


def _not_handed_out(version: str) -> str:
    return (f"added to the course after version {version} of the exercise set, the version "
            f"of your file: not counted (your instructor can give you the new file)")



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
    parser.add_argument("--format", choices=sorted(RENDERERS),
                        help="text (default for one folder), json, csv (default for a class) or "
                             "gradescope (with --submissions: one results.json per student)")
    parser.add_argument("--out", help="write the report here (atomically, once grading is over)")
    parser.add_argument("--submissions", metavar="DIR",
                        help="grade every sub-folder of DIR (one per student) into one CSV "
                             "(or JSON) report, with a summary per student and one per item "
                             "next to it; prints the pass rate of each item")
    parser.add_argument("--student", help="the student's name in the report")
    parser.add_argument("--time-limit", type=float, metavar="S",
                        help="seconds per exercise (default: from rubric.json)")
    parser.add_argument("--memory-mb", type=int, metavar="MB",
                        help="memory a student's code may use on top of torch (default 2048)")
    parser.add_argument("--jobs", type=int, help="chapters graded at the same time (default 2)")
    parser.add_argument("--answer-key", metavar="KEY.json",
                        help="grade the concept questions with this key (written by `python -m "
                             "minialign.course answer-key`) instead of the library's: for credit")
    parser.add_argument("--release-explanations", action="store_true",
                        help="show each question's explanation after a wrong answer too (once "
                             "the answers may be known)")
    parser.add_argument("--hints", nargs="?", const="all", metavar="N",
                        help="show the hints of each exercise not passed, gentlest first: the "
                             "first N (--hints 1, then 2, ...), or all of them (--hints alone; "
                             "the last one gives the formula)")
    parser.add_argument("--no-capstones", action="store_true",
                        help="leave out the capstones of chapters 5 and 6 (each trains a small "
                             "policy with the student's functions: about 10 to 30 s)")
    parser.add_argument("--no-fork-server", action="store_true",
                        help="start every sandbox as a new Python (importing torch each time) "
                             "instead of forking it from one process that imported it once")
    parser.add_argument("--allow-root", action="store_true",
                        help="grade a class even if student code must run as root (when no "
                             "other user may run Python here); see docs/instructors.md")
    args = parser.parse_args(argv)
    for stream in (sys.stdout, sys.stderr):  # a terminal that cannot show a character
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    limits = Limits(allow_root=args.allow_root, fork_server=not args.no_fork_server)
    try:
        hint_count(args.hints)
    except ValueError as e:
        parser.error(str(e))

    try:
        key = load_answer_key(args.answer_key) if args.answer_key else None
        if args.submissions:
            if not Path(args.submissions).is_dir():
                parser.error(f"--submissions {args.submissions}: not a folder")
            if args.format == "text":
                parser.error("--format text is one student's table; for a class use --format "
                             "csv (the default), json, or gradescope (one results.json per "
                             "student)")
            fmt = args.format or "csv"
            out = args.out or {"csv": "grades.csv", "json": "grades.json",
                               "gradescope": "gradescope"}[fmt]
            reports = grade_submissions(args.submissions, args.chapter,
                                        time_limit=args.time_limit, memory_mb=args.memory_mb,
                                        jobs=args.jobs, limits=limits, report_path=out,
                                        answer_key=key,
                                        release_explanations=args.release_explanations,
                                        hints=args.hints, capstones=not args.no_capstones)
            written = write_class_reports(out, fmt, reports)
            print(pass_rates(reports))
            print("wrote " + "\n      ".join(str(p) for p in written))
            return 0
        args.format = args.format or "text"
        folder = resolve_impl(args.impl)
        if not folder.is_dir():
            parser.error(f"--impl {args.impl}: no such folder ({folder})")
        report = grade(args.impl, args.chapter, student=args.student, time_limit=args.time_limit,
                       memory_mb=args.memory_mb, jobs=args.jobs, limits=limits,
                       report_path=args.out, answer_key=key,
                       release_explanations=args.release_explanations, hints=args.hints,
                       capstones=not args.no_capstones)
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
        out = write_report(args.out, text)
        if args.format != "text":
            print(render_text(report))
        print(f"wrote {out}")
    else:
        print(text, end="" if text.endswith("\n") else "\n")


def write_class_reports(out, fmt: str, reports: list[Report]) -> list[Path]:
    """A class's report in `fmt`, and next to it a summary per student (totals) and one per
    item (attempted, passed, the most common hints). Gradescope's results.json holds one
    student, so `gradescope` writes one per student: OUT/<student>/results.json. Returns the
    paths written."""
    out = Path(out)
    if fmt == "gradescope":
        written = [write_report(out / r.student / "results.json", render_gradescope(r))
                   for r in reports]
        base = out / "grades"
    else:
        written = [write_report(out, RENDERERS[fmt](reports))]
        base = out.with_suffix("")
    written.append(write_report(base.with_name(base.name + "-students.csv"),
                                render_students_csv(reports)))
    written.append(write_report(base.with_name(base.name + "-items.csv"),
                                render_items_csv(reports)))
    return written


def write_report(path, text: str) -> Path:
    """Write a report atomically at `path`; if something that is not a regular file is in the
    way (a folder, a link), write it next to it under a new name and say so on stderr, rather
    than fail after grading a whole class. Returns where it was written."""
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_file()):
        moved = path.with_name(f"{path.stem}-{time.strftime('%Y%m%d-%H%M%S')}{path.suffix}")
        print(f"minialign.grade: {path} is not a regular file; the report was written to "
              f"{moved} instead", file=sys.stderr)
        path = moved
    write_atomic(path, text)
    return path
