"""Find the exercise regions marked in the library source, and the course's chapter map.

The complete code lives in the library (`minialign/*.py`). A function (or a method of a
top-level class) becomes an exercise by marking its body, after the docstring:

    def gather_logprobs(logits, tokens):
        \"\"\"...docstring with shapes...\"\"\"
        # >>> exercise: chapter=2 difficulty=1 minutes=10
        # hint: log_softmax over the vocabulary, then torch.gather with tokens.unsqueeze(-1)
        logps = F.log_softmax(logits.float(), dim=-1)  # (B, T, V)
        return torch.gather(logps, dim=-1, index=tokens.unsqueeze(-1)).squeeze(-1)
        # <<< exercise

Rules, checked here with errors that name the file and line:
  * one region per function, opening right after the docstring and closing at the end of the
    body (nothing but the region follows the docstring);
  * `chapter` (1-8: a key of CHAPTERS), `difficulty` (1-3) and `minutes` are required;
  * `# hint:` comment lines at the top of the region (each starts a hint; the comment lines
    after it continue it) are the exercise's hints, gentlest first, the last one down to the
    formula. A warm-up's (difficulty 1) stay in the student's stub; those of a ★★ or ★★★
    exercise are left out of the generated files and shown by the grader on request (`python
    -m minialign.grade --hints`), so that its stub holds only the docstring: the contract and
    the idea.

`find_exercises()` scans every `minialign/*.py` file, so a new marker needs no registration.
"""

from __future__ import annotations

import ast
import functools
import re
from dataclasses import dataclass
from pathlib import Path

LIBRARY_DIR = Path(__file__).resolve().parent.parent  # the minialign package folder
REPO_DIR = LIBRARY_DIR.parent  # the folder holding exercises/ and solutions/


@dataclass(frozen=True)
class Chapter:
    number: int
    topic: str  # file name part: ch02_gpt.py
    title: str
    trains: bool = False  # its checks train a model in the sandbox (a model and an optimizer)

    @property
    def filename(self) -> str:
        return f"ch{self.number:02d}_{self.topic}.py"


CHAPTERS = {c.number: c for c in [
    Chapter(1, "tokenizer", "Tokenization: byte-level BPE"),
    Chapter(2, "gpt", "The GPT: attention, sampling and log-probabilities", trains=True),
    Chapter(3, "sft", "Supervised fine-tuning", trains=True),
    Chapter(4, "reward", "Reward modelling with Bradley-Terry", trains=True),
    Chapter(5, "ppo", "RLHF with PPO", trains=True),
    Chapter(6, "dpo", "Direct preference optimisation", trains=True),
    Chapter(7, "compare", "Best-of-N and comparing the methods"),
    Chapter(8, "grpo", "RL from outcome rewards: GRPO, Dr. GRPO and RLOO"),
]}

# the pipeline order of the library's modules: exercises of a chapter follow it
PIPELINE = ["tokenizer", "model", "pretrain", "sft", "reward", "ppo", "grpo", "dpo", "bon",
            "evaluate"]

START = re.compile(r"^(?P<indent>[ \t]*)# >>> exercise:(?P<attrs>.*)$")
END = re.compile(r"^[ \t]*# <<< exercise[ \t]*$")
HINT = re.compile(r"^[ \t]*# hint:")
REQUIRED = ("chapter", "difficulty", "minutes")
STUB_HINTS_MAX_DIFFICULTY = 1  # hints of harder exercises are shown by the grader, not the stub


class MarkerError(ValueError):
    """A marker in the library that the build cannot use; the message says where and why."""


