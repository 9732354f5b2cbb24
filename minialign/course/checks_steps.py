"""Checking a training step: the student's function updates a model; compare the model after.

A step exercise (ch02.pretrain_step, ch03.sft_step, and the same way a reward-model, PPO or DPO
update) is given objects it changes in place, a model and its optimizer, and returns the
batch's loss. Its check, with `expect_steps`:

  1. builds the objects in the child with trusted fixtures (`fixtures.py`, through the
     sandbox's `build` request) and keeps them there, so that the student's code gets a real
     model and optimizer;
  2. calls the student's step on them a few times, on batches sent from here;
  3. reads back what the steps left (`fixtures.state_of`: every parameter; and the optimizer's
     step count) and compares it with the library's step run here, on objects built here by
     the same fixtures with the same seeds: the same numbers, up to rounding;
  4. when they differ, runs each usual mistake (a variant of the step: `variant_step`) here the
     same way, and gives the hint of the one whose result the student's matches.

    setup = {"model": Build(f"{FIXTURES}:tiny_gpt", seed=0),
             "optimizer": Build(f"{FIXTURES}:adamw", Kept("model"), lr=0.05)}
    calls = [(Kept("model"), Kept("optimizer"), x, y, 0.01, 0.5)]   # one step
    expect_steps(t, setup, calls, reference=pretrain.pretrain_step,
                 mistakes=step_mistakes(lambda model, x, y: model(x, y)[1]))

`Kept("model")` stands for the object built under that name: its handle in the child, the
object itself here. Only this module decides what is built, on both sides; what the child sends
back is data that is compared, never run. `expect_loss_falls` is the behavioural check: a few
student steps on one small batch must lower its loss.

The module's name keeps it out of the library copy the child sees (`stublib.LEFT_OUT`).
"""

from __future__ import annotations

import functools
import importlib
import threading
from dataclasses import dataclass

import torch

from . import fixtures
from .checks import describe_type, tensors_close, value_difference
from .wire import Build

FIXTURES = "minialign.course.fixtures"

# The grader checks chapters in parallel threads, and torch's global generator (which model
# initialisation and dropout draw from) is one per process: the runs here that seed it and draw
# from it hold fixtures.GLOBAL_RANDOM_STATE, the lock the fixtures other checks build under, and
# take turns with them, or a dropout mask could come from another chapter's draws.


@dataclass(frozen=True)
class Kept:
    """Stands for the object built under `name` in a step check's setup."""

    name: str


@dataclass
class Steps:
    """What a run of step calls left: each call's result, the parameters, the optimizer's count."""

    losses: list
    state: object  # {name: tensor} (from the child: anything, until checked)
    optimizer_steps: object  # int


# ==============================================================================================
# running steps, in the child (the student's) and here (the library's and the mistakes)


def student_steps(t, setup: dict, calls: list, seed: int = 0) -> Steps:
    """Build `setup` in the child, call the student's step once per entry of `calls` (torch's
    generator set to `seed` first, for dropout), and read back the model and optimizer."""
    kept: dict = {}
    for name, build in setup.items():
        kept[name] = t.student.build(_substitute(build, kept))
    t.student.build(Build(f"{FIXTURES}:reseed", seed), keep=False)
    losses = [t.call(*_substitute(tuple(args), kept)) for args in calls]
    state = t.student.build(Build(f"{FIXTURES}:state_of", kept["model"]), keep=False)
    count = t.student.build(Build(f"{FIXTURES}:optimizer_steps", kept["optimizer"]), keep=False)
    return Steps(losses, state, count)


def local_steps(step, setup: dict, calls: list, seed: int = 0) -> Steps:
    """The same with trusted `step` (the library's, or a mistake), here; torch's global random
    state is left as it was. Computed once per grading process for the same step, setup, calls
    and seed (`_remembered`): every student of a class is compared with the same numbers."""
    return _remembered("steps", step, (setup, calls, seed),
                       lambda: _local_steps(step, setup, calls, seed))


