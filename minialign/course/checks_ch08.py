"""Graded checks of chapter 8 (GRPO, Dr. GRPO, RLOO): group-relative advantages, the
leave-one-out baseline, the three ways of aggregating per-token losses, the k3 KL estimator, the
clipped per-token loss with clip-higher, and one GRPO minibatch loss.

Padding entries hold junk (finite, or nan where the docstring promises that padding never
counts): a correct solution gives the same result whatever is there. The wrong variants below
are the mistakes students make; a student's output that equals one of them gets that mistake's
hint.
"""

from __future__ import annotations

import warnings

import torch

from minialign import grpo as ref
from minialign.course.checks import exercise
from minialign.course.checks_ch05 import _expect_tuple, _junk, _prefix_mask  # shared helpers
from minialign.ppo import masked_mean

NAN = float("nan")

# ==============================================================================================
# group_advantages


def _zero_equal_rows(rewards, x):
    """x with exact zeros on the rows whose rewards are all equal (as the contract asks)."""
    equal = (rewards == rewards[:, :1]).all(dim=1, keepdim=True)
    return torch.where(equal, 0.0, x)


def _std(r, dim=None):
    """r.std(dim, keepdim=True) (dim None: over every value), nan where there is one value,
    without torch's warning about it."""
    if dim is None:
        return r.std() if r.numel() > 1 else torch.tensor(NAN)
    if r.size(dim) > 1:
        return r.std(dim=dim, keepdim=True)
    return torch.full_like(r.narrow(dim, 0, 1), NAN)


def _group_mistakes(rewards, scale, eps):
    r = rewards
    centered = r - r.mean(dim=1, keepdim=True)
    row_std = _std(r, dim=1)

    def fixed(x):  # each variant keeps the all-equal rule, so that only its own mistake shows
        return lambda: _zero_equal_rows(r, x() if callable(x) else x)

    mistakes = {
        "the sign is flipped: a response better than its group gets a POSITIVE advantage "
        "(r - mean, not mean - r)": fixed(lambda: -ref.group_advantages(r, scale, eps)),
        "mean over the whole batch instead of per group: each prompt's own responses are its "
        "baseline (mean along dim=1, keepdim=True)":
            fixed(lambda: r - r.mean() if scale == "none" else (r - r.mean()) / (row_std + eps)),
    }
    if scale == "std":
        mistakes.update({
            "std over the whole batch instead of per group: divide each row by its own spread "
            "(rewards.std(dim=1, keepdim=True)), so that every prompt's advantages have the "
            "same size": fixed(lambda: centered / (_std(r) + eps)),
            "mean and std over the whole batch instead of per group: both are taken along the "
            "row (dim=1), one group per prompt": fixed(lambda: (r - r.mean()) / (_std(r) + eps)),
            "population std instead of torch.std's Bessel-corrected one: divide by "
            "rewards.std(dim=1) (n - 1), not std(unbiased=False) or correction=0":
                fixed(lambda: centered / (r.std(dim=1, keepdim=True, unbiased=False) + eps)),
            "the statistics are taken over the prompts (dim 0) instead of the group (dim 1)":
                fixed(lambda: (r - r.mean(dim=0, keepdim=True)) / (_std(r, dim=0) + eps)),
            "eps is ignored: divide by (std + eps)": fixed(lambda: centered / row_std),
            "eps belongs outside the square root: (r - mean) / (std + eps), not "
            "/ sqrt(var + eps)": fixed(lambda: centered / torch.sqrt(_std(r, dim=1) ** 2 + eps)),
            "a group whose rewards are all equal (or a group of one) must get exactly 0, not "
            "nan: its std is 0 (0 / 0 = nan with eps = 0) and torch.std of one sample is nan; "
            "put 0 there with torch.where": lambda: centered / (row_std + eps),
        })
    else:
        mistakes["scale='none' (Dr. GRPO) only centres: r - mean of the group, no division by "
                 "the std"] = fixed(lambda: ref.group_advantages(r, "std", eps))
    return mistakes