@dataclass(frozen=True)
class Exercise:
    """One marked region: where it is in the library and what the student is told about it."""

    chapter: int
    module: str  # library module name: "model"
    qualname: str  # "gather_logprobs", or "AdaptiveKLController.update" for a method
    difficulty: int  # 1 (warm-up) .. 3 (hard)
    minutes: int  # time estimate
    path: Path  # library file
    start: int  # line (1-based) of the `# >>> exercise` marker
    end: int  # line of the `# <<< exercise` marker
    unit: str  # the top-level name copied into the chapter file (function, or the class)
    unit_start: int  # first line of that top-level definition (decorators included)
    unit_end: int  # its last line (the end marker included)
    n_hint_lines: int  # the `# hint:` comment lines right after the start marker
    hints: tuple[str, ...] = ()  # their text, one entry per hint, gentlest first

    @property
    def hints_in_stub(self) -> bool:
        """True for a warm-up: its hints are copied into the student's stub. A harder
        exercise's hints are shown only by the grader, on request."""
        return self.difficulty <= STUB_HINTS_MAX_DIFFICULTY

    @property
    def id(self) -> str:
        return f"ch{self.chapter:02d}.{self.qualname}"

    @property
    def name(self) -> str:
        """The function or method name (the last part of the qualname)."""
        return self.qualname.rsplit(".", 1)[-1]

    @property
    def is_method(self) -> bool:
        return "." in self.qualname

    @property
    def stars(self) -> str:
        return "★" * self.difficulty + "☆" * (3 - self.difficulty)

    def reference(self):
        """The library's own function (the answer key), imported in the trusted process."""
        import importlib

        obj = importlib.import_module(f"minialign.{self.module}")
        for part in self.qualname.split("."):
            obj = getattr(obj, part)
        return obj


def module_order(path: Path):
    name = path.stem
    return (PIPELINE.index(name) if name in PIPELINE else len(PIPELINE), name)


def library_modules(library_dir: Path = LIBRARY_DIR) -> list[Path]:
    """The library's modules in pipeline order (private and dunder files left out)."""
    return sorted((p for p in library_dir.glob("*.py") if not p.name.startswith("_")),
                  key=module_order)


def find_exercises(library_dir: Path = LIBRARY_DIR) -> list[Exercise]:
    """Every marked region of the library, in chapter, pipeline and source order."""
    found = []
    for path in library_modules(library_dir):
        source = path.read_text(encoding="utf-8")
        if "# >>> exercise" in source or "# <<< exercise" in source:
            found.extend(_exercises_in_source_cached(source, path))
    return sorted(found, key=lambda e: (e.chapter, module_order(e.path), e.start))


@functools.lru_cache(maxsize=256)
def _exercises_in_source_cached(source: str, path: Path) -> tuple[Exercise, ...]:
    """exercises_in_source, parsed once per distinct source: the grader asks for every
    exercise several times per student, and parsing the library takes about 0.05 s."""
    return tuple(exercises_in_source(source, path))


def exercises_in_source(source: str, path: Path) -> list[Exercise]:
    """The exercises marked in one module's source (raises MarkerError on a malformed marker)."""
    lines = source.splitlines()
    where = lambda n: f"{path}:{n}"  # noqa: E731
    starts = [i for i, line in enumerate(lines, 1) if START.match(line)]
    ends = [i for i, line in enumerate(lines, 1) if END.match(line)]
    for i, line in enumerate(lines, 1):
        if ("# >>> exercise" in line or "# <<< exercise" in line) and i not in starts + ends:
            raise MarkerError(f"{where(i)}: malformed exercise marker {line.strip()!r}; write "
                              f"'# >>> exercise: chapter=N difficulty=D minutes=M' ... "
                              f"'# <<< exercise' on lines of their own")
    regions = _pair_markers(starts, ends, where)
    tree = ast.parse(source, filename=str(path))
    functions = _functions(tree)
    exercises = []
    for start, end in regions:
        enclosing = [f for f in functions if f[1].lineno < start <= f[1].end_lineno]
        if not enclosing:
            raise MarkerError(f"{where(start)}: exercise marker outside a function: mark the "
                              f"body of a top-level function or of a method of a top-level class")
        qualname, node, unit = max(enclosing, key=lambda f: f[1].lineno)  # innermost
        _check_region(node, start, end, lines, where)
        attrs = _parse_attrs(START.match(lines[start - 1]).group("attrs"), where(start))
        unit_start = min([unit.lineno] + [d.lineno for d in unit.decorator_list])
        unit_end = max([unit.end_lineno] + [e for s, e in regions
                                            if unit.lineno <= s <= unit.end_lineno])
        exercises.append(Exercise(
            chapter=attrs["chapter"], module=path.stem, qualname=qualname,
            difficulty=attrs["difficulty"], minutes=attrs["minutes"], path=path, start=start,
            end=end, unit=unit.name, unit_start=unit_start, unit_end=unit_end,
            n_hint_lines=_count_hint_lines(lines, start, end),
            hints=_hint_texts(lines[start: start + _count_hint_lines(lines, start, end)])))
    return exercises


