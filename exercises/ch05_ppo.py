"""Chapter 5 · RLHF with PPO — exercises.

Version 4 of the minialign exercise set.

Write the body of each function below that raises NotImplementedError (keep its
signature), then answer the concept questions in ANSWERS at the end of the file.

    ch05.kl_penalized_rewards         difficulty ★★☆  about 15 min
    ch05.compute_gae                  difficulty ★★★  about 25 min
    ch05.whiten                       difficulty ★☆☆  about 10 min
    ch05.policy_loss                  difficulty ★★☆  about 15 min
    ch05.value_loss                   difficulty ★☆☆  about 10 min
    ch05.AdaptiveKLController.update  difficulty ★☆☆  about 10 min
    ch05.score_rollout                difficulty ★★☆  about 15 min
    ch05.ppo_update                   difficulty ★★★  about 30 min

Capstone ch05.ppo_capstone (your PPO trains a policy). Your PPO: the library's loop
(`ppo.ppo_loop`) with every chapter-5 function you wrote trains the course's starting policy for
20 iterations of 32 rollouts against the world's gold reward. Passes when the trained policy's
mean gold reward on the 270 held-out prompts (2 answers each) beats the starting policy's by at
least 0.30 (a working PPO gains about 0.6).

Check your work:
    python -m minialign.grade --impl exercises --chapter 5
or, in a notebook:  from minialign.course import check; check(5)
Stuck? `--hints 1` (or `check(5, hints=1)`) adds a first hint for each exercise not passed;
`--hints 2`, 3, ... more, down to the formula.

Then train with your own code (what you have not written yet comes from the library):
    python -m minialign ppo --impl exercises

Library code: minialign/ppo.py.
The answers: the library holds the complete code of every exercise, right under its docstring,
and so does solutions/. Try first; read them after, to compare.

Generated from the library by `python -m minialign.course build`. This file is yours: edit it.
"""

from __future__ import annotations

import torch

from minialign.ppo import masked_mean, record_minibatch, score_responses, take


def kl_penalized_rewards(scores, logprobs, ref_logprobs, mask, kl_coef):
    """Per-token rewards of RLHF: a KL penalty on every response token, the score at the end.

    scores: (B,) reward-model score of each response; logprobs, ref_logprobs: (B, T) log-prob
    of each response token under the policy that sampled it and under the reference; mask:
    (B, T) 1 on response tokens, 0 on padding (0/1 float or bool); padding entries of the
    log-probs hold junk. kl_coef: beta, the price of one nat of KL. Returns rewards (B, T),
    in the dtype of the log-probs.

    The idea: each response token is charged kl_coef for every nat by which the policy's
    log-prob of it exceeds the reference's (a one-sample estimate of the KL; a token the
    policy finds less likely than the reference earns a small bonus), and the response's
    score is paid once, at its last response token. Padding gets 0, and so does every token of
    a row that has no response token at all (no score anywhere). The notebook's section 1
    gives the formula.
    """
    # exercise ch05.kl_penalized_rewards · difficulty ★★☆ · about 15 minutes
    raise NotImplementedError("exercise ch05.kl_penalized_rewards: write this body")


def compute_gae(rewards, values, mask, gamma=1.0, lam=0.95):
    """Generalised advantage estimation (Schulman et al. 2016) over response tokens.

    rewards, values, mask: (B, T), right-padded rows: each row's response tokens (mask 1, 0/1
    float or bool) come first, then padding (mask 0), whose rewards and values hold junk and
    must change nothing. gamma: the discount per token; lam: GAE's lambda, in [0, 1].
    Returns (advantages, returns), both (B, T) like rewards and 0 on padding. Nothing is
    whitened here.

    The idea: the advantage of a token says how much better the rest of the response went
    than the value function expected at that token. The one-step estimate (lam = 0) is the
    token's TD error: its reward plus the (discounted) value of the next state, minus its own
    value; the Monte-Carlo one (lam = 1) is every later reward minus its own value. GAE blends
    them: the TD errors of later tokens count too, weighing a factor gamma * lam less per
    step. The episode ends with the response: the value after its last token is 0. The
    returns, advantage plus value, are the targets of the value function. The notebook's
    section 3 gives the formulas.
    """
    # exercise ch05.compute_gae · difficulty ★★★ · about 25 minutes
    raise NotImplementedError("exercise ch05.compute_gae: write this body")


