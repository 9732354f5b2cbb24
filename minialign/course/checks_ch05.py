"""Graded checks of chapter 5 (PPO): per-token rewards, GAE, whitening, the clipped policy and
value losses, the adaptive KL controller, and the update that wires them (scoring a rollout, then
learning from it, on a tiny policy built alike here and in the child: see checks_steps).

Padding entries of the inputs hold finite junk (5.0, 50.0, ...) wherever the docstring says they
are ignored: a correct solution gives the same result whatever is there. The wrong variants
below are the mistakes students make; a student's output that equals one of them gets that
mistake's hint.
"""

from __future__ import annotations

import numpy as np
import torch

from minialign import ppo as ref
from minialign.course import fixtures
from minialign.course.checks import exercise
from minialign.course.checks_steps import (FIXTURES, Kept, expect_state, local_call,
                                           local_steps, student_call, student_steps)
from minialign.course.wire import Build


def _prefix_mask(lengths, T, dtype=torch.float32):
    """(B, T) response mask of right-padded responses: 1 on the first `length` tokens."""
    return (torch.arange(T) < torch.tensor(lengths).view(-1, 1)).to(dtype)


def _junk(x, mask, value):
    """x with `value` on the padding entries (mask 0)."""
    return torch.where(mask.bool(), x, torch.tensor(value, dtype=x.dtype))


def _expect_tuple(t, out, names):
    if type(out) is not tuple or len(out) != len(names):
        got = f"a tuple of {len(out)}" if type(out) is tuple else type(out).__name__
        t.fail(f"the result should be a tuple ({', '.join(names)}), got {got}",
               f"return them together: `return {', '.join(names)}`")


def _number_hint(value) -> str:
    """A hint for a result that should be a Python float and is not ("" when it is one)."""
    if type(value) in (int, float):
        return ""
    if isinstance(value, np.generic):
        return "return a Python float: float(x) turns a numpy number into one"
    return "return a Python float (.item() turns a one-element tensor into one)"


def _masked_mean(x, mask):
    m = mask.bool()
    return torch.where(m, x, 0.0).sum() / m.sum().clamp(min=1)


# ==============================================================================================
# kl_penalized_rewards


def _kl_variant(scores, logprobs, ref_logprobs, mask, kl_coef, *, sign=-1.0, at="last",
                penalty_on_padding=False, with_score=True, coef=None):
    """Per-token rewards with one choice changed; the defaults give the right answer."""
    m = mask.bool()
    coef = kl_coef if coef is None else coef
    kl = sign * coef * (logprobs - ref_logprobs)
    rewards = kl if penalty_on_padding else torch.where(m, kl, 0.0)
    rewards = rewards.clone()
    B, T = m.shape
    last = torch.where(m, torch.arange(T).expand(B, T), -1).max(1).values
    index = {"last": last, "first": torch.zeros(B, dtype=torch.long),
             "last column": torch.full((B,), T - 1), "after last": (last + 1).clamp(max=T - 1)}
    if with_score == "everywhere":
        return torch.where(m, rewards + scores.view(-1, 1), rewards)
    if with_score:
        rewards[torch.arange(B), index[at]] += scores
    return rewards


def _kl_mistakes(scores, logprobs, ref_logprobs, mask, kl_coef):
    def variant(**change):
        return lambda: _kl_variant(scores, logprobs, ref_logprobs, mask, kl_coef, **change)

    return {
        "the KL sign is flipped: the penalty is -kl_coef * (logprobs - ref_logprobs), so that "
        "moving away from the reference costs reward": variant(sign=1.0),
        "the score belongs at the LAST response token (the reward arrives when the response "
        "ends), not at the first": variant(at="first"),
        "the score was added at the last column, which is padding for a shorter response: add "
        "it at each row's last response token (the last position where mask is 1)":
            variant(at="last column"),
        "the score was added one position after the last response token (on padding): the "
        "last response token is at index mask.sum(1) - 1": variant(at="after last"),
        "the KL penalty was applied on padding too: rewards are 0 wherever mask is 0":
            variant(penalty_on_padding=True),
        "the KL penalty was applied on padding and the score put on the last column: both "
        "belong on response tokens only": variant(penalty_on_padding=True, at="last column"),
        "the reward-model score is missing: add scores[b] at the last response token of row b":
            variant(with_score=False),
        "the score is added once per response, at its last token, not at every token":
            variant(with_score="everywhere"),
        "kl_coef is ignored: the penalty is -kl_coef * (logprobs - ref_logprobs)":
            variant(coef=1.0),
        "a response with no token (a row of mask that is all 0) gets no score: there is no "
        "response token to put it on, and index -1 is the last column (padding)": variant(),
    }


def _check_kl_case(t, scores, logprobs, ref_logprobs, mask, kl_coef):
    out = t.call(scores, logprobs, ref_logprobs, mask, kl_coef)
    t.expect_close(out, ref.kl_penalized_rewards(scores, logprobs, ref_logprobs, mask, kl_coef),
                   mistakes=_kl_mistakes(scores, logprobs, ref_logprobs, mask, kl_coef))


