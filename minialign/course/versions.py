"""Versions of the exercise set: which exercises and questions each version handed out.

A course changes while students work: an exercise or a question is added to a chapter whose
file some students already have. Every generated chapter file names its version in its header,

    Version 3 of the minialign exercise set.

and `versions.json` (next to this module) records the ids of the items of every version. The
grader grades a file against the items of its version: an item added later is "not handed out"
for an older file (0 of 0 points, so it lowers nobody's percentage), not "missing". A file that
names no version is graded against every current item, as is one whose version this grader does
not know (a note says so).

`python -m minialign.course build` appends a version whenever the set of items changes, and
`build --check` fails until it has. Nothing else changes a version: fixing a docstring or a
hint keeps the items, so it keeps the version.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

VERSIONS_PATH = Path(__file__).with_name("versions.json")
HEADER = "Version {n} of the minialign exercise set."
HEADER_PATTERN = re.compile(r"^Version (\d{1,6}) of the minialign exercise set\.", re.MULTILINE)
HEADER_CHARS = 4000  # the version line is near the top of the module docstring


def load_history(path: Path = VERSIONS_PATH) -> dict[str, list[str]]:
    """{version: [item ids]}, oldest first; {} when there is no history yet."""
    if not Path(path).exists():
        return {}
    return dict(json.loads(Path(path).read_text(encoding="utf-8"))["versions"])


def current_items() -> list[str]:
    """The ids of every exercise marked in the library, every concept question and every
    capstone, sorted."""
    from .capstone import CAPSTONES
    from .markers import find_exercises
    from .questions import QUESTIONS

    return sorted({e.id for e in find_exercises()}
                  | {q.id for qs in QUESTIONS.values() for q in qs}
                  | {c.id for c in CAPSTONES})


def version_of(items: list[str], history: dict[str, list[str]]) -> tuple[int, bool]:
    """(the version these items are, whether the history already records it): the latest
    version when its items are these, else the next number."""
    if not history:
        return 1, False
    latest = max(history, key=int)
    if sorted(history[latest]) == sorted(items):
        return int(latest), True
    return int(latest) + 1, False


def history_text(history: dict[str, list[str]]) -> str:
    return json.dumps({"about": "The items (exercise and question ids) handed out by each "
                                "version of the exercise set. Written by `python -m "
                                "minialign.course build`; a graded file is graded against the "
                                "items of the version named in its header.",
                       "versions": history}, indent=1) + "\n"


def file_version(source: str) -> str:
    """The version named in a chapter file's header ("" when none)."""
    match = HEADER_PATTERN.search(source[:HEADER_CHARS])
    return str(int(match.group(1))) if match else ""
