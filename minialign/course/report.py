"""Grade reports: the Item and Report records, and their renderings.

Formats: a text table for the terminal, JSON (every field), a CSV for a gradebook (one row per
student per item, plus a row per problem with a whole file) and Gradescope's results.json (one
student). For a class, two summaries: one row per student (totals) and one row per item
(attempted, passed, the most common hints: the mistakes the class makes). `write_atomic` writes
a report so that a reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import csv
import io
import json
import textwrap
from collections import Counter
from dataclasses import asdict, dataclass, field

from ..utils import display_path, write_text
from .markers import CHAPTERS

PASSED, FAILED, NOT_ATTEMPTED = "passed", "failed", "not attempted"
NOT_GRADED = "not graded"  # a concept question answered where no answer key is at hand
NOT_HANDED_OUT = "not handed out"  # an item added after the version of the student's file

@dataclass
class Item:
    """The grade of one exercise or concept question."""

    id: str  # "ch02.gather_logprobs" or "q2.1"
    chapter: int
    kind: str  # "exercise", "question" or "capstone" (capstone.py)
    title: str
    points: float
    max_points: float
    status: str  # passed / failed / not attempted
    message: str = ""  # what went wrong, and in which case
    hint: str = ""  # the mistake it looks like; for a question, why the option chosen is wrong
    output: str = ""  # what the student's code printed (truncated)
    seconds: float = 0.0
    explanation: str = ""  # a question's explanation of the right answer, when it is shown
    version: str = ""  # version of the exercise file the item was graded from ("" if none)
    hints: list[str] = field(default_factory=list)  # the exercise's hints asked for (--hints)
    hints_left: int = 0  # its hints not shown (the next ones, down to the formula)


@dataclass
class Report:
    student: str
    impl: str  # the folder graded
    items: list[Item]
    notes: dict[int, list[str]] = field(default_factory=dict)  # chapter -> file-level problems
    seconds: float = 0.0

    @property
    def score(self) -> float:
        return sum(i.points for i in self.items)

    @property
    def max_score(self) -> float:
        return sum(i.max_points for i in self.items)

    @property
    def percent(self) -> float:
        return 100.0 * self.score / self.max_score if self.max_score else 0.0

    def item(self, item_id: str) -> Item:
        return next(i for i in self.items if i.id == item_id)

    def __repr__(self):
        return (f"<minialign grade of {self.student}: {_pts(self.score)}/{_pts(self.max_score)} "
                f"points ({self.percent:.0f}%)>")



# ==============================================================================================
# reports


def _pts(x: float) -> str:
    return f"{x:g}"


def render_text(report: Report, show_output: bool = True) -> str:
    lines = [f"minialign grade: {report.student} ({display_path(report.impl)}), "
             f"{report.seconds:.1f} s"]
    for note in report.notes.get(0, []):
        lines.append(f"note: {note}")
    width = max([len(i.id) for i in report.items] + [10])
    for number in sorted({i.chapter for i in report.items}):
        chapter = CHAPTERS[number]
        lines += ["", f"Chapter {number} · {chapter.title}   ({chapter.filename})"]
        for note in report.notes.get(number, []):
            lines.append(_indent(f"note: {note}", 4))
        for item in (i for i in report.items if i.chapter == number):
            score = f"{_pts(item.points)} / {_pts(item.max_points)}"
            lines.append(f"  {item.id:<{width}}  {score:>7}  {item.status}")
            if item.status != PASSED and item.message:
                lines.append(_indent(item.message, 6))
            if item.hint and item.status != PASSED:
                label = "why not" if item.kind == "question" else "hint"
                lines.append(_indent(f"{label}: {item.hint}", 6))
            if item.explanation:
                lines.append(_indent(f"why: {item.explanation}", 6))
            if item.hints:
                lines.extend(_hint_lines(item))
            if show_output and item.output and item.status == FAILED:
                lines.append(_indent("your code printed:\n" + _indent(item.output, 2, "| "), 6))
    counts = status_counts(report)
    extra = "".join(f", {counts[s]} {s}" for s in (NOT_GRADED, NOT_HANDED_OUT) if counts[s])
    lines += ["", f"Total: {_pts(report.score)} / {_pts(report.max_score)} points "
                  f"({report.percent:.0f}%): {counts[PASSED]} passed, {counts[FAILED]} failed, "
                  f"{counts[NOT_ATTEMPTED]} not attempted{extra}"]
    if any(i.hints_left and not i.hints for i in report.items if i.status != PASSED):
        lines.append(_indent(HINTS_OFFER, 0))
    return "\n".join(lines)


HINTS_OFFER = ("Stuck? Add --hints 1 to this command (in a notebook: check(chapter, hints=1)) "
               "for a first hint on each exercise not passed; --hints 2, 3, ... for more, "
               "--hints for all of them (the last one gives the formula).")


def _hint_lines(item: Item) -> list[str]:
    """An exercise's hints, numbered gentlest first, and how to ask for the next ones."""
    shown, total = len(item.hints), len(item.hints) + item.hints_left
    more = f", --hints {shown + 1} for the next" if item.hints_left else ""
    lines = [_indent(f"hints {shown} of {total} (gentlest first{more}):", 6)]
    for n, hint in enumerate(item.hints, 1):
        lines.extend(textwrap.wrap(f"{n}. {hint}", 100, initial_indent=" " * 8,
                                   subsequent_indent=" " * 11, break_on_hyphens=False))
    return lines


