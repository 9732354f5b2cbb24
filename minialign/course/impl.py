"""Train with your own code: every exercise you have written replaces the library's function
wherever the library calls it, inside the training loops too.

    python -m minialign dpo --impl exercises        # the command line (runs/exercises)
    from minialign.course import use; use("exercises")   # a notebook: every stage after this

`use(impl)` loads your chapter files (`exercises/`, `solutions/` or any folder holding files with
the generated names) in this process, chapter by chapter, and rebinds each written function in
every library module that holds it, so `dpo.train` calls *your* `dpo_loss` and `model.py` calls
your `gather_logprobs`. A function whose body is still the untouched stub (or that raises
NotImplementedError when called) falls back to the library's, with one line saying so. This is
your code on your machine: it runs in-process, unsandboxed. Grading for credit is another
matter (`python -m minialign.grade` keeps the sandbox).

Your functions are watched, so that a bug stops the stage with a message naming the function
instead of a traceback from deep inside a loop: the first call of each is compared with the
library's on a copy of the same inputs (type, shape, dtype), every call is checked for nan, and
an exception is reported with your file and line. The comparison restores every random state it
touches, so `use("solutions")` reproduces the library's run bit for bit. A training step (a
function given an optimizer) is not compared: it changes the model it is given.

Attention is the one place where speed wins: the model runs the fused kernel, which gives the
same numbers as a correct hand-written `causal_self_attention`. When yours is written, `use`
first checks it against the fused kernel on random cases (with padding); if it agrees, the
fused kernel keeps running; if not, the model runs *your* attention, so the bug shows in training.
"""

from __future__ import annotations

import ast
import copy
import functools
import importlib
import importlib.util
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .markers import CHAPTERS, LIBRARY_DIR, REPO_DIR, Exercise, find_exercises, library_modules

LIBRARY = "library"


class StudentCodeError(RuntimeError):
    """One of your functions failed inside a stage; the message names it and says how."""


@dataclass
class Binding:
    """How one exercise is served during a run."""

    exercise: Exercise
    source: str  # "student" or "library"
    why: str = ""  # why the library's is used ("not written yet", "file not found", ...)


@dataclass
class Active:
    """The implementation in use: its name, folder, bindings, and how to undo the patches."""

    name: str
    folder: Path
    bindings: dict[str, Binding] = field(default_factory=dict)
    undo: list = field(default_factory=list)  # (owner, attribute, original value)
    log: object = print

    def record(self) -> dict:
        """What a run's metrics.json and summary say about the code that trained it."""
        return {"impl": self.name, "folder": str(self.folder),
                "student": [k for k, b in self.bindings.items() if b.source == "student"],
                "library": {k: b.why for k, b in self.bindings.items() if b.source == LIBRARY}}

    def fall_back(self, exercise_id: str, why: str) -> None:
        binding = self.bindings[exercise_id]
        if binding.source != LIBRARY:
            binding.source, binding.why = LIBRARY, why
            self.log(f"{exercise_id}: {why} — using the library's")


_active: Active | None = None


def current() -> Active | None:
    """The implementation set by `use`, or None when the library's own code runs."""
    return _active


def resolve(impl: str | Path) -> Path:
    """'exercises' and 'solutions' are the repository's folders; anything else is a path."""
    if str(impl) in ("exercises", "solutions"):
        return REPO_DIR / str(impl)
    return Path(impl).expanduser()


def run_name(impl: str | Path) -> str:
    """The default run folder's name for an implementation: never `default`."""
    name = resolve(impl).resolve().name or "impl"
    return name if name not in ("default", "fast") else f"impl-{name}"


def use(impl: str | Path = "exercises", log=print) -> Active | None:
    """Train with the functions written in `impl` from now on (in this process).

    impl: "exercises", "solutions", a folder path, or "library" (undo: the library's own code).
    Returns the active implementation (None for "library")."""
    global _active
    restore()
    if str(impl) == LIBRARY:
        return None
    folder = resolve(impl)
    if not folder.is_dir():
        raise FileNotFoundError(f"--impl {impl}: no such folder ({folder})")
    for path in library_modules(LIBRARY_DIR):  # every module, so that none keeps an old binding
        importlib.import_module(f"minialign.{path.stem}")
    _active = Active(str(impl), folder, log=log)
    try:
        exercises = find_exercises()
        for number in sorted({e.chapter for e in exercises}):
            _use_chapter(_active, number, [e for e in exercises if e.chapter == number])
    except BaseException:
        restore()
        raise
    written = sum(b.source == "student" for b in _active.bindings.values())
    log(f"training with {folder}: {written} of {len(_active.bindings)} functions are yours")
    return _active


