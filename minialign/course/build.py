"""Generate `exercises/chNN_<topic>.py` and `solutions/chNN_<topic>.py` from the library.

    python -m minialign.course build            write both folders
    python -m minialign.course build --check    exit 1 with a diff when the committed files are stale

One source of truth: every marked region of the library (see `markers.py`) becomes an exercise
of its chapter. A chapter file holds, in pipeline order, the top-level definition of each marked
function (a marked method brings its whole class, with only that method's region stubbed),
then the chapter's concept questions and an `ANSWERS` dict. The solutions file is the same file
with the bodies intact and the answers filled in, so the two differ only where the student
writes. A ★★ or ★★★ exercise's `# hint:` lines are left out of both files (its docstring
states the contract; `python -m minialign.grade --hints` shows the hints).

Imports are found with `ast`: the source module's own import lines that the copied code needs
(`import torch`, `import torch.nn.functional as F`), and `from minialign.<module> import name`
for every other module-level name it uses. A name defined in the chapter file itself is never
imported, so an exercise that calls another exercise of the same chapter calls the student's.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from .capstone import CAPSTONES, capstones_for
from .markers import CHAPTERS, LIBRARY_DIR, REPO_DIR, Exercise, find_exercises
from .questions import QUESTIONS, Question, questions_for
from .versions import HEADER, history_text, load_history, version_of

BANNER = "Generated from the library by `python -m minialign.course build`."
# the stage that runs a chapter's functions: `python -m minialign STAGE --impl exercises`
STAGE_OF_CHAPTER = {1: "pretrain", 2: "pretrain", 3: "sft", 4: "reward", 5: "ppo", 6: "dpo",
                    7: "bon", 8: "grpo"}
WIDTH = 96  # wrap width of generated comments
STUB_LINE = re.compile(r'raise NotImplementedError\("exercise (ch\d\d\.[\w.]+):')


@dataclass
class Import:
    """One name bound by an import statement of a library module."""

    module: str  # absolute module: "torch.nn.functional", "minialign.utils"
    name: str | None  # imported name for `from module import name`; None for `import module`
    asname: str | None

    @property
    def bound(self) -> str:
        if self.asname:
            return self.asname
        return self.name if self.name is not None else self.module.split(".")[0]


# ==============================================================================================
# public entry points


def render_all(library_dir: Path = LIBRARY_DIR, version: int | None = None) -> dict[str, str]:
    """{relative path: text} of every generated file: exercises/chNN_*.py and solutions/chNN_*.py.
    version: the number in their headers (default: the version of the library's items)."""
    exercises = find_exercises(library_dir)
    if version is None:
        version = item_version(library_dir)[0]
    files = {}
    for number, chapter in CHAPTERS.items():
        chapter_exercises = [e for e in exercises if e.chapter == number]
        questions = questions_for(number)
        if not chapter_exercises and not questions:
            continue
        for folder, solution in (("exercises", False), ("solutions", True)):
            files[f"{folder}/{chapter.filename}"] = render_chapter(
                number, chapter_exercises, questions, solution, version)
    return files


def item_version(library_dir: Path = LIBRARY_DIR):
    """(version, recorded, history, items) of the library's exercises, questions and capstones;
    see versions.py. `recorded` is False when the items changed since the last recorded
    version."""
    items = sorted({e.id for e in find_exercises(library_dir)}
                   | {q.id for qs in QUESTIONS.values() for q in qs}
                   | {c.id for c in CAPSTONES})
    history = load_history(library_dir / "course" / "versions.json")
    version, recorded = version_of(items, history)
    return version, recorded, history, items


def build(repo_dir: Path = REPO_DIR, check: bool = False, force: bool = False,
          out=sys.stdout) -> int:
    """Write (or, with check=True, compare) the generated files. Returns a process exit code."""
    version, recorded, history, items = item_version(repo_dir / "minialign")
    files = render_all(repo_dir / "minialign", version)
    stale = [p for folder in ("exercises", "solutions")
             for p in sorted((repo_dir / folder).glob("ch[0-9][0-9]_*.py"))
             if f"{folder}/{p.name}" not in files and BANNER in p.read_text(encoding="utf-8")]
    if check:
        code = _check(repo_dir, files, stale, out)
        if not recorded:
            print(f"the exercises and questions changed since version {version - 1} of the "
                  f"exercise set: run `python -m minialign.course build` to record version "
                  f"{version} in minialign/course/versions.json", file=out)
            return 1
        return code
    edited = [rel for rel, text in files.items()
              if rel.startswith("exercises/") and _has_student_work(repo_dir / rel)]
    if edited and not force:
        print("refusing to overwrite exercise files that contain written solutions:\n  "
              + "\n  ".join(edited)
              + "\n(students: work in your own copy; instructors: pass --force)", file=out)
        return 1
    for rel, text in files.items():
        path = repo_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8", newline="\n")
            print(f"wrote {rel}", file=out)
    for path in stale:
        path.unlink()
        print(f"removed {path.relative_to(repo_dir)} (its chapter has no exercises any more)",
              file=out)
    if not recorded:
        history[str(version)] = items
        (repo_dir / "minialign" / "course" / "versions.json").write_text(
            history_text(history), encoding="utf-8")
        print(f"recorded version {version} of the exercise set in "
              f"minialign/course/versions.json", file=out)
    print(f"{len(files)} files up to date", file=out)
    return 0


def _check(repo_dir, files, stale, out) -> int:
    problems = 0
    for rel, text in files.items():
        path = repo_dir / rel
        if not path.exists():
            print(f"{rel}: missing", file=out)
            problems += 1
            continue
        old = path.read_text(encoding="utf-8")
        if old != text:
            problems += 1
            diff = list(difflib.unified_diff(old.splitlines(), text.splitlines(),
                                             f"{rel} (committed)", f"{rel} (from the library)",
                                             lineterm="", n=2))
            shown = diff[:80]
            print("\n".join(shown), file=out)
            if len(diff) > len(shown):
                print(f"... {len(diff) - len(shown)} more diff lines", file=out)
    for path in stale:
        print(f"{path.relative_to(repo_dir)}: generated for a chapter that has no exercises "
              f"any more", file=out)
        problems += 1
    if problems:
        print(f"\n{problems} generated file(s) out of date: run `python -m minialign.course "
              f"build` and commit the result", file=out)
        return 1
    print(f"{len(files)} generated files up to date", file=out)
    return 0


def _has_student_work(path: Path) -> bool:
    """True when an exercise file exists whose stubs were (partly) replaced by code."""
    if not path.exists():
        return False
    text = path.read_text(encoding="utf-8")
    banners = set(re.findall(r"# exercise (ch\d\d\.[\w.]+) ·", text))
    stubs = set(STUB_LINE.findall(text))
    return bool(banners - stubs)


# ==============================================================================================
# one chapter file


def render_chapter(number: int, exercises: list[Exercise], questions: list[Question],
                   solution: bool, version: int = 1) -> str:
    chapter = CHAPTERS[number]
    units = _units(exercises)  # [(path, unit name, [exercises]), ...] in pipeline order
    sources = {path: path.read_text(encoding="utf-8") for path, _, _ in units}
    unit_texts = [_render_unit(sources[path].splitlines(), exs, solution)
                  for path, _, exs in units]
    # imports come from the complete code, so that both files import the same names and the
    # student has at hand everything the solution uses
    complete = unit_texts if solution else [_render_unit(sources[path].splitlines(), exs, True)
                                            for path, _, exs in units]
    imports, future = _imports_needed(units, sources, complete)
    head = [_header(number, exercises, questions, solution, sorted({e.module for e in exercises}),
                    version)]
    if future:
        head.append("from __future__ import annotations")
    if imports:
        head.append("\n".join(_format_imports(imports)))
    body = unit_texts + ([_render_questions(questions, solution)] if questions else [])
    return ("\n\n".join(head) + "\n\n\n" + "\n\n\n".join(body)).rstrip("\n") + "\n"


def _header(number, exercises, questions, solution, modules, version) -> str:
    chapter = CHAPTERS[number]
    kind = "solutions" if solution else "exercises"
    # the version line tells the grader which items this file was handed out with
    lines = [f'"""Chapter {number} · {chapter.title} — {kind}.', "",
             HEADER.format(n=version), ""]
    if solution:
        lines.append("The complete code of every exercise of the chapter"
                     + (" and the answers to its questions." if questions else "."))
    else:
        lines += ["Write the body of each function below that raises NotImplementedError (keep "
                  "its", "signature)" + (", then answer the concept questions in ANSWERS at the "
                                         "end of the file." if questions else ".")]
    if exercises:
        lines.append("")
        width = max(len(e.id) for e in exercises)
        for e in exercises:
            lines.append(f"    {e.id:<{width}}  difficulty {e.stars}  about {e.minutes} min")
    for capstone in capstones_for(number):  # graded too: the chapter's functions together
        lines += [""] + textwrap.wrap(f"Capstone {capstone.id} ({capstone.title}). "
                                      f"{capstone.description}", WIDTH)
    impl = "solutions" if solution else "exercises"
    lines += ["", "Check your work:",
              f"    python -m minialign.grade --impl {impl} --chapter {number}"]
    if not solution:
        lines.append(f"or, in a notebook:  from minialign.course import check; check({number})")
        if any(e.hints and not e.hints_in_stub for e in exercises):
            lines += textwrap.wrap(
                f"Stuck? `--hints 1` (or `check({number}, hints=1)`) adds a first hint for each "
                f"exercise not passed; `--hints 2`, 3, ... more, down to the formula.", WIDTH)
        if number in STAGE_OF_CHAPTER and exercises:
            lines += ["", "Then train with your own code (what you have not written yet comes from "
                          "the library):",
                      f"    python -m minialign {STAGE_OF_CHAPTER[number]} --impl exercises"]
    if modules:
        where = ", ".join(f"minialign/{m}.py" for m in modules)
        lines += ["", f"Library code: {where}."]
        if not solution:  # say plainly where the answers are, and when to read them
            lines += textwrap.wrap(
                "The answers: the library holds the complete code of every exercise, right "
                "under its docstring, and so does solutions/. Try first; read them after, to "
                "compare.", WIDTH)
    lines += ["", BANNER + (" This file is yours: edit it." if not solution else ""), '"""']
    return "\n".join(lines)


def _units(exercises):
    """Group exercises by the top-level definition that holds them, in library order."""
    units: dict[tuple, list[Exercise]] = {}
    for e in exercises:
        units.setdefault((e.path, e.unit), []).append(e)
    return [(path, unit, exs) for (path, unit), exs in units.items()]


def _render_unit(lines: list[str], exercises: list[Exercise], solution: bool) -> str:
    """The text of one top-level definition with its exercise regions rendered."""
    first = exercises[0].unit_start
    last = max(e.unit_end for e in exercises)
    out = []
    i = first
    for e in sorted(exercises, key=lambda e: e.start):
        out.extend(lines[i - 1: e.start - 1])  # code before the region
        indent = re.match(r"[ \t]*", lines[e.start - 1]).group(0)
        out.append(f"{indent}# exercise {e.id} · difficulty {e.stars} · about {e.minutes} "
                   f"minutes")
        region = lines[e.start: e.end - 1]
        hints, body = region[: e.n_hint_lines], region[e.n_hint_lines:]
        if e.hints_in_stub:  # a harder exercise's hints: only `grade --hints` shows them
            out.extend(hints)
        if solution:
            out.extend(body)
        else:
            out.append(f'{indent}raise NotImplementedError("exercise {e.id}: write this body")')
        i = e.end + 1
    out.extend(lines[i - 1: last])
    return "\n".join(out)


# ==============================================================================================
# imports


def _imports_needed(units, sources, unit_texts):
    """(imports the copied code needs, whether a source module used `from __future__ import annotations`)."""
    defined = {unit for _, unit, _ in units}
    needed: dict[tuple, Import] = {}  # (module, name, asname) -> import
    by_name: dict[str, Import] = {}  # bound name -> the import that binds it
    future = False
    for (path, _, _), text in zip(units, unit_texts):
        tree = ast.parse(sources[path])
        future |= any(isinstance(n, ast.ImportFrom) and n.module == "__future__"
                      and any(a.name == "annotations" for a in n.names) for n in tree.body)
        bindings = _module_bindings(tree, path.stem)
        for name in sorted(_names_used(ast.parse(text)) - defined):
            for imp in bindings.get(name, []):
                other = by_name.setdefault(imp.bound, imp)
                if imp.name is not None and (other.module, other.name) != (imp.module, imp.name):
                    raise ValueError(f"the name {imp.bound!r} means {other.module}.{other.name} "
                                     f"in one module and {imp.module}.{imp.name} in another "
                                     f"({path.name}); they cannot share a chapter file")
                needed[(imp.module, imp.name, imp.asname)] = imp
    return list(needed.values()), future


def _module_bindings(tree: ast.Module, module: str) -> dict[str, list[Import]]:
    """Top-level name -> the imports that bind it (a name the module defines maps to itself)."""
    bindings: dict[str, list[Import]] = {}
    for node in tree.body:
        if isinstance(node, ast.Import):
            for a in node.names:
                imp = Import(a.name, None, a.asname)
                bindings.setdefault(imp.bound, []).append(imp)
        elif isinstance(node, ast.ImportFrom):
            if node.module == "__future__":
                continue
            base = node.module or ""
            if node.level:  # relative import inside the flat minialign package
                base = "minialign" + ("." + base if base else "")
            for a in node.names:
                imp = Import(base, a.name, a.asname)
                bindings[imp.bound] = [imp]
        else:
            for name in _defined_names(node):
                bindings[name] = [Import(f"minialign.{module}", name, None)]
    return bindings


def _defined_names(node) -> list[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    targets = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        targets = [node.target]
    return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]


def _names_used(tree) -> set[str]:
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


def _format_imports(imports: list[Import]) -> list[str]:
    """isort-like: stdlib, third party, then minialign; `import x` before `from x import y`."""
    def group(module):
        root = module.split(".")[0]
        return 0 if root in sys.stdlib_module_names else 2 if root == "minialign" else 1

    plain = sorted({(group(i.module), i.module, i.asname) for i in imports if i.name is None})
    froms: dict[str, set[str]] = {}
    for i in imports:
        if i.name is not None:
            froms.setdefault(i.module, set()).add(i.name if not i.asname
                                                   else f"{i.name} as {i.asname}")
    lines_by_group: dict[int, list[str]] = {0: [], 1: [], 2: []}
    for g, module, asname in plain:
        lines_by_group[g].append(f"import {module}" + (f" as {asname}" if asname else ""))
    for module in sorted(froms, key=lambda m: (group(m), m)):
        names = sorted(froms[module], key=_import_order)
        lines_by_group[group(module)].append(_wrap_from(module, names))
    out = []
    for g in (0, 1, 2):
        if lines_by_group[g]:
            if out:
                out.append("")
            out.extend(lines_by_group[g])
    return out


def _import_order(name: str):
    """isort's order_by_type: CONSTANTS, then Classes, then functions, each alphabetical."""
    kind = 0 if name.isupper() else 1 if name[:1].isupper() else 2
    return kind, name.lower()


def _wrap_from(module: str, names: list[str]) -> str:
    line = f"from {module} import {', '.join(names)}"
    if len(line) <= 100:
        return line
    head = f"from {module} import ("
    wrapped = textwrap.wrap(", ".join(names) + ")", width=100 - len(head))
    return head + ("\n" + " " * len(head)).join(wrapped)


# ==============================================================================================
# questions


def _render_questions(questions: list[Question], solution: bool) -> str:
    rule = "# " + "=" * (WIDTH - 2)
    lines = [rule, "# Concept questions", "#",
             '# Answer in ANSWERS below: one letter for a choice question ("b"), the letters in '
             "order",
             '# for an ordering question (["c", "a", "b"]). Grading says whether each answer is '
             "right:",
             "# a right one is explained; a wrong one is told why the option chosen is wrong."]
    for q in questions:
        lines.append("#")
        prefix = f"# {q.id}  "
        lines.extend(textwrap.wrap(q.text, WIDTH, initial_indent=prefix,
                                   subsequent_indent="#" + " " * (len(prefix) - 1)))
        for label, option in zip(q.labels, q.options):
            first = "#" + " " * (len(prefix) + 1) + f"{label}) "
            lines.extend(textwrap.wrap(option, WIDTH, initial_indent=first,
                                       subsequent_indent="#" + " " * (len(first) - 1)))
    lines.append("")
    lines.append("ANSWERS = {")
    for q in questions:
        value = _literal(q.answer_literal) if solution else "None"
        if q.kind == "choice":
            how = f"one letter: {', '.join(q.labels[:-1])} or {q.labels[-1]}"
        else:
            how = f"the letters {q.labels[0]}-{q.labels[-1]} in order, as a list"
        lines.append(f'    "{q.id}": {value},  # {how}')
    lines.append("}")
    return "\n".join(lines)


def _literal(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    return f'"{value}"'


# ==============================================================================================
# the student handout


def write_handout(out_dir, chapters=None, library: bool = False, force: bool = False,
                  out=sys.stdout) -> int:
    """Write what students get into `out_dir`: exercises/chNN_*.py (the current version; never
    solutions, never answers) and, with library=True, a copy of the minialign package without
    the answer key (`minialign/course/answer_key.py`), for a course graded for credit.
    Refuses to overwrite an exercise file holding written solutions unless force=True."""
    out_dir = Path(out_dir)
    if (out_dir / "solutions").exists() or (library and (out_dir / "minialign").resolve()
                                             == LIBRARY_DIR.resolve()):
        print(f"{out_dir} is a copy of the repository: write the handout to a new folder",
              file=out)
        return 1
    version, recorded, _, _ = item_version(LIBRARY_DIR)
    if not recorded:
        print(f"the items changed since the last recorded version: run `python -m "
              f"minialign.course build` first, so that version {version} is recorded", file=out)
        return 1
    files = {rel: text for rel, text in render_all(LIBRARY_DIR, version).items()
             if rel.startswith("exercises/")
             and (not chapters or int(Path(rel).name[2:4]) in chapters)}
    edited = [rel for rel in files if _has_student_work(out_dir / rel)]
    if edited and not force:
        print("refusing to overwrite exercise files that contain written solutions:\n  "
              + "\n  ".join(edited) + "\n(pass --force to overwrite them)", file=out)
        return 1
    for rel, text in files.items():
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8", newline="\n")
        print(f"wrote {path}", file=out)
    if library:
        import shutil

        target = out_dir / "minialign"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(LIBRARY_DIR, target, ignore=shutil.ignore_patterns(
            "__pycache__", "*.pyc", "answer_key.py"))
        print(f"wrote {target} (the library, without the answer key)", file=out)
    print(f"{len(files)} exercise files, version {version} of the exercise set", file=out)
    return 0


# ==============================================================================================
# command line


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minialign.course build",
                                     description="Generate exercises/ and solutions/ from the "
                                                 "exercise markers of the library.")
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 with a diff when the files are out of date")
    parser.add_argument("--force", action="store_true",
                        help="overwrite exercise files even when they contain written solutions")
    args = parser.parse_args(argv)
    return build(check=args.check, force=args.force)