def _local_steps(step, setup: dict, calls: list, seed: int = 0) -> Steps:
    # on one thread, as the student's steps run in the sandbox (fixtures.one_thread)
    with fixtures.one_thread(), fixtures.GLOBAL_RANDOM_STATE, torch.random.fork_rng(devices=[]):
        kept: dict = {}
        for name, build in setup.items():
            kept[name] = _construct(_substitute(build, kept))
        fixtures.reseed(seed)
        losses = [step(*_substitute(tuple(args), kept)) for args in calls]
        return Steps(losses, fixtures.state_of(kept["model"]),
                     fixtures.optimizer_steps(kept["optimizer"]))


def _substitute(value, kept: dict):
    """`value` with each Kept replaced by the object built under its name."""
    if type(value) is Kept:
        return kept[value.name]
    if type(value) in (list, tuple):
        return type(value)(_substitute(v, kept) for v in value)
    if type(value) is dict:
        return {k: _substitute(v, kept) for k, v in value.items()}
    if type(value) is Build:
        return Build(value.target, *_substitute(value.args, kept),
                     **_substitute(value.kwargs, kept))
    return value


def _construct(build: Build):
    """Call a Build's target here, as the child's `build` request does there."""
    module, _, attr = build.target.partition(":")
    target = importlib.import_module(module)
    for part in attr.split("."):
        target = getattr(target, part)
    args = [_construct(a) if type(a) is Build else a for a in build.args]
    kwargs = {k: _construct(v) if type(v) is Build else v for k, v in build.kwargs.items()}
    return target(*args, **kwargs)


# ==============================================================================================
# the usual mistakes of a step


@functools.lru_cache(maxsize=None)  # one function per mistake: its results are remembered
def variant_step(loss_of, *, zero_grad=True, clip="before", lr="all", train=True):
    """A training step shaped (model, optimizer, *batch, lr, grad_clip) -> float, with the
    library's order of things unless told otherwise. loss_of(model, *batch) -> the loss
    (a scalar tensor). zero_grad=False keeps the last step's gradients; clip "before" (the
    update), "after" or None; lr "all" (every parameter group), "first" (the first group
    only), "after" (set after the update) or None (never set); train=False leaves the model in
    the mode it came in."""
    def step(model, optimizer, *rest):
        *batch, step_lr, grad_clip = rest
        groups = {"all": optimizer.param_groups, "first": optimizer.param_groups[:1]}
        if train:
            model.train()
        for group in groups.get(lr, []):
            group["lr"] = step_lr
        if zero_grad:
            optimizer.zero_grad(set_to_none=True)
        loss = loss_of(model, *batch)
        loss.backward()
        if clip == "before":
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        if clip == "after":
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        if lr == "after":
            for group in optimizer.param_groups:
                group["lr"] = step_lr
        return loss.item()

    return step


def step_mistakes(loss_of) -> dict:
    """{hint: variant step} for the mistakes every training step can make."""
    return {
        "the gradients were not zeroed: backward adds to .grad, so the second step used the "
        "sum of both batches' gradients; clear them (optimizer.zero_grad()) before backward":
            variant_step(loss_of, zero_grad=False),
        "the gradients were not clipped before the update: clip_grad_norm_ goes between "
        "backward and optimizer.step() (after the step it changes nothing)":
            variant_step(loss_of, clip="after"),
        "the learning rate passed in was not used (the optimizer kept the one it was built "
        "with): set it on every group of optimizer.param_groups before optimizer.step()":
            variant_step(loss_of, lr=None),
        "the learning rate was set after optimizer.step(): each step must use its own, so set "
        "it before the update": variant_step(loss_of, lr="after"),
        "the learning rate was set on the first parameter group only: the optimizer has two "
        "(matrices with weight decay, the rest without); set it on every group":
            variant_step(loss_of, lr="first"),
        "the model trained in eval mode (dropout off): call model.train() at the start of the "
        "step; the loop's validation pass leaves the model in eval mode":
            variant_step(loss_of, train=False),
    }