def _check_group_case(t, rewards, scale=None, eps=None):
    kwargs = {k: v for k, v in (("scale", scale), ("eps", eps)) if v is not None}
    scale, eps = scale or "std", 1e-4 if eps is None else eps
    out = t.call(rewards, **kwargs)
    with warnings.catch_warnings():  # the std of one sample, in the wrong variants
        warnings.simplefilter("ignore")
        t.expect_close(out, ref.group_advantages(rewards, scale, eps),
                       mistakes=_group_mistakes(rewards, scale, eps))


@exercise("ch08.group_advantages")
def check_group_advantages(t):
    with t.case("hand-sized: one group of 4, rewards [1, 0, 0, 1] -> mean 0.5, torch.std 0.577 "
                "-> [0.866, -0.866, -0.866, 0.866]"):
        _check_group_case(t, torch.tensor([[1.0, 0.0, 0.0, 1.0]]))
    with t.case("3 prompts x 4 responses, rewards on different scales per prompt"):
        rewards = t.randn(3, 4) * torch.tensor([[1.0], [5.0], [0.2]]) + torch.tensor([[0.0],
                                                                                       [3.0],
                                                                                       [-1.0]])
        _check_group_case(t, rewards)
    with t.case("eps = 0.5 (given): (r - mean) / (std + eps), 2 prompts x 5 responses"):
        _check_group_case(t, t.randn(2, 5), eps=0.5)
    with t.case("scale='none' (Dr. GRPO): only centred, 3 prompts x 3 responses"):
        _check_group_case(t, t.randn(3, 3) * 2 + 1, scale="none")
    with t.case("groups whose rewards are all equal, eps = 0: exactly 0 there, not nan"):
        _check_group_case(t, torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [0.5, 0.5, 0.5]]),
                          eps=0.0)
    with t.case("G = 1 (one response per prompt): all zeros, not nan"):
        _check_group_case(t, torch.tensor([[0.3], [1.0], [-2.0]]))
    with t.case("G = 1 with scale='none': all zeros"):
        _check_group_case(t, torch.tensor([[0.3], [1.0]]), scale="none")


# ==============================================================================================
# rloo_advantages


def _rloo_mistakes(rewards):
    r = rewards
    K = r.size(1)
    total = r.sum(dim=1, keepdim=True)
    return {
        "including the sample itself in its own RLOO baseline: the baseline of r_i is the mean "
        "of the OTHER K - 1 rewards of its row, (sum - r_i) / (K - 1)": r - r.mean(1, keepdim=True),
        "the sum of the other K - 1 rewards is divided by K: their mean divides by K - 1":
            r - (total - r) / K,
        "the baseline is taken over the whole batch: only the other responses to the SAME "
        "prompt (the row) form it": r - (r.sum() - r) / (r.numel() - 1),
        "the sign is flipped: A_i = r_i - baseline_i, a response better than the others gets a "
        "positive advantage": (total - r) / (K - 1) - r,
    }


@exercise("ch08.rloo_advantages")
def check_rloo_advantages(t):
    cases = [
        ("hand-sized: rewards [1, 0, 0, 1] -> baselines [1/3, 2/3, 2/3, 1/3] -> "
         "[0.667, -0.667, -0.667, 0.667]", torch.tensor([[1.0, 0.0, 0.0, 1.0]])),
        ("K = 2: each baseline is the other reward, [3, 1] -> [2, -2]",
         torch.tensor([[3.0, 1.0], [0.0, 0.5]])),
        ("3 prompts x 5 responses", None),
        ("a group whose rewards are all equal: zeros", torch.tensor([[0.7, 0.7, 0.7],
                                                                      [0.0, 1.0, 2.0]])),
    ]
    for name, rewards in cases:
        with t.case(name):
            rewards = t.randn(3, 5) * 2 if rewards is None else rewards
            out = t.call(rewards)
            t.expect_close(out, ref.rloo_advantages(rewards), mistakes=_rloo_mistakes(rewards))


# ==============================================================================================
# aggregate_loss


