"""How a graded check is written: trusted code in the parent that calls the student's function.

One file per chapter, `checks_chNN.py`, registers a check per exercise:

    import torch
    from minialign import model as ref
    from minialign.course.checks import exercise

    @exercise("ch02.gather_logprobs")
    def check_gather_logprobs(t):
        with t.case("hand-sized: two positions, three tokens"):
            logits = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]]])  # (1, 2, 3)
            tokens = torch.tensor([[0, 2]])
            out = t.call(logits, tokens)  # the student's function, run in the sandbox
            t.expect_close(out, ref.gather_logprobs(logits, tokens), mistakes={
                "these are probabilities: take log_softmax": torch.softmax(logits, -1)...,
            })

`t` is a `Check`. `t.call(...)` runs the student's function in the child and returns what it
returned, rebuilt in the parent from plain data (tensors keep dtype and requires_grad);
`t.fn.run(args, kwargs, return_args=True, backward=True)` also gives the arguments after the
call (in-place changes) and the gradients of tensor arguments; `t.expect_gradients(reference,
args, wrt=[0])` uses it to check that gradients reach the inputs of a result that feeds a loss;
`t.student.new("Class", ...)` builds an object of the student's class in the child (methods are
then called on it); `t.student.build(wire.Build(...))` builds one with trusted library code and
keeps it there (a model and its optimizer for a training step: see `checks_steps.py`).

The expectations check the exact type, then dtype, then shape, then values, and stop at the
first failure with a message for the student. `mistakes` maps a hint to the output of a
deliberately wrong variant computed here (a value, or a function of no arguments that returns
one): when the student's output matches one, the hint says which mistake it looks like.
The first call of a check that raises NotImplementedError makes the exercise "not attempted".
"""

from __future__ import annotations

import importlib
import inspect
import math
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .runner import Student


@dataclass
class CheckSpec:
    id: str  # exercise id, "ch02.gather_logprobs"
    fn: Callable  # fn(t: Check) -> None; raises CheckFailed or lets a StudentProblem through


CHECKS: dict[str, CheckSpec] = {}


def exercise(exercise_id: str):
    """Register the decorated function as the check of `exercise_id`."""
    def register(fn):
        if exercise_id in CHECKS and CHECKS[exercise_id].fn is not fn:
            raise ValueError(f"two checks registered for {exercise_id}")
        CHECKS[exercise_id] = CheckSpec(exercise_id, fn)
        return fn

    return register


def load_all_checks() -> dict[str, CheckSpec]:
    """Import every checks_chNN module of the course package (each registers its checks)."""
    for path in sorted(Path(__file__).parent.glob("checks_ch[0-9][0-9].py")):
        importlib.import_module(f"{__package__}.{path.stem}")
    return CHECKS


NO_GRADIENT = ("this result feeds a loss, so it must stay in the autograd graph: no "
               "torch.no_grad(), .detach(), .item(), .tolist() or numpy on the way, and no new "
               "tensor built from its values (torch.tensor(...))")


class CheckFailed(Exception):
    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message = message
        self.hint = hint


# ==============================================================================================
# the check context


