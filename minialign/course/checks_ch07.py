"""Graded checks of chapter 7 (best-of-N): its exact distribution over a finite set of
responses, and the bound on its KL from the base policy.

The wrong variants below are the mistakes students make; a student's output that equals one of
them gets that mistake's hint.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from minialign import bon
from minialign import evaluate as ref
from minialign.course.checks import exercise

# ==============================================================================================
# best_of_n_distribution


def _bon_variant(probs, rewards, n, *, descending=False, sort=True, subtract=True,
                 put_back="scatter"):
    """Best-of-n probabilities with one choice changed; the defaults give the right answer."""
    K = probs.numel()
    order = torch.argsort(rewards, descending=descending) if sort else torch.arange(K)
    cdf = torch.cumsum(probs[order], dim=0)
    below = (cdf - probs[order]).clamp(min=0)
    p_sorted = cdf ** n - below ** n if subtract else cdf ** n
    if put_back == "none":
        return p_sorted
    if put_back == "gather":
        return p_sorted[order]
    out = torch.empty_like(probs)
    out[order] = p_sorted
    return out


def _bon_mistakes(probs, rewards, n):
    def variant(**change):
        return lambda: _bon_variant(probs, rewards, n, **change)

    return {
        "probs ** n is the chance that all n draws are THIS response; the best of n is "
        "response i when all draws score <= r_i but not all < r_i: F(r_i)^n - F_<(r_i)^n":
            lambda: probs ** n,
        "renormalising probs ** n is not best-of-n: use F(r_i)^n - F_<(r_i)^n with F the "
        "cumulative probability in reward order": lambda: probs ** n / (probs ** n).sum(),
        "F(r_i)^n is the chance that the best is AT MOST response i: subtract F_<(r_i)^n, the "
        "chance that it is below i": variant(subtract=False),
        "F accumulates from the lowest reward up (argsort ascending): F(r) = P(reward <= r); "
        "sorted descending, this is the distribution of the WORST of n":
            variant(descending=True),
        "sort the responses by reward before the cumulative sum: F(r_i) is the probability of "
        "a reward <= r_i": variant(sort=False),
        "the result is in reward order: put each probability back at its response's index "
        "(out[order] = p_sorted), as the docstring asks for the original order":
            variant(put_back="none"),
        "p_sorted[order] applies the permutation a second time: scatter instead, "
        "out[order] = p_sorted": variant(put_back="gather"),
    }


def _check_bon_case(t, probs, rewards, n):
    out = t.call(probs, rewards, n)
    expected = bon.best_of_n_distribution(probs, rewards, n)
    mistakes = _bon_mistakes(probs, rewards, n)
    t.expect_tensor(out, shape=expected.shape, dtype=expected.dtype, mistakes=mistakes)
    total = float(out.detach().double().sum())
    hint = "" if abs(total - 1) < 1e-4 else \
        f"the result sums to {total:.4g}: a distribution over the K responses sums to 1"
    t.expect_close(out, expected, mistakes=mistakes, hint=hint)


@exercise("ch07.best_of_n_distribution")
def check_best_of_n_distribution(t):
    with t.case("hand-sized: probs [0.5, 0.5], rewards [0, 1], n = 2 -> [0.25, 0.75]"):
        _check_bon_case(t, torch.tensor([0.5, 0.5]), torch.tensor([0.0, 1.0]), 2)
    with t.case("n = 1 is the base policy: the result equals probs"):
        probs = torch.softmax(t.randn(5), 0)
        _check_bon_case(t, probs, t.randn(5), 1)
    with t.case("rewards not in order: probs [0.1, 0.2, 0.3, 0.4], rewards [3, 1, 4, 2], n = 3"):
        _check_bon_case(t, torch.tensor([0.1, 0.2, 0.3, 0.4]), torch.tensor([3.0, 1.0, 4.0, 2.0]),
                        3)
    with t.case("8 responses, n = 4"):
        _check_bon_case(t, torch.softmax(t.randn(8), 0), t.randn(8), 4)
    with t.case("n = 64: almost all the mass on the best response"):
        _check_bon_case(t, torch.softmax(t.randn(6), 0), t.randn(6), 64)


# ==============================================================================================
# kl_best_of_n_bound


def _bound_mistakes(n):
    mistakes = {
        "the bound is log n - (n - 1) / n: the - (n - 1) / n term is missing": math.log(n),
        "the bound is log n - (n - 1) / n, with the natural log (nats), not log2":
            math.log2(n) - (n - 1) / n,
        "the sign is flipped: log n - (n - 1) / n, which is >= 0": (n - 1) / n - math.log(n),
        "the bound is log n - (n - 1) / n, not log(n - 1) - ...":
            (math.log(n - 1) if n > 1 else -math.inf) - (n - 1) / n,
    }
    if n > 1:
        mistakes["the fraction is (n - 1) / n, not n / (n - 1): the bound is "
                 "log n - (n - 1) / n"] = math.log(n) - n / (n - 1)
    return mistakes


def _number_hint(value) -> str:
    """A hint for a result that should be a Python float and is not ("" when it is one)."""
    if type(value) in (int, float):
        return ""
    if isinstance(value, np.generic):
        return "return a Python float: math.log works on a Python int (np.log gives a numpy " \
               "number; float(x) converts it)"
    return "return a Python float: math.log works on a Python int (.item() turns a " \
           "one-element tensor into a float)"


@exercise("ch07.kl_best_of_n_bound")
def check_kl_best_of_n_bound(t):
    for n in (2, 4, 1, 16, 1000):
        title = {2: f"n = 2: log 2 - 1/2 = {math.log(2) - 0.5:.4f}",
                 1: "n = 1 is the base policy itself: 0"}.get(n, f"n = {n}")
        with t.case(title):
            out = t.call(n)
            t.expect_close(out, ref.kl_best_of_n_bound(n), mistakes=_bound_mistakes(n),
                           hint=_number_hint(out))