def _aggregate_mistakes(x, mask, mode, max_len):
    m = mask.bool()
    B, T = m.shape
    clean = torch.where(m, x, 0.0)
    lengths = m.sum(1)

    def other(mode_):
        return lambda: ref.aggregate_loss(x, mask, mode_, max_len)

    names = {"seq-mean-token-mean": "GRPO's seq-mean-token-mean (each response's mean, then the "
                                    "mean over responses)",
             "token-mean": "DAPO's token-mean (sum / number of tokens)",
             "seq-mean-token-sum-norm": "Dr. GRPO's seq-mean-token-sum-norm (sum / (B * max_len))"}
    mistakes = {f"mode {mode!r} computed as {names[o]}": other(o) for o in names if o != mode}
    if x[~m].isnan().any():
        mistakes["padding leaks: nan * 0 is nan, so select with torch.where(mask, "
                 "per_token_loss, 0.0) instead of multiplying by the mask"] = torch.tensor(NAN)
    if not m.any():
        mistakes["a batch with no token must give 0, not 0 / 0 = nan: clamp every count you "
                 "divide by (.clamp(min=1))"] = torch.tensor(NAN)
    if mode == "token-mean":
        mistakes["mean over padding: divide by the number of tokens where mask is 1, not by "
                 "B * T"] = lambda: clean.sum() / (B * T)
        if not x[~m].isnan().any():  # (with nan there, the hint above says it)
            mistakes["padding counted: the values on padding must not enter the sum"] = \
                lambda: x.sum() / m.sum().clamp(min=1)
    elif mode == "seq-mean-token-mean":
        per_seq = clean.sum(1) / lengths.clamp(min=1)
        mistakes.update({
            "mean over padding: each response's mean divides by its own number of tokens, not "
            "by T": lambda: (clean.sum(1) / T).mean(),
            "a response with no token is counted in the mean over responses: average over the "
            "responses that have a token": lambda: per_seq.mean(),
        })
        if not x[~m].isnan().any():
            mistakes["padding counted: the values on padding must not enter each response's "
                     "sum"] = lambda: (x.sum(1) / lengths.clamp(min=1)).mean()
    else:
        limit = T if max_len is None else max_len
        mistakes.update({
            "max_len is ignored: divide by B * max_len (T only when max_len is None)":
                lambda: clean.sum() / (B * T),
            "the constant is B * max_len, one per response: not max_len alone":
                lambda: clean.sum() / limit,
        })
        if not x[~m].isnan().any():
            mistakes["padding counted: the values on padding must not enter the sum"] = \
                lambda: x.sum() / (B * limit)
    return mistakes


def _check_aggregate_case(t, x, mask, mode, max_len=None):
    kwargs = {} if max_len is None else {"max_len": max_len}
    out = t.call(x, mask, mode, **kwargs)
    t.expect_close(out, ref.aggregate_loss(x, mask, mode, max_len),
                   mistakes=_aggregate_mistakes(x, mask, mode, max_len))


@exercise("ch08.aggregate_loss")
def check_aggregate_loss(t):
    x = torch.tensor([[1.0, 2.0, 3.0, 50.0], [4.0, 50.0, 50.0, 50.0]])
    mask = _prefix_mask([3, 1], 4)
    for mode, value in (("seq-mean-token-mean", "(mean(1, 2, 3) + 4) / 2 = 3"),
                        ("token-mean", "(1 + 2 + 3 + 4) / 4 = 2.5"),
                        ("seq-mean-token-sum-norm", "10 / (2 * 4) = 1.25")):
        with t.case(f"hand-sized, {mode}: losses [1, 2, 3] and [4] (junk 50 on padding) -> "
                    f"{value}"):
            _check_aggregate_case(t, x, mask, mode)
    for mode in ref.AGGREGATIONS:
        with t.case(f"{mode}: 3 responses of lengths 6, 2, 4 with nan on padding (a bool mask)"):
            mask = _prefix_mask([6, 2, 4], 6, torch.bool)
            _check_aggregate_case(t, _junk(t.randn(3, 6), mask, NAN), mask, mode)
    with t.case("seq-mean-token-sum-norm with max_len = 10 (a float mask)"):
        mask = _prefix_mask([5, 3], 5)
        _check_aggregate_case(t, _junk(t.randn(2, 5), mask, 5.0), mask,
                              "seq-mean-token-sum-norm", max_len=10)
    with t.case("seq-mean-token-mean with an empty response (lengths 3, 0, 2): it does not "
                "count among the responses"):
        mask = _prefix_mask([3, 0, 2], 4)
        _check_aggregate_case(t, _junk(t.randn(3, 4), mask, 5.0), mask, "seq-mean-token-mean")
    for mode in ref.AGGREGATIONS:
        with t.case(f"{mode}: no token at all (an all-zero mask) gives 0, not nan"):
            mask = torch.zeros(2, 3)
            _check_aggregate_case(t, t.randn(2, 3), mask, mode)
    with t.case("the result feeds the loss: its gradient w.r.t. per_token_loss (GRPO, a float "
                "mask)"):
        mask = _prefix_mask([4, 2, 3], 4)
        t.expect_gradients(ref.aggregate_loss, (_junk(t.randn(3, 4), mask, 5.0), mask,
                                                "seq-mean-token-mean"), wrt=[0])


