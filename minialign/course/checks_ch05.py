"""Graded checks of chapter 5 (PPO): per-token rewards, GAE, whitening, the clipped policy and
value losses, and the adaptive KL controller.

Padding entries of the inputs hold finite junk (5.0, 50.0, ...) wherever the docstring says they
are ignored: a correct solution gives the same result whatever is there. The wrong variants
below are the mistakes students make; a student's output that equals one of them gets that
mistake's hint.
"""

from __future__ import annotations

import numpy as np
import torch

from minialign import ppo as ref
from minialign.course.checks import exercise


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
