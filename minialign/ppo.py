"""RLHF with PPO: optimise the SFT policy against the reward model, on a KL leash.

The InstructGPT recipe (Ouyang et al. 2022; Ziegler et al. 2019; Stiennon et al. 2020), with
the implementation details of "The N Implementation Details of RLHF with PPO" (Huang et al.):

    maximise  E_{x, y ~ pi}[ r_phi(x, y) ]  -  beta * KL(pi || pi_ref)

as reinforcement learning where a *state* is the prompt plus the response so far, an *action*
is the next token, and the *reward* arrives once, at the end (the reward model's score), plus
a per-token KL penalty -beta * (log pi(a_t) - log pi_ref(a_t)) that keeps the policy near the
SFT model it started from (the reward model is only trustworthy near the data it was trained
on). PPO (Schulman et al. 2017) with a learned value function and GAE does the optimisation.

One iteration:
  1. rollout   sample responses to a batch of prompts (KV cache, plain temperature sampling)
  2. score     reward model at the last token; log-probs of the policy and the frozen
               reference; values of the value head (same positions, logits / temperature);
               kl_penalized_rewards (`score_rollout`)
  3. GAE       compute_gae -> advantages (whitened) and returns
  4. learn     `ppo_epochs` passes over minibatches: clipped policy loss, clipped value loss
               (`ppo_update`)
  5. adapt     the adaptive KL controller moves beta towards the KL target

Every implementation detail is a switch in PPOConfig, so that its effect can be measured by
switching it off (notebook 05 does). The value function is a scalar head on the policy's own
trunk (as TRL's PPOTrainer long did; InstructGPT used a separate critic initialised from the
reward model): one forward pass gives both, which halves the cost on a CPU. There is one
reward per response (an outcome reward), so credit assignment to tokens is GAE's job.

    python -m minialign ppo [--fast] [--out runs/default]
"""

from __future__ import annotations

import copy
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn

from . import dist, tracking
from . import world as world_lib
from .evaluate import FAST_EVAL_PROMPTS, TEMPERATURE
from .model import GPT, entropy_from_logits, gather_logprobs
from .utils import (EVAL_SEED_OFFSET, left_pad, load_stage_model, pick_device, progress,
                    save_checkpoint, set_seed, timed, timer, write_json)


@dataclass
class PPOConfig:
    iterations: int = 32  # rollout batches (PPO updates)
    batch_size: int = 64  # prompts per rollout batch
    minibatch_size: int = 32  # rollouts per gradient step
    ppo_epochs: int = 2  # passes over each rollout batch
    lr: float = 5e-5  # learning rate of the policy
    value_lr: float = 1e-3  # learning rate of the value head (a linear layer on the features)
    kl_coef: float = 0.3  # beta: initial KL penalty per token (nats)
    adaptive_kl: bool = True  # adapt beta towards kl_target (Ziegler et al. 2019)
    kl_target: float = 1.0  # nats per response: gold peaks near here, then the proxy is hacked
    kl_horizon: int = 1000  # how fast beta adapts (Ziegler: 10,000, for runs 100x longer)
    cliprange: float = 0.2  # epsilon of the clipped policy ratio
    cliprange_value: float = 0.2  # clip of the value update
    clip_value: bool = True  # use the clipped value loss
    gamma: float = 1.0
    lam: float = 0.95
    whiten_advantages: bool = True
    whiten_rewards: bool = False  # whiten the per-token rewards (mean kept)
    missing_eos_penalty: float = 1.0  # subtracted from the score of a response without <|end|>
    temperature: float = TEMPERATURE  # sampling temperature; log-probs use the same everywhere
    max_new_tokens: int = 64  # response budget when sampling (the longest good answers use ~45)
    eval_interval: int = 8  # iterations between gold evaluations on held-out prompts
    eval_samples: int = 1
    eval_prompts: int = 0  # held-out prompts evaluated on (evaluate.eval_tasks; 0: all 270)
    seed: int = 0

    def __post_init__(self):
        if self.batch_size % self.minibatch_size:
            raise ValueError("batch_size must be a multiple of minibatch_size")
        if self.temperature <= 0:
            raise ValueError("temperature must be positive (sampling, not greedy, for RL)")
        if self.iterations <= 0:
            raise ValueError("iterations must be positive")

    @classmethod
    def fast(cls, **overrides) -> "PPOConfig":
        base = dict(iterations=8, batch_size=16, minibatch_size=8, ppo_epochs=2,
                    max_new_tokens=24, eval_interval=4, eval_prompts=FAST_EVAL_PROMPTS)
        base.update(overrides)
        return cls(**base)


