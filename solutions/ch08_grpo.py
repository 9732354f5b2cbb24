"""Chapter 8 · RL from outcome rewards: GRPO, Dr. GRPO and RLOO — solutions.

Version 4 of the minialign exercise set.

The complete code of every exercise of the chapter and the answers to its questions.

    ch08.group_advantages    difficulty ★★☆  about 15 min
    ch08.rloo_advantages     difficulty ★☆☆  about 10 min
    ch08.aggregate_loss      difficulty ★★☆  about 20 min
    ch08.k3_kl               difficulty ★☆☆  about 5 min
    ch08.clipped_token_loss  difficulty ★★☆  about 15 min
    ch08.grpo_loss           difficulty ★★☆  about 15 min

Check your work:
    python -m minialign.grade --impl solutions --chapter 8

Library code: minialign/grpo.py.

Generated from the library by `python -m minialign.course build`.
"""

from __future__ import annotations

import torch

from minialign.grpo import AGGREGATIONS
from minialign.ppo import masked_mean


def group_advantages(rewards, scale="std", eps=1e-4):
    """Advantages of G responses per prompt, relative to their own group.

    rewards: (P, G) float, row p holding the rewards of the G responses to prompt p. Returns
    (P, G) of the same dtype: how much better each response did than the others of its row
    (so each row sums to 0). The group is the baseline: statistics are taken along the row,
    never across prompts. scale="std" (GRPO) also scales each row by its spread, its standard
    deviation as torch.std gives it (Bessel-corrected, n - 1, as TRL computes it) with eps
    added to it, so that every prompt's advantages have about the same size whatever its
    reward scale; scale="none" (Dr. GRPO) only centres.
    Edge cases: a group whose rewards are all equal (G = 1 included) gets exactly 0, never nan
    (nothing in it is better than anything else), whatever eps; another scale: ValueError.
    """
    # exercise ch08.group_advantages · difficulty ★★☆ · about 15 minutes
    if scale not in ("std", "none"):
        raise ValueError(f"scale must be 'std' or 'none', got {scale!r}")
    centered = rewards - rewards.mean(dim=1, keepdim=True)  # (P, G)
    if scale == "std" and rewards.size(1) > 1:  # std of one sample is nan (n - 1 = 0)
        centered = centered / (rewards.std(dim=1, keepdim=True) + eps)
    all_equal = (rewards == rewards[:, :1]).all(dim=1, keepdim=True)  # (P, 1)
    return torch.where(all_equal, 0.0, centered)  # exactly 0, not round-off / eps


def rloo_advantages(rewards):
    """REINFORCE leave-one-out: r_i minus the mean of the other K - 1 rewards of its row.

    rewards: (P, K) with K >= 2 (else ValueError). Returns (P, K); equals
    K / (K - 1) * (r_i - mean of the row).
    """
    # exercise ch08.rloo_advantages · difficulty ★☆☆ · about 10 minutes
    # hint: the sum of the others is the row's sum minus r_i
    K = rewards.size(-1)
    if K < 2:
        raise ValueError(f"RLOO needs at least 2 responses per prompt (K = {K}): the baseline "
                         f"of one response is the mean of the others")
    others = (rewards.sum(dim=1, keepdim=True) - rewards) / (K - 1)  # (P, K)
    return rewards - others


