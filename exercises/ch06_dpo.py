"""Chapter 6 · Direct preference optimisation — exercises.

Version 4 of the minialign exercise set.

Write the body of each function below that raises NotImplementedError (keep its
signature), then answer the concept questions in ANSWERS at the end of the file.

    ch06.sequence_logprobs  difficulty ★☆☆  about 10 min
    ch06.implicit_rewards   difficulty ★☆☆  about 5 min
    ch06.dpo_loss           difficulty ★★☆  about 15 min
    ch06.dpo_step           difficulty ★★☆  about 25 min

Capstone ch06.dpo_capstone (your DPO trains a policy). Your DPO: the library's loop (`dpo.fit`)
with every chapter-6 function you wrote trains the course's starting policy on 960 preference
pairs (two contractor answers to a prompt, the one with the higher gold reward chosen), one pass
of 60 steps. Passes when the trained policy's mean gold reward on the 270 held-out prompts (2
answers each) beats the starting policy's by at least 0.20 (a working DPO gains about 0.4).

Check your work:
    python -m minialign.grade --impl exercises --chapter 6
or, in a notebook:  from minialign.course import check; check(6)
Stuck? `--hints 1` (or `check(6, hints=1)`) adds a first hint for each exercise not passed;
`--hints 2`, 3, ... more, down to the formula.

Then train with your own code (what you have not written yet comes from the library):
    python -m minialign dpo --impl exercises

Library code: minialign/dpo.py, minialign/model.py.
The answers: the library holds the complete code of every exercise, right under its docstring,
and so does solutions/. Try first; read them after, to compare.

Generated from the library by `python -m minialign.course build`. This file is yours: edit it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minialign.model import gather_logprobs


def sequence_logprobs(logits, tokens, mask):
    """Sum of the log-probabilities of the tokens where mask is 1: log p(response | prompt).

    logits: (B, T, V) aligned with tokens (B, T) as in `gather_logprobs`; mask: (B, T), 1 on
    the tokens to score (the response, end-of-turn included), 0 on prompt and padding.
    Returns (B,). A sum, not a mean: the log-probability of a sequence is the sum over its
    tokens, and a mean would make a long answer as cheap as a short one.
    """
    # exercise ch06.sequence_logprobs · difficulty ★☆☆ · about 10 minutes
    raise NotImplementedError("exercise ch06.sequence_logprobs: write this body")


def implicit_rewards(policy_logps, ref_logps, beta):
    """DPO's implicit reward beta * (log pi(y|x) - log pi_ref(y|x)), detached: it is a metric,
    never a path for gradients. policy_logps, ref_logps: (B,). Returns (B,)."""
    # exercise ch06.implicit_rewards · difficulty ★☆☆ · about 5 minutes
    raise NotImplementedError("exercise ch06.implicit_rewards: write this body")


def dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
             beta=0.1, loss_type="sigmoid"):
    """Per-pair DPO (or IPO) losses and the implicit rewards of both responses.

    All inputs (B,): sequence log-probs (sums over response tokens) of the chosen and rejected
    responses under the policy and the frozen reference. beta > 0; loss_type "sigmoid" (DPO)
    or "ipo" (another: ValueError). Returns (losses (B,), chosen_rewards (B,),
    rejected_rewards (B,)): one loss per pair (no mean), differentiable with respect to the
    policy's log-probs and never the reference's (even when those require grad), and the
    implicit rewards of both responses from `implicit_rewards` (detached).

    The idea: the policy's log-ratio to the reference, log pi - log pi_ref, is what it has
    learned about a response; the margin of a pair is the chosen response's log-ratio minus
    the rejected one's. DPO charges the margin, scaled by beta, the Bradley-Terry loss of
    chapter 4 (ln 2 when the policy is the reference; finite for margins in the thousands, as
    long responses give); IPO instead regresses the margin onto a finite target that shrinks
    as beta grows, with a squared error. The notebook's section 2 gives both formulas.
    """
    # exercise ch06.dpo_loss · difficulty ★★☆ · about 15 minutes
    raise NotImplementedError("exercise ch06.dpo_loss: write this body")


def dpo_step(policy, optimizer, ids, padding_mask, response_mask, ref_chosen_logps,
             ref_rejected_logps, beta, temperature, loss_type, lr, grad_clip):
    """One DPO update of the policy on a batch of B preference pairs.

    policy: a GPT; `policy(ids, padding_mask=padding_mask)` returns (logits (2B, T, V), None).
    optimizer: an AdamW over the policy's parameters (two parameter groups).
    ids, padding_mask, response_mask: (2B, T) as `encode_pairs` makes them: the B chosen
    responses' rows first, then the B rejected ones in the same order, right-padded;
    response_mask marks the tokens to score (each response and its <|end|>), aligned with ids:
    the token at t is scored by the logits at t - 1.
    ref_chosen_logps, ref_rejected_logps: (B,) the frozen reference's log-probs of the same
    responses, computed once before training (no gradient) by `model.logprobs_of_responses`
    at the same temperature.
    beta, loss_type: as `dpo_loss` takes them. temperature: the policy's log-probs are those
    of its logits divided by it (the sampling temperature), as the reference's were.
    lr: this step's learning rate, for every parameter group; grad_clip: the largest gradient
    norm allowed before the update.
    Returns (loss, chosen_rewards, rejected_rewards): the batch's mean loss before the update as
    a Python float, and the implicit rewards of `dpo_loss` (B,) each, which the loop logs.

    The idea: score chosen and rejected responses in one forward pass over all 2B rows (your
    `sequence_logprobs` on the tempered logits: what `logprobs_of_responses` does, written out
    here), turn them into the loss against the reference's numbers, and take one AdamW step on
    its gradient. Edge cases: `.grad` still holds the last step's gradients; the policy must step
    with dropout off (eval mode): the reference's log-probs were computed without it, so with
    dropout on the policy's would differ from them even before the first update; the optimizer
    steps exactly once.
    """
    # exercise ch06.dpo_step · difficulty ★★☆ · about 25 minutes
    raise NotImplementedError("exercise ch06.dpo_step: write this body")


# ==============================================================================================
# Concept questions
#
# Answer in ANSWERS below: one letter for a choice question ("b"), the letters in order
# for an ordering question (["c", "a", "b"]). Grading says whether each answer is right:
# a right one is explained; a wrong one is told why the option chosen is wrong.
#
# q6.1  Starting from the SFT model and the same preference pairs, how does DPO's pipeline
#       differ from RLHF with PPO?
#         a) DPO trains a reward model too, like PPO, but replaces PPO's value model by the
#            frozen reference, which saves one model.
#         b) DPO samples responses from the policy during training, like PPO, but scores them
#            with a classification loss.
#         c) DPO keeps more models in memory than PPO, since the reference must be updated as
#            the policy moves and an old copy kept for the ratio.
#         d) DPO trains no reward model and samples nothing during training; it holds two
#            models, not four.
#
# q6.2  During DPO training the logged rewards/chosen (the implicit reward of the chosen
#       responses) goes down. Is something broken?
#         a) Yes: DPO's gradient always raises the chosen log-probs, so a falling chosen reward
#            means the learning rate is too high.
#         b) Not necessarily: the loss depends only on the margin, which can widen while both
#            log-ratios fall.
#         c) Yes: a falling chosen reward means that the reference log-probs were not detached
#            and the reference is being trained too.
#         d) No, and it always happens: the chosen reward falls whenever beta is positive.
#
# q6.3  What does beta control in DPO?
#         a) How strongly the policy is held near the reference (smaller: it moves further).
#         b) The learning rate of the policy, scaled by the number of pairs, so that the step
#            size does not depend on the batch size.
#         c) The weight of the rejected response relative to the chosen one in the loss (beta =
#            1 weighs both alike).
#         d) The temperature used to sample responses during training.
#
# q6.4  One preference pair, beta = 0.1. The policy's sequence log-probs: chosen -12.0, rejected
#       -15.0; the reference's: chosen -13.0, rejected -14.0. What is the DPO loss of this pair?
#         a) 0.127
#         b) 0.554
#         c) 0.598
#         d) 0.798
#
# q6.5  DPO trains on pairs sampled once from the SFT model; PPO samples fresh answers from its
#       own policy as it trains. What follows for DPO?
#         a) It needs new pairs, sampled from the current policy, at every epoch: on old pairs
#            its loss gives biased gradients and the policy drifts.
#         b) It learns only what the pairs say: no reward model to exploit, and no way to
#            improve where the pairs are silent.
#         c) It can only raise the probability of the chosen responses: nothing in a fixed
#            dataset lets it lower the probability of the rejected ones.
#         d) A reward model must score both responses of every pair before training starts,
#            since a fixed dataset has no rewards of its own.

ANSWERS = {
    "q6.1": None,  # one letter: a, b, c or d
    "q6.2": None,  # one letter: a, b, c or d
    "q6.3": None,  # one letter: a, b, c or d
    "q6.4": None,  # one letter: a, b, c or d
    "q6.5": None,  # one letter: a, b, c or d
}