def status_counts(report: Report) -> dict[str, int]:
    return {s: sum(i.status == s for i in report.items)
            for s in (PASSED, FAILED, NOT_ATTEMPTED, NOT_GRADED, NOT_HANDED_OUT)}


def _indent(text: str, n: int, prefix: str = "", width: int = 100) -> str:
    """Indent every line; long lines (not the student's output) are wrapped to `width`."""
    out = []
    for line in str(text).splitlines() or [""]:
        if prefix or len(line) + n <= width:
            out.append(" " * n + prefix + line)
        else:
            out.extend(textwrap.wrap(line, width, initial_indent=" " * n,
                                     subsequent_indent=" " * (n + 2)))
    return "\n".join(out)


def report_dict(report: Report) -> dict:
    return {"student": report.student, "impl": report.impl, "score": report.score,
            "max_score": report.max_score, "percent": round(report.percent, 2),
            "seconds": round(report.seconds, 2),
            "notes": {str(k): v for k, v in sorted(report.notes.items())},
            "items": [asdict(i) for i in report.items]}


def render_json(reports) -> str:
    if isinstance(reports, Report):
        return json.dumps(report_dict(reports), indent=2) + "\n"
    return json.dumps([report_dict(r) for r in reports], indent=2) + "\n"


CSV_COLUMNS = ["student", "item", "kind", "chapter", "points", "max_points", "status", "message",
               "hint", "explanation", "version"]
FILE_PROBLEM = "problem"  # the status of a row that reports a problem with a whole file


def render_csv(reports) -> str:
    """One row per student per item, for a gradebook; then one row per problem with a whole
    file (kind "file": a syntax error, a statement skipped while loading), worth no points,
    and one per note about the whole grading (kind "note": how student code was isolated).
    `student` is the submission folder's name: the ID to join with a gradebook."""
    rows = []
    for r in _as_list(reports):
        for i in r.items:
            rows.append([r.student, i.id, i.kind, i.chapter, i.points, i.max_points, i.status,
                         i.message, i.hint, i.explanation, i.version])
        for chapter, notes in sorted(r.notes.items()):
            if chapter in CHAPTERS:
                where, kind, status = CHAPTERS[chapter].filename, "file", FILE_PROBLEM
            else:
                where, kind, status = "(all files)", "note", "note"
            rows += [[r.student, where, kind, chapter, 0, 0, status, note, "", "", ""]
                     for note in notes]
    return _csv(CSV_COLUMNS, rows)


STUDENT_COLUMNS = ["student", "score", "max_score", "percent", "passed", "failed",
                   "not_attempted", "not_graded", "not_handed_out", "file_problems", "versions"]


def render_students_csv(reports) -> str:
    """One row per student: the totals, and the points of each chapter (columns chNN)."""
    reports = _as_list(reports)
    chapters = sorted({i.chapter for r in reports for i in r.items})
    rows = []
    for r in reports:
        counts = status_counts(r)
        versions = sorted({i.version for i in r.items if i.version})
        rows.append([r.student, r.score, r.max_score, round(r.percent, 1), counts[PASSED],
                     counts[FAILED], counts[NOT_ATTEMPTED], counts[NOT_GRADED],
                     counts[NOT_HANDED_OUT],
                     sum(len(n) for c, n in r.notes.items() if c in CHAPTERS),
                     " ".join(versions)]
                    + [sum(i.points for i in r.items if i.chapter == c) for c in chapters])
    return _csv(STUDENT_COLUMNS + [f"ch{c:02d}" for c in chapters], rows)