@exercise("ch05.kl_penalized_rewards")
def check_kl_penalized_rewards(t):
    with t.case("hand-sized: 1 response of 3 tokens, kl_coef 0.1, score 2 -> "
                "[-0.05, 0, 1.95]"):
        _check_kl_case(t, torch.tensor([2.0]), torch.tensor([[-1.0, -2.0, -0.5]]),
                       torch.tensor([[-1.5, -2.0, -1.0]]), torch.ones(1, 3, dtype=torch.bool), 0.1)
    with t.case("3 right-padded responses of lengths 4, 2, 6 (a 0/1 float mask; junk log-probs on "
                "padding)"):
        mask = _prefix_mask([4, 2, 6], 6)
        _check_kl_case(t, t.randn(3), _junk(t.randn(3, 6), mask, 5.0),
                       _junk(t.randn(3, 6), mask, -5.0), mask, 0.2)
    with t.case("a boolean mask, responses of lengths 1, 5, 3"):
        mask = _prefix_mask([1, 5, 3], 5, torch.bool)
        _check_kl_case(t, t.randn(3) * 3, _junk(t.randn(3, 5), mask, 50.0),
                       _junk(t.randn(3, 5), mask, 5.0), mask, 0.05)
    with t.case("kl_coef = 0: only the score, at each response's last token (a float mask)"):
        mask = _prefix_mask([2, 4], 4)
        _check_kl_case(t, torch.tensor([1.0, -1.0]), t.randn(2, 4), t.randn(2, 4), mask, 0.0)
    with t.case("a response with no token (an empty row of the mask): its rewards are all 0"):
        mask = _prefix_mask([3, 0, 2], 4)
        _check_kl_case(t, torch.tensor([1.0, 5.0, -2.0]), _junk(t.randn(3, 4), mask, 5.0),
                       _junk(t.randn(3, 4), mask, -5.0), mask, 0.1)


# ==============================================================================================
# compute_gae


def _gae_variant(rewards, values, mask, gamma, lam, *, mask_values=True, reset=True,
                 forward=False, zero_padding=True, returns="A + V", whiten=False):
    """GAE with one choice changed; the defaults give the right answer."""
    m = mask.bool()
    v = torch.where(m, values, 0.0) if mask_values else values
    B, T = rewards.shape
    advantages = torch.zeros_like(rewards)
    running = torch.zeros(B, dtype=rewards.dtype)
    for t in (range(T) if forward else reversed(range(T))):
        next_value = v[:, t + 1] if t + 1 < T else torch.zeros(B, dtype=v.dtype)
        delta = rewards[:, t] + gamma * next_value - v[:, t]
        running = delta + gamma * lam * running
        if reset:
            running = torch.where(m[:, t], running, 0.0)
        advantages[:, t] = running
    if zero_padding:
        advantages = torch.where(m, advantages, 0.0)
    if whiten:
        advantages = ref.whiten(advantages, mask)
    if returns == "A":
        return advantages, advantages
    if returns == "unmasked":
        return advantages, advantages + values
    return advantages, torch.where(m, advantages + v, 0.0)


def _gae_mistakes(rewards, values, mask, gamma, lam):
    def variant(**change):
        gl = change.pop("gamma_lam", (gamma, lam))
        return lambda: _gae_variant(rewards, values, mask, *gl, **change)

    return {
        "the values on padding were used: the value after the last response token is 0, so "
        "mask the values (torch.where(mask, values, 0)) before reading V_{t+1}":
            variant(mask_values=False),
        "the values on padding were used (and the advantages are not 0 on padding): the value "
        "after the last response token is 0, so mask the values before reading V_{t+1}":
            variant(mask_values=False, zero_padding=False, reset=False),
        "padding leaks into the response: the recursion must restart at the end of each "
        "response (A_{t+1} = 0 after the last response token), whatever the padding holds":
            variant(reset=False),
        "advantages must be 0 on padding": variant(reset=False, zero_padding=False),
        "the loop runs forward: A_t depends on A_{t+1}, so go from the last token back to the "
        "first": variant(forward=True),
        "gamma and lam are swapped: delta_t = r_t + gamma * V_{t+1} - V_t, then "
        "A_t = delta_t + gamma * lam * A_{t+1}": variant(gamma_lam=(lam, gamma)),
        "lam is missing: A_t = delta_t + gamma * lam * A_{t+1} (lam = 1 is Monte Carlo)":
            variant(gamma_lam=(gamma, 1.0)),
        "gamma is missing: delta_t = r_t + gamma * V_{t+1} - V_t and "
        "A_t = delta_t + gamma * lam * A_{t+1}": variant(gamma_lam=(1.0, lam)),
        "the returns are A_t + V_t (the value function's targets), not the advantages alone":
            variant(returns="A"),
        "the returns must be 0 on padding: R_t = A_t + V_t on response tokens only":
            variant(returns="unmasked"),
        "nothing is whitened in compute_gae: the returns are computed from the raw advantages, "
        "and the caller whitens the advantages afterwards": variant(whiten=True),
    }


def _check_gae_case(t, rewards, values, mask, **kwargs):
    out = t.call(rewards, values, mask, **kwargs)
    _expect_tuple(t, out, ("advantages", "returns"))
    gamma, lam = kwargs.get("gamma", 1.0), kwargs.get("lam", 0.95)
    advantages, returns = ref.compute_gae(rewards, values, mask, gamma, lam)
    mistakes = _gae_mistakes(rewards, values, mask, gamma, lam)
    t.expect_close(out[0], advantages, what="the advantages",
                   mistakes={k: (lambda f=f: f()[0]) for k, f in mistakes.items()})
    t.expect_close(out[1], returns, what="the returns",
                   mistakes={k: (lambda f=f: f()[1]) for k, f in mistakes.items()})


@exercise("ch05.compute_gae")
def check_compute_gae(t):
    with t.case("hand-sized, gamma = lam = 1: A_t = sum of rewards from t on - V_t; rewards "
                "[0, 0, 1], values [0.5, 0.2, 0.1] -> A = [0.5, 0.8, 0.9], R = [1, 1, 1]"):
        _check_gae_case(t, torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.5, 0.2, 0.1]]),
                        torch.ones(1, 3, dtype=torch.bool), gamma=1.0, lam=1.0)
    with t.case("one token: A = r - V"):
        _check_gae_case(t, torch.tensor([[2.0], [-1.0]]), torch.tensor([[0.5], [0.25]]),
                        torch.ones(2, 1, dtype=torch.bool))
    with t.case("defaults (gamma 1, lam 0.95): 3 right-padded responses (a 0/1 float mask), "
                "junk values on padding"):
        mask = _prefix_mask([5, 2, 3], 5)
        rewards = torch.where(mask.bool(), t.randn(3, 5), 0.0)
        _check_gae_case(t, rewards, _junk(t.randn(3, 5), mask, 5.0), mask)
    with t.case("gamma 0.9, lam 0.8: 2 responses of lengths 6 and 4 (a float mask)"):
        mask = _prefix_mask([6, 4], 6)
        rewards = torch.where(mask.bool(), t.randn(2, 6), 0.0)
        _check_gae_case(t, rewards, _junk(t.randn(2, 6), mask, 50.0), mask, gamma=0.9, lam=0.8)
    with t.case("junk rewards and values on padding, boolean mask: padding must change nothing"):
        mask = _prefix_mask([3, 6, 1, 4], 6, torch.bool)
        _check_gae_case(t, _junk(t.randn(4, 6), mask, 5.0), _junk(t.randn(4, 6), mask, -5.0),
                        mask, gamma=0.99, lam=0.9)


