"""A Gradescope autograder: `python -m minialign.course autograder --out autograder.zip`.

    python -m minialign.course autograder --out autograder.zip [--chapter 4 --chapter 6]

The zip, as Gradescope wants it (its "Zip file upload" for a programming assignment):
    setup.sh          the image's one-time install: checks Python >= 3.11 (the pinned numpy needs
                      it), then CPU torch and numpy only: grading imports nothing else
                      (no jupyter, matplotlib or pytest), and a CPU wheel is ~200 MB, not ~3 GB
    run_autograder    runs for every submission: finds the chapter files in
                      /autograder/submission, grades them, writes /autograder/results/results.json
    minialign/        the package: the graded checks and the sandboxed grader
No solutions/ folder and no answer key are put in it: the concept questions are then "not
graded" (0 of 0 points). To grade them on Gradescope, pass `--answer-key KEY.json` (written by
`python -m minialign.course answer-key KEY.json`); it goes in as answer_key.json, beside the
package, in the folder the sandbox hides from student code.

At grading time (`run`):
  * the chapter files are looked for in the submission and one folder level down (a student
    who zipped a folder), and by close names (`ch04_reward (1).py`, `Ch04_Reward.py`,
    `ch04_reward-final.py`: the chapter number decides); what was found where is said in the
    results' top-level output, so a score of 0 never hides a misnamed file;
  * every test's Gradescope `visibility` comes from the rubric: an item entry
    {"points": P, "visibility": "hidden" | "after_due_date" | "after_published" | "visible"},
    else the `--visibility` given when the zip was built (default "visible").
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

from .markers import CHAPTERS, LIBRARY_DIR

LEFT_OUT = {"answer_key.py"}  # the concept questions' key stays with the instructor
VISIBILITIES = ("hidden", "after_due_date", "after_published", "visible")
MIN_PYTHON = (3, 11)

SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, when it builds the autograder's image.
set -euo pipefail
python3 - <<'PY'
import sys
if sys.version_info < {min_python}:
    sys.exit("minialign's grader needs Python >= {min_text} (the pinned numpy does); this image "
             "has " + sys.version.split()[0] + ": pick a base image with Python 3.11 or later")
PY
# grading imports torch and numpy only; the CPU build of torch (no CUDA download)
python3 -m pip install --no-cache-dir torch=={torch} --index-url https://download.pytorch.org/whl/cpu
python3 -m pip install --no-cache-dir numpy=={numpy}
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for every submission. AUTOGRADER_ROOT stands in for /autograder in tests.
set -uo pipefail
ROOT="${{AUTOGRADER_ROOT:-/autograder}}"
cd "$ROOT/source"
export PYTHONPATH="$ROOT/source${{PYTHONPATH:+:$PYTHONPATH}}"
mkdir -p "$ROOT/results"
python3 -m minialign.course.autograder run --submission "$ROOT/submission" \\
    --results "$ROOT/results/results.json" --visibility {visibility} {chapters}{key}
"""


# ==============================================================================================
# building the zip


def pinned_versions(requirements: Path | None = None) -> dict[str, str]:
    """torch's and numpy's versions: pinned in requirements.txt beside the package, else the
    ones installed here (an installed minialign has no requirements.txt)."""
    requirements = requirements or LIBRARY_DIR.parent / "requirements.txt"
    pins = {}
    if requirements.exists():
        for line in requirements.read_text().splitlines():
            m = re.match(r"^(torch|numpy)==([^\s;#]+)", line.strip())
            if m:
                pins[m.group(1)] = m.group(2)
    if len(pins) < 2:
        import numpy
        import torch

        pins.setdefault("torch", torch.__version__.split("+")[0])
        pins.setdefault("numpy", numpy.__version__)
    return pins