ITEM_COLUMNS = ["item", "kind", "chapter", "max_points", "students", "attempted", "passed",
                "failed", "pass_rate", "common_hints"]


def item_summary(reports) -> list[dict]:
    """Per item: how many students had it (handed out), attempted it (passed or failed) and
    passed it; the pass rate among those who attempted; the hints of the failures, most
    common first (the mistakes to talk about in class)."""
    reports = _as_list(reports)
    summary = []
    for item_id in dict.fromkeys(i.id for r in reports for i in r.items):
        items = [i for r in reports for i in r.items if i.id == item_id]
        handed = [i for i in items if i.status != NOT_HANDED_OUT]
        attempted = [i for i in handed if i.status in (PASSED, FAILED)]
        passed = sum(i.status == PASSED for i in attempted)
        hints = Counter(i.hint or "(no known mistake recognised)" for i in attempted
                        if i.status == FAILED)
        summary.append({
            "item": item_id, "kind": items[0].kind, "chapter": items[0].chapter,
            "max_points": max(i.max_points for i in items), "students": len(handed),
            "attempted": len(attempted), "passed": passed, "failed": len(attempted) - passed,
            "pass_rate": round(100 * passed / len(attempted), 1) if attempted else "",
            "common_hints": hints.most_common()})
    return summary


def render_items_csv(reports) -> str:
    rows = []
    for s in item_summary(reports):
        hints = " | ".join(f"{n}x {hint}" for hint, n in s["common_hints"][:3])
        rows.append([s[c] for c in ITEM_COLUMNS[:-1]] + [hints])
    return _csv(ITEM_COLUMNS, rows)


def _as_list(reports) -> list[Report]:
    return [reports] if isinstance(reports, Report) else list(reports)


def _csv(columns, rows) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([_cell(v) for v in row] for row in rows)
    return buffer.getvalue()


def _cell(value):
    """No spreadsheet formulas from a folder name or a message."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def render_gradescope(report: Report) -> str:
    """Gradescope's results.json: score, max_score, execution_time, output, tests[]."""
    tests = []
    for number, item in enumerate(report.items, 1):
        parts = [] if item.status == PASSED else [item.status]
        parts += [item.message] if item.message else []
        parts += [("Why not: " if item.kind == "question" else "Hint: ") + item.hint] \
            if item.hint and item.status != PASSED else []
        parts += ["Why: " + item.explanation] if item.explanation else []
        parts += ["Hints:\n" + "\n".join(f"{n}. {h}" for n, h in enumerate(item.hints, 1))] \
            if item.hints else []
        parts += ["Your code printed:\n" + item.output] if item.output else []
        tests.append({"name": f"{item.id}: {item.title}", "number": str(number),
                      "score": item.points, "max_score": item.max_points,
                      "status": PASSED if item.status == PASSED else FAILED,
                      "output": "\n\n".join(parts)})
    notes = [f"chapter {k}: {n}" if k else n for k, v in sorted(report.notes.items()) for n in v]
    results = {"score": report.score, "max_score": report.max_score,
               "execution_time": round(report.seconds, 2),
               "output": "\n".join(notes) or f"{_pts(report.score)} / {_pts(report.max_score)}",
               "tests": tests}
    return json.dumps(results, indent=2) + "\n"


def pass_rates(reports: list[Report]) -> str:
    """Per item: students who had it, attempted it and passed it; the pass rate among those
    who attempted it; the most common hint of the failures."""
    summary = item_summary(reports)
    width = max([len(s["item"]) for s in summary] + [4])
    lines = [f"{'item':<{width}}  students  attempted  passed  pass rate  most common mistake"]
    for s in summary:
        rate = f"{s['pass_rate']:.0f}%" if s["attempted"] else "-"
        top = ""
        if s["common_hints"]:
            hint, n = s["common_hints"][0]
            top = f"{n}x {hint}"
            top = top if len(top) <= 60 else top[:57] + "..."
        lines.append(f"{s['item']:<{width}}  {s['students']:>8}  {s['attempted']:>9}  "
                     f"{s['passed']:>6}  {rate:>9}  {top}")
    mean = sum(r.percent for r in reports) / len(reports) if reports else 0
    lines.append(f"{len(reports)} students, mean score {mean:.0f}%")
    return "\n".join(lines)


def write_atomic(path, text: str) -> None:
    """A report, written as every file of the library is (utils.write_text): next to the target,
    then renamed, so that a reader sees the old file or the new, never half of one."""
    write_text(text, path)


RENDERERS = {"text": render_text, "json": render_json, "csv": render_csv,
             "gradescope": render_gradescope}