# ==============================================================================================
# whiten


def _whiten_variant(x, mask, shift_mean=True, *, unbiased=False, with_padding=False,
                    zero_padding=True, shift="as asked"):
    """Whitening with one choice changed; the defaults give the right answer."""
    m = torch.ones_like(mask, dtype=torch.bool) if with_padding else mask.bool()
    n = m.sum()
    mean = torch.where(m, x, 0.0).sum() / n
    var = torch.where(m, (x - mean) ** 2, 0.0).sum() / ((n - 1) if unbiased else n)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    add_back = {"as asked": not shift_mean, "never": False, "inverted": shift_mean}[shift]
    if add_back:
        out = out + mean
    return torch.where(mask.bool(), out, 0.0) if zero_padding else out


def _whiten_mistakes(x, mask, shift_mean):
    def variant(**change):
        return lambda: _whiten_variant(x, mask, shift_mean, **change)

    mistakes = {
        "the variance is the population variance mean((x - mean)^2) over the masked entries, "
        "as documented: torch.var divides by n - 1 by default (use unbiased=False, or "
        "correction=0)": variant(unbiased=True),
    }
    if not mask.bool().all():
        mistakes.update({
            "the padding entries were included in the mean and the variance: take both over "
            "the masked entries only": variant(with_padding=True),
            "the padding entries were included in the mean and the variance (and not zeroed): "
            "take both over the masked entries only, and return 0 where mask is 0":
                variant(with_padding=True, zero_padding=False),
            "entries where mask is 0 must be returned as 0": variant(zero_padding=False),
            "entries where mask is 0 must be returned as 0 (and the variance is the population "
            "one, dividing by n)": variant(zero_padding=False, unbiased=True),
        })
    if shift_mean:
        mistakes["with shift_mean=True the mean is subtracted and not added back"] = \
            variant(shift="inverted")
    else:
        mistakes["shift_mean=False is ignored: add the mean back after scaling (only the scale "
                 "changes)"] = variant(shift="never")
    return mistakes


def _check_whiten_case(t, x, mask, shift_mean=None):
    kwargs = {} if shift_mean is None else {"shift_mean": shift_mean}
    out = t.call(x, mask, **kwargs)
    shift = True if shift_mean is None else shift_mean
    t.expect_close(out, ref.whiten(x, mask, shift), mistakes=_whiten_mistakes(x, mask, shift))


@exercise("ch05.whiten")
def check_whiten(t):
    with t.case("hand-sized: [1, 2, 3, 4] -> mean 2.5, variance 1.25 -> "
                "[-1.342, -0.447, 0.447, 1.342]"):
        _check_whiten_case(t, torch.tensor([[1.0, 2.0, 3.0, 4.0]]),
                           torch.ones(1, 4, dtype=torch.bool))
    with t.case("2 rows with padding (junk 50.0 on it), a 0/1 float mask"):
        mask = _prefix_mask([3, 5], 5)
        _check_whiten_case(t, _junk(t.randn(2, 5) * 2 + 1, mask, 50.0), mask)
    with t.case("shift_mean=False: the mean is added back (a float mask)"):
        mask = _prefix_mask([4, 2, 6], 6)
        _check_whiten_case(t, _junk(t.randn(3, 6) + 3, mask, 5.0), mask, shift_mean=False)
    with t.case("a constant input: variance 0, the 1e-8 keeps the result finite (all 0); "
                "float mask"):
        mask = _prefix_mask([2, 4], 4)
        _check_whiten_case(t, _junk(torch.full((2, 4), 2.5), mask, 5.0), mask)
    with t.case("4 rows of 16, boolean mask (about 40 entries: the population variance, not "
                "the n - 1 one)"):
        mask = _prefix_mask([16, 9, 12, 4], 16, torch.bool)
        _check_whiten_case(t, _junk(t.randn(4, 16) * 3 - 1, mask, -5.0), mask, shift_mean=True)


# ==============================================================================================
# policy_loss


def _policy_variant(logprobs, old_logprobs, advantages, mask, eps, *, ratio="exp(new - old)",
                    bound="max", clip_on="ratio", negate=True, clipfrac="clipped larger",
                    use_mask=True):
    """(loss, clipfrac) with one choice changed; the defaults give the right answer."""
    r = {"exp(new - old)": torch.exp(logprobs - old_logprobs),
         "exp(old - new)": torch.exp(old_logprobs - logprobs),
         "new / old": logprobs / old_logprobs,
         "new - old": logprobs - old_logprobs}[ratio]
    a = -advantages if negate else advantages
    unclipped = a * r
    if clip_on == "ratio":
        clipped = a * torch.clamp(r, 1 - eps, 1 + eps)
    else:  # the advantage
        clipped = (-1 if negate else 1) * torch.clamp(advantages, 1 - eps, 1 + eps) * r
    pick = torch.maximum if bound == "max" else torch.minimum
    losses = pick(unclipped, clipped)
    hits = {"clipped larger": clipped > unclipped, "clipped smaller": clipped < unclipped,
            ">=": clipped >= unclipped,
            "outside the band": (r - 1).abs() > eps}[clipfrac].float()
    m = mask if use_mask else torch.ones_like(mask)
    return _masked_mean(losses, m), _masked_mean(hits, m)