def whiten(x, mask, shift_mean=True):
    """Normalise x to mean 0 and variance 1 over the entries where mask is 1.

    x, mask: (B, T). mean and var = mean((x - mean)^2) are taken over masked entries only;
    result = (x - mean) / sqrt(var + 1e-8). With shift_mean=False the mean is added back
    (only the scale changes). Entries where mask is 0 are returned as 0.
    """
    # exercise ch05.whiten · difficulty ★☆☆ · about 10 minutes
    raise NotImplementedError("exercise ch05.whiten: write this body")


def policy_loss(logprobs, old_logprobs, advantages, mask, cliprange=0.2):
    """PPO's clipped surrogate loss and the fraction of tokens where the clip was active.

    logprobs: (B, T) under the policy being trained (the loss is differentiated through
    them); old_logprobs: (B, T) under the policy that sampled the rollout; advantages: (B, T);
    mask: (B, T), 1 on response tokens (0/1 float or bool); padding entries of the other
    inputs hold junk. cliprange: eps, the half-width of the trust region of the ratio.
    Returns (loss, clipfrac), both 0-dim tensors, means over the response tokens only.

    The idea: the ratio pi / pi_old of each token (1 where the policy has not moved) weights
    its advantage: minimising the loss makes good tokens likelier and bad ones less likely.
    The clip takes the incentive away once the ratio has moved more than eps from 1 in the
    direction the advantage asks for: of the unclipped and the clipped loss of a token, the
    loss keeps the pessimistic one (the larger), so a move in the wrong direction is never
    clipped away. clipfrac is the share of response tokens where the clipped loss is strictly
    the larger. On the first minibatch every ratio is 1: the loss is minus the mean advantage
    and clipfrac is 0. The notebook's section 5 gives the formula.
    """
    # exercise ch05.policy_loss · difficulty ★★☆ · about 15 minutes
    raise NotImplementedError("exercise ch05.policy_loss: write this body")


def value_loss(values, old_values, returns, mask, cliprange_value=0.2):
    """Clipped value loss: 0.5 * masked mean of max((V - R)^2, (V_clip - R)^2), with
    V_clip = old_V + clip(V - old_V, -c, c). values, old_values, returns, mask: (B, T)."""
    # exercise ch05.value_loss · difficulty ★☆☆ · about 10 minutes
    raise NotImplementedError("exercise ch05.value_loss: write this body")


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
        raise NotImplementedError("exercise ch05.AdaptiveKLController.update: write this body")


def score_rollout(policy, ref, ro, scores, kl_coef, temperature):
    """Score a rollout before learning from it: what the policy that sampled it and the frozen
    reference say about each response token, and the per-token rewards PPO maximises.

    policy: the PolicyWithValueHead that sampled `ro`; `score_responses(policy, ro,
    temperature)` gives its log-probs, entropy and values of the response tokens, each (B, R).
    ref: the reference, a GPT (`score_responses` gives its log-probs; its values are None).
    ro: the Rollout, B responses of R tokens (ro.mask: (B, R), 1 on response tokens).
    scores: (B,) the score of each response (the reward model's, less the penalty of a
    response that never ended). kl_coef: beta, the penalty per nat of KL. temperature: the one
    the responses were sampled at (the log-probs are those of logits / temperature).
    Returns (logprobs, ref_logprobs, values, rewards, entropy), each (B, R): the policy's and
    the reference's log-probs, the policy's values, the rewards as `kl_penalized_rewards`
    makes them from the scores and the two log-probs, and the policy's entropy (logged only).

    The idea: these are the numbers of the policy *before* the update (log pi_old, V_old) and of
    the reference: constants that the update compares against, so no autograd graph is
    recorded for them. Edge cases: either model may arrive in training mode; score both with
    dropout off (eval mode), or log pi_old would be one random draw of dropout masks and the
    ratio of the update would not start at 1.
    """
    # exercise ch05.score_rollout · difficulty ★★☆ · about 15 minutes
    raise NotImplementedError("exercise ch05.score_rollout: write this body")