def aggregate_loss(per_token_loss, mask, mode, max_len=None):
    """One scalar from per-token losses (B, T), counting only tokens where mask (B, T) is 1.

        "seq-mean-token-mean"       (GRPO) mean over each response's tokens, then over the
                                    responses that have any token
        "token-mean"                (DAPO) sum over all tokens / number of tokens
        "seq-mean-token-sum-norm"   (Dr. GRPO) sum over all tokens / (B * max_len), max_len
                                    defaulting to T: the same constant for every response
    mask: 0/1 float or bool. Padding never counts, even when it holds nan or inf. A response
    with no token does not count in GRPO's mean over responses; a batch with no token at all
    gives 0 (never nan). Another mode: ValueError. Returns a 0-dim tensor.
    """
    # exercise ch08.aggregate_loss · difficulty ★★☆ · about 20 minutes
    mask = mask.bool()
    x = torch.where(mask, per_token_loss, 0.0)  # (B, T)
    if mode == "token-mean":
        return x.sum() / mask.sum().clamp(min=1)
    if mode == "seq-mean-token-mean":
        lengths = mask.sum(dim=1)  # (B,)
        per_seq = x.sum(dim=1) / lengths.clamp(min=1)  # (B,)
        has_tokens = lengths > 0
        return torch.where(has_tokens, per_seq, 0.0).sum() / has_tokens.sum().clamp(min=1)
    if mode == "seq-mean-token-sum-norm":
        max_len = mask.size(1) if max_len is None else max_len
        return x.sum() / (mask.size(0) * max_len)
    raise ValueError(f"mode must be one of {AGGREGATIONS}, got {mode!r}")


def k3_kl(logprobs, ref_logprobs):
    """Per-token k3 estimate of KL(pi || pi_ref) (Schulman 2020) for tokens sampled from pi:
    with d = ref_logprobs - logprobs, exp(d) - d - 1 >= 0, and 0 exactly where the two
    log-probs agree. (B, T) -> (B, T)."""
    # exercise ch08.k3_kl · difficulty ★☆☆ · about 5 minutes
    d = ref_logprobs - logprobs  # log(pi_ref / pi)
    return torch.exp(d) - d - 1


def clipped_token_loss(logprobs, old_logprobs, advantages, cliprange_low=0.2,
                       cliprange_high=0.28):
    """PPO's clipped surrogate per token, with the same advantage on every token of a response.

    logprobs: (B, T) under the policy being trained (gradients flow back into it);
    old_logprobs: (B, T) under the policy that sampled the responses, a constant: no gradient
    may reach it; advantages: (B,), one per response. The ratio rho = pi / pi_old of each token
    may move the loss only inside [1 - cliprange_low, 1 + cliprange_high]: of the unclipped and
    the clipped surrogate, the loss takes the pessimistic one (the larger loss). A wider upper
    range (clip-higher, DAPO) lets unlikely good tokens grow faster, which keeps the policy's
    entropy from collapsing. Returns (per-token loss (B, T), clipped (B, T) bool: True where
    the clipped term is the larger, i.e. where the clip took the gradient away).
    """
    # exercise ch08.clipped_token_loss · difficulty ★★☆ · about 15 minutes
    A = advantages.unsqueeze(1)  # (B, 1): broadcast over the response's tokens
    ratio = torch.exp(logprobs - old_logprobs.detach())  # (B, T)
    unclipped = -A * ratio
    clipped = -A * torch.clamp(ratio, 1.0 - cliprange_low, 1.0 + cliprange_high)
    return torch.maximum(unclipped, clipped), clipped > unclipped


def grpo_loss(logprobs, old_logprobs, ref_logprobs, advantages, mask, cliprange_low=0.2,
              cliprange_high=0.28, kl_coef=0.04, aggregation="seq-mean-token-mean",
              max_len=None):
    """The GRPO objective of one minibatch: clipped surrogate + kl_coef * k3, aggregated.

    logprobs (with gradient), old_logprobs, ref_logprobs, mask: (B, T); advantages: (B,).
    Wires the pieces above: the per-token loss is clipped_token_loss plus kl_coef times the
    k3 KL to the reference (no KL term at all when kl_coef is 0), reduced by aggregate_loss
    with `aggregation` and max_len. Returns (loss, stats): loss a 0-dim tensor in the graph,
    stats a dict of detached 0-dim tensors, each a mean over the response tokens (mask 1):
    "clipfrac" (tokens clipped), "clipfrac_high" (clipped at the upper bound, i.e. with a
    positive advantage: a good token held back) and "k3" (the KL estimate, kl_coef aside).
    """
    # exercise ch08.grpo_loss · difficulty ★★☆ · about 15 minutes
    per_token, clipped = clipped_token_loss(logprobs, old_logprobs, advantages, cliprange_low,
                                            cliprange_high)
    kl = k3_kl(logprobs, ref_logprobs)  # (B, T)
    if kl_coef:
        per_token = per_token + kl_coef * kl
    loss = aggregate_loss(per_token, mask, aggregation, max_len)
    with torch.no_grad():
        upper = clipped & (advantages.unsqueeze(1) > 0)
        stats = {"clipfrac": masked_mean(clipped.float(), mask),
                 "clipfrac_high": masked_mean(upper.float(), mask), "k3": masked_mean(kl, mask)}
    return loss, stats