def build(out: str | Path, chapters: list[int] | None = None, visibility: str = "visible",
          answer_key: str | Path | None = None) -> Path:
    """Write the autograder zip to `out`; returns its path. answer_key: an instructor's key
    file to grade the concept questions with (none by default)."""
    if answer_key is not None:
        from .questions import load_answer_key

        load_answer_key(answer_key)  # refuse a key that does not fit the questions, now
    if visibility not in VISIBILITIES:
        raise ValueError(f"visibility must be one of {', '.join(VISIBILITIES)}")
    for n in chapters or []:
        if n not in CHAPTERS:
            raise ValueError(f"no chapter {n}: the chapters are {sorted(CHAPTERS)}")
    pins = pinned_versions()
    setup = SETUP_SH.format(min_python=MIN_PYTHON, min_text=".".join(map(str, MIN_PYTHON)),
                            **pins)
    run = RUN_AUTOGRADER.format(
        visibility=visibility, chapters=" ".join(f"--chapter {n}" for n in chapters or []),
        key=' --answer-key "$ROOT/source/answer_key.json"' if answer_key else "")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in [("setup.sh", setup), ("run_autograder", run)]:
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o755 << 16  # executable, as Gradescope requires
            z.writestr(info, text)
        if answer_key is not None:
            z.write(answer_key, "answer_key.json")
        for path in sorted(LIBRARY_DIR.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix in (
                    ".py", ".json") and path.name not in LEFT_OUT:
                z.write(path, Path("minialign") / path.relative_to(LIBRARY_DIR))
    return out


# ==============================================================================================
# grading one submission


def find_submission(folder: Path, chapters=None) -> tuple[dict[int, Path], list[str]]:
    """{chapter: file} for the chapter files of a submission, and notes on what was found where.

    Looks in `folder`, then one level down; a file counts for chapter N when its name starts
    with chNN (any case), so `ch04_reward (1).py` is chapter 4. The exact name wins over a
    close one; two close names for one chapter: the most recently modified, said so."""
    wanted = sorted(chapters or CHAPTERS)
    places = [folder] + sorted(p for p in folder.iterdir() if p.is_dir()
                               and not p.name.startswith((".", "__")))
    found, notes = {}, []
    for n in wanted:
        exact = CHAPTERS[n].filename
        pattern = re.compile(rf"^ch0*{n}(?!\d)", re.IGNORECASE)
        for place in places:
            candidates = [p for p in place.glob("*.py") if pattern.match(p.name)]
            if not candidates:
                continue
            best = next((p for p in candidates if p.name == exact), None)
            if best is None:
                best = max(candidates, key=lambda p: p.stat().st_mtime)
                others = [p.name for p in candidates if p != best]
                notes.append(f"chapter {n}: no {exact}; graded {_where(best, folder)} as "
                             f"{exact}" + (f" (also found: {', '.join(others)})" if others else ""))
            elif place != folder:
                notes.append(f"chapter {n}: {exact} found in the folder {place.name}/")
            found[n] = best
            break
        else:
            notes.append(f"chapter {n}: no {exact} in the submission (nor a file named ch{n:02d}_"
                         f"...py, nor in a folder inside it)")
    return found, notes


def _where(path: Path, root: Path) -> str:
    return str(path.relative_to(root))


def item_visibility(default: str = "visible") -> dict[str, str]:
    """{item id: Gradescope visibility} for the items whose rubric entry names one."""
    from .grader import RUBRIC_PATH

    rubric = json.loads(Path(RUBRIC_PATH).read_text(encoding="utf-8"))
    out = {}
    for section in ("exercises", "capstones", "questions"):
        for item_id, entry in rubric.get(section, {}).items():
            v = entry.get("visibility", default) if isinstance(entry, dict) else default
            if v not in VISIBILITIES:
                raise ValueError(f"rubric: {item_id} has visibility {v!r}; use one of "
                                 f"{', '.join(VISIBILITIES)}")
            out[item_id] = v
    return out


def run(submission: str | Path, results: str | Path, chapters=None,
        visibility: str = "visible", answer_key: str | Path | None = None) -> dict:
    """Grade a Gradescope submission folder; write results.json; return it."""
    from .grader import grade
    from .questions import load_answer_key
    from .report import render_gradescope

    submission, results = Path(submission), Path(results)
    found, notes = find_submission(submission, chapters)
    with tempfile.TemporaryDirectory(prefix="minialign-submission-") as tmp:
        for n, path in found.items():  # the files under their exact names, nothing else
            shutil.copyfile(path, Path(tmp) / CHAPTERS[n].filename)
        report = grade(tmp, chapters, student=submission.name,
                       answer_key=load_answer_key(answer_key) if answer_key else None)
    out = json.loads(render_gradescope(report))
    per_item = item_visibility(visibility)
    for test in out["tests"]:
        item_id = test["name"].split(":", 1)[0]
        test["visibility"] = per_item.get(item_id, visibility)
    if notes:
        out["output"] = "Files:\n" + "\n".join(f"  {n}" for n in notes) + "\n\n" + out["output"]
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return out


# ==============================================================================================
# command line


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minialign.course autograder",
                                     description="Build a Gradescope autograder zip.")
    parser.add_argument("--out", default="autograder.zip")
    parser.add_argument("--chapter", type=int, action="append",
                        help="grade this chapter only (repeat for several; default: all)")
    parser.add_argument("--visibility", default="visible", choices=VISIBILITIES,
                        help="tests' visibility where the rubric names none (default visible)")
    parser.add_argument("--answer-key", metavar="KEY.json",
                        help="grade the concept questions with this key (default: no key in "
                             "the zip, questions not graded)")
    args = parser.parse_args(argv)
    path = build(args.out, args.chapter, args.visibility, args.answer_key)
    print(f"wrote {path}: upload it as the assignment's autograder (base image with Python "
          f">= {'.'.join(map(str, MIN_PYTHON))})")
    return 0


def _run_main(argv=None) -> int:
    """`python -m minialign.course.autograder run ...`: what run_autograder calls."""
    parser = argparse.ArgumentParser(prog="python -m minialign.course.autograder run")
    parser.add_argument("--submission", required=True)
    parser.add_argument("--results", required=True)
    parser.add_argument("--chapter", type=int, action="append")
    parser.add_argument("--visibility", default="visible", choices=VISIBILITIES)
    parser.add_argument("--answer-key")
    args = parser.parse_args(argv)
    out = run(args.submission, args.results, args.chapter, args.visibility, args.answer_key)
    print(f"{out['score']} / {out['max_score']} points; wrote {args.results}")
    return 0


if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv[:1] == ["run"]:
        sys.exit(_run_main(argv[1:]))
    sys.exit(main(argv))