def _pair_markers(starts, ends, where):
    if len(starts) != len(ends):
        raise MarkerError(f"{where(starts[0] if starts else ends[0])}: {len(starts)} "
                          f"'# >>> exercise' markers but {len(ends)} '# <<< exercise' markers")
    regions = list(zip(starts, ends))
    for k, (s, e) in enumerate(regions):
        if e < s or (k + 1 < len(regions) and regions[k + 1][0] < e):
            raise MarkerError(f"{where(s)}: exercise markers are not properly paired (each "
                              f"'# >>> exercise' needs its '# <<< exercise' before the next one)")
    return regions


def _functions(tree):
    """(qualname, node, top-level unit) for top-level functions and methods of top-level classes."""
    out = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out.append((node.name, node, node))
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    out.append((f"{node.name}.{item.name}", item, node))
    return out


def _check_region(node, start, end, lines, where):
    body = list(node.body)
    if ast.get_docstring(node) is None:
        raise MarkerError(f"{where(node.lineno)}: {node.name} has no docstring; an exercise "
                          f"needs one (what it computes, with shapes): students see only that")
    doc = body.pop(0)
    if doc.end_lineno >= start:
        raise MarkerError(f"{where(start)}: the exercise region must open after the docstring")
    for i in range(node.end_lineno + 1, end):
        text = lines[i - 1].strip()
        if text and not text.startswith("#"):
            raise MarkerError(f"{where(end)}: the end marker of {node.name} is not at the end "
                              f"of its body (line {i} is code outside the function)")
    for stmt in body:
        first = min([stmt.lineno] + [d.lineno for d in getattr(stmt, "decorator_list", [])])
        if first < start or stmt.end_lineno > end:
            raise MarkerError(f"{where(stmt.lineno)}: code of {node.name} outside its exercise "
                              f"region; the region must hold the whole body after the docstring")
    if not body:
        raise MarkerError(f"{where(start)}: the exercise region of {node.name} is empty")


def _parse_attrs(text: str, where: str) -> dict:
    attrs = {}
    for item in text.split():
        key, sep, value = item.partition("=")
        if not sep or key not in REQUIRED:
            raise MarkerError(f"{where}: unknown marker attribute {item!r}; expected "
                              f"{' '.join(k + '=N' for k in REQUIRED)}")
        if not value.isdigit():
            raise MarkerError(f"{where}: {key} must be a whole number, got {value!r}")
        attrs[key] = int(value)
    missing = [k for k in REQUIRED if k not in attrs]
    if missing:
        raise MarkerError(f"{where}: marker lacks {', '.join(missing)}")
    if attrs["chapter"] not in CHAPTERS:
        raise MarkerError(f"{where}: chapter={attrs['chapter']} is not one of {sorted(CHAPTERS)}")
    if not 1 <= attrs["difficulty"] <= 3:
        raise MarkerError(f"{where}: difficulty must be 1, 2 or 3")
    return attrs


def _count_hint_lines(lines, start, end) -> int:
    """`# hint:` lines right after the start marker, with the comment lines that continue them."""
    n = 0
    in_hint = False
    for i in range(start, end - 1):  # 0-based index of the lines inside the region
        text = lines[i]
        if HINT.match(text):
            in_hint = True
        elif not (in_hint and text.strip().startswith("#")):
            break
        n += 1
    return n


def _hint_texts(hint_lines) -> tuple[str, ...]:
    """The hints of a region's hint lines: each `# hint:` line starts one, and the comment lines
    after it continue it (joined with spaces)."""
    hints: list[str] = []
    for line in hint_lines:
        match = HINT.match(line)
        text = line[match.end():] if match else line.strip()[1:]
        if match or not hints:
            hints.append(text.strip())
        else:
            hints[-1] = f"{hints[-1]} {text.strip()}".strip()
    return tuple(hints)
