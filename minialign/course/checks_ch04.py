"""Graded checks of chapter 4 (reward model): the Bradley-Terry and ranking losses, reading the
score at the last real token, and the preference accuracy.

The wrong variants below are the mistakes students make; a student's output that equals one of
them gets that mistake's hint.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from minialign import reward as ref
from minialign.course.checks import exercise

# ==============================================================================================
# bradley_terry_loss

_STABLE = ("-log(sigmoid(x)) is inf (and its gradient nan) once sigmoid(x) rounds to 0, near "
           "x = -104 in float32: F.logsigmoid(x) (or -F.softplus(-x)) computes the same thing "
           "stably for any x")


def _bt_mistakes(chosen, rejected, margin=None):
    diff = chosen - rejected
    m = torch.zeros_like(diff) if margin is None else margin
    mistakes = {
        "the sign is flipped: the loss must fall when the chosen reward rises, so use "
        "-log sigmoid(r_chosen - r_rejected)": lambda: -F.logsigmoid(-diff - m).mean(),
        "log(sigmoid(x)) underflows to log(0) = -inf for a large negative x: use F.logsigmoid, "
        "which is stable for any x": lambda: -torch.log(torch.sigmoid(diff - m)).mean(),
        "log(1 + exp(-x)) overflows for a large negative x: use F.logsigmoid (or F.softplus), "
        "which is stable for any x": lambda: torch.log(1 + torch.exp(-(diff - m))).mean(),
        "a sum over pairs instead of the mean": lambda: -F.logsigmoid(diff - m).sum(),
        "reduce to a scalar: the loss is the mean over the pairs":
            lambda: -F.logsigmoid(diff - m),
        "the loss is -log sigmoid(...), not log sigmoid(...)":
            lambda: F.logsigmoid(diff - m).mean(),
    }
    if margin is not None:
        mistakes.update({
            "the margin is added: the chosen reward must beat the rejected one BY the margin, "
            "so subtract it, -log sigmoid(r_chosen - r_rejected - margin)":
                lambda: -F.logsigmoid(diff + margin).mean(),
            "the margin is ignored: subtract it from the difference":
                lambda: -F.logsigmoid(diff).mean(),
        })
    return mistakes


def _check_bt_case(t, chosen, rejected, margin=None):
    args = (chosen, rejected) if margin is None else (chosen, rejected, margin)
    out = t.call(*args)
    t.expect_close(out, ref.bradley_terry_loss(chosen, rejected, margin),
                   mistakes=_bt_mistakes(chosen, rejected, margin))


@exercise("ch04.bradley_terry_loss")
def check_bradley_terry_loss(t):
    with t.case(f"equal rewards give ln 2 = {math.log(2):.4f}"):
        _check_bt_case(t, torch.zeros(3), torch.zeros(3))
    with t.case("hand-sized: differences 1 and -1, the mean of softplus(-1) and softplus(1)"):
        _check_bt_case(t, torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))
    with t.case("8 random pairs"):
        _check_bt_case(t, t.randn(8), t.randn(8))
    with t.case("large differences (+200 and -200): stable? the losses are 0 and 200"):
        _check_bt_case(t, torch.tensor([200.0, -100.0]), torch.tensor([0.0, 100.0]))
    with t.case("a margin (Llama 2): 6 pairs"):
        _check_bt_case(t, t.randn(6), t.randn(6), torch.tensor([0.0, 1.0, 2.0, 0.5, 1.0, 3.0]))
    with t.case("a margin and large differences (-150 and +150 after the margin): stable?"):
        _check_bt_case(t, torch.tensor([-150.0, 152.0]), torch.tensor([0.0, 0.0]),
                       torch.tensor([0.0, 2.0]))
    with t.case("the loss is differentiable: its gradient w.r.t. both rewards, large "
                "differences included"):
        t.expect_gradients(ref.bradley_terry_loss,
                           (torch.cat([t.randn(4), torch.tensor([120.0, -120.0])]), t.randn(6)),
                           wrt=[0, 1], hint=_STABLE)


# ==============================================================================================
# ranking_loss


def _ranking_variant(rewards, mask=None, *, pairs="i<j", per_prompt=True, reduce="mean",
                     empty_counts=False, naive_log=False):
    """The ranking loss with one choice changed; the defaults give the right answer."""
    B, K = rewards.shape
    if pairs == "adjacent":
        i, j = torch.arange(K - 1), torch.arange(1, K)
    elif pairs == "all ordered":  # both directions
        grid = torch.cartesian_prod(torch.arange(K), torch.arange(K))
        grid = grid[grid[:, 0] != grid[:, 1]]
        i, j = grid[:, 0], grid[:, 1]
    else:
        i, j = torch.triu_indices(K, K, offset=1)
    if pairs == "j above i":
        i, j = j, i
    diff = rewards[:, i] - rewards[:, j]
    losses = -torch.log(torch.sigmoid(diff)) if naive_log else -F.logsigmoid(diff)  # (B, P)
    valid = torch.ones_like(losses) if mask is None else (mask[:, i] & mask[:, j]).to(losses.dtype)
    if reduce == "sum":
        return (losses * valid).sum()
    if not per_prompt:
        return (losses * valid).sum() / valid.sum()
    per = (losses * valid).sum(1) / valid.sum(1).clamp(min=1)
    if empty_counts:
        return per.mean()
    return per[valid.sum(1) > 0].mean()


def _ranking_mistakes(rewards, mask=None):
    def variant(**change):
        return lambda: _ranking_variant(rewards, mask, **change)

    mistakes = {
        "the pairs are the wrong way round: rewards are best first, so response i is preferred "
        "to every j > i: -log sigmoid(r_i - r_j)": variant(pairs="j above i"),
        "only adjacent pairs (i, i + 1) were used: a ranking of K gives all C(K, 2) pairs i < j "
        "(torch.triu_indices(K, K, offset=1))": variant(pairs="adjacent"),
        "each pair was counted in both directions: only the pairs i < j (i ranked above j)":
            variant(pairs="all ordered"),
        "a sum instead of a mean (per prompt over its pairs, then over prompts)":
            variant(reduce="sum"),
        _STABLE: variant(naive_log=True),
    }
    if mask is not None:
        mistakes.update({
            "the mean runs over all the pairs of the batch: average each prompt's pairs first, "
            "then the prompts, so that each prompt counts once whatever its K":
                variant(per_prompt=False),
            "the mask is ignored: leave out the pairs that involve a missing response":
                lambda: _ranking_variant(rewards),
            "a prompt left with fewer than two responses has no pair: leave it out of the mean "
            "over prompts (it is not a loss of 0)": variant(empty_counts=True),
        })
    else:
        mistakes["the mean runs over all the pairs of the batch: average each prompt's pairs "
                 "first, then the prompts"] = variant(per_prompt=False)
    return mistakes


def _check_ranking_case(t, rewards, mask=None):
    out = t.call(rewards) if mask is None else t.call(rewards, mask)
    t.expect_close(out, ref.ranking_loss(rewards, mask), mistakes=_ranking_mistakes(rewards, mask))


@exercise("ch04.ranking_loss")
def check_ranking_loss(t):
    with t.case(f"all rewards equal: every pair costs ln 2 = {math.log(2):.4f}"):
        _check_ranking_case(t, torch.zeros(2, 3))
    with t.case("K = 2 equals the pairwise loss: bradley_terry_loss(r[:, 0], r[:, 1])"):
        rewards = t.randn(5, 2)
        out = t.call(rewards)
        t.expect_close(out, ref.bradley_terry_loss(rewards[:, 0], rewards[:, 1]),
                       mistakes=_ranking_mistakes(rewards))
    with t.case("hand-sized: one prompt, rewards [2, 1, 0] (best first): pairs (0,1), (0,2), "
                "(1,2)"):
        _check_ranking_case(t, torch.tensor([[2.0, 1.0, 0.0]]))
    with t.case("4 prompts with K = 4 random rewards"):
        _check_ranking_case(t, t.randn(4, 4) * 2)
    with t.case("a mask: prompts with 4, 3 and 2 responses (K varies; missing rewards hold "
                "junk)"):
        rewards = t.randn(3, 4)
        mask = torch.tensor([[True, True, True, True], [True, True, True, False],
                             [True, True, False, False]])
        _check_ranking_case(t, torch.where(mask, rewards, torch.tensor(50.0)), mask)
    with t.case("a mask with a missing response in the middle, and a prompt with one response"):
        rewards = t.randn(3, 3)
        mask = torch.tensor([[True, False, True], [True, True, True], [True, False, False]])
        _check_ranking_case(t, torch.where(mask, rewards, torch.tensor(-7.0)), mask)
    with t.case("rewards far apart (best first: 0, -200; and the other way round): stable?"):
        _check_ranking_case(t, torch.tensor([[0.0, -100.0, -200.0], [-200.0, -100.0, 0.0]]))
    with t.case("the loss is differentiable: its gradient w.r.t. the rewards (with a mask)"):
        mask = torch.tensor([[True, True, True], [True, True, False]])
        t.expect_gradients(ref.ranking_loss, (t.randn(2, 3), mask), wrt=[0])


# ==============================================================================================
# last_token_scores


def _pick(values, index):
    return values.gather(1, index.view(-1, 1)).squeeze(1)


def _last_token_mistakes(values, padding_mask):
    T = values.size(1)
    positions = torch.arange(T).expand_as(values)
    first_real = torch.where(padding_mask, positions, T).min(1).values
    return {
        "the score was read at the last position, which is padding for a right-padded "
        "sequence: read it at each sequence's last REAL token": lambda: values[:, -1],
        "the score was read at the first token: the reward model reads the whole response, so "
        "its score is at the last real token": lambda: values[:, 0],
        "padding_mask.sum(1) - 1 is the last real index only with right padding: with left "
        "padding the real tokens end at T - 1; find the largest index where the mask is True":
            lambda: _pick(values, padding_mask.long().sum(1) - 1),
        "that is the first real token (argmax of the mask finds the first True): the score is "
        "at the LAST real token": lambda: _pick(values, first_real),
        "the mask is True on real tokens: this read a padding position":
            lambda: _pick(values, torch.where(~padding_mask, positions, -1).max(1).values.clamp(
                min=0)),
        "one score per sequence: the result is (B,), not (B, 1)":
            lambda: ref.last_token_scores(values, padding_mask).unsqueeze(1),
    }


def _check_last_token_case(t, values, padding_mask):
    out = t.call(values, padding_mask)
    expected = ref.last_token_scores(values, padding_mask)
    mistakes = _last_token_mistakes(values, padding_mask)
    if type(out) is torch.Tensor and out.shape != expected.shape \
            and out.numel() == expected.numel() and not t.diagnose(out, mistakes):
        t.fail(f"the result has shape {tuple(out.shape)}, expected {tuple(expected.shape)}",
               "one score per sequence: squeeze the gathered dimension, the result is (B,)")
    t.expect_close(out, expected, mistakes=mistakes)


@exercise("ch04.last_token_scores")
def check_last_token_scores(t):
    with t.case("no padding: the score is values[:, -1]"):
        _check_last_token_case(t, t.randn(2, 4), torch.ones(2, 4, dtype=torch.bool))
    with t.case("hand-sized right padding: values [[1, 2, 3, 4], [5, 6, 7, 8]], lengths 2 and 3 "
                "-> [2, 7]"):
        values = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
        mask = torch.tensor([[True, True, False, False], [True, True, True, False]])
        _check_last_token_case(t, values, mask)
    with t.case("right padding, 4 sequences of different lengths"):
        lengths = torch.tensor([6, 1, 4, 3])
        _check_last_token_case(t, t.randn(4, 6), torch.arange(6) < lengths.view(-1, 1))
    with t.case("left padding (as generation pads prompts): 3 sequences"):
        starts = torch.tensor([0, 2, 4])
        _check_last_token_case(t, t.randn(3, 5), torch.arange(5) >= starts.view(-1, 1))
    with t.case("padding on both sides"):
        mask = torch.tensor([[False, True, True, True, False, False],
                             [False, False, True, True, True, True],
                             [True, True, True, False, False, False]])
        _check_last_token_case(t, t.randn(3, 6), mask)
    with t.case("gradients reach the values (the reward model trains through these scores)"):
        mask = torch.tensor([[True, True, False], [False, True, True]])
        t.expect_gradients(ref.last_token_scores, (t.randn(2, 3), mask), wrt=[0])


# ==============================================================================================
# preference_accuracy


def _number_hint(value) -> str:
    """A hint for a result that should be a Python float and is not ("" when it is one)."""
    if type(value) in (int, float):
        return ""
    if isinstance(value, np.generic):
        return "return a Python float: float(x) turns a numpy number into one"
    return "return a Python float: .item() turns a one-element tensor into one"


def _accuracy_mistakes(chosen, rejected):
    return {
        "a tie is not a correct prediction: count chosen > rejected strictly (a reward model "
        "that scores everything 0 has accuracy 0, not 1)":
            (chosen >= rejected).float().mean().item(),
        "the comparison is the wrong way round: a pair is right when the chosen response "
        "scores higher": (chosen < rejected).float().mean().item(),
        "a count instead of a fraction: divide by the number of pairs":
            float((chosen > rejected).sum().item()),
    }


def _check_accuracy_case(t, chosen, rejected):
    out = t.call(chosen, rejected)
    t.expect_close(out, ref.preference_accuracy(chosen, rejected),
                   mistakes=_accuracy_mistakes(chosen, rejected), hint=_number_hint(out))


@exercise("ch04.preference_accuracy")
def check_preference_accuracy(t):
    with t.case("hand-sized: 3 of 4 pairs right -> 0.75"):
        _check_accuracy_case(t, torch.tensor([1.0, 2.0, 0.5, -1.0]),
                             torch.tensor([0.0, 1.0, 1.5, -2.0]))
    with t.case("a zero-initialised head: every pair ties, accuracy 0"):
        _check_accuracy_case(t, torch.zeros(5), torch.zeros(5))
    with t.case("some ties among 6 pairs"):
        _check_accuracy_case(t, torch.tensor([1.0, 1.0, 2.0, 0.0, 3.0, -1.0]),
                             torch.tensor([1.0, 0.0, 2.0, 1.0, 3.0, -2.0]))
    with t.case("20 random pairs"):
        _check_accuracy_case(t, t.randn(20), t.randn(20))
