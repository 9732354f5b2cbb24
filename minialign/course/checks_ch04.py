"""Graded checks of chapter 4 (reward model): the Bradley-Terry and ranking losses, reading the
score at the last real token, the preference accuracy, and one reward-model step (on a tiny
reward model, with `checks_steps`).

The wrong variants below are the mistakes students make; a student's output that equals one of
them gets that mistake's hint.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from minialign import reward as ref
from minialign.course import fixtures
from minialign.course.checks import exercise
from minialign.course.checks_steps import FIXTURES, Kept, compare_steps, student_steps
from minialign.course.wire import Build

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


# ==============================================================================================
# reward_step: one update of a tiny reward model built alike here and in the child (see
# checks_steps); it returns (loss, accuracy), and its optimizer has two learning rates


def _step_loss(rm, ids, padding_mask, slots, how="right"):
    """(the loss, scores (B, K)) of a batch of rankings, with one mistake `how`."""
    B, K = slots.shape
    scores = rm(ids, padding_mask)  # (B*K,)
    scores = scores.view(K, B).T if how == "transposed" else scores.view(B, K)
    if how == "swapped":  # -log sigmoid(r_j - r_i): the worse answer preferred
        return ref.ranking_loss(-scores, slots), scores
    if how == "no mask":
        return ref.ranking_loss(scores), scores
    if how == "top pair":
        return ref.bradley_terry_loss(scores[:, 0], scores[:, 1]), scores
    if how in ("pooled", "sum"):
        return _ranking_variant(scores, slots, per_prompt=how != "pooled",
                                reduce="sum" if how == "sum" else "mean"), scores
    return ref.ranking_loss(scores, slots), scores


def _reward_variant(*, loss="right", zero_grad=True, clip="before", lr="each", train=True,
                    accuracy="right"):
    """reward_step with one mistake; the defaults give the library's step. lr: "each" (group i
    gets lrs[i]), "first" (the first group only), "one" (every group lrs[0]), "after" (set
    after the update) or None; accuracy: "right", "ties" (>=), "swapped" or "after" (scored
    again after the update)."""
    def step(rm, optimizer, ids, padding_mask, slots, lrs, grad_clip):
        groups = optimizer.param_groups
        settings = {"each": list(zip(groups, lrs)), "first": [(groups[0], lrs[0])],
                    "one": [(group, lrs[0]) for group in groups]}
        if train:
            rm.train()
        for group, value in settings.get(lr, []):
            group["lr"] = value
        if zero_grad:
            optimizer.zero_grad(set_to_none=True)
        value, scores = _step_loss(rm, ids, padding_mask, slots, loss)
        value.backward()
        if clip == "before":
            torch.nn.utils.clip_grad_norm_(rm.parameters(), grad_clip)
        optimizer.step()
        if clip == "after":
            torch.nn.utils.clip_grad_norm_(rm.parameters(), grad_clip)
        for group, rate in (zip(groups, lrs) if lr == "after" else ()):
            group["lr"] = rate
        if accuracy == "after":
            with torch.no_grad():
                scores = rm(ids, padding_mask).view(slots.shape)
        chosen, rejected = scores[:, 0].detach(), scores[:, 1].detach()
        if accuracy == "swapped":
            chosen, rejected = rejected, chosen
        right = chosen >= rejected if accuracy == "ties" else chosen > rejected
        return value.item(), right.float().mean().item()

    return step


_STEP_MISTAKES = {
    "the gradients were not zeroed: backward adds to .grad, so the second step used the sum of "
    "both batches' gradients; clear them (optimizer.zero_grad()) before backward":
        _reward_variant(zero_grad=False),
    "the gradients were not clipped before the update: clip_grad_norm_ goes between backward "
    "and optimizer.step() (after the step it changes nothing)": _reward_variant(clip="after"),
    "the learning rates passed in were not used (the optimizer kept the ones it was built "
    "with): set group['lr'] = lrs[i] on each group i before optimizer.step()":
        _reward_variant(lr=None),
    "the learning rates were set after optimizer.step(): each step must use its own, so set "
    "them before the update": _reward_variant(lr="after"),
    "the learning rate was set on the first parameter group only: the reward model's optimizer "
    "has two, the trunk then the scalar head, each with its own rate (lrs[0], lrs[1])":
        _reward_variant(lr="first"),
    "every parameter group got the first rate: the trunk and the scalar head learn at their "
    "own rates, lrs[i] for group i (zip(optimizer.param_groups, lrs))": _reward_variant(lr="one"),
    "the model trained in eval mode (dropout off): call rm.train() at the start of the step; "
    "the loop's validation pass leaves the model in eval mode": _reward_variant(train=False),
    "the pairs are the wrong way round: answers are best first, so answer i is preferred to "
    "every j > i; ranking_loss(scores, slots) on scores (B, K) in that order":
        _reward_variant(loss="swapped"),
    "the placeholder rows of missing answers were ranked too: pass slots to ranking_loss as its "
    "mask, so that the pairs involving a missing answer are left out":
        _reward_variant(loss="no mask"),
    "the scores are laid out wrong: row b*K + j holds answer j of ranking b, so "
    "view(B, K) (slots.shape), not view(K, B)": _reward_variant(loss="transposed"),
    "only the top two answers were compared: a ranking of K answers gives every pair i < j "
    "(ranking_loss(scores, slots))": _reward_variant(loss="top pair"),
    "the loss is a mean over all the pairs of the batch: it is the mean over each prompt's "
    "pairs, then over the prompts (your ranking_loss: does it pass its own check?)":
        _reward_variant(loss="pooled"),
    "the loss is summed: it is a mean per prompt, then over the prompts (ranking_loss)":
        _reward_variant(loss="sum"),
}
_ACCURACY_MISTAKES = {
    "a tie is not a correct prediction: count top > second strictly (a reward model that "
    "scores everything 0 has accuracy 0)": _reward_variant(accuracy="ties"),
    "the accuracy compares the wrong way round: a prompt counts when its top answer (column 0) "
    "scores above the second (column 1)": _reward_variant(accuracy="swapped"),
    "the accuracy was measured after the update: return the batch's, from the scores the loss "
    "was computed on": _reward_variant(accuracy="after"),
}


def _reward_setup(head_std=0.5, **model):
    """A tiny reward model and the reward stage's AdamW over it, built with lrs 0.05 (trunk) and
    0.5 (head); each step passes its own."""
    return {"model": Build(f"{FIXTURES}:tiny_reward_model", seed=0, head_std=head_std, **model),
            "optimizer": Build(f"{FIXTURES}:reward_adamw", Kept("model"), lr=0.05, head_lr=0.5)}


def _reward_calls(batches, lrs, grad_clip=0.5):
    rm, optimizer = Kept("model"), Kept("optimizer")
    return [(rm, optimizer, *fixtures.ranking_batch(seed, answers), list(rates), grad_clip)
            for (seed, answers), rates in zip(batches, lrs)]


def _expect_pair_of_floats(t, out, where):
    if type(out) is not tuple or len(out) != 2:
        t.fail(f"{where} returned {type(out).__name__}"
               f"{' of ' + str(len(out)) if type(out) in (tuple, list) else ''}, not a tuple "
               f"(loss, accuracy)", "return loss.item(), accuracy")
    for value, name in zip(out, ("loss", "accuracy")):
        if type(value) is not float:
            t.fail(f"{where} returned a {type(value).__name__} as the {name}, not a Python "
                   f"float", "return Python floats (.item()): the loop logs them as numbers")


def _expect_reward_steps(t, setup, calls, *, seed=0):
    """As `checks_steps.expect_steps` (through its `compare_steps`), for a step that returns
    (loss, accuracy) and sets one learning rate per parameter group: the parameters, the
    optimizer's count, both numbers."""
    got, want, variant = compare_steps(t, setup, calls, reference=ref.reward_step,
                                       mistakes={**_STEP_MISTAKES, **_ACCURACY_MISTAKES},
                                       seed=seed, model="the reward model's parameters")
    for i, (out, expected) in enumerate(zip(got.losses, want.losses)):
        _expect_pair_of_floats(t, out, f"call {i + 1}")
        t.expect_close(out[0], expected[0], what=f"the loss returned by call {i + 1} (the "
                       f"batch's, before the update)",
                       mistakes={h: (lambda h=h, i=i: variant(h).losses[i][0])
                                 for h in _STEP_MISTAKES})
        t.expect_close(out[1], expected[1], what=f"the accuracy returned by call {i + 1}",
                       hint="the fraction of prompts whose top answer scores strictly above "
                       "the second: preference_accuracy(scores[:, 0], scores[:, 1])",
                       mistakes={h: (lambda h=h, i=i: variant(h).losses[i][1])
                                 for h in _ACCURACY_MISTAKES})


