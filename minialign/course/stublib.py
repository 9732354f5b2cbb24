"""The library as student code sees it while a chapter is graded: that chapter's answers removed.

The library is the answer key: `minialign.reward.bradley_terry_loss` is the solution of
exercise ch04.bradley_terry_loss. A submission that returns the library's result (by importing
it, aliasing it or calling it under another name) must earn nothing. So the sandbox's sys.path
does not point at the real package but at a copy written here, in which the body of every
exercise of the chapter being graded is replaced by a stub that raises NotImplementedError
(saying why); the helpers and the exercises of other chapters stay, since a chapter's file may
use them. The course package is copied too (the child imports `wire` from it, library modules
may import `course.impl`, and the checks of training steps build their model and optimizer with
`course.fixtures`), except the modules that hold answers: the concept questions and their key,
and the checks (`checks_steps.py` included: the mistakes of a step are answers too).

`library_uses(tree, exercises)` finds, in a student's file, the places that name the library's
version of one of those exercises, so that the report can say why it earned nothing.
"""

from __future__ import annotations

import ast
import fnmatch
import re
from pathlib import Path

from .markers import LIBRARY_DIR, Exercise

LEFT_OUT = ("questions.py", "answer_key.py", "checks*.py")  # course modules holding answers
STUB_MESSAGE = "is the library's own version of an exercise of chapter {chapter}"


def write_library(dest: Path, exercises: list[Exercise]) -> Path:
    """Write a copy of the package under `dest` (dest/minialign/...) with the bodies of
    `exercises` stubbed; returns `dest`, the folder to put on sys.path."""
    package = Path(dest) / "minialign"
    (package / "course").mkdir(parents=True)
    by_module: dict[str, list[Exercise]] = {}
    for e in exercises:
        by_module.setdefault(e.path.name, []).append(e)
    for path in sorted(LIBRARY_DIR.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        if path.name in by_module:
            text = stub_regions(text, by_module[path.name])
        (package / path.name).write_text(text, encoding="utf-8")
    for path in sorted((LIBRARY_DIR / "course").glob("*.py")):
        if not any(fnmatch.fnmatch(path.name, pattern) for pattern in LEFT_OUT):
            (package / "course" / path.name).write_bytes(path.read_bytes())
    return Path(dest)


def stub_regions(source: str, exercises: list[Exercise]) -> str:
    """`source` with each exercise region (markers included) replaced by one `raise` line."""
    lines = source.split("\n")
    for e in sorted(exercises, key=lambda e: e.start, reverse=True):  # bottom up: lines stay put
        indent = re.match(r"[ \t]*", lines[e.start - 1]).group(0)
        why = (f"minialign.{e.module}.{e.qualname} "
               + STUB_MESSAGE.format(chapter=e.chapter)
               + ": it is not available while that chapter is graded; write your own")
        lines[e.start - 1: e.end] = [f"{indent}raise NotImplementedError({why!r})"]
    return "\n".join(lines)


def library_uses(tree, exercises: list[Exercise]) -> dict[str, list[int]]:
    """{exercise id: lines} where a student's file names the library's version of an exercise:
    `from minialign.reward import bradley_terry_loss`, `minialign.reward.bradley_terry_loss`,
    `reward.bradley_terry_loss` (after `from minialign import reward`)."""
    found: dict[str, list[int]] = {}
    if tree is None:
        return found
    for node in ast.walk(tree):
        for e in exercises:
            top = e.qualname.split(".")[0]
            hit = False
            if isinstance(node, ast.ImportFrom) and (node.module or "") == f"minialign.{e.module}":
                hit = any(a.name == top for a in node.names)
            elif isinstance(node, ast.Attribute) and node.attr == top:
                hit = _dotted(node.value) in (f"minialign.{e.module}", e.module)
            if hit:
                found.setdefault(e.id, []).append(node.lineno)
    return found


def _dotted(node) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""