# ==============================================================================================
# expectations


def compare_steps(t, setup: dict, calls: list, *, reference, mistakes=None, seed: int = 0,
                  model: str = "the model's parameters", atol: float = 1e-5, rtol: float = 1e-4):
    """Run the student's steps and the library's `reference` on the same fixtures; check one
    optimizer step per call and the parameters they leave. Returns (got, want, variant):
    variant(hint) runs the mistake `mistakes[hint]` (once, when asked), for the checks of what
    the step returns, which differ from step to step."""
    got = student_steps(t, setup, calls, seed)
    want = local_steps(reference, setup, calls, seed)
    runs: dict = {}

    def variant(hint):  # each mistake is run at most once
        if hint not in runs:
            runs[hint] = local_steps(mistakes[hint], setup, calls, seed)
        return runs[hint]

    n = len(calls)
    count = got.optimizer_steps
    if type(count) is not int or count != want.optimizer_steps:
        t.fail(f"the optimizer took {count} step(s) in {n} call(s) of your function",
               "call optimizer.step() exactly once per call, after backward")
    expect_state(t, got.state, want.state, what=f"{model} after {n} step{'s' if n > 1 else ''}",
                 atol=atol, rtol=rtol,
                 mistakes={h: (lambda h=h: variant(h).state) for h in mistakes or {}})
    return got, want, variant


def expect_steps(t, setup: dict, calls: list, *, reference, mistakes=None, seed: int = 0,
                 atol: float = 1e-5, rtol: float = 1e-4) -> Steps:
    """The student's steps leave the model as the library's do, take one optimizer step per
    call and return the same losses. `mistakes`: {hint: variant step}, run here only when the
    student's result differs."""
    got, want, variant = compare_steps(t, setup, calls, reference=reference, mistakes=mistakes,
                                       seed=seed, atol=atol, rtol=rtol)
    for i, (loss, expected) in enumerate(zip(got.losses, want.losses)):
        t.expect_close(loss, expected, atol=atol, rtol=rtol,
                       what=f"the loss returned by call {i + 1} (the batch's, before the update)",
                       mistakes={h: (lambda h=h, i=i: variant(h).losses[i])
                                 for h in mistakes or {}})
    return got


def expect_state(t, actual, expected: dict, *, what: str, mistakes=None, atol=1e-5, rtol=1e-4):
    """A model's state read back from the child ({name: tensor}) equals `expected`."""
    if type(actual) is not dict or set(actual) != set(expected):
        t.fail(f"{what} could not be read back (got {describe_type(actual)})",
               "do not replace the model's modules or parameters: update them in place "
               "(optimizer.step() does)")
    wrong = []
    for name, value in expected.items():
        got = actual[name]
        if type(got) is not torch.Tensor or got.shape != value.shape or got.dtype != value.dtype:
            t.fail(f"{what}: `{name}` is {describe_type(got)} ({getattr(got, 'dtype', '')}), "
                   f"expected a {value.dtype} tensor of shape {tuple(value.shape)}",
                   "update the parameters in place (optimizer.step()); do not replace them")
        if not tensors_close(got, value, atol, rtol):
            wrong.append(name)
    if wrong:
        first = wrong[0]
        t.fail(f"{what} differ from the library's in {len(wrong)} of {len(expected)} tensors; "
               f"`{first}`: {value_difference(actual[first], expected[first], atol, rtol)}",
               t.diagnose(actual, mistakes, atol, rtol) or
               "compare your step with the contract in the docstring: the order of the "
               "operations matters")


def expect_loss_falls(t, setup: dict, calls: list, *, seed: int = 0, by: float = 0.1):
    """Behaviour: the losses the student's steps return, on one small batch again and again,
    fall by at least the fraction `by` from the first to the last."""
    got = student_steps(t, setup, calls, seed)
    for i, loss in enumerate(got.losses):
        if type(loss) is not float:
            t.fail(f"call {i + 1} returned {describe_type(loss)}, not a Python float",
                   "return loss.item(): the loop logs it as a number")
    first, last = got.losses[0], got.losses[-1]
    t.expect(last < first * (1 - by),
             f"the loss did not fall over {len(calls)} steps on the same batch: "
             f"{first:.4f} -> {last:.4f}",
             "the parameters must move against the gradient of this batch's loss: backward on "
             "the loss, then optimizer.step()")