class Check:
    """What a check works with: the student's module, a seeded generator, and expectations."""

    def __init__(self, exercise, student: Student):
        self.exercise = exercise
        self.student = student
        self.rng = torch.Generator().manual_seed(zlib.crc32(exercise.id.encode()))
        self.case_name = ""

    @property
    def fn(self):
        """The student's function of this exercise (use t.student.new(...) for a method)."""
        if self.exercise.is_method:
            raise TypeError(f"{self.exercise.id} is a method: build an object with "
                            f"t.student.new({self.exercise.qualname.split('.')[0]!r}, ...)")
        return getattr(self.student, self.exercise.qualname)

    def call(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    @contextmanager
    def case(self, name: str):
        """Label the checks inside, so that a failure says which case failed."""
        previous, self.case_name = self.case_name, name
        yield
        self.case_name = previous  # not restored on failure: the report names the failing case

    # inputs ------------------------------------------------------------------------------------

    def randn(self, *shape, dtype=torch.float32):
        return torch.randn(*shape, generator=self.rng, dtype=dtype)

    def randint(self, high: int, shape, low: int = 0):
        return torch.randint(low, high, tuple(shape), generator=self.rng)

    # expectations ------------------------------------------------------------------------------

    def fail(self, message: str, hint: str = ""):
        raise CheckFailed(message, hint)

    def expect(self, condition, message: str, hint: str = ""):
        if not condition:
            self.fail(message, hint)

    def expect_tensor(self, value, *, shape, dtype, what="the result", mistakes=None, hint=""):
        """Exactly a torch.Tensor, with this dtype and shape."""
        if type(value) is not torch.Tensor:
            got = describe_type(value)
            extra = {np.ndarray: "convert it with torch.from_numpy, or compute with torch ops",
                     list: "build a tensor (torch.tensor, torch.stack) instead of a list"}
            self.fail(f"{what} should be a torch.Tensor of shape {tuple(shape)}, got {got}",
                      hint or extra.get(type(value), ""))
        if value.dtype != dtype:
            self.fail(f"{what} has dtype {value.dtype}, expected {dtype}",
                      self.diagnose(value, mistakes) or hint or _dtype_hint(value.dtype, dtype))
        if tuple(value.shape) != tuple(shape):
            self.fail(f"{what} has shape {tuple(value.shape)}, expected {tuple(shape)}",
                      self.diagnose(value, mistakes) or hint)

    def expect_close(self, actual, expected, *, atol=1e-5, rtol=1e-4, what="the result",
                     mistakes=None, hint="", only=None):
        """Numbers or tensors equal up to tolerance (inf and nan must match exactly).

        `only`: a bool tensor broadcastable to the expected shape; values are compared there
        only (e.g. real tokens, not padding)."""
        if isinstance(expected, torch.Tensor):
            self.expect_tensor(actual, shape=expected.shape, dtype=expected.dtype, what=what,
                               mistakes=mistakes, hint=hint)
            a, e = actual.detach(), expected.detach()
            if only is not None:
                mask = only.expand_as(e).bool()
                a, e = a[mask], e[mask]
            if not tensors_close(a, e, atol, rtol):
                self.fail(f"{what} is wrong: {value_difference(a, e, atol, rtol)}",
                          self.diagnose(actual, mistakes, atol, rtol, only) or hint)
            return
        if type(actual) not in (int, float) or type(actual) is bool:
            self.fail(f"{what} should be a Python number, got {describe_type(actual)}",
                      hint or "return a float (use .item() to turn a one-element tensor into one)")
        if not numbers_close(actual, expected, atol, rtol):
            self.fail(f"{what} is {actual!r}, expected {expected!r}",
                      self.diagnose(actual, mistakes, atol, rtol) or hint)

    def expect_equal(self, actual, expected, *, what="the result", mistakes=None, hint=""):
        """Plain values (lists, dicts, tuples, ints, str) equal, with the same types throughout."""
        problem = plain_difference(actual, expected)
        if problem:
            self.fail(f"{what} {problem}", self.diagnose(actual, mistakes) or hint)

    def expect_gradients(self, reference, args, kwargs=None, *, wrt, output=None, atol=1e-5,
                         rtol=1e-4, hint=""):
        """The gradient of the student's result reaches the arguments at positions `wrt` and
        equals the reference's.

        The sum of the result (or of result[output]) is backpropagated in the child, and the
        same is done here with `reference`. The values can be right while no gradient flows (a
        result computed under torch.no_grad(), from detached inputs, or through .item() or
        numpy): such a result trains nothing once it feeds a loss. `hint` is given when the
        gradients differ. Returns the CallResult."""
        kwargs = dict(kwargs or {})
        names = list(inspect.signature(reference).parameters)

        def leaves():  # fresh leaf tensors, so that each side gets gradients of its own
            return [a.detach().clone().requires_grad_(True) if i in wrt else a
                    for i, a in enumerate(args)]

        result = self.fn.run(leaves(), kwargs, backward=True, output=output)
        copies = leaves()
        expected = reference(*copies, **kwargs)
        (expected if output is None else expected[output]).sum().backward()
        grads = result.grads
        for i in wrt:
            got = grads["args"][i] if grads.get("connected") and i < len(grads["args"]) \
                else None
            if got is None:
                self.fail(f"no gradient flows from the result back to `{names[i]}`", NO_GRADIENT)
            self.expect_close(got, copies[i].grad, atol=atol, rtol=rtol, hint=hint,
                              what=f"the gradient of the result w.r.t. `{names[i]}`")
        return result

    # diagnosis ---------------------------------------------------------------------------------

    def diagnose(self, actual, mistakes, atol=1e-5, rtol=1e-4, only=None) -> str:
        """The hints of the mistakes whose output equals `actual` ("" when none does); when
        several do on this input, all are named."""
        hints = []
        for hint, candidate in (mistakes or {}).items():
            value = candidate() if callable(candidate) else candidate
            if hint not in hints and same_output(actual, value, atol, rtol, only):
                hints.append(hint)
        return "\n  or: ".join(hints)


# ==============================================================================================
# comparisons (also used by the tests)


def tensors_close(a, b, atol=1e-5, rtol=1e-4) -> bool:
    if a.shape != b.shape:
        return False
    if a.dtype == torch.bool or not (a.is_floating_point() or a.is_complex()):
        return bool(torch.equal(a, b.to(a.dtype))) if a.dtype == b.dtype else False
    a, b = a.double(), b.double()
    nan_a, nan_b = torch.isnan(a), torch.isnan(b)
    if not torch.equal(nan_a, nan_b):
        return False
    inf_a, inf_b = torch.isinf(a), torch.isinf(b)
    if not torch.equal(inf_a, inf_b) or not torch.equal(a[inf_a], b[inf_b]):
        return False
    finite = ~(nan_a | inf_a)
    return bool(((a[finite] - b[finite]).abs() <= atol + rtol * b[finite].abs()).all())


def numbers_close(a, b, atol=1e-5, rtol=1e-4) -> bool:
    if math.isnan(b) or math.isnan(a):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(b) or math.isinf(a):
        return a == b
    return abs(a - b) <= atol + rtol * abs(b)


def same_output(actual, candidate, atol=1e-5, rtol=1e-4, only=None) -> bool:
    """Does the student's output equal a mistake's output (same type, dtype, shape, values)?"""
    if isinstance(candidate, torch.Tensor):
        if type(actual) is not torch.Tensor or actual.shape != candidate.shape \
                or actual.dtype != candidate.dtype:
            return False
        a, c = actual.detach(), candidate.detach()
        if only is not None and _broadcasts_to(only.shape, a.shape):
            mask = only.expand_as(a)
            a, c = a[mask], c[mask]
        return tensors_close(a, c, atol, rtol)
    if type(candidate) in (int, float) and type(actual) in (int, float):
        return numbers_close(actual, candidate, atol, rtol)
    return plain_same(actual, candidate)


def _broadcasts_to(small, big) -> bool:
    try:
        return tuple(torch.broadcast_shapes(tuple(small), tuple(big))) == tuple(big)
    except RuntimeError:
        return False


def plain_same(actual, expected) -> bool:
    """plain_difference(actual, expected) == "", without writing the description (which for a
    model's state means printing every tensor in it)."""
    if type(expected) is bool or type(actual) is bool:
        return type(actual) is type(expected) and actual == expected
    if type(actual) is not type(expected):
        return False
    if isinstance(expected, dict):
        return actual.keys() == expected.keys() and \
            all(plain_same(actual[k], expected[k]) for k in expected)
    if isinstance(expected, (list, tuple)):
        return len(actual) == len(expected) and \
            all(plain_same(a, e) for a, e in zip(actual, expected))
    if isinstance(expected, float):
        return numbers_close(actual, expected)
    if isinstance(expected, torch.Tensor):
        return tensors_close(actual, expected)
    return bool(actual == expected)


def plain_difference(actual, expected) -> str:
    """"" when equal with the same types throughout, else a short description of the first
    difference (written to follow "the result ...")."""
    if type(expected) is bool or type(actual) is bool:
        same = type(actual) is type(expected) and actual == expected
        return "" if same else f"is {_short(actual)}, expected {_short(expected)}"
    if type(actual) is not type(expected):
        return f"is {describe_type(actual)}, expected {describe_type(expected)}"
    if isinstance(expected, dict):
        missing = [k for k in expected if k not in actual]
        extra = [k for k in actual if k not in expected]
        wrong = [k for k in expected if k in actual and not plain_same(actual[k], expected[k])]
        if not (missing or extra or wrong):
            return ""
        parts = []
        if wrong:
            k = wrong[0]
            parts.append(f"has {_short(k)}: {_short(actual[k])} where {_short(expected[k])} is "
                         f"expected" + (f" (and {len(wrong) - 1} more wrong)" if len(wrong) > 1
                                        else ""))
        if missing:
            parts.append(f"lacks {len(missing)} key(s), e.g. {_short(missing[0])}")
        if extra:
            parts.append(f"has {len(extra)} key(s) it should not, e.g. {_short(extra[0])}")
        return "; ".join(parts) + f" (expected {_short(expected)})"
    if isinstance(expected, (list, tuple)):
        if len(actual) != len(expected) or not all(plain_same(a, e)
                                                    for a, e in zip(actual, expected)):
            return f"is {_short(actual)}, expected {_short(expected)}"
        return ""
    if isinstance(expected, float):
        return "" if numbers_close(actual, expected) else f"is {actual!r}, expected {expected!r}"
    if isinstance(expected, torch.Tensor):
        return "" if tensors_close(actual, expected) else "has the wrong values"
    return "" if actual == expected else f"is {_short(actual)}, expected {_short(expected)}"


def describe_type(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, np.ndarray):
        return f"a numpy array of shape {value.shape}"
    if value is None:
        return "None"
    return f"a {type(value).__name__}" if type(value).__module__ == "builtins" \
        else f"an object of type {type(value).__name__}"


def value_difference(actual, expected, atol, rtol) -> str:
    """Where two same-shape tensors differ, readable: small ones in full, else the first index."""
    if actual.numel() <= 12:
        return f"got {_fmt(actual)}, expected {_fmt(expected)}"
    a, e = actual.double(), expected.double()
    bad = ~(((a - e).abs() <= atol + rtol * e.abs()) | (a == e) | (a.isnan() & e.isnan()))
    index = tuple(int(i) for i in bad.nonzero()[0]) if bad.any() else ()
    return (f"{int(bad.sum())} of {a.numel()} values differ; the first at index {index}: got "
            f"{_num(a[index])}, expected {_num(e[index])}")


def _fmt(t) -> str:
    if t.dim() == 0:
        return _num(t)
    return "[" + ", ".join(_fmt(x) for x in t) + "]"


def _num(x) -> str:
    v = x.item() if isinstance(x, torch.Tensor) else x
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("-inf" if v < 0 else "inf") if math.isinf(v) \
            else f"{v:.4g}"
    return str(v)


def _short(value, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + " ...]"


def _dtype_hint(got, expected) -> str:
    if expected.is_floating_point and not got.is_floating_point:
        return "the result should hold floats; check the dtype of what you return"
    if got == torch.float64 and expected == torch.float32:
        return "keep float32: something turned the values into float64 (a numpy or Python float?)"
    return ""