# ==============================================================================================
# the algorithm: pure functions on (B, T) tensors of the response tokens


def masked_mean(x, mask):
    """Mean of x over the entries where mask is 1 (mask: same shape, 0/1 or bool).

    torch.where rather than x * mask: a padded entry holding inf or nan (say, the ratio of a
    sentinel log-prob) must not turn the mean into nan: mask before every reduction."""
    mask = mask.bool()
    return torch.where(mask, x, 0.0).sum() / mask.sum().clamp(min=1)


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
    # >>> exercise: chapter=5 difficulty=2 minutes=15
    # hint: the KL part is one elementwise expression over (B, T); torch.where(mask, ..., 0.0)
    #       sets the padding to 0 whatever it held
    # hint: the last response token of each row is the largest position where the mask is 1:
    #       torch.where(mask, positions, -1).max(dim=1).values, with positions from
    #       torch.arange(T); -1 means the row has no response token, and no score
    # hint: rewards = torch.where(mask, -kl_coef * (logprobs - ref_logprobs), 0.0), then
    #       rewards[rows, last] += scores for the rows with a response
    mask = mask.bool()
    rewards = torch.where(mask, -kl_coef * (logprobs - ref_logprobs), 0.0)  # (B, T)
    T = mask.size(1)
    positions = torch.arange(T, device=mask.device).expand_as(mask)  # (B, T)
    last = torch.where(mask, positions, -1).max(dim=1).values  # (B,) last response token
    rows = torch.arange(mask.size(0), device=mask.device)
    has_response = last >= 0  # an empty row (no response token) gets no score at all
    rewards[rows[has_response], last[has_response]] += scores[has_response]
    return rewards
    # <<< exercise


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
    # >>> exercise: chapter=5 difficulty=3 minutes=25
    # hint: work backwards from the last token: the advantage of token t needs the one of
    #       token t + 1, so loop over reversed(range(T)) carrying one (B,) tensor
    # hint: padding holds junk: zero the values there first (torch.where), so that the value
    #       after a response's last token is 0, and multiply the running advantage by
    #       mask[:, t], so that a padded position passes nothing back
    # hint: delta_t = r_t + gamma * V_{t+1} - V_t;  A_t = delta_t + gamma * lam * A_{t+1};
    #       R_t = A_t + V_t on response tokens, 0 on padding
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
    # <<< exercise


def whiten(x, mask, shift_mean=True):
    """Normalise x to mean 0 and variance 1 over the entries where mask is 1.

    x, mask: (B, T). mean and var = mean((x - mean)^2) are taken over masked entries only;
    result = (x - mean) / sqrt(var + 1e-8). With shift_mean=False the mean is added back
    (only the scale changes). Entries where mask is 0 are returned as 0.
    """
    # >>> exercise: chapter=5 difficulty=1 minutes=10
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return torch.where(mask.bool(), out, 0.0)
    # <<< exercise


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
    # >>> exercise: chapter=5 difficulty=2 minutes=15
    # hint: ratio = torch.exp(logprobs - old_logprobs), token by token
    # hint: a token's loss unclipped is -A * ratio, clipped -A * torch.clamp(ratio, 1 - eps,
    #       1 + eps); torch.maximum keeps the larger; masked_mean (in ppo.py) averages over
    #       the response tokens only, whatever the padding holds
    # hint: loss = masked_mean(max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)), mask);
    #       clipfrac = masked_mean((clipped > unclipped).float(), mask)
    ratio = torch.exp(logprobs - old_logprobs)  # (B, T)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).float(), mask)
    return loss, clipfrac
    # <<< exercise