def restore() -> None:
    """Put the library's own functions back everywhere (and forget the evaluations kept in
    this process: they were sampled by the functions in use then)."""
    global _active
    if _active is not None:
        for owner, name, original in reversed(_active.undo):
            setattr(owner, name, original)
    _active = None
    importlib.import_module("minialign.evaluate").forget_evaluations()


# ==============================================================================================
# loading a chapter file and rebinding its functions


def _use_chapter(active: Active, number: int, exercises: list[Exercise]) -> None:
    path = active.folder / CHAPTERS[number].filename
    for e in exercises:
        active.bindings[e.id] = Binding(e, "student")
    if not path.is_file():
        for e in exercises:
            active.fall_back(e.id, f"{path.name} not found")
        return
    source = path.read_bytes()
    tree = ast.parse(source, filename=str(path))  # a SyntaxError names the file and line
    stubs = {e.id for e in exercises if _is_untouched_stub(tree, e)}
    for e in exercises:
        if e.id in stubs:
            active.fall_back(e.id, "not written yet")
    if len(stubs) == len(exercises):
        return  # nothing of this file runs
    module = _load(path, f"minialign_impl_ch{number:02d}")
    for e in exercises:
        if e.id in stubs:
            continue
        student = _lookup(module, e.qualname)
        if not callable(student):
            active.fall_back(e.id, f"{e.qualname} is not defined in {path.name}")
            continue
        _rebind(active, e, student, path)


def _load(path: Path, module_name: str):
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise StudentCodeError(f"{path} could not be loaded: {type(e).__name__}: {e}") from e
    return module


def _lookup(obj, qualname: str):
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return obj


def _is_untouched_stub(tree: ast.Module, exercise: Exercise) -> bool:
    """The exercise's def is still `raise NotImplementedError(...)` after its docstring."""
    scope = tree.body
    for part in exercise.qualname.split("."):
        found = [n for n in scope if isinstance(n, (ast.FunctionDef, ast.ClassDef))
                 and n.name == part]
        if not found:
            return False
        node = found[-1]
        scope = node.body
    if not isinstance(node, ast.FunctionDef):
        return False
    body = node.body[1:] if ast.get_docstring(node) is not None else node.body
    if len(body) != 1 or not isinstance(body[0], ast.Raise) or body[0].exc is None:
        return False
    exc = body[0].exc.func if isinstance(body[0].exc, ast.Call) else body[0].exc
    return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"


def _rebind(active: Active, e: Exercise, student, path: Path) -> None:
    """Replace the library's function by a watched call of the student's, everywhere."""
    library = e.reference()
    if e.qualname == "causal_self_attention" and _attention_agrees(student):
        active.log(f"{e.id}: yours matches the fused attention kernel on random cases — "
                   f"the model keeps the fused kernel (the same numbers, faster)")
        return
    wrapper = _watched(active, e, student, library, path)
    if e.is_method:
        owner = importlib.import_module(f"minialign.{e.module}")
        owner = _lookup(owner, e.qualname.rsplit(".", 1)[0])
        active.undo.append((owner, e.name, owner.__dict__[e.name]))
        setattr(owner, e.name, wrapper)
        return
    for name, module in list(sys.modules.items()):
        if not name.startswith("minialign.") or name.startswith("minialign.course"):
            continue
        for attr, value in list(vars(module).items()):
            if value is library:
                active.undo.append((module, attr, value))
                setattr(module, attr, wrapper)
    if e.qualname == "causal_self_attention":  # yours disagrees: run it, not the fused kernel
        model = importlib.import_module("minialign.model")
        active.undo.append((model, "FORCE_HAND_WRITTEN_ATTENTION",
                            getattr(model, "FORCE_HAND_WRITTEN_ATTENTION", False)))
        model.FORCE_HAND_WRITTEN_ATTENTION = True
        active.log(f"{e.id}: yours differs from the fused attention kernel — the model runs yours")


# ==============================================================================================
# watching a student's function


def _watched(active: Active, e: Exercise, student, library, path: Path):
    checked = False

    @functools.wraps(library)
    def call(*args, **kwargs):
        nonlocal checked
        if active.bindings[e.id].source == LIBRARY:
            return library(*args, **kwargs)
        expected = _reference_output(library, args, kwargs) if not checked else None
        try:
            out = student(*args, **kwargs)
        except NotImplementedError:
            active.fall_back(e.id, "not written yet")
            return library(*args, **kwargs)
        except StudentCodeError:
            raise
        except Exception as err:
            raise StudentCodeError(f"{e.id} (your {path.name}) raised {type(err).__name__}: "
                                   f"{err}{_where(err, path)}") from err
        if not checked and expected is not _UNKNOWN:
            problem = _compare(out, expected, "the result")
            if problem:
                raise StudentCodeError(f"{e.id} (your {path.name}) {problem}; the library's "
                                       f"returns {_describe(expected)} for the same inputs")
            checked = True
        if _has_nan(out):
            raise StudentCodeError(f"{e.id} (your {path.name}) produced nan; the library's "
                                   f"does not on these inputs (a log of 0, a 0/0, a mean over "
                                   f"an empty mask?)")
        return out

    return call