def _policy_mistakes(logprobs, old_logprobs, advantages, mask, eps):
    def variant(**change):
        return lambda: _policy_variant(logprobs, old_logprobs, advantages, mask, eps, **change)

    loss = {
        "min instead of max: PPO takes the pessimistic bound, the max of the two loss terms "
        "(the min of the two objectives)": variant(bound="min"),
        "the clip belongs to the ratio, clip(ratio, 1 - eps, 1 + eps), not to the advantage":
            variant(clip_on="advantage"),
        "the ratio is pi_new / pi_old = exp(logprobs - old_logprobs): these are "
        "log-probabilities, so subtract them and exponentiate": variant(ratio="new / old"),
        "the ratio is upside down: exp(logprobs - old_logprobs), the new policy over the old":
            variant(ratio="exp(old - new)"),
        "the ratio is exp(logprobs - old_logprobs), not the difference of the log-probs":
            variant(ratio="new - old"),
        "the loss is the NEGATIVE clipped objective: max(-A * ratio, -A * clip(ratio)) (a loss "
        "is minimised)": variant(negate=False),
        "the padding tokens were counted: take the means over the entries where mask is 1":
            variant(use_mask=False),
    }
    clipfrac = {
        "clipfrac counts the tokens where the clipped term is the LARGER one (the one max "
        "picks), not the smaller": variant(clipfrac="clipped smaller"),
        "clipfrac counts the tokens where the clipped term is strictly larger: with >, a token "
        "inside the clip range (both terms equal) does not count": variant(clipfrac=">="),
        "clipfrac counts the tokens where the clipped term is the larger one (the clip is "
        "active), not every token whose ratio is outside [1 - eps, 1 + eps]":
            variant(clipfrac="outside the band"),
        "the padding tokens were counted: take the means over the entries where mask is 1":
            variant(use_mask=False),
    }
    return ({k: (lambda f=f: f()[0]) for k, f in loss.items()},
            {k: (lambda f=f: f()[1]) for k, f in clipfrac.items()})


def _check_policy_case(t, logprobs, old_logprobs, advantages, mask, cliprange=None):
    kwargs = {} if cliprange is None else {"cliprange": cliprange}
    eps = 0.2 if cliprange is None else cliprange
    out = t.call(logprobs, old_logprobs, advantages, mask, **kwargs)
    _expect_tuple(t, out, ("loss", "clipfrac"))
    loss, clipfrac = ref.policy_loss(logprobs, old_logprobs, advantages, mask, eps)
    loss_mistakes, clipfrac_mistakes = _policy_mistakes(logprobs, old_logprobs, advantages,
                                                        mask, eps)
    t.expect_close(out[0], loss.detach(), what="the loss", mistakes=loss_mistakes)
    t.expect_close(out[1], clipfrac, what="clipfrac", mistakes=clipfrac_mistakes)


@exercise("ch05.policy_loss")
def check_policy_loss(t):
    with t.case("the first minibatch: logprobs == old_logprobs, so ratio = 1, loss = "
                "-mean(A) = 1/6 and clipfrac = 0"):
        lp = torch.tensor([[-1.0, -2.0, -0.5]])
        _check_policy_case(t, lp, lp.clone(), torch.tensor([[1.0, -2.0, 0.5]]),
                           torch.ones(1, 3, dtype=torch.bool))
    with t.case("hand-sized: ratios [1.5, 0.5, 1.1, 0.7], advantages [1, 1, -1, -1] -> "
                "loss 0.05, clipfrac 0.5"):
        ratio = torch.tensor([[1.5, 0.5, 1.1, 0.7]])
        _check_policy_case(t, ratio.log(), torch.zeros(1, 4),
                           torch.tensor([[1.0, 1.0, -1.0, -1.0]]),
                           torch.ones(1, 4, dtype=torch.bool))
    with t.case("3 right-padded responses, ratios around 1 (a 0/1 float mask; junk log-probs on "
                "padding)"):
        mask = _prefix_mask([6, 3, 4], 6)
        old = -t.randn(3, 6).abs() - 0.5
        new = old + 0.3 * t.randn(3, 6)
        _check_policy_case(t, _junk(new, mask, 5.0), _junk(old, mask, -5.0),
                           _junk(t.randn(3, 6), mask, 50.0), mask)
    with t.case("cliprange 0.1, boolean mask"):
        mask = _prefix_mask([5, 2, 5, 1], 5, torch.bool)
        old = -t.randn(4, 5).abs() - 0.5
        _check_policy_case(t, _junk(old + 0.2 * t.randn(4, 5), mask, 5.0), old,
                           _junk(t.randn(4, 5), mask, -5.0), mask, cliprange=0.1)
    with t.case("the loss is differentiable: its gradient w.r.t. logprobs (a float mask)"):
        mask = _prefix_mask([4, 2], 4)
        old = -t.randn(2, 4).abs() - 0.5
        new = (old + 0.3 * t.randn(2, 4)).requires_grad_(True)
        advantages = t.randn(2, 4)
        result = t.fn.run((new, old, advantages, mask), backward=True, output=0)
        _expect_tuple(t, result.value, ("loss", "clipfrac"))
        expected = new.detach().clone().requires_grad_(True)
        ref.policy_loss(expected, old, advantages, mask)[0].backward()
        grad = result.grads["args"][0]
        t.expect(grad is not None, "no gradient reaches logprobs from the loss",
                 "keep the loss a tensor of the computation: no .item(), .detach() or "
                 "torch.no_grad()")
        t.expect_close(grad, expected.grad, what="the gradient of the loss w.r.t. logprobs")


# ==============================================================================================
# value_loss


