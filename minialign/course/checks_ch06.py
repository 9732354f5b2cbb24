"""Graded checks of chapter 6 (DPO): the log-probability of a whole response, the implicit
rewards and the DPO (and IPO) loss.

The wrong variants below are the mistakes students make; a student's output that equals one of
them gets that mistake's hint.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from minialign import dpo
from minialign import model as ref
from minialign.course.checks import exercise

# ==============================================================================================
# sequence_logprobs


def _sequence_mistakes(logits, tokens, mask):
    logps = ref.gather_logprobs(logits, tokens)  # (B, T)
    m = mask.to(logps.dtype)
    return {
        "a mean instead of a sum: the log-probability of a sequence is the sum over its tokens "
        "(a mean makes a long answer as cheap as a short one)":
            lambda: (logps * m).sum(-1) / m.sum(-1).clamp(min=1),
        "averaged over the padded length T: sum over the masked tokens instead":
            lambda: (logps * m).mean(-1),
        "the mask is ignored: prompt and padding tokens were counted too":
            lambda: logps.sum(-1),
        "the mask is inverted: 1 marks the tokens to score (the response)":
            lambda: (logps * (1 - m)).sum(-1),
        "off-by-one in the log-prob shift: the caller already aligned logits and tokens, so "
        "score tokens[:, t] with logits[:, t]":
            lambda: (ref.gather_logprobs(logits[:, :-1], tokens[:, 1:]) * m[:, 1:]).sum(-1),
        "sum per sequence (over dim -1), not over the whole batch: the result is (B,)":
            lambda: (logps * m).sum(),
        "the masked log-probs still need a sum over time: the result is (B,)":
            lambda: logps * m,
    }


def _check_sequence_case(t, logits, tokens, mask):
    out = t.call(logits, tokens, mask)
    t.expect_close(out, ref.sequence_logprobs(logits, tokens, mask),
                   mistakes=_sequence_mistakes(logits, tokens, mask))


@exercise("ch06.sequence_logprobs")
def check_sequence_logprobs(t):
    with t.case(f"hand-sized: uniform logits over 4 tokens, 2 response tokens: "
                f"2·log(1/4) = {-2 * math.log(4):.4f}"):
        _check_sequence_case(t, torch.zeros(1, 3, 4), torch.tensor([[1, 2, 3]]),
                             torch.tensor([[0, 1, 1]]))
    with t.case("3 sequences with responses of different lengths (float mask)"):
        mask = torch.tensor([[0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1], [0, 0, 0, 1, 0, 0]],
                            dtype=torch.float32)
        _check_sequence_case(t, t.randn(3, 6, 5), t.randint(5, (3, 6)), mask)
    with t.case("a boolean mask"):
        mask = torch.tensor([[False, True, True, False], [True, True, False, False]])
        _check_sequence_case(t, t.randn(2, 4, 6), t.randint(6, (2, 4)), mask)
    with t.case("a sequence with nothing to score gives 0"):
        mask = torch.tensor([[0, 0, 0], [0, 1, 1]])
        _check_sequence_case(t, t.randn(2, 3, 4), t.randint(4, (2, 3)), mask)
    with t.case("gradients reach the logits (the DPO loss trains the policy through them)"):
        mask = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 0]])
        t.expect_gradients(ref.sequence_logprobs, (t.randn(2, 4, 5), t.randint(5, (2, 4)), mask),
                           wrt=[0])


# ==============================================================================================
# implicit_rewards


def _implicit_mistakes(policy_logps, ref_logps, beta):
    p, r = policy_logps.detach(), ref_logps.detach()
    return {
        "the log-ratio is upside down: beta * (log pi - log pi_ref), the policy minus the "
        "reference": beta * (r - p),
        "beta is missing: the implicit reward is beta * (log pi - log pi_ref)": p - r,
        "multiply by beta, do not divide: beta * (log pi - log pi_ref)": (p - r) / beta,
    }


def _expect_detached(t, value, what):
    t.expect(not value.requires_grad, f"{what} requires grad: it is still attached to the graph",
             "detach the implicit rewards (.detach()): they are a metric, never a path for "
             "gradients")


@exercise("ch06.implicit_rewards")
def check_implicit_rewards(t):
    with t.case("hand-sized: log pi [-3, -5], log pi_ref [-4, -5], beta 0.1 -> [0.1, 0]"):
        policy, reference = torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -5.0])
        out = t.call(policy, reference, 0.1)
        t.expect_close(out, dpo.implicit_rewards(policy, reference, 0.1),
                       mistakes=_implicit_mistakes(policy, reference, 0.1))
    with t.case("6 responses, beta 0.5, log-probs that require grad: the result is detached"):
        policy = (t.randn(6) - 10).requires_grad_(True)
        reference = (t.randn(6) - 10).requires_grad_(True)
        out = t.call(policy, reference, 0.5)
        t.expect_close(out, dpo.implicit_rewards(policy, reference, 0.5),
                       mistakes=_implicit_mistakes(policy, reference, 0.5))
        _expect_detached(t, out, "the result")


# ==============================================================================================
# dpo_loss


def _dpo_variant(pc, pr, rc, rr, beta, loss_type, *, h_form="right", beta_at="inside",
                 reduce=False, ipo_margin="1/(2 beta)", ipo_square=True, negate=True,
                 log_sigmoid="stable"):
    """Per-pair losses with one choice changed; the defaults give the right answer."""
    pc, pr, rc, rr = (x.detach() for x in (pc, pr, rc, rr))
    h = {"right": (pc - rc) - (pr - rr),
         "swapped": (pr - rr) - (pc - rc),
         "reference added": (pc + rc) - (pr + rr),
         "reference sign": (pc - pr) + (rc - rr),
         "no reference": pc - pr}[h_form]
    if loss_type == "ipo":
        margin = {"1/(2 beta)": 1 / (2 * beta), "1/beta": 1 / beta, "beta/2": beta / 2}[ipo_margin]
        losses = (h - margin) ** 2 if ipo_square else h - margin
    else:
        scaled = {"inside": beta * h, "outside": h, "divided": h / beta, "none": h}[beta_at]
        log_sig = {"stable": F.logsigmoid, "log of sigmoid": lambda x: torch.log(torch.sigmoid(x)),
                   "log1p of exp": lambda x: -torch.log(1 + torch.exp(-x))}[log_sigmoid]
        losses = -log_sig(scaled) if negate else log_sig(scaled)
        if beta_at == "outside":
            losses = beta * losses
    return losses.mean() if reduce else losses


def _dpo_loss_mistakes(pc, pr, rc, rr, beta, loss_type):
    def variant(lt=loss_type, **change):
        return lambda: _dpo_variant(pc, pr, rc, rr, beta, lt, **change)

    mistakes = {
        "chosen and rejected are swapped: h = (log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - "
        "log pi_ref(y_l)), the chosen response's log-ratio first": variant(h_form="swapped"),
        "the reference log-probs have the wrong sign: subtract each response's reference "
        "log-prob from its policy log-prob": variant(h_form="reference added"),
        "the reference terms have the wrong sign: h = (pi_c - ref_c) - (pi_r - ref_r), so "
        "ref_c is subtracted and ref_r added": variant(h_form="reference sign"),
        "the reference is missing: h compares log-RATIOS to the reference, not raw log-probs":
            variant(h_form="no reference"),
        "return one loss per pair, shape (B,): the caller takes the mean":
            variant(reduce=True),
    }
    if loss_type == "ipo":
        mistakes.update({
            "IPO's target margin is 1 / (2 * beta), not 1 / beta": variant(ipo_margin="1/beta"),
            "IPO's target margin is 1 / (2 * beta), not beta / 2": variant(ipo_margin="beta/2"),
            "IPO's loss is squared: (h - 1 / (2 * beta)) ** 2": variant(ipo_square=False),
            "loss_type='ipo' is ignored: IPO's loss is (h - 1 / (2 * beta)) ** 2":
                variant(lt="sigmoid"),
        })
    else:
        mistakes.update({
            "beta multiplies h inside the log-sigmoid: -log sigmoid(beta * h), not "
            "-beta * log sigmoid(h)": variant(beta_at="outside"),
            "multiply h by beta, do not divide: -log sigmoid(beta * h)": variant(beta_at="divided"),
            "beta is missing: -log sigmoid(beta * h)": variant(beta_at="none"),
            "the loss is -log sigmoid(beta * h) (a negative log-likelihood), not log sigmoid":
                variant(negate=False),
            "-log(sigmoid(x)) is inf once sigmoid(x) rounds to 0 (x below about -104 in "
            "float32): use F.logsigmoid(x), which is stable for any x":
                variant(log_sigmoid="log of sigmoid"),
            "log(1 + exp(-x)) overflows to inf for a large negative x: use F.logsigmoid(x) (or "
            "-F.softplus(-x)), which is stable for any x": variant(log_sigmoid="log1p of exp"),
        })
    return mistakes


def _reward_mistakes(policy, other_policy, reference, other_reference, beta):
    p, r = policy.detach(), reference.detach()
    return {
        "the chosen and rejected rewards are swapped": beta * (other_policy.detach() -
                                                               other_reference.detach()),
        "the implicit reward is beta * (log pi - log pi_ref): beta is missing": p - r,
        "the implicit reward is beta * (log pi - log pi_ref), the policy minus the reference":
            beta * (r - p),
    }


def _check_dpo_case(t, pc, pr, rc, rr, beta=None, loss_type=None, gradients=False):
    kwargs = {}
    if beta is not None:
        kwargs["beta"] = beta
    if loss_type is not None:
        kwargs["loss_type"] = loss_type
    beta, loss_type = (0.1 if beta is None else beta), (loss_type or "sigmoid")
    result = t.fn.run((pc, pr, rc, rr), kwargs, backward=gradients, output=0)
    out = result.value
    if type(out) is not tuple or len(out) != 3:
        got = f"a tuple of {len(out)}" if type(out) is tuple else type(out).__name__
        t.fail(f"the result should be a tuple (losses, chosen_rewards, rejected_rewards), got "
               f"{got}", "return all three: `return losses, chosen_rewards, rejected_rewards`")
    losses, chosen, rejected = dpo.dpo_loss(pc, pr, rc, rr, beta, loss_type)
    t.expect_close(out[0], losses.detach(), what="the losses",
                   mistakes=_dpo_loss_mistakes(pc, pr, rc, rr, beta, loss_type))
    t.expect_close(out[1], chosen, what="chosen_rewards",
                   mistakes=_reward_mistakes(pc, pr, rc, rr, beta))
    t.expect_close(out[2], rejected, what="rejected_rewards",
                   mistakes=_reward_mistakes(pr, pc, rr, rc, beta))
    if not gradients:
        return
    _expect_detached(t, out[1], "chosen_rewards")
    _expect_detached(t, out[2], "rejected_rewards")
    grads = result.grads
    t.expect(grads["connected"], "the losses carry no gradient",
             "keep the losses a tensor of the computation: no .item(), .detach() or "
             "torch.no_grad() on the policy's log-probs")
    t.expect(grads["args"][2] is None and grads["args"][3] is None,
             "the gradient of the losses reaches the reference log-probs",
             "the reference is frozen: detach ref_chosen_logps and ref_rejected_logps, so that "
             "no gradient flows into them")
    copies = [x.detach().clone().requires_grad_(True) for x in (pc, pr)]
    dpo.dpo_loss(copies[0], copies[1], rc.detach(), rr.detach(), beta, loss_type)[0].sum() \
        .backward()
    for name, got, x in zip(("policy_chosen_logps", "policy_rejected_logps"), grads["args"],
                            copies):
        t.expect(got is not None, f"no gradient reaches {name}",
                 "the loss must stay differentiable w.r.t. the policy's log-probs")
        t.expect_close(got, x.grad, what=f"the gradient of the losses w.r.t. {name}")


@exercise("ch06.dpo_loss")
def check_dpo_loss(t):
    with t.case(f"policy = reference: every loss is ln 2 = {math.log(2):.4f}, every reward 0"):
        logps = t.randn(3) - 10
        other = t.randn(3) - 10
        _check_dpo_case(t, logps, other, logps.clone(), other.clone())
    with t.case("hand-sized: h = (-1 + 2) - (-3 + 2) = 2, beta 0.5 -> loss -log sigmoid(1) = "
                "0.3133, rewards 0.5 and -0.5"):
        _check_dpo_case(t, torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]),
                        torch.tensor([-2.0]), beta=0.5)
    with t.case("5 random pairs, default beta 0.1"):
        _check_dpo_case(t, t.randn(5) * 3 - 20, t.randn(5) * 3 - 20, t.randn(5) * 3 - 20,
                        t.randn(5) * 3 - 20)
    with t.case("gradients, beta 0.5: they reach the policy's log-probs, never the reference's, "
                "and the rewards are detached"):
        inputs = [(t.randn(4) * 2 - 15).requires_grad_(True) for _ in range(4)]
        _check_dpo_case(t, *inputs, beta=0.5, gradients=True)
    with t.case("large margins: h = +2000 and -2000 (long responses), beta 0.1 -> losses 0 and "
                "200; stable?"):
        _check_dpo_case(t, torch.tensor([-10.0, -2010.0]), torch.tensor([-2010.0, -10.0]),
                        torch.tensor([-500.0, -500.0]), torch.tensor([-500.0, -500.0]))
    with t.case("IPO, beta 0.1: (h - 5)^2"):
        _check_dpo_case(t, t.randn(4) * 3 - 20, t.randn(4) * 3 - 20, t.randn(4) * 3 - 20,
                        t.randn(4) * 3 - 20, beta=0.1, loss_type="ipo")
    with t.case("IPO, beta 0.5, with gradients"):
        inputs = [(t.randn(3) - 8).requires_grad_(True) for _ in range(4)]
        _check_dpo_case(t, *inputs, beta=0.5, loss_type="ipo", gradients=True)
