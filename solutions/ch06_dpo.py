"""Chapter 6 · Direct preference optimisation — solutions.

Version 3 of the minialign exercise set.

The complete code of every exercise of the chapter and the answers to its questions.

    ch06.sequence_logprobs  difficulty ★☆☆  about 10 min
    ch06.implicit_rewards   difficulty ★☆☆  about 5 min
    ch06.dpo_loss           difficulty ★★☆  about 15 min

Check your work:
    python -m minialign.grade --impl solutions --chapter 6

Library code: minialign/dpo.py, minialign/model.py.

Generated from the library by `python -m minialign.course build`.
"""

from __future__ import annotations

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
    logps = gather_logprobs(logits, tokens)  # (B, T)
    return (logps * mask.to(logps.dtype)).sum(dim=-1)  # (B,)


def implicit_rewards(policy_logps, ref_logps, beta):
    """DPO's implicit reward beta * (log pi(y|x) - log pi_ref(y|x)), detached: it is a metric,
    never a path for gradients. policy_logps, ref_logps: (B,). Returns (B,)."""
    # exercise ch06.implicit_rewards · difficulty ★☆☆ · about 5 minutes
    return (beta * (policy_logps - ref_logps)).detach()


def dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
             beta=0.1, loss_type="sigmoid"):
    """Per-pair DPO (or IPO) losses and the implicit rewards of both responses.

    All inputs (B,): sequence log-probs (sums over response tokens) of the chosen and rejected
    responses under the policy and the frozen reference.
        h = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
        sigmoid: loss = -log sigmoid(beta * h)
        ipo:     loss = (h - 1 / (2 * beta)) ** 2
    Returns (losses (B,), chosen_rewards (B,), rejected_rewards (B,)), the rewards from
    `implicit_rewards` (detached). The reference terms carry no gradient.
    """
    # exercise ch06.dpo_loss · difficulty ★★☆ · about 15 minutes
    ref_chosen_logps, ref_rejected_logps = ref_chosen_logps.detach(), ref_rejected_logps.detach()
    h = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * h)
    elif loss_type == "ipo":
        losses = (h - 1.0 / (2.0 * beta)) ** 2
    else:
        raise ValueError(f"unknown loss_type {loss_type!r}")
    chosen_rewards = implicit_rewards(policy_chosen_logps, ref_chosen_logps, beta)
    rejected_rewards = implicit_rewards(policy_rejected_logps, ref_rejected_logps, beta)
    return losses, chosen_rewards, rejected_rewards


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

ANSWERS = {
    "q6.1": "d",  # one letter: a, b, c or d
    "q6.2": "b",  # one letter: a, b, c or d
    "q6.3": "a",  # one letter: a, b, c or d
}