# ==============================================================================================
# Concept questions
#
# Answer in ANSWERS below: one letter for a choice question ("b"), the letters in order
# for an ordering question (["c", "a", "b"]). Grading says whether each answer is right:
# a right one is explained; a wrong one is told why the option chosen is wrong.
#
# q8.1  PPO trains a value model next to the policy; GRPO trains none. What takes its place?
#         a) The KL penalty to the reference: it is subtracted from every token's reward, which
#            centres the rewards the way a baseline would.
#         b) The other responses sampled for the same prompt: their mean reward is the baseline
#            each response is compared with.
#         c) Nothing: the clipped ratio keeps each update small, and with small steps the raw
#            reward is a low-variance enough signal.
#         d) The reward model, which scores every token of a response, so the advantage of a
#            token can be read off directly.
#
# q8.2  GRPO against the verifier (1 for a right outcome, 0 otherwise) raises task success on
#       arithmetic and translation, yet the jokes do not get funnier and the rude remarks in
#       answers do not go away. Why?
#         a) A 0/1 reward has no gradient, so the policy learns only from the KL term.
#         b) Jokes are longer than arithmetic answers, so the overlong penalty on the reward
#            cancels whatever the verifier gives them, and rude remarks are too short to be
#            penalised.
#         c) The learning rate is too small for the humour family, which needs more iterations
#            than the others.
#         d) The verifier sees only a checkable outcome: style, politeness and humour change no
#            score, so no advantage rewards them.
#
# q8.3  What separates an outcome reward from a process reward?
#         a) An outcome reward scores only the finished answer; a process reward scores each
#            step of the reasoning, so it can catch a wrong step.
#         b) An outcome reward comes from people and a process reward from a program, which is
#            why process rewards cannot be hacked.
#         c) A process reward is the per-token KL penalty, summed over the steps of the
#            response; the outcome reward is the score at its end.
#         d) They differ only in cost: trained on the same problems, both make the same best-
#            of-N selections, so the cheaper outcome reward model is always the one to prefer in
#            practice.
#
# q8.4  With the verifier's reward, all G = 8 answers to one prompt are right (reward 1 each).
#       What does this group teach the policy in a GRPO update, the KL term aside?
#         a) Much: every answer earned the maximum reward, so all eight are reinforced strongly.
#         b) It teaches the policy to make all eight answers more likely by the same amount,
#            which sharpens it on this prompt.
#         c) Nothing: every advantage is 0, so its gradient is 0; dynamic sampling drops such
#            groups.
#         d) It blows up the update: the std is 0, so each advantage is (1 - 1) / eps, and the
#            group must be clipped.
#
# q8.5  A group of G = 4 answers gets the rewards [1, 0, 0, 1]. What are its GRPO advantages (r
#       - mean) / std, with std torch.std's (Bessel-corrected, n - 1) and eps left out?
#         a) [1, -1, -1, 1]
#         b) [0.866, -0.866, -0.866, 0.866]
#         c) [0.5, -0.5, -0.5, 0.5]
#         d) [0.667, -0.667, -0.667, 0.667]

ANSWERS = {
    "q8.1": "b",  # one letter: a, b, c or d
    "q8.2": "d",  # one letter: a, b, c or d
    "q8.3": "a",  # one letter: a, b, c or d
    "q8.4": "c",  # one letter: a, b, c or d
    "q8.5": "b",  # one letter: a, b, c or d
}
