"""Chapter 5 · RLHF with PPO — solutions.

Version 3 of the minialign exercise set.

The complete code of every exercise of the chapter and the answers to its questions.

    ch05.kl_penalized_rewards         difficulty ★★☆  about 15 min
    ch05.compute_gae                  difficulty ★★★  about 25 min
    ch05.whiten                       difficulty ★☆☆  about 10 min
    ch05.policy_loss                  difficulty ★★☆  about 15 min
    ch05.value_loss                   difficulty ★☆☆  about 10 min
    ch05.AdaptiveKLController.update  difficulty ★☆☆  about 10 min

Check your work:
    python -m minialign.grade --impl solutions --chapter 5

Library code: minialign/ppo.py.

Generated from the library by `python -m minialign.course build`.
"""

from __future__ import annotations

import torch

from minialign.ppo import masked_mean


def kl_penalized_rewards(scores, logprobs, ref_logprobs, mask, kl_coef):
    """Per-token rewards of RLHF: a KL penalty on every response token, the score at the end.

    scores: (B,) reward-model score of each response; logprobs, ref_logprobs: (B, T) log-prob
    of each response token under the policy that sampled it and under the reference; mask:
    (B, T) 1 on response tokens, 0 on padding. Returns rewards (B, T):
        r_t = -kl_coef * (logprobs_t - ref_logprobs_t)  on response tokens,
        plus scores[b] added at the last response token of row b, 0 on padding.
    """
    # exercise ch05.kl_penalized_rewards · difficulty ★★☆ · about 15 minutes
    mask = mask.bool()
    rewards = torch.where(mask, -kl_coef * (logprobs - ref_logprobs), 0.0)  # (B, T)
    T = mask.size(1)
    positions = torch.arange(T, device=mask.device).expand_as(mask)  # (B, T)
    last = torch.where(mask, positions, -1).max(dim=1).values  # (B,) last response token
    rows = torch.arange(mask.size(0), device=mask.device)
    has_response = last >= 0  # an empty row (no response token) gets no score at all
    rewards[rows[has_response], last[has_response]] += scores[has_response]
    return rewards


def compute_gae(rewards, values, mask, gamma=1.0, lam=0.95):
    """Generalised advantage estimation (Schulman et al. 2016) over response tokens.

    rewards, values, mask: (B, T). Padding entries (mask 0) are ignored, whatever they hold:
    the value after the last response token is 0.
        delta_t = r_t + gamma * V_{t+1} - V_t
        A_t     = delta_t + gamma * lam * A_{t+1}
        R_t     = A_t + V_t          (the returns: targets for the value function)
    Returns (advantages, returns), both (B, T) and 0 on padding. Nothing is whitened here.
    """
    # exercise ch05.compute_gae · difficulty ★★★ · about 25 minutes
    mask = mask.to(values.dtype)
    values = torch.where(mask.bool(), values, 0.0)
    B, T = rewards.shape
    advantages = torch.zeros_like(rewards)
    last_gae = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros_like(last_gae)  # 0 at end
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last_gae = (delta + gamma * lam * last_gae) * mask[:, t]  # padding resets the chain
        advantages[:, t] = last_gae
    returns = torch.where(mask.bool(), advantages + values, 0.0)
    return advantages, returns


def whiten(x, mask, shift_mean=True):
    """Normalise x to mean 0 and variance 1 over the entries where mask is 1.

    x, mask: (B, T). mean and var = mean((x - mean)^2) are taken over masked entries only;
    result = (x - mean) / sqrt(var + 1e-8). With shift_mean=False the mean is added back
    (only the scale changes). Entries where mask is 0 are returned as 0.
    """
    # exercise ch05.whiten · difficulty ★☆☆ · about 10 minutes
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return torch.where(mask.bool(), out, 0.0)


def policy_loss(logprobs, old_logprobs, advantages, mask, cliprange=0.2):
    """PPO's clipped surrogate loss and the fraction of tokens where the clip was active.

    logprobs: (B, T) under the policy being trained; old_logprobs: (B, T) under the policy
    that sampled the rollout; advantages: (B, T); mask: (B, T).
        ratio = exp(logprobs - old_logprobs)
        loss  = masked mean of max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps))
    clipfrac = masked mean of 1[the clipped term is the larger]. Returns (loss, clipfrac).
    """
    # exercise ch05.policy_loss · difficulty ★★☆ · about 15 minutes
    ratio = torch.exp(logprobs - old_logprobs)  # (B, T)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).float(), mask)
    return loss, clipfrac


def value_loss(values, old_values, returns, mask, cliprange_value=0.2):
    """Clipped value loss: 0.5 * masked mean of max((V - R)^2, (V_clip - R)^2), with
    V_clip = old_V + clip(V - old_V, -c, c). values, old_values, returns, mask: (B, T)."""
    # exercise ch05.value_loss · difficulty ★☆☆ · about 10 minutes
    clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    losses = torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)
    return 0.5 * masked_mean(losses, mask)


class AdaptiveKLController:
    """Adaptive KL coefficient (Ziegler et al. 2019): raise beta when the KL is above target,
    lower it when below, by at most 20% of the way per `horizon` samples."""

    def __init__(self, init_kl_coef: float, target: float, horizon: int):
        self.value = init_kl_coef
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> float:
        """e = clip(current_kl / target - 1, -0.2, 0.2); beta *= 1 + e * n_steps / horizon.
        Returns the new beta (also kept in self.value)."""
        # exercise ch05.AdaptiveKLController.update · difficulty ★☆☆ · about 10 minutes
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value


# ==============================================================================================
# Concept questions
#
# Answer in ANSWERS below: one letter for a choice question ("b"), the letters in order
# for an ordering question (["c", "a", "b"]). Grading says whether each answer is right:
# a right one is explained; a wrong one is told why the option chosen is wrong.
#
# q5.1  Why does RLHF subtract a KL penalty, beta * (log pi - log pi_ref), from the reward?
#         a) To keep PPO's probability ratio inside the clip range [1 - eps, 1 + eps], which the
#            clipped loss alone cannot guarantee.
#         b) The reward model is only trustworthy near the responses it was trained on; far from
#            them the policy finds outputs it over-scores.
#         c) To reward the policy for moving away from the reference: a larger divergence means
#            more exploration, and more exploration finds better responses.
#         d) It replaces the value function: with a per-token KL penalty the advantages can be
#            computed without a critic.
#
# q5.2  During a long PPO run the reward model's score of the samples keeps rising, while the
#       gold reward (the true quality, measured separately) rises and then falls. What is
#       happening?
#         a) The value function has diverged, so the advantages are wrong: lowering the critic's
#            learning rate fixes it.
#         b) The gold reward is noisy; with more iterations it will rise again.
#         c) The KL penalty is too strong: it pulls the policy back towards the reference, which
#            undoes the gold reward gained earlier.
#         d) Over-optimisation: the policy now gains proxy reward by exploiting the reward
#            model's errors.
#
# q5.3  On the first minibatch of the first PPO epoch after a rollout, what should the ratio
#       pi(a_t) / pi_old(a_t) be?
#         a) 1 + eps, the top of the clip range, since the advantages are positive on average.
#         b) Exactly 1 for every token: the policy has not changed since the rollout.
#         c) exp(KL) per token, since the policy has already moved away from the reference
#            during earlier iterations.
#         d) It depends on the advantages: tokens with a positive advantage have a ratio above
#            1.

ANSWERS = {
    "q5.1": "b",  # one letter: a, b, c or d
    "q5.2": "d",  # one letter: a, b, c or d
    "q5.3": "b",  # one letter: a, b, c or d
}