RANKINGS = ((5, 3, 7), (4, 6), (2, 8, 3))  # answers' lengths: K = 3, the second prompt has 2


@exercise("ch04.reward_step")
def check_reward_step(t):
    with t.case("one step on 3 rankings (3, 2 and 3 answers: K = 3, one slot missing); the "
                "schedule's lrs are 0.01 (trunk) and 0.1 (head), the optimizer was built with "
                "0.05 and 0.5; grad_clip 0.5"):
        _expect_reward_steps(t, _reward_setup(), _reward_calls([(1, RANKINGS)], [(0.01, 0.1)]))
    with t.case("the library's start, a zero head: every answer scores 0 (loss ln 2, accuracy "
                "0); two steps"):
        _expect_reward_steps(t, _reward_setup(head_std=0.0),
                             _reward_calls([(2, RANKINGS)] * 2, [(0.01, 0.1)] * 2))
    with t.case("three steps on three batches, lrs (0.01, 0.1), (0.02, 0.2), (0.005, 0.05): "
                "each step starts with the last one's gradients still in .grad"):
        batches = [(3, RANKINGS), (4, ((6, 2), (3, 4))), (5, ((2, 2, 4, 3), (4, 7), (3, 5, 6)))]
        _expect_reward_steps(t, _reward_setup(), _reward_calls(
            batches, [(0.01, 0.1), (0.02, 0.2), (0.005, 0.05)]))
    with t.case("the model arrives in eval mode, as a validation pass leaves it; it has "
                "dropout 0.2 (torch seeded alike on both sides)"):
        _expect_reward_steps(t, _reward_setup(dropout=0.2, train=False),
                             _reward_calls([(6, RANKINGS), (7, RANKINGS)], [(0.01, 0.1)] * 2),
                             seed=7)
    with t.case("behaviour: 15 steps on one batch (lrs 0.01 and 0.1) lower its loss by 10% or "
                "more"):
        got = student_steps(t, _reward_setup(), _reward_calls([(8, RANKINGS)] * 15,
                                                              [(0.01, 0.1)] * 15))
        for i, out in enumerate(got.losses):
            _expect_pair_of_floats(t, out, f"call {i + 1}")
        first, last = got.losses[0][0], got.losses[-1][0]
        t.expect(last < first * 0.9, f"the loss did not fall over 15 steps on the same batch: "
                 f"{first:.4f} -> {last:.4f}",
                 "the parameters must move against the gradient of this batch's loss: backward "
                 "on the ranking loss, then optimizer.step()")
