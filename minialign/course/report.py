"""Grade reports: the Item and Report records, and their renderings.

Formats: a text table for the terminal, JSON (every field), a CSV for a gradebook (one row per
student per item) and Gradescope's results.json. `write_atomic` writes a report so that a
reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import textwrap
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .markers import CHAPTERS

PASSED, FAILED, NOT_ATTEMPTED = "passed", "failed", "not attempted"

@dataclass
class Item:
    """The grade of one exercise or concept question."""

    id: str  # "ch02.gather_logprobs" or "q2.1"
    chapter: int
    kind: str  # "exercise" or "question"
    title: str
    points: float
    max_points: float
    status: str  # passed / failed / not attempted
    message: str = ""  # what went wrong, and in which case
    hint: str = ""  # the mistake it looks like; for a question, the explanation
    output: str = ""  # what the student's code printed (truncated)
    seconds: float = 0.0


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
    lines = [f"minialign grade: {report.student} ({report.impl}), {report.seconds:.1f} s"]
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
            if item.hint and (item.status != PASSED or item.kind == "question"):
                label = "why" if item.kind == "question" else "hint"
                lines.append(_indent(f"{label}: {item.hint}", 6))
            if show_output and item.output and item.status == FAILED:
                lines.append(_indent("your code printed:\n" + _indent(item.output, 2, "| "), 6))
    counts = {s: sum(i.status == s for i in report.items) for s in (PASSED, FAILED, NOT_ATTEMPTED)}
    lines += ["", f"Total: {_pts(report.score)} / {_pts(report.max_score)} points "
                  f"({report.percent:.0f}%): {counts[PASSED]} passed, {counts[FAILED]} failed, "
                  f"{counts[NOT_ATTEMPTED]} not attempted"]
    return "\n".join(lines)


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
               "hint"]


def render_csv(reports) -> str:
    """One row per student per item, for a gradebook."""
    reports = [reports] if isinstance(reports, Report) else reports
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in reports:
        for i in r.items:
            writer.writerow([_cell(v) for v in (r.student, i.id, i.kind, i.chapter, i.points,
                                                 i.max_points, i.status, i.message, i.hint)])
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
        parts += [("Why: " if item.kind == "question" else "Hint: ") + item.hint] \
            if item.hint else []
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
    """Per item: how many students passed it."""
    ids = list(dict.fromkeys(i.id for r in reports for i in r.items))
    width = max([len(x) for x in ids] + [4])
    lines = [f"{'item':<{width}}  passed  attempted  pass rate"]
    for item_id in ids:
        items = [i for r in reports for i in r.items if i.id == item_id]
        passed = sum(i.status == PASSED for i in items)
        attempted = sum(i.status != NOT_ATTEMPTED for i in items)
        lines.append(f"{item_id:<{width}}  {passed:>6}  {attempted:>9}  "
                     f"{100 * passed / len(items):>8.0f}%")
    mean = sum(r.percent for r in reports) / len(reports) if reports else 0
    lines.append(f"{len(reports)} students, mean score {mean:.0f}%")
    return "\n".join(lines)


def write_atomic(path, text: str) -> None:
    """Write next to the target and rename: a reader sees the old file or the new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


RENDERERS = {"text": render_text, "json": render_json, "csv": render_csv,
             "gradescope": render_gradescope}