def value_loss(values, old_values, returns, mask, cliprange_value=0.2):
    """Clipped value loss: 0.5 * masked mean of max((V - R)^2, (V_clip - R)^2), with
    V_clip = old_V + clip(V - old_V, -c, c). values, old_values, returns, mask: (B, T)."""
    # >>> exercise: chapter=5 difficulty=1 minutes=10
    clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    losses = torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)
    return 0.5 * masked_mean(losses, mask)
    # <<< exercise


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
        # >>> exercise: chapter=5 difficulty=1 minutes=10
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value
        # <<< exercise


class FixedKLController:
    """beta stays where it starts (the `adaptive_kl=False` switch)."""

    def __init__(self, kl_coef: float):
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value


# ==============================================================================================
# plumbing: the policy with its value head, rollouts, and the forward passes that score them


class PolicyWithValueHead(nn.Module):
    """The policy GPT plus a scalar value head reading the same trunk's features (as TRL's
    AutoModelForCausalLMWithValueHead): one forward pass gives the next-token logits and
    V(state) at every position. The head starts at zero, which suits rewards normalised to
    mean 0: with raw, unnormalised scores a zero-initialised critic starts far off, and the
    first value losses are large.

    The value head sees the features through a stop-gradient: the value loss trains the head,
    never the trunk. Sharing the trunk's gradients (with a small vf_coef) is the other common
    choice; on a model this small, a value loss that grows with the KL penalty then swamps
    the policy's gradient and PPO falls apart within a few dozen iterations."""

    def __init__(self, gpt: GPT):
        super().__init__()
        self.gpt = gpt
        self.value_head = nn.Linear(gpt.config.n_embd, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def forward(self, idx, padding_mask=None):
        """idx: (B, T) -> logits (B, T, V), values (B, T)."""
        h = self.gpt.hidden_states(idx, padding_mask)  # (B, T, C)
        return self.gpt.lm_head(h), self.value_head(h.detach()).squeeze(-1)


@dataclass
class Rollout:
    """A batch of sampled responses, laid out as [left pad][prompt][response][right pad].

    ids, attention: (B, P + R); response: (B, R) token ids; mask: (B, R) 1 on response tokens
    (the <|end|> token included), 0 after it. P is the padded prompt length.
    """

    ids: torch.Tensor
    attention: torch.Tensor
    response: torch.Tensor
    mask: torch.Tensor
    prompt_len: int
    ended: torch.Tensor  # (B,) bool: the response produced <|end|>


@torch.no_grad()
def rollout(policy: GPT, prompt_ids: list[list[int]], pad_id: int, end_id: int, cfg,
            generator) -> Rollout:
    """Sample one response per prompt with plain temperature sampling (no top-k/top-p: the
    stored log-probs must be those of the distribution we sample from)."""
    device = policy.lm_head.weight.device
    ids, attention = left_pad(prompt_ids, pad_id)
    P = ids.size(1)
    new = min(cfg.max_new_tokens, policy.config.block_size - P)
    with timed("sampling"):  # (the stage's time split, utils.TimeSplit)
        seqs = policy.generate(ids.to(device), new, temperature=cfg.temperature, eos_id=end_id,
                               generator=generator, padding_mask=attention.to(device))
    response = seqs[:, P:]  # (B, R)
    is_end = response == end_id
    ended = is_end.any(dim=1)
    # keep tokens up to and including the first <|end|>; what follows is padding
    after_end = (is_end.cumsum(1) - is_end.long()) > 0
    mask = ~after_end
    response = response.masked_fill(after_end, pad_id)
    full = torch.cat([ids.to(device), response], 1)
    attention = torch.cat([attention.to(device), mask], 1)
    return Rollout(full, attention, response, mask.float(), P, ended)


def whiten_across_ranks(x, mask, shift_mean=True):
    """`whiten` with the mean and variance of every rank's masked entries (under torchrun each
    rank holds a share of the batch; whitening each share alone would change the result)."""
    real = mask.bool()
    n = dist.all_reduce_sum(mask.sum())
    mean = dist.all_reduce_sum(torch.where(real, x, 0.0).sum()) / n
    var = dist.all_reduce_sum(torch.where(real, (x - mean) ** 2, 0.0).sum()) / n
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return torch.where(real, out, 0.0)


def whiten_batch(x, mask, shift_mean=True):
    """`whiten` over the whole batch: this process's rollouts, or every rank's under torchrun."""
    if dist.world_size() == 1:
        return whiten(x, mask, shift_mean=shift_mean)
    return whiten_across_ranks(x, mask, shift_mean=shift_mean)


def take(ro: Rollout, idx) -> Rollout:
    """The rollouts `idx`, trimmed to their longest response (less padding to compute on)."""
    mask = ro.mask[idx]
    R = max(1, int(mask.sum(1).max()))
    P = ro.prompt_len
    return Rollout(ro.ids[idx, : P + R], ro.attention[idx, : P + R], ro.response[idx, :R],
                   mask[:, :R], P, ro.ended[idx])


def score_responses(model, ro: Rollout, temperature: float):
    """Log-probs (B, R) of the response tokens, the entropy (B, R) at each of those positions,
    and, if the model has a value head, the values (B, R) at the same positions (else None).

    The logits at position t predict token t + 1, so the response token at column P + i is
    scored by the logits at column P + i - 1 (one column later is the classic off-by-one), and
    V is read there too: the value of the state before the token is chosen.
    """
    out = model(ro.ids, padding_mask=ro.attention)
    has_value_head = isinstance(getattr(model, "module", model), PolicyWithValueHead)  # DDP: .module
    logits, values = out if has_value_head else (out[0], None)
    P, R = ro.prompt_len, ro.response.size(1)
    logits = logits[:, P - 1: P + R - 1] / temperature  # (B, R, V)
    logprobs = gather_logprobs(logits, ro.response)
    values = values[:, P - 1: P + R - 1] if values is not None else None
    return logprobs, entropy_from_logits(logits), values


# ==============================================================================================
# the update: score a rollout, then learn from it


GRAD_CLIP = 1.0  # the largest norm of a minibatch's gradient (TRL's max_grad_norm)


def ppo_optimizer(policy: PolicyWithValueHead, cfg: PPOConfig):
    """AdamW without weight decay, in two parameter groups: the trunk at cfg.lr and the value
    head at cfg.value_lr (it learns faster: it starts from nothing)."""
    return torch.optim.AdamW([{"params": policy.gpt.parameters(), "lr": cfg.lr},
                              {"params": policy.value_head.parameters(), "lr": cfg.value_lr}],
                             weight_decay=0.0)


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
    # >>> exercise: chapter=5 difficulty=2 minutes=15
    # hint: model.eval() switches dropout off; torch.no_grad() records no graph
    # hint: score_responses on the policy (log-probs, entropy, values), then on the reference
    #   (its log-probs), then kl_penalized_rewards(scores, logprobs, ref_logprobs, ro.mask, beta)
    policy.eval()  # dropout off, in both models
    ref.eval()
    with torch.no_grad():  # constants of the update: log pi_old, V_old and the reference's
        logprobs, entropy, values = score_responses(policy, ro, temperature)  # (B, R) each
        ref_logprobs, _, _ = score_responses(ref, ro, temperature)  # (B, R)
        rewards = kl_penalized_rewards(scores, logprobs, ref_logprobs, ro.mask, kl_coef)
    return logprobs, ref_logprobs, values, rewards, entropy
    # <<< exercise


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
    # >>> exercise: chapter=5 difficulty=3 minutes=30
    # hint: policy.eval(), stats = {}, then two loops: the epochs (a new torch.randperm each),
    #   and the minibatches of that order (idx = perm[s: s + cfg.minibatch_size]; take(ro, idx))
    # hint: a minibatch: score_responses(policy, mb, cfg.temperature) in the graph; policy_loss
    #   against logprobs[idx, :R]; value_loss against values[idx, :R] and returns[idx, :R]
    # hint: optimizer.zero_grad(); (pg_loss + vf_loss).backward(); clip_grad_norm_(
    #   policy.parameters(), grad_clip); optimizer.step(); record_minibatch(stats, ...)
    policy.eval()  # dropout off: the same function of the weights that scored the rollout
    stats = {}
    B = ro.response.size(0)
    for _ in range(cfg.ppo_epochs):
        perm = torch.randperm(B, generator=generator).to(ro.ids.device)
        for s in range(0, B, cfg.minibatch_size):
            idx = perm[s: s + cfg.minibatch_size]
            mb = take(ro, idx)  # trimmed to its longest response
            R = mb.response.size(1)
            new_logprobs, _, new_values = score_responses(policy, mb, cfg.temperature)
            old_logprobs = logprobs[idx, :R]  # pi_old: the rollout's, in every epoch
            pg_loss, clipfrac = policy_loss(new_logprobs, old_logprobs, advantages[idx, :R],
                                            mb.mask, cfg.cliprange)
            if cfg.clip_value:
                vf_loss = value_loss(new_values, values[idx, :R], returns[idx, :R], mb.mask,
                                     cfg.cliprange_value)
            else:
                vf_loss = 0.5 * masked_mean((new_values - returns[idx, :R]) ** 2, mb.mask)
            optimizer.zero_grad(set_to_none=True)  # backward adds to .grad
            (pg_loss + vf_loss).backward()  # disjoint parameters: the trunk gets pg_loss only
            torch.nn.utils.clip_grad_norm_(policy.parameters(), grad_clip)  # before the step
            optimizer.step()
            record_minibatch(stats, new_logprobs, old_logprobs, mb.mask, clipfrac, pg_loss,
                             vf_loss)
    return stats
    # <<< exercise


# ==============================================================================================
# the PPO loop, independent of the world: prompts in, a reward function, a policy out


def ppo_loop(policy: PolicyWithValueHead, ref: GPT, reward_fn, sample_prompts, cfg: PPOConfig,
             pad_id: int, end_id: int, on_iteration=None, desc="ppo"):
    """Train `policy` in place. reward_fn(rollout) -> scores (B,); sample_prompts(n, rng) ->
    list of prompt id lists. on_iteration(it, stats, rollout) is called after each update.
    Returns the list of per-iteration stats (TRL's metric names)."""
    # plumbing (torchrun): each rank samples its own share of every batch's prompts, with its
    # own random stream; statistics are averaged over ranks. One process: rank 0, world 1.
    n_ranks = dist.world_size()
    if cfg.batch_size % n_ranks or cfg.minibatch_size % n_ranks:
        raise ValueError(f"batch_size and minibatch_size must be multiples of the {n_ranks} "
                         f"processes")
    ddp_policy = dist.wrap(policy)
    g = torch.Generator().manual_seed(cfg.seed + dist.rank())
    rng = random.Random(cfg.seed)
    ref.eval().requires_grad_(False)  # frozen: the anchor of the KL penalty
    optimizer = ppo_optimizer(policy, cfg)
    kl_ctl = (AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)
              if cfg.adaptive_kl else FixedKLController(cfg.kl_coef))
    history = []
    bar = progress(range(cfg.iterations), desc=desc)
    for it in bar:
        # ---- 1-3. collect: rollouts, their scores, rewards, advantages, returns ----
        prompts = dist.shard(sample_prompts(cfg.batch_size, rng))  # this rank's prompts
        ro, logprobs, ref_logprobs, entropy, values, scores, advantages, returns = \
            collect_rollouts(policy, ref, reward_fn, prompts, pad_id, end_id, cfg, kl_ctl.value, g)
        # ---- 4. learn: PPO epochs over minibatches ----
        if not dist.is_distributed():
            stats = ppo_update(policy, optimizer, ro, logprobs, values, advantages, returns, cfg,
                               g, GRAD_CLIP)
        else:  # plumbing: ppo_update with each rank's share of every minibatch, token-weighted
            # (written out here, so that the library holds no other callable copy of it)
            policy.eval()
            stats = {}
            for _ in range(cfg.ppo_epochs):
                perm = torch.randperm(len(prompts), generator=g).to(ro.ids.device)
                for idx in perm.split(cfg.minibatch_size // n_ranks):
                    mb = take(ro, idx)
                    R = mb.response.size(1)
                    new_logprobs, _, new_values = score_responses(ddp_policy, mb, cfg.temperature)
                    pg_loss, clipfrac = policy_loss(new_logprobs, logprobs[idx, :R],
                                                    advantages[idx, :R], mb.mask, cfg.cliprange)
                    vf_loss = value_loss(new_values, values[idx, :R], returns[idx, :R], mb.mask,
                                         cfg.cliprange_value if cfg.clip_value else float("inf"))
                    optimizer.zero_grad(set_to_none=True)
                    share = dist.loss_share(mb.mask.sum(), dist.all_reduce_sum(mb.mask.sum()))
                    ((pg_loss + vf_loss) * share).backward()
                    torch.nn.utils.clip_grad_norm_(policy.parameters(), GRAD_CLIP)
                    optimizer.step()
                    record_minibatch(stats, new_logprobs, logprobs[idx, :R], mb.mask, clipfrac,
                                     pg_loss, vf_loss)
        # ---- 5. statistics and the KL controller ----
        row = iteration_row(it, stats, logprobs - ref_logprobs, kl_ctl.value, scores, entropy, ro)
        kl_ctl.update(row["objective/kl"], cfg.batch_size)
        history.append(row)
        tracking.log(row, it)
        bar.set_postfix(score=f"{row['objective/scores']:.2f}", kl=f"{row['objective/kl']:.2f}")
        if on_iteration is not None:
            on_iteration(it, row, ro)
    bar.close()
    return history


def collect_rollouts(policy: PolicyWithValueHead, ref: GPT, reward_fn, prompts, pad_id: int,
                     end_id: int, cfg: PPOConfig, kl_coef: float, g: torch.Generator):
    """Steps 1-3 of an iteration, without gradients: a response to each prompt (rollout), its
    score (reward_fn, less the missing <|end|> penalty), its log-probs under the policy and the
    reference, values, entropy and per-token KL-penalised rewards (score_rollout), then
    advantages and returns by GAE. Returns (rollout, logprobs, ref_logprobs, entropy, values,
    scores, advantages, returns): scores (B,), the others (B, R)."""
    device = policy.gpt.lm_head.weight.device
    ro = rollout(policy.gpt, prompts, pad_id, end_id, cfg, g)
    with torch.no_grad():
        scores = reward_fn(ro).to(device)
        if cfg.missing_eos_penalty:
            scores = scores - cfg.missing_eos_penalty * (~ro.ended).float()
        logprobs, ref_logprobs, values, rewards, entropy = score_rollout(
            policy, ref, ro, scores, kl_coef, cfg.temperature)
        if cfg.whiten_rewards:
            rewards = whiten_batch(rewards, ro.mask, shift_mean=False)
        advantages, returns = compute_gae(rewards, values, ro.mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            advantages = whiten_batch(advantages, ro.mask)
    return ro, logprobs, ref_logprobs, entropy, values, scores, advantages, returns


@torch.no_grad()
def record_minibatch(stats: dict, new_logprobs, old_logprobs, mask, clipfrac, pg_loss, vf_loss):
    """Append one minibatch's statistics to `stats`. new_logprobs, old_logprobs: (B, R) the
    response tokens' log-probs now and at the rollout (equal at the first minibatch)."""
    log_ratio = new_logprobs - old_logprobs
    for name, value in (("policy/clipfrac", clipfrac),
                        ("policy/approxkl", 0.5 * masked_mean(log_ratio ** 2, mask)),
                        ("val/ratio", masked_mean(log_ratio.exp(), mask)),
                        ("loss/policy", pg_loss), ("loss/value", vf_loss)):
        stats.setdefault(name, []).append(value.item())


def iteration_row(it: int, stats: dict, log_ratio, kl_coef: float, scores, entropy,
                  ro: Rollout) -> dict:
    """One iteration's statistics under TRL's names: the means of the minibatches' `stats`, the
    KL (nats per response, from log_ratio = log pi - log pi_ref, (B, R)), the coefficient it was
    penalised with, the rollouts' scores, entropy, ended fraction and length; averaged over
    ranks under torchrun."""
    kl = (log_ratio * ro.mask).sum(1).mean().item()  # nats per response
    kl = dist.all_reduce_mean(kl)  # plumbing: every rank's rollouts (one process: itself)
    row = {k: sum(v) / len(v) for k, v in stats.items()}
    row.update({"iteration": it, "objective/kl": kl, "objective/kl_coef": kl_coef,
                "objective/scores": scores.mean().item(),
                "objective/entropy": (entropy * ro.mask).sum(1).mean().item(),
                "objective/non_score_reward": -kl_coef * kl,
                "val/first_ratio": stats["val/ratio"][0],  # 1 exactly: before any update
                "policy/ended": ro.ended.float().mean().item(),
                "response_length": ro.mask.sum(1).mean().item()})
    return {k: v if k in ("iteration", "objective/kl", "objective/kl_coef")
            else dist.all_reduce_mean(v) for k, v in row.items()}  # plumbing: over ranks


# ==============================================================================================
# the stage: the world's prompts, the trained reward model, gold evaluation


def evaluate_during_training(policy: GPT, ref: GPT, rm, tokenizer, eval_tasks, cfg, it: int,
                             curve: dict, samples_over_training: list):
    """Gold, proxy (the reward model `rm`), task success and KL to `ref` on held-out prompts,
    appended to `curve` at iteration `it`, with one sampled answer per family appended to
    `samples_over_training`. cfg: any config with eval_samples, max_new_tokens, seed and
    temperature (PPO's, GRPO's). Returns (the evaluation, the proxy score of each response);
    the evaluation also holds "kl_per_response" (log pi - log pi_ref of each response)."""
    from . import evaluate

    with timed("evaluation"):  # (the stage's time split, utils.TimeSplit)
        ev = evaluate.evaluate_policy(policy, tokenizer, eval_tasks, cfg.eval_samples,
                                      cfg.max_new_tokens, seed=cfg.seed + EVAL_SEED_OFFSET,
                                      temperature=cfg.temperature)
        prompts = [t.prompt for t in ev["tasks"]]
        texts = [r["text"] for r in ev["responses"]]
        response_ids = [r["response_ids"] for r in ev["responses"]]
        proxy = rm.score_texts(tokenizer, prompts, texts, [r["ended"] for r in ev["responses"]])
        kl, ev["kl_per_response"] = evaluate.kl_to_reference(policy, ref, tokenizer, prompts,
                                                              response_ids, cfg.temperature)
    curve["iteration"].append(it)
    curve["gold"].append(ev["gold_reward_mean"])
    curve["proxy"].append(sum(proxy) / len(proxy))
    curve["kl"].append(kl)
    curve["success"].append(ev["task_success_rate"])
    for family in world_lib.FAMILIES:  # one example per family, for the table
        i = next(j for j, t in enumerate(ev["tasks"]) if t.family == family)
        samples_over_training.append({"iteration": it, "prompt": ev["tasks"][i].prompt,
                                      "response": texts[i], "ended": ev["responses"][i]["ended"],
                                      "gold": ev["gold"][i], "proxy": proxy[i]})
    return ev, proxy


@dataclass
class RLStart:
    """What an RL stage (PPO, GRPO) starts from: the SFT model (to be trained), a frozen copy of
    it (the reference of the KL penalty), the frozen reward model, the tokenizer and the world."""

    sft_model: GPT
    ref: GPT
    rm: nn.Module
    tokenizer: object
    world: object

    def sample_prompts(self, n, rng):  # training prompts, drawn as SFT's and the preferences'
        return [self.tokenizer.encode_prompt(t.prompt) for t in self.world.sample_tasks(n, rng)]


def rl_start(out_dir: Path, dev, reward_stage: str) -> RLStart:
    from .reward import load_reward_model
    from .sft import load_model as load_sft

    sft_model, tokenizer = load_sft(out_dir, dev)
    ref = copy.deepcopy(sft_model).eval()  # the frozen reference: the SFT model itself
    rm = load_reward_model(out_dir, dev, reward_stage).requires_grad_(False)
    return RLStart(sft_model, ref, rm, tokenizer, world_lib.default_world())


def train(cfg: PPOConfig, out_dir: str | Path, device: str = "cpu", log=print,
          stage: str = "ppo", reward_stage: str = "reward") -> dict:
    """PPO from the SFT model against the reward model of DIR; evaluated with the gold reward."""
    from . import evaluate

    out_dir = Path(out_dir)
    dev = pick_device(device)
    set_seed(cfg.seed)

    with timer() as elapsed:
        # ---- collect: the policy (SFT and a value head), its frozen reference, the reward
        # model, the training prompts (rollouts are collected by ppo_loop) ----
        start = rl_start(out_dir, dev, reward_stage)
        ref, rm, tokenizer, world = start.ref, start.rm, start.tokenizer, start.world
        policy = PolicyWithValueHead(start.sft_model).to(dev)
        sample_prompts = start.sample_prompts

        def reward_fn(ro: Rollout):
            return rm.normalized(ro.ids, ro.attention)

        eval_tasks = evaluate.eval_tasks(cfg.eval_prompts, world)
        curve = {"iteration": [], "gold": [], "proxy": [], "kl": [], "success": []}
        samples_over_training = []

        def evaluate_now(it):
            return evaluate_during_training(policy.gpt, ref, rm, tokenizer, eval_tasks, cfg, it,
                                            curve, samples_over_training)

        if dist.is_main():  # under torchrun rank 0 evaluates
            sft_eval, _ = evaluate_now(0)

        def on_iteration(it, row, ro):
            if (it + 1) % cfg.eval_interval == 0 and it + 1 < cfg.iterations and dist.is_main():
                evaluate_now(it + 1)

        # ---- fit: the PPO loop, evaluated every cfg.eval_interval iterations ----
        with timed("training"):  # its rollouts count as sampling, its evaluations as evaluation
            history = ppo_loop(policy, ref, reward_fn, sample_prompts, cfg, tokenizer.pad_id,
                               tokenizer.end_id, on_iteration, desc=stage)
        if not dist.is_main():  # plumbing: rank 0 evaluates and writes; the others are done
            return {"world_size": dist.world_size()}
        # ---- evaluate: the final policy on the held-out prompts ----
        final_eval, final_proxy = evaluate_now(cfg.iterations)
        save_checkpoint(policy.gpt.checkpoint(train_config=asdict(cfg)),
                        out_dir / stage / "model.pt")

    return report(cfg, out_dir / stage, stage, sft_eval, final_eval, curve,
                  samples_over_training, history, elapsed(), log)


def report(cfg: PPOConfig, stage_dir: Path, stage: str, sft_eval: dict, final_eval: dict,
           curve: dict, samples_over_training: list, history: list, seconds: float,
           log) -> dict:
    """The metrics of the final policy against SFT's, with the curves of training: written to
    DIR/STAGE/metrics.json with the training figure, one line logged."""
    from . import evaluate, plots

    metrics = {
        "gold_reward_mean": final_eval["gold_reward_mean"],
        "proxy_reward_mean": curve["proxy"][-1],
        "kl_to_ref": curve["kl"][-1],
        "win_rate_vs_sft": evaluate.win_rate(final_eval["gold"], sft_eval["gold"]),
        "task_success_rate": final_eval["task_success_rate"],
        # gold_reward_mean_se, task_success_rate_se, kl_to_ref_se, win_rate_vs_sft_se
        **evaluate.error_bars(final_eval, versus=sft_eval),
        "end_rate": final_eval["end_rate"],
        "per_family": final_eval["per_family"],
        "sft_gold_reward_mean": sft_eval["gold_reward_mean"],
        "world_size": dist.world_size(),  # processes that trained it (torchrun); 1 otherwise
        "seconds": seconds,
        "curve": curve,
        "samples_over_training": samples_over_training,
        "samples": evaluate.side_by_side(evaluate.eval_tasks(cfg.eval_prompts),
                                         {"sft": sft_eval, "ppo": final_eval}),
        "config": asdict(cfg),
        "history": history,
    }
    write_json(metrics, stage_dir / "metrics.json")
    plots.ppo_training(history, curve, stage_dir / "training.png")
    log(f"{stage}: gold {sft_eval['gold_reward_mean']:.2f} (sft) -> "
        f"{final_eval['gold_reward_mean']:.2f}, proxy {curve['proxy'][0]:.2f} -> "
        f"{curve['proxy'][-1]:.2f}, KL {curve['kl'][-1]:.2f} nats, win rate vs SFT "
        f"{metrics['win_rate_vs_sft']:.0%} ± {metrics['win_rate_vs_sft_se']:.0%}; "
        f"{metrics['seconds']:.0f} s")
    return metrics


def load_policy(out_dir: str | Path, device="cpu", stage="ppo") -> GPT:
    return load_stage_model(out_dir, stage, device)