def _value_variant(values, old_values, returns, mask, c, *, half=True, bound="max",
                   around="old values", use_mask=True):
    """The clipped value loss with one choice changed; the defaults give the right answer."""
    if around == "old values":
        clipped = old_values + torch.clamp(values - old_values, -c, c)
    elif around == "returns":
        clipped = returns + torch.clamp(values - returns, -c, c)
    elif around == "zero":
        clipped = torch.clamp(values, -c, c)
    else:  # no clip
        clipped = values
    pick = torch.maximum if bound == "max" else torch.minimum
    losses = pick((values - returns) ** 2, (clipped - returns) ** 2)
    m = mask if use_mask else torch.ones_like(mask)
    return (0.5 if half else 1.0) * _masked_mean(losses, m)


def _value_mistakes(values, old_values, returns, mask, c):
    def variant(**change):
        return lambda: _value_variant(values, old_values, returns, mask, c, **change)

    return {
        "the 0.5 is missing: the loss is 0.5 * masked mean of max(...)": variant(half=False),
        "min instead of max: the clipped value loss takes the larger (pessimistic) of the two "
        "squared errors": variant(bound="min"),
        "the clipped term changes nothing here: clip around the OLD values, V_clip = old_V + "
        "clip(V - old_V, -c, c), which keeps the new prediction near the one made at rollout "
        "time (clipped around the returns it is never the larger term), and take "
        "max((V - R)^2, (V_clip - R)^2)": variant(around="none"),
        "the clip is around the old values, V_clip = old_V + clip(V - old_V, -c, c), not a "
        "clip of V itself": variant(around="zero"),
        "the padding tokens were counted: take the mean over the entries where mask is 1":
            variant(use_mask=False),
    }


def _check_value_case(t, values, old_values, returns, mask, cliprange_value=None):
    kwargs = {} if cliprange_value is None else {"cliprange_value": cliprange_value}
    c = 0.2 if cliprange_value is None else cliprange_value
    out = t.call(values, old_values, returns, mask, **kwargs)
    t.expect_close(out, ref.value_loss(values, old_values, returns, mask, c),
                   mistakes=_value_mistakes(values, old_values, returns, mask, c))


@exercise("ch05.value_loss")
def check_value_loss(t):
    with t.case("values == old_values: 0.5 * mean((V - R)^2) = 0.5 * mean([1, 4]) = 1.25"):
        _check_value_case(t, torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]]),
                          torch.tensor([[2.0, 2.0]]), torch.ones(1, 2, dtype=torch.bool))
    with t.case("hand-sized: V [1, 0, 2], old V [0.5, 0.5, 1], R [2, -1, 1] -> V_clip "
                "[0.7, 0.3, 1.2] -> 0.5 * mean([1.69, 1.69, 1]) = 0.73"):
        _check_value_case(t, torch.tensor([[1.0, 0.0, 2.0]]), torch.tensor([[0.5, 0.5, 1.0]]),
                          torch.tensor([[2.0, -1.0, 1.0]]), torch.ones(1, 3, dtype=torch.bool))
    with t.case("3 right-padded responses (a 0/1 float mask; junk on padding)"):
        mask = _prefix_mask([5, 2, 4], 5)
        old = t.randn(3, 5)
        _check_value_case(t, _junk(old + 0.4 * t.randn(3, 5), mask, 5.0), _junk(old, mask, -5.0),
                          _junk(t.randn(3, 5), mask, 50.0), mask)
    with t.case("cliprange_value 0.5, boolean mask"):
        mask = _prefix_mask([3, 4], 4, torch.bool)
        old = t.randn(2, 4)
        _check_value_case(t, old + t.randn(2, 4), old, _junk(t.randn(2, 4), mask, 5.0), mask,
                          cliprange_value=0.5)
    with t.case("the loss is differentiable: its gradient w.r.t. values (some clipped, a float "
                "mask)"):
        mask = _prefix_mask([4, 3], 4)
        old = t.randn(2, 4)
        t.expect_gradients(ref.value_loss, (old + 0.5 * t.randn(2, 4), old, t.randn(2, 4), mask),
                           wrt=[0])


# ==============================================================================================
# AdaptiveKLController.update


def _kl_update_variant(beta, target, horizon, kl, n_steps, *, clip=True, relative=True,
                       scaled=True, multiplicative=True, sign=1.0):
    error = kl / target - 1.0 if relative else kl - target
    if clip:
        error = min(max(error, -0.2), 0.2)
    step = sign * error * (n_steps / horizon if scaled else 1.0)
    return beta * (1.0 + step) if multiplicative else beta + step


def _kl_update_mistakes(beta, target, horizon, kl, n_steps):
    def variant(**change):
        return _kl_update_variant(beta, target, horizon, kl, n_steps, **change)

    return {
        "the error is not clipped: e = clip(current_kl / target - 1, -0.2, 0.2), so that one "
        "batch cannot move beta by more than 20% of the way per horizon": variant(clip=False),
        "the error is relative: current_kl / target - 1, not current_kl - target":
            variant(relative=False),
        "the error is relative and clipped: e = clip(current_kl / target - 1, -0.2, 0.2)":
            variant(relative=False, clip=False),
        "n_steps / horizon is missing: beta *= 1 + e * n_steps / horizon (the horizon sets how "
        "fast beta adapts)": variant(scaled=False),
        "the update is multiplicative: beta *= 1 + e * n_steps / horizon, not beta += ...":
            variant(multiplicative=False),
        "the sign is flipped: a KL above target must RAISE beta (a stronger leash)":
            variant(sign=-1.0),
    }