# ==============================================================================================
# one call on kept objects that the function reads without stepping them (PPO's scoring)


def student_call(t, setup: dict, args: tuple, seed: int = 0):
    """Build `setup` in the child, set torch's generator to `seed` (dropout draws from it) and
    call the student's function once on `args` (each Kept replaced by its object's handle);
    returns what it returned."""
    kept: dict = {}
    for name, build in setup.items():
        kept[name] = t.student.build(_substitute(build, kept))
    t.student.build(Build(f"{FIXTURES}:reseed", seed), keep=False)
    return t.call(*_substitute(tuple(args), kept))


def local_call(fn, setup: dict, args: tuple, seed: int = 0):
    """The same with trusted `fn` (the library's, or a mistake) here, on objects built here;
    torch's global random state is left as it was. Remembered as local_steps is."""
    return _remembered("call", fn, (setup, args, seed), lambda: _local_call(fn, setup, args, seed))


def _local_call(fn, setup: dict, args: tuple, seed: int = 0):
    with fixtures.GLOBAL_RANDOM_STATE, torch.random.fork_rng(devices=[]):
        kept: dict = {}
        for name, build in setup.items():
            kept[name] = _construct(_substitute(build, kept))
        fixtures.reseed(seed)
        return fn(*_substitute(tuple(args), kept))


# ==============================================================================================
# the library's results, computed once per process


# A class of 200 students is checked against the same library steps on the same fixtures 200
# times; the results (and those of the usual mistakes, run to find a hint) depend on nothing
# else: the fixtures are built from seeds and the global generator is reseeded. So they are
# kept, under a key that spells out every input by value (tensors by their bytes), and handed
# out read-only: the checks compare them and never change them.
_REMEMBERED: dict = {}
_REMEMBERED_LOCK = threading.Lock()
_REMEMBER_AT_MOST = 256  # results kept (each a tiny model's parameters: about 0.1 MB)


def _remembered(kind: str, fn, inputs: tuple, compute):
    """compute(), or what it returned before for the same kind, fn and inputs."""
    from . import impl

    key = _value_key(inputs)
    if key is None or impl.current() is not None:  # something without a value key, or a
        return compute()  # learner's functions in the library (--impl): computed every time
    key = (kind, fn, key)  # fn by identity: the library's functions and the mistakes' variants
    with _REMEMBERED_LOCK:
        if key in _REMEMBERED:
            return _REMEMBERED[key]
    result = compute()
    with _REMEMBERED_LOCK:
        if len(_REMEMBERED) >= _REMEMBER_AT_MOST:
            _REMEMBERED.pop(next(iter(_REMEMBERED)))  # the oldest
        _REMEMBERED[key] = result
    return result


def _value_key(value):
    """A hashable key equal for equal inputs (None when `value` holds something else)."""
    t = type(value)
    if value is None or t in (bool, int, str):
        return (t.__name__, value)
    if t is float:
        return ("float", value.hex())
    if t is Kept:
        return ("kept", value.name)
    if t in (list, tuple):
        keys = tuple(_value_key(v) for v in value)
        return None if None in keys else (t.__name__, keys)
    if t is dict:
        items = tuple((_value_key(k), _value_key(v)) for k, v in value.items())
        return None if any(None in item for item in items) else ("dict", items)
    if t is Build:
        inner = _value_key([value.args, value.kwargs])
        return None if inner is None else ("build", value.target, inner)
    if t is torch.Tensor:
        if value.requires_grad or value.device.type != "cpu" or value.is_sparse:
            return None
        data = value.detach().contiguous()
        return ("tensor", str(data.dtype), tuple(data.shape),
                data.view(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return None