# ==============================================================================================
# k3_kl


def _k3_mistakes(logprobs, ref_logprobs):
    lp, rp = logprobs.detach(), ref_logprobs.detach()
    d = rp - lp
    return {
        "k3 sign flipped: d = ref_logprobs - logprobs, the log of pi_ref / pi (the ratio of the "
        "reference to the policy that sampled the tokens), then exp(d) - d - 1":
            torch.exp(-d) + d - 1,
        "this is k1, log pi - log pi_ref: k3 = exp(d) - d - 1 with d = ref_logprobs - logprobs "
        "(never negative)": lp - rp,
        "this is k2, (log pi - log pi_ref)^2 / 2: k3 = exp(d) - d - 1": 0.5 * d ** 2,
        "the -1 is missing: k3 = exp(d) - d - 1, 0 where the log-probs agree": torch.exp(d) - d,
        "the whole estimate is negated: k3 = exp(d) - d - 1 >= 0": -(torch.exp(d) - d - 1),
    }


@exercise("ch08.k3_kl")
def check_k3_kl(t):
    with t.case("hand-sized: log pi [-1, -2], log pi_ref [-1, -1.5] -> [0, e^0.5 - 1.5 = "
                "0.1487]"):
        lp, rp = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.0, -1.5]])
        t.expect_close(t.call(lp, rp), ref.k3_kl(lp, rp), mistakes=_k3_mistakes(lp, rp))
    with t.case("3 x 5 log-probs around -2"):
        lp, rp = t.randn(3, 5) - 2, t.randn(3, 5) - 2
        t.expect_close(t.call(lp, rp), ref.k3_kl(lp, rp), mistakes=_k3_mistakes(lp, rp))
    with t.case("policy == reference: exactly 0"):
        lp = t.randn(2, 4) - 1
        t.expect_close(t.call(lp, lp.clone()), torch.zeros(2, 4), mistakes=_k3_mistakes(lp, lp))
    with t.case("the KL term feeds the loss: its gradient w.r.t. logprobs"):
        t.expect_gradients(ref.k3_kl, (t.randn(2, 4) - 2, t.randn(2, 4) - 2), wrt=[0])


# ==============================================================================================
# clipped_token_loss


def _clip_variant(logprobs, old_logprobs, advantages, low, high, *, pick="max", bounds="right",
                  sign=-1.0, ratio="exp", per_token=False):
    """The per-token loss with one choice changed; the defaults give the right answer."""
    lp, old = logprobs.detach(), old_logprobs.detach()
    A = advantages if per_token else advantages.unsqueeze(1)
    rho = torch.exp(lp - old) if ratio == "exp" else lp - old
    lo, hi = {"right": (1 - low, 1 + high), "symmetric": (1 - low, 1 + low),
              "swapped": (1 - high, 1 + low)}[bounds]
    unclipped, clipped = sign * A * rho, sign * A * torch.clamp(rho, lo, hi)
    return (torch.maximum if pick == "max" else torch.minimum)(unclipped, clipped)