@exercise("ch05.AdaptiveKLController.update")
def check_adaptive_kl_update(t):
    cases = [
        ("the KL on target (6 nats): beta stays 0.1", (0.1, 6.0, 10_000), [(6.0, 64)]),
        ("KL 6.6 against target 6 (e = 0.1, not clipped), 1000 samples, horizon 100 -> "
         "0.1 * 2 = 0.2", (0.1, 6.0, 100), [(6.6, 1000)]),
        ("KL 9 against target 6: e = 0.5 is clipped to 0.2", (0.1, 6.0, 1000), [(9.0, 500)]),
        ("KL 3 against target 6: e = -0.5 is clipped to -0.2", (0.5, 6.0, 1000), [(3.0, 250)]),
        ("four updates in a row: beta keeps its state (self.value)", (0.2, 4.0, 500),
         [(5.0, 64), (4.4, 128), (1.0, 64), (3.9, 256)]),
    ]
    for name, init, updates in cases:
        with t.case(name):
            controller = t.student.new("AdaptiveKLController", *init)
            expected = ref.AdaptiveKLController(*init)
            for kl, n_steps in updates:
                before = expected.value
                out = controller.update(kl, n_steps)
                value = expected.update(kl, n_steps)
                t.expect_close(out, value, what=f"update({kl}, {n_steps})",
                               mistakes=_kl_update_mistakes(before, init[1], init[2], kl,
                                                            n_steps),
                               hint=_number_hint(out))
                t.expect_close(controller.fetch("value"), value,
                               what=f"self.value after update({kl}, {n_steps})",
                               hint="keep the new beta in self.value (the trainer reads it)")


# ==============================================================================================
# score_rollout: the numbers of the policy before the update and of the reference, on a tiny
# policy, reference and rollout built alike here and in the child (see checks_steps)


SCORED = ("logprobs", "ref_logprobs", "values", "rewards", "entropy")
SCORES = torch.tensor([1.0, -0.5, 0.3, -1.2])  # one per response of the tiny rollout
ROLLOUT = Build(f"{FIXTURES}:tiny_rollout", 1)  # responses of 4, 2, 5 and 1 tokens (R = 5)
NO_GRAPH = ("score under torch.no_grad(): these are constants of the update (log pi_old, V_old "
            "and the reference's log-probs); with a graph attached, the loss would differentiate "
            "through the rollout's numbers, and every scoring pass would stay in memory")


def _score_variant(*, policy_eval=True, ref_eval=True, temperature=True, swap=False):
    """score_rollout with one choice changed; the defaults give the right answer."""
    def score(policy, reference, ro, scores, kl_coef, temp):
        if policy_eval:
            policy.eval()
        if ref_eval:
            reference.eval()
        temp = temp if temperature else 1.0
        with torch.no_grad():
            logprobs, entropy, values = ref.score_responses(policy, ro, temp)
            ref_logprobs, _, _ = ref.score_responses(reference, ro, temp)
            a, b = (ref_logprobs, logprobs) if swap else (logprobs, ref_logprobs)
            rewards = ref.kl_penalized_rewards(scores, a, b, ro.mask, kl_coef)
        return logprobs, ref_logprobs, values, rewards, entropy

    return score


SCORE_MISTAKES = {
    "the policy was scored with dropout on: call policy.eval() first (it may arrive in "
    "training mode); log pi_old must be the function of the weights that the update "
    "recomputes, not one random draw of dropout masks": _score_variant(policy_eval=False),
    "the reference was scored with dropout on: call ref.eval() too (it is a copy of a model "
    "that was training)": _score_variant(ref_eval=False),
    "both models were scored with dropout on: call policy.eval() and ref.eval() first":
        _score_variant(policy_eval=False, ref_eval=False),
    "the log-probs ignore the temperature: the responses were sampled from softmax(logits / "
    "temperature), so score them at `temperature` (score_responses takes it)":
        _score_variant(temperature=False),
    "the log-probs are swapped in kl_penalized_rewards: the penalty is on log pi - log pi_ref, "
    "the policy's first": _score_variant(swap=True),
}


def _expect_scored(t, setup: dict, args: tuple, seed: int = 0):
    """The student's score_rollout returns the library's five tensors, without a graph."""
    out = student_call(t, setup, args, seed)
    want = local_call(ref.score_rollout, setup, args, seed)
    _expect_tuple(t, out, SCORED)
    runs: dict = {}

    def variant(hint):  # each mistake is run at most once
        if hint not in runs:
            runs[hint] = local_call(SCORE_MISTAKES[hint], setup, args, seed)
        return runs[hint]

    order = f"return ({', '.join(SCORED)}), in this order"
    for i, name in enumerate(SCORED):
        mistakes = {h: (lambda h=h, i=i: variant(h)[i]) for h in SCORE_MISTAKES}
        mistakes.update({f"this is `{other}`: {order}": want[j]
                         for j, other in enumerate(SCORED) if j != i})
        t.expect_close(out[i], want[i], what=f"`{name}` (item {i + 1} of the result)",
                       mistakes=mistakes)
    for i, name in enumerate(SCORED):
        t.expect(not out[i].requires_grad, f"`{name}` carries an autograd graph "
                 f"(requires_grad=True)", NO_GRAPH)
    return out


@exercise("ch05.score_rollout")
def check_score_rollout(t):
    args = (Kept("policy"), Kept("ref"), Kept("ro"), SCORES, 0.1, 0.7)
    with t.case("the reference is the policy's own GPT (the same weights) and the value head "
                "starts at zero: ref_logprobs = logprobs, values 0, and the rewards are 0 but "
                "each response's score at its last token; kl_coef 0.1, temperature 0.7"):
        _expect_scored(t, {"policy": Build(f"{FIXTURES}:tiny_policy", 0, train=False),
                           "ref": Build(f"{FIXTURES}:tiny_gpt", 0, train=False),
                           "ro": ROLLOUT}, args)
    with t.case("a policy (value head not zero) and a reference that differ; kl_coef 0.1, "
                "temperature 0.7"):
        _expect_scored(t, {"policy": Build(f"{FIXTURES}:tiny_policy", 0, value_std=0.5,
                                           train=False),
                           "ref": Build(f"{FIXTURES}:tiny_gpt", 10, train=False),
                           "ro": ROLLOUT}, args)
    with t.case("both models arrive in training mode, with dropout 0.2 (torch seeded alike on "
                "both sides); kl_coef 0.05, temperature 1.3"):
        _expect_scored(t, {"policy": Build(f"{FIXTURES}:tiny_policy", 0, value_std=0.5,
                                           dropout=0.2, train=True),
                           "ref": Build(f"{FIXTURES}:tiny_gpt", 10, dropout=0.2, train=True),
                           "ro": ROLLOUT}, (*args[:4], 0.05, 1.3), seed=7)


