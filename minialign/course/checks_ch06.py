"""Graded checks of chapter 6 (DPO): the log-probability of a whole response, the implicit
rewards, the DPO (and IPO) loss, and one DPO step (on a tiny GPT, with `checks_steps`).

The wrong variants below are the mistakes students make; a student's output that equals one of
them gets that mistake's hint.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from minialign import dpo
from minialign import model as ref
from minialign.course import fixtures
from minialign.course.checks import exercise
from minialign.course.checks_steps import (FIXTURES, Kept, compare_steps, local_steps,
                                           step_mistakes, student_steps, variant_step)
from minialign.course.wire import Build

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


# ==============================================================================================
# dpo_step: one DPO update, on a tiny GPT built alike here and in the child (see checks_steps)


@functools.cache  # the same function for the same change: see checks_steps._remembered
def _step_loss(**change):
    """loss_of(policy, *batch) for `variant_step`: the library's DPO loss of a batch of pairs
    with one choice changed (`_step_terms`); the defaults give the right one."""
    terms = _step_terms(**change)
    return lambda *args: terms(*args)[0]


def _step_terms(*, dropout_off=True, one_pass=True, swapped=False, temperature=None,
                scored="response", reduce="mean", loss_type=None):
    """terms(policy, *batch) -> (the mean loss, chosen_rewards, rejected_rewards)."""
    def terms(policy, ids, padding_mask, response_mask, ref_chosen, ref_rejected, beta, temp,
              kind):
        if dropout_off:
            policy.eval()
        mask = {"response": response_mask, "padding": padding_mask}[scored]
        args = (temp if temperature is None else temperature,)
        n = ids.size(0) // 2
        if one_pass:
            logps = ref.logprobs_of_responses(policy, ids, padding_mask, mask, *args)
        else:  # chosen rows, then rejected rows: two passes, two dropout masks
            logps = torch.cat([ref.logprobs_of_responses(policy, ids[rows], padding_mask[rows],
                                                         mask[rows], *args)
                               for rows in (slice(0, n), slice(n, None))])
        chosen, rejected = (logps[n:], logps[:n]) if swapped else (logps[:n], logps[n:])
        losses, rc, rr = dpo.dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta,
                                      loss_type or kind)
        return (losses.sum() if reduce == "sum" else losses.mean()), rc, rr

    return terms


@functools.cache  # the same function for the same change: see checks_steps._remembered
def _returning_rewards(**change):
    """A whole step with `change`, returning what dpo_step returns (for the rewards' hints)."""
    terms = _step_terms(**change)

    def step(*args):
        rewards = []

        def loss_of(*batch):
            loss, rc, rr = terms(*batch)
            rewards[:] = [rc, rr]
            return loss

        return (variant_step(loss_of)(*args), *rewards)

    return step


SCORED_PROMPT = (  # the loss does not show it: both rows of a pair share the prompt's log-probs
    "the implicit rewards count the prompt's tokens too: score the response tokens only "
    "(response_mask, not padding_mask)")


def _dpo_step_mistakes():
    mistakes = {hint: step for hint, step in step_mistakes(_step_loss()).items()
                if "model.train()" not in hint}  # DPO steps in eval mode (no dropout)
    mistakes.update({
        "the policy stepped with dropout on: call policy.eval() at the start of the step. The "
        "reference's log-probs were computed without dropout, so with it on the policy's differ "
        "from them before any update": variant_step(_step_loss(dropout_off=False)),
        "chosen and rejected were scored in two forward passes with dropout on, each drawing "
        "its own dropout masks: turn dropout off (policy.eval()) and score all 2B rows in one "
        "pass": variant_step(_step_loss(dropout_off=False, one_pass=False)),
        "chosen and rejected are swapped: the batch's first B rows are the chosen responses, "
        "the last B the rejected": variant_step(_step_loss(swapped=True)),
        "the log-probs were scored at temperature 1: pass the step's temperature to "
        "logprobs_of_responses, the one the reference's were scored at":
            variant_step(_step_loss(temperature=1.0)),
        "the loss is summed over the pairs: the step minimises their mean (losses.mean())":
            variant_step(_step_loss(reduce="sum")),
        "loss_type was not passed on to dpo_loss (IPO trained as DPO)":
            variant_step(_step_loss(loss_type="sigmoid")),
    })
    return mistakes


def _dpo_setup(**model):
    """A tiny GPT (the policy) and the library's AdamW over it, built with lr 0.05."""
    return {"model": Build(f"{FIXTURES}:tiny_gpt", seed=0, **model),
            "optimizer": Build(f"{FIXTURES}:adamw", Kept("model"), lr=0.05)}


@torch.no_grad()
def _reference_logps(batch, temperature, seed):
    """The frozen reference's (B,) log-probs of the chosen and of the rejected rows: a tiny GPT
    (seed 0: the policy's starting weights), scored once, without dropout."""
    with fixtures.GLOBAL_RANDOM_STATE:  # its initialisation seeds torch's generator (other threads)
        reference = fixtures.tiny_gpt(seed=seed, train=False)
    logps = ref.logprobs_of_responses(reference, *batch, temperature)  # (2B,)
    n = logps.size(0) // 2
    return logps[:n], logps[n:]


def _dpo_calls(batches, lrs, *, beta=0.5, temperature=0.6, loss_type="sigmoid", ref_seed=0,
               grad_clip=0.5):
    model, optimizer = Kept("model"), Kept("optimizer")
    calls = []
    for (seed, lengths), lr in zip(batches, lrs):
        batch = fixtures.pair_batch(seed, lengths)
        calls.append((model, optimizer, *batch, *_reference_logps(batch, temperature, ref_seed),
                      beta, temperature, loss_type, lr, grad_clip))
    return calls


def _expect_dpo_steps(t, setup, calls, *, seed=0):
    """As `checks_steps.expect_steps`, for a step that returns (loss, chosen_rewards,
    rejected_rewards): the parameters, the optimizer's count and every returned value."""
    mistakes = _dpo_step_mistakes()
    got, want, variant = compare_steps(t, setup, calls, reference=dpo.dpo_step,
                                       mistakes=mistakes, seed=seed,
                                       model="the policy's parameters")
    for i, (out, expected) in enumerate(zip(got.losses, want.losses)):
        _expect_triple(t, out, f"call {i + 1}")
        t.expect_close(out[0], expected[0], what=f"the loss returned by call {i + 1} (the mean "
                       f"over the pairs, before the update)",
                       mistakes={h: (lambda h=h, i=i: variant(h).losses[i]) for h in mistakes})
        for k, name in ((1, "chosen"), (2, "rejected")):
            t.expect_close(out[k], expected[k], what=f"the {name}_rewards returned by call "
                           f"{i + 1}", hint="return the implicit rewards dpo_loss gave for "
                           "this batch", mistakes={SCORED_PROMPT: lambda i=i, k=k: local_steps(
                               _returning_rewards(scored="padding"), setup, calls,
                               seed).losses[i][k]})


def _expect_triple(t, out, where):
    if type(out) is not tuple or len(out) != 3:
        t.fail(f"{where} returned {type(out).__name__}"
               f"{' of ' + str(len(out)) if type(out) in (tuple, list) else ''}, not a tuple "
               f"(loss, chosen_rewards, rejected_rewards)",
               "return loss.item(), chosen_rewards, rejected_rewards")
    if type(out[0]) is not float:
        t.fail(f"{where} returned a {type(out[0]).__name__} as the loss, not a Python float",
               "return loss.item(): the loop logs it as a number")


PAIRS = ((3, 4, 2), (5, 2, 6), (2, 7, 5))  # (prompt, chosen, rejected) lengths: 12 tokens at most


@exercise("ch06.dpo_step")
def check_dpo_step(t):
    with t.case("one step on 3 pairs, the reference = the policy before the step (loss ln 2); "
                "beta 0.5, temperature 0.6; the schedule's lr is 0.01 (the optimizer was built "
                "with 0.05), grad_clip 0.5"):
        _expect_dpo_steps(t, _dpo_setup(), _dpo_calls([(1, PAIRS)], [0.01]))
    with t.case("three steps on three batches, lr 0.01, 0.02, 0.005, another reference "
                "(seed 3): each step starts with the last one's gradients still in .grad"):
        batches = [(2, PAIRS), (3, ((5, 5, 3), (1, 3, 8))),
                   (4, ((2, 2, 1), (4, 8, 3), (3, 1, 1), (6, 4, 5)))]
        _expect_dpo_steps(t, _dpo_setup(), _dpo_calls(batches, [0.01, 0.02, 0.005], ref_seed=3))
    with t.case("the policy arrives in train mode with dropout 0.2 (torch seeded alike on both "
                "sides)"):
        _expect_dpo_steps(t, _dpo_setup(dropout=0.2, train=True),
                          _dpo_calls([(5, PAIRS), (6, PAIRS)], [0.01, 0.01]), seed=7)
    with t.case("IPO (loss_type 'ipo'), beta 0.5, two steps"):
        _expect_dpo_steps(t, _dpo_setup(), _dpo_calls([(7, PAIRS), (8, PAIRS)], [0.01, 0.01],
                                                      loss_type="ipo", ref_seed=3))
    with t.case("behaviour: 15 steps on one batch (lr 0.01) lower its loss by 10% or more"):
        got = student_steps(t, _dpo_setup(), _dpo_calls([(9, PAIRS)] * 15, [0.01] * 15))
        for i, out in enumerate(got.losses):
            _expect_triple(t, out, f"call {i + 1}")
        first, last = got.losses[0][0], got.losses[-1][0]
        t.expect(last < first * 0.9, f"the loss did not fall over 15 steps on the same batch: "
                 f"{first:.4f} -> {last:.4f}",
                 "the policy must move against the gradient of this batch's loss: backward on "
                 "the mean loss, then optimizer.step()")