def _clip_mistakes(logprobs, old_logprobs, advantages, low, high):
    def variant(**change):
        return lambda: _clip_variant(logprobs, old_logprobs, advantages, low, high, **change)

    mistakes = {
        "min instead of max: the loss takes the pessimistic of the two terms, the LARGER loss":
            variant(pick="min"),
        "the same clip range on both sides: the ratio is clipped to [1 - cliprange_low, "
        "1 + cliprange_high] (clip-higher)": variant(bounds="symmetric"),
        "the clip bounds are swapped: 1 - cliprange_low below, 1 + cliprange_high above":
            variant(bounds="swapped"),
        "the sign is flipped: the loss is the NEGATED surrogate, -A * rho (minimising it raises "
        "the probability of tokens with a positive advantage)": variant(sign=1.0, pick="max"),
        "the ratio is pi / pi_old = exp(logprobs - old_logprobs), not the difference of the "
        "log-probs": variant(ratio="diff"),
    }
    if advantages.size(0) == logprobs.size(1):  # (B,) broadcasts along T only when B == T
        mistakes["one advantage per token instead of per answer: advantages[b] belongs to every "
                 "token of response b, so broadcast it along time with advantages.unsqueeze(1)"
                 ] = variant(per_token=True)
    return mistakes


def _clipped_mask_mistakes(logprobs, old_logprobs, advantages, low, high):
    rho = torch.exp(logprobs.detach() - old_logprobs.detach())
    return {
        "a token counts as clipped where the clipped term is the larger (the clip took its "
        "gradient away), not wherever the ratio is out of range: a ratio below the range with "
        "a positive advantage is not clipped": (rho < 1 - low) | (rho > 1 + high),
    }


def _check_clip_case(t, logprobs, old_logprobs, advantages, low=None, high=None):
    kwargs = {k: v for k, v in (("cliprange_low", low), ("cliprange_high", high))
              if v is not None}
    low, high = 0.2 if low is None else low, 0.28 if high is None else high
    out = t.call(logprobs, old_logprobs, advantages, **kwargs)
    _expect_tuple(t, out, ("per-token loss", "clipped"))
    loss, clipped = ref.clipped_token_loss(logprobs, old_logprobs, advantages, low, high)
    t.expect_close(out[0], loss, what="the per-token loss",
                   mistakes=_clip_mistakes(logprobs, old_logprobs, advantages, low, high))
    t.expect_close(out[1], clipped, what="the clipped mask",
                   mistakes=_clipped_mask_mistakes(logprobs, old_logprobs, advantages, low, high),
                   hint="clipped is a (B, T) bool tensor: True where the clipped term is the "
                        "larger (clipped > unclipped)")