def ppo_update(policy, optimizer, ro, logprobs, values, advantages, returns, cfg, generator,
               grad_clip) -> dict:
    """The learning phase of one PPO iteration: cfg.ppo_epochs passes over the rollout's B
    responses in shuffled minibatches, one optimizer step per minibatch.

    policy: the PolicyWithValueHead that sampled `ro`; `score_responses(policy, mb,
    temperature)` gives (logprobs, entropy, values) of a minibatch `mb`, in the graph.
    optimizer: an AdamW over the policy's parameters (`ppo_optimizer`: the trunk and the value
    head in two groups, each at its own learning rate, to be left as they are).
    ro: the Rollout, B responses of R tokens (ro.mask: (B, R)). logprobs, values: (B, R) the
    policy's before the update (`score_rollout`); advantages (whitened) and returns: (B, R)
    from `compute_gae`. cfg: a PPOConfig (ppo_epochs, minibatch_size, cliprange, clip_value,
    cliprange_value, temperature). generator: the torch.Generator that shuffles. grad_clip:
    the largest norm allowed for the gradient of all the policy's parameters together.
    Each epoch draws an order `torch.randperm(B, generator=generator)` and cuts it into
    minibatches of cfg.minibatch_size responses, in that order; `take(ro, idx)` gives the
    minibatch's rollouts trimmed to their longest response, R' tokens (slice the (B, R) tensors
    alike: [idx, :R']). Its loss is `policy_loss` plus the value loss: `value_loss`, or
    0.5 * the masked mean of (V - returns)^2 when cfg.clip_value is off.
    Returns {name: one float per minibatch, in order}, as `record_minibatch(stats, ...)` appends
    them (call it once per minibatch, stats = {} at the start).

    The idea: several gradient steps on one batch of experience, made safe by the clip: once a
    token's ratio pi / pi_old has left [1 - eps, 1 + eps] in the direction its advantage
    pushes, it stops pulling. Edge cases: `.grad` holds the previous minibatch's gradients;
    the policy may arrive in training mode, but it learns with dropout off, as it was scored
    (the ratio of the first minibatch is exactly 1); `logprobs` and `values` are the rollout's,
    the same in every epoch; the losses are means over response tokens, never padding.
    """
    # exercise ch05.ppo_update · difficulty ★★★ · about 30 minutes
    raise NotImplementedError("exercise ch05.ppo_update: write this body")


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
#
# q5.4  After PPO with a weak KL penalty, the policy answers 'what color is chocolate?' with
#       'that is un lit in french.'. The reward model scores this answer +1.85 (well above the
#       average SFT answer); the gold reward gives it 0. What went wrong, and what helps?
#         a) The value function diverged and its advantages point the wrong way: a lower
#            learning rate for the critic fixes it.
#         b) PPO has not converged yet: more iterations at the same KL coefficient will bring
#            the policy to the right answer.
#         c) The gold reward is too strict: the answer is fluent and well formed, and a score of
#            +1.85 is evidence that it is good.
#         d) Reward hacking: PPO found an answer the reward model over-rates without reading the
#            prompt; a tighter KL leash or labels on such answers help.
#
# q5.5  In a PPO run the mean response length falls from 26 tokens at the first iteration to 18
#       at the last, although the labelers behind the reward model value every extra word at
#       +0.01. What is the best explanation?
#         a) The KL penalty is charged on every token, so every token costs reward, and the
#            shortest answers pay the least.
#         b) The extra words of SFT answers are mostly filler and rude remarks, which the labels
#            (so the reward model) rate down by far more.
#         c) The missing-end penalty makes long answers risky: the policy shortens them to end
#            before the token budget runs out.
#         d) Whitening the advantages removes any reward for length: once the mean is
#            subtracted, extra words gain nothing.
#
# q5.6  During a PPO run the logged KL to the reference (objective/kl) turns negative and keeps
#       falling, while the reward model's score rises. What is the likely cause?
#         a) Rollouts use top-k or top-p: the tokens do not come from the distribution whose
#            log-probs are compared.
#         b) Nothing is wrong: a negative KL means that the policy has come closer to the
#            reference than it was at the start of training.
#         c) The KL coefficient is too large: it pushes the policy past the reference, to the
#            other side of it.
#         d) Sampling noise: the estimate log pi - log pi_ref is unbiased, so a negative average
#            is chance, and more rollouts per batch would remove it.

ANSWERS = {
    "q5.1": None,  # one letter: a, b, c or d
    "q5.2": None,  # one letter: a, b, c or d
    "q5.3": None,  # one letter: a, b, c or d
    "q5.4": None,  # one letter: a, b, c or d
    "q5.5": None,  # one letter: a, b, c or d
    "q5.6": None,  # one letter: a, b, c or d
}