_UNKNOWN = object()


def _reference_output(library, args, kwargs):
    """The library's output on a copy of the inputs, every random state left as it was."""
    if any(isinstance(a, torch.optim.Optimizer) for a in (*args, *kwargs.values())):
        # a training step (pretrain_step, sft_step, ...) updates the model and optimizer it is
        # given, which are not copied: the library's would take a second step on them
        return _UNKNOWN
    generators = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Generator)]
    states = [g.get_state() for g in generators]
    torch_state, python_state = torch.get_rng_state(), random.getstate()
    try:
        with torch.no_grad():
            return library(*_copy(args), **_copy(kwargs))
    except Exception:
        return _UNKNOWN  # the comparison is a courtesy: never fail a run because of it
    finally:
        torch.set_rng_state(torch_state)
        random.setstate(python_state)
        for g, s in zip(generators, states):
            g.set_state(s)


def _copy(value):
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (list, tuple)):
        return type(value)(_copy(v) for v in value)
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, (torch.nn.Module, torch.Generator)):
        return value
    try:
        return copy.copy(value)  # e.g. the controller whose method is an exercise
    except Exception:
        return value


def _compare(out, expected, where: str) -> str:
    """'' when out has the structure of expected, else what differs."""
    if isinstance(expected, torch.Tensor):
        if not isinstance(out, torch.Tensor):
            return f"returned {_describe(out)} as {where}, not a tensor"
        if out.shape != expected.shape:
            return f"returned {where} of shape {tuple(out.shape)}"
        if out.dtype != expected.dtype:
            return f"returned {where} of dtype {out.dtype}"
        return ""
    if isinstance(expected, (tuple, list)):
        if not isinstance(out, (tuple, list)) or len(out) != len(expected):
            return f"returned {_describe(out)} as {where}"
        for i, (o, x) in enumerate(zip(out, expected)):
            problem = _compare(o, x, f"item {i} of {where}")
            if problem:
                return problem
        return ""
    if isinstance(expected, dict):
        if not isinstance(out, dict) or set(out) != set(expected):
            return f"returned {_describe(out)} as {where}"
        return ""
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        if not isinstance(out, (int, float, torch.Tensor)) or isinstance(out, bool):
            return f"returned {_describe(out)} as {where}, not a number"
    return ""


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)} ({value.dtype})"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}: (" + \
            ", ".join(_describe(v) for v in value[:4]) + ")"
    if isinstance(value, dict):
        return f"a dict with keys {sorted(map(str, value))[:6]}"
    return f"a {type(value).__name__}"


def _has_nan(value) -> bool:
    if isinstance(value, torch.Tensor):
        return value.is_floating_point() and bool(torch.isnan(value.detach()).any())
    if isinstance(value, (tuple, list)):
        return any(_has_nan(v) for v in value)
    if isinstance(value, dict):
        return any(_has_nan(v) for v in value.values())
    return isinstance(value, float) and value != value


def _where(err: BaseException, path: Path) -> str:
    """' (line N: code)' for the deepest frame of the student's file in the traceback."""
    import traceback

    frames = [f for f in traceback.extract_tb(err.__traceback__) if Path(f.filename) == path]
    if not frames:
        return ""
    f = frames[-1]
    return f"\n  at {path.name} line {f.lineno}: {(f.line or '').strip()}"


# ==============================================================================================
# attention: the fused kernel stays when the student's function gives its numbers


def _attention_agrees(student, cases: int = 4) -> bool:
    """Does the student's causal_self_attention give the fused kernel's output (with and without
    a key-padding mask, query length 1 and full)? Any exception counts as disagreement."""
    from .. import model

    generator = torch.Generator().manual_seed(0)
    try:
        for i in range(cases):
            B, H, T, hs = 2, 2, 5 + i, 4
            Tq = 1 if i == 3 else T
            q = torch.randn(B, H, Tq, hs, generator=generator)
            k, v = (torch.randn(B, H, T, hs, generator=generator) for _ in range(2))
            pad = None
            if i % 2:
                pad = torch.ones(B, T, dtype=torch.bool)
                pad[0, :2] = False  # a left-padded row
            mask = model._attention_mask(Tq, T, pad, q.device)
            fused = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            mine = student(q, k, v, pad)
            if not isinstance(mine, torch.Tensor) or mine.shape != fused.shape or \
                    not torch.allclose(mine, fused, atol=1e-5, rtol=1e-4):
                return False
    except Exception:
        return False
    return True