# ==============================================================================================
# ppo_update: the learning phase, checked like a training step: the policy's parameters after
# the update, the optimizer's step count and the statistics, against the library's on the
# same fixtures (see checks_steps)


def _update_variant(*, zero_grad=True, clip="before", train=False, old="rollout",
                    padding=False, order="each epoch", value="cfg", rewhiten=False):
    """ppo_update with one choice changed; the defaults give the right answer."""
    def update(policy, optimizer, ro, logprobs, values, advantages, returns, cfg, generator,
               grad_clip):
        policy.train(train)
        stats, B = {}, ro.response.size(0)
        for epoch in range(cfg.ppo_epochs):
            if order == "each epoch" or (order == "once" and epoch == 0):
                perm = torch.randperm(B, generator=generator)
            elif order == "none":
                perm = torch.arange(B)
            for s in range(0, B, cfg.minibatch_size):
                idx = perm[s: s + cfg.minibatch_size]
                mb = ref.take(ro, idx)
                R = mb.response.size(1)
                new_logprobs, _, new_values = ref.score_responses(policy, mb, cfg.temperature)
                old_logprobs = {"rollout": logprobs[idx, :R], "current": new_logprobs.detach(),
                                "attached": new_logprobs}[old]
                mask = torch.ones_like(mb.mask) if padding else mb.mask
                adv = advantages[idx, :R]
                adv = ref.whiten(adv, mb.mask) if rewhiten else adv
                pg_loss, clipfrac = ref.policy_loss(new_logprobs, old_logprobs, adv, mask,
                                                    cfg.cliprange)
                clipped = cfg.clip_value if value == "cfg" else value == "clipped"
                if value == "none":
                    vf_loss = torch.zeros(())
                elif clipped:
                    vf_loss = ref.value_loss(new_values, values[idx, :R], returns[idx, :R], mask,
                                             cfg.cliprange_value)
                else:
                    vf_loss = 0.5 * ref.masked_mean((new_values - returns[idx, :R]) ** 2, mask)
                if zero_grad:
                    optimizer.zero_grad(set_to_none=True)
                (pg_loss + vf_loss).backward()
                if clip == "before":
                    torch.nn.utils.clip_grad_norm_(policy.parameters(), grad_clip)
                optimizer.step()
                if clip == "after":
                    torch.nn.utils.clip_grad_norm_(policy.parameters(), grad_clip)
                ref.record_minibatch(stats, new_logprobs, old_logprobs, mb.mask, clipfrac,
                                     pg_loss, vf_loss)
        return stats

    return update


UPDATE_MISTAKES = {
    "the gradients were not zeroed: backward adds to .grad, so each step used the sum of the "
    "gradients of every minibatch so far; call optimizer.zero_grad() before each backward":
        _update_variant(zero_grad=False),
    "the gradients were clipped after optimizer.step(): clip_grad_norm_ goes between backward "
    "and the step (after it, it changes nothing)": _update_variant(clip="after"),
    "the gradients were not clipped: torch.nn.utils.clip_grad_norm_(policy.parameters(), "
    "grad_clip) between backward and each step": _update_variant(clip=None),
    "the policy learned with dropout on (training mode): the rollout was scored with dropout "
    "off, so keep it off (policy.eval()); with dropout the ratio is not 1 even before the first "
    "step": _update_variant(train=True),
    "the ratio's denominator is the current policy's log-probs, not the rollout's: pi_old is "
    "`logprobs` (scored before the update, the same in every epoch); with the current ones "
    "the ratio is always 1 and the clip never acts": _update_variant(old="current"),
    "the old log-probs are the current policy's, still in the graph: pi_old is `logprobs`, "
    "the rollout's constants; with the current ones the ratio is always 1 and its gradient 0":
        _update_variant(old="attached"),
    "the losses are averaged over padding too: give policy_loss and value_loss the "
    "minibatch's response mask (mb.mask)": _update_variant(padding=True),
    "the minibatches are not shuffled: each epoch's order is torch.randperm(B, "
    "generator=generator)": _update_variant(order="none"),
    "the order was drawn once for all the epochs: draw a new torch.randperm(B, "
    "generator=generator) at the start of each epoch": _update_variant(order="once"),
    "the value loss is missing: add it to the policy loss (the value head learns from it "
    "alone)": _update_variant(value="none"),
    "the value loss is not clipped though cfg.clip_value is on: use value_loss(...) with "
    "cfg.cliprange_value": _update_variant(value="plain"),
    "the value loss is clipped though cfg.clip_value is off: then it is 0.5 * the masked mean "
    "of (V - returns)^2": _update_variant(value="clipped"),
    "the advantages were whitened again in each minibatch: they arrive whitened over the whole "
    "batch; use them as they are": _update_variant(rewhiten=True),
}


def _scored_rollout(temperature=0.7):
    """What an update is given for the tiny rollout, computed here by the library: the tiny
    policy's log-probs and values (dropout off), whitened advantages and returns."""
    policy, reference = fixtures.tiny_policy(0, value_std=0.5), fixtures.tiny_gpt(10)
    ro = fixtures.tiny_rollout(1)
    logprobs, _, values, rewards, _ = ref.score_rollout(policy, reference, ro, SCORES, 0.1,
                                                        temperature)
    advantages, returns = ref.compute_gae(rewards, values, ro.mask)
    return logprobs, values, ref.whiten(advantages, ro.mask), returns