@exercise("ch08.clipped_token_loss")
def check_clipped_token_loss(t):
    with t.case("hand-sized: ratios [[1.5, 0.6], [0.5, 1.4]], advantages [1, -1] -> "
                "[[-1.28, -0.6], [0.8, 1.4]], clipped [[True, False], [True, False]]"):
        ratio = torch.tensor([[1.5, 0.6], [0.5, 1.4]])
        _check_clip_case(t, ratio.log(), torch.zeros(2, 2), torch.tensor([1.0, -1.0]))
    with t.case("a ratio in range: [[1.2, 0.9, 1.1]], advantage [2] -> [[-2.4, -1.8, -2.2]]"):
        ratio = torch.tensor([[1.2, 0.9, 1.1]])
        _check_clip_case(t, ratio.log(), torch.zeros(1, 3), torch.tensor([2.0]))
    with t.case("3 responses of 3 tokens, ratios around 1, advantages of both signs"):
        old = -t.randn(3, 3).abs() - 0.5
        _check_clip_case(t, old + 0.4 * t.randn(3, 3), old, torch.tensor([0.8, -1.2, 0.3]))
    with t.case("4 responses of 6 tokens, cliprange_low 0.1, cliprange_high 0.3"):
        old = -t.randn(4, 6).abs() - 0.5
        _check_clip_case(t, old + 0.3 * t.randn(4, 6), old, t.randn(4), low=0.1, high=0.3)
    with t.case("first minibatch after the rollout: logprobs == old_logprobs, so the ratio is 1 "
                "and nothing is clipped"):
        lp = -t.randn(2, 4).abs()
        _check_clip_case(t, lp, lp.clone(), torch.tensor([1.0, -0.5]))
    with t.case("the loss is differentiable: its gradient w.r.t. logprobs"):
        old = -t.randn(3, 4).abs() - 0.5
        t.expect_gradients(ref.clipped_token_loss, (old + 0.3 * t.randn(3, 4), old, t.randn(3)),
                           wrt=[0], output=0)
    with t.case("old_logprobs is a constant: no gradient reaches it, even when it requires "
                "grad"):
        old = (-t.randn(3, 4).abs() - 0.5)
        new = (old + 0.1 * t.randn(3, 4)).requires_grad_(True)
        result = t.fn.run((new, old.clone().requires_grad_(True), t.randn(3)), backward=True,
                          output=0)
        grad = result.grads["args"][1] if result.grads.get("connected") else None
        t.expect(grad is None or not bool(grad.abs().gt(0).any()),
                 "a gradient reaches old_logprobs through the ratio",
                 "ratio not detached from the old policy: pi_old is the policy that sampled the "
                 "responses, a constant of the update; use old_logprobs.detach() in the ratio")


# ==============================================================================================
# grpo_loss


def _grpo_mistakes(logprobs, old, ref_lp, advantages, mask, low, high, kl_coef, aggregation,
                   max_len):
    lp = logprobs.detach()
    per_token, _ = ref.clipped_token_loss(lp, old, advantages, low, high)
    kl = ref.k3_kl(lp, ref_lp)

    def total(term, mode=aggregation):
        return lambda: ref.aggregate_loss(per_token + term, mask, mode, max_len)

    mistakes = {
        "the KL term is subtracted: the loss ADDS kl_coef * k3, a penalty for leaving the "
        "reference": total(-kl_coef * kl),
        "kl_coef is ignored: the KL term is kl_coef * k3": total(kl),
        "the KL term is missing: add kl_coef * k3_kl(logprobs, ref_logprobs) to the per-token "
        "loss before aggregating": total(0.0),
        "the KL is k1 (logprobs - ref_logprobs): use k3_kl, never negative per token":
            total(kl_coef * (lp - ref_lp)),
        "the KL term is added after aggregating, as a mean over all tokens: add it per token, "
        "then aggregate the sum": lambda: ref.aggregate_loss(per_token, mask, aggregation,
                                                             max_len) + kl_coef * kl.mean(),
    }
    for mode in ref.AGGREGATIONS:
        if mode != aggregation:
            mistakes[f"`aggregation` is ignored ({mode} was used): pass aggregation and max_len "
                     f"on to aggregate_loss"] = total(kl_coef * kl, mode)
    return mistakes


def _stat_mistakes(name, logprobs, old, ref_lp, advantages, mask, low, high, kl_coef):
    _, clipped = ref.clipped_token_loss(logprobs.detach(), old, advantages, low, high)
    A = advantages.unsqueeze(1)
    everywhere = torch.ones_like(mask)
    kl = ref.k3_kl(logprobs.detach(), ref_lp)
    if name == "clipfrac":
        return {"clipfrac counts padding: the mean is over the response tokens (mask 1) only":
                masked_mean(clipped.float(), everywhere)}
    if name == "clipfrac_high":
        return {
            "clipfrac_high counts every clipped token: only those clipped at the UPPER bound, "
            "where the advantage is positive": masked_mean(clipped.float(), mask),
            "clipfrac_high counts the tokens clipped at the lower bound (negative advantage): "
            "the upper bound holds back tokens with a POSITIVE advantage":
                masked_mean((clipped & (A < 0)).float(), mask),
            "clipfrac_high counts padding: the mean is over the response tokens (mask 1) only":
                masked_mean((clipped & (A > 0)).float(), everywhere),
        }
    return {"k3 is the KL estimate itself, before kl_coef multiplies it":
            masked_mean(kl_coef * kl, mask),
            "k3 counts padding: the mean is over the response tokens (mask 1) only":
            masked_mean(kl, everywhere)}