def _update_setup(dropout=0.0, train=False, **config):
    """The tiny policy (the one _scored_rollout scored), a PPOConfig for a batch of 4 (lr 0.01
    and value_lr 0.05 unless told), its optimizer, the tiny rollout and a generator."""
    config = {"batch_size": 4, "minibatch_size": 2, "ppo_epochs": 2, "lr": 0.01,
              "value_lr": 0.05, "temperature": 0.7, **config}
    return {"model": Build(f"{FIXTURES}:tiny_policy", 0, value_std=0.5, dropout=dropout,
                           train=train),
            "cfg": Build("minialign.ppo:PPOConfig", **config),
            "optimizer": Build("minialign.ppo:ppo_optimizer", Kept("model"), Kept("cfg")),
            "ro": ROLLOUT, "generator": Build(f"{FIXTURES}:generator", 7)}


def _update_calls(grad_clip=0.5):
    return [(Kept("model"), Kept("optimizer"), Kept("ro"), *_scored_rollout(), Kept("cfg"),
             Kept("generator"), grad_clip)]


def _expect_update(t, setup: dict, calls: list, seed: int = 0):
    """The student's update leaves the policy as the library's does, in as many optimizer
    steps, and returns the same statistics."""
    got = student_steps(t, setup, calls, seed)
    want = local_steps(ref.ppo_update, setup, calls, seed)
    runs: dict = {}

    def variant(hint):  # each mistake is run at most once
        if hint not in runs:
            runs[hint] = local_steps(UPDATE_MISTAKES[hint], setup, calls, seed)
        return runs[hint]

    count = got.optimizer_steps
    if type(count) is not int or count != want.optimizer_steps:
        t.fail(f"the optimizer took {count} step(s) in the update, expected "
               f"{want.optimizer_steps}", "one optimizer.step() per minibatch: ppo_epochs "
               "passes of B / minibatch_size minibatches")
    expect_state(t, got.state, want.state, what="the policy's parameters after the update",
                 mistakes={h: (lambda h=h: variant(h).state) for h in UPDATE_MISTAKES})
    for i, (stats, expected) in enumerate(zip(got.losses, want.losses)):
        t.expect_equal(stats, expected, what="the statistics returned",
                       mistakes={h: (lambda h=h, i=i: variant(h).losses[i])
                                 for h in UPDATE_MISTAKES},
                       hint="call record_minibatch(stats, new_logprobs, old_logprobs, mask, "
                            "clipfrac, pg_loss, vf_loss) once per minibatch, stats = {} at "
                            "the start, and return stats")
    return got


def _expect_update_learns(t, setup: dict, calls: list):
    """Behaviour: after the student's update, the response tokens with positive advantages are
    more likely and those with negative ones less likely, and the values are nearer the
    returns (measured here, on the parameters read back)."""
    got = student_steps(t, setup, calls)
    policy = fixtures.tiny_policy(0, value_std=0.5)
    expected = fixtures.state_of(policy)
    if type(got.state) is not dict or set(got.state) != set(expected) or any(
            type(got.state[k]) is not torch.Tensor or got.state[k].shape != v.shape
            for k, v in expected.items()):
        t.fail("the policy's parameters could not be read back after the update",
               "update the parameters in place (optimizer.step()); do not replace them")
    _, _, _, logprobs, values, advantages, returns, *_ = calls[0]  # (B, R) each
    ro = fixtures.tiny_rollout(1)
    mask = ro.mask.bool()
    with torch.no_grad():
        before = 0.5 * _masked_mean((values - returns) ** 2, mask).item()
        policy.load_state_dict({k: v.to(expected[k].dtype) for k, v in got.state.items()})
        new_logprobs, _, new_values = ref.score_responses(policy.eval(), ro, 0.7)
        gain = torch.where(mask, advantages * (new_logprobs - logprobs), 0.0).sum().item()
        after = 0.5 * _masked_mean((new_values - returns) ** 2, mask).item()
    t.expect(gain > 0, f"the update moved the policy against the advantages: the sum of A × "
             f"(log pi_new - log pi_old) over the response tokens is {gain:.4f}, not positive",
             "minimise policy_loss (it is already the negative of the objective), with the "
             "rollout's log-probs as pi_old")
    t.expect(after < before, f"the value loss against the returns did not fall: {before:.4f} "
             f"-> {after:.4f}", "add the value loss to the policy loss before backward")


@exercise("ch05.ppo_update")
def check_ppo_update(t):
    with t.case("one epoch, one minibatch of the 4 rollouts: a single step, before which the "
                "ratio is exactly 1 (val/ratio [1.0], clipfrac [0.0]); grad_clip 0.5"):
        _expect_update(t, _update_setup(ppo_epochs=1, minibatch_size=4), _update_calls())
    with t.case("2 epochs of 2 minibatches of 2 rollouts, in the generator's order; grad_clip "
                "0.5: four steps, each starting with the last one's gradients still in .grad"):
        _expect_update(t, _update_setup(), _update_calls())
    with t.case("the policy arrives in training mode, with dropout 0.2 (torch seeded alike on "
                "both sides); 2 epochs of 2 minibatches"):
        _expect_update(t, _update_setup(dropout=0.2, train=True), _update_calls(), seed=7)
    with t.case("cfg.clip_value off (the value loss is the plain squared error); 3 epochs of "
                "2 minibatches, grad_clip 0.3"):
        _expect_update(t, _update_setup(clip_value=False, ppo_epochs=3), _update_calls(0.3))
    with t.case("behaviour: after 4 epochs of 2 minibatches (lr 0.01), the tokens with positive "
                "advantages are more likely, those with negative ones less, and the value loss "
                "against the returns has fallen"):
        _expect_update_learns(t, _update_setup(ppo_epochs=4), _update_calls(1.0))