def _check_grpo_case(t, logprobs, old, ref_lp, advantages, mask, **kwargs):
    logprobs = logprobs.detach().requires_grad_(True)  # as in training: stats must be detached
    out = t.call(logprobs, old, ref_lp, advantages, mask, **kwargs)
    _expect_tuple(t, out, ("loss", "stats"))
    options = dict(cliprange_low=0.2, cliprange_high=0.28, kl_coef=0.04,
                   aggregation="seq-mean-token-mean", max_len=None)
    options.update(kwargs)
    loss, stats = ref.grpo_loss(logprobs, old, ref_lp, advantages, mask, **options)
    args = (logprobs, old, ref_lp, advantages, mask)
    t.expect_close(out[0], loss.detach(), what="the loss",
                   mistakes=_grpo_mistakes(*args, options["cliprange_low"],
                                           options["cliprange_high"], options["kl_coef"],
                                           options["aggregation"], options["max_len"]))
    t.expect(type(out[1]) is dict, f"stats should be a dict, got {type(out[1]).__name__}",
             'return {"clipfrac": ..., "clipfrac_high": ..., "k3": ...}')
    t.expect_equal(sorted(out[1], key=str), sorted(stats), what="the keys of stats")
    for name, value in stats.items():
        got = out[1][name]
        t.expect_close(got, value, what=f'stats["{name}"]',
                       mistakes=_stat_mistakes(name, *args, options["cliprange_low"],
                                               options["cliprange_high"], options["kl_coef"]),
                       hint="each statistic is a 0-dim tensor: masked_mean over the response "
                            "tokens")
        t.expect(not got.requires_grad, f'stats["{name}"] requires grad: it is still in the '
                                        f'graph', "compute the statistics under torch.no_grad()")


def _grpo_inputs(t, lengths, T, junk=5.0):
    mask = _prefix_mask(lengths, T)
    B = len(lengths)
    old = -t.randn(B, T).abs() - 0.5
    new = old + 0.3 * t.randn(B, T)
    ref_lp = old + 0.2 * t.randn(B, T)
    return (_junk(new, mask, junk), _junk(old, mask, junk), _junk(ref_lp, mask, junk),
            t.randn(B), mask)


@exercise("ch08.grpo_loss")
def check_grpo_loss(t):
    with t.case("defaults (GRPO: seq-mean-token-mean, kl_coef 0.04): 3 responses of lengths "
                "5, 2, 4 (junk on padding)"):
        _check_grpo_case(t, *_grpo_inputs(t, [5, 2, 4], 5))
    with t.case("token-mean (DAPO), kl_coef 0.1, cliprange 0.2 / 0.28"):
        _check_grpo_case(t, *_grpo_inputs(t, [3, 6, 1, 4], 6), kl_coef=0.1,
                         aggregation="token-mean")
    with t.case("seq-mean-token-sum-norm (Dr. GRPO) with max_len 8, kl_coef 0.2"):
        _check_grpo_case(t, *_grpo_inputs(t, [4, 2], 4), kl_coef=0.2,
                         aggregation="seq-mean-token-sum-norm", max_len=8)
    with t.case("kl_coef 0 (no KL term, as DAPO), cliprange_low 0.1, cliprange_high 0.1"):
        _check_grpo_case(t, *_grpo_inputs(t, [4, 4, 2], 4), kl_coef=0.0, cliprange_low=0.1,
                         cliprange_high=0.1)
    with t.case("nan on padding must not leak into the loss or the statistics"):
        _check_grpo_case(t, *_grpo_inputs(t, [2, 5, 3], 5, junk=float("nan")), kl_coef=0.1)
    with t.case("the loss trains the policy: its gradient w.r.t. logprobs"):
        t.expect_gradients(ref.grpo_loss, _grpo_inputs(t, [4, 3], 4), {"kl_coef": 0.1}, wrt=[0],
                           output=0)
