"""RL from outcome rewards without a value model: GRPO, Dr. GRPO and RLOO.

PPO (ppo.py) learns a value function to tell a good token from a lucky one. The group-relative
methods drop it: sample G responses to the same prompt, score each once, and use the *other
responses of the group* as the baseline. Every token of response i gets the same advantage:

    GRPO      (Shao et al. 2024, DeepSeekMath)   A_i = (r_i - mean_group r) / (std_group r + eps)
    Dr. GRPO  (Liu et al. 2025)                  A_i =  r_i - mean_group r
    RLOO      (Ahmadian et al. 2024)             A_i =  r_i - mean of the other G - 1 rewards
                                                     = G / (G - 1) * (r_i - mean_group r)

and the policy follows PPO's clipped ratio objective, min(rho A, clip(rho, 1 - eps_low,
1 + eps_high) A), with rho = pi / pi_old. What differs between the papers is how the per-token
losses are averaged (`aggregate_loss`): GRPO averages each response over its own length, which
punishes a long wrong answer less per token than a short one (long wrong answers grow), so Dr.
GRPO divides every sum by the same constant, and DAPO (Yu et al. 2025) by the batch's number of
tokens. The KL to the reference is either a term of the loss (GRPO: the k3 estimator, beta 0.04)
or folded into the reward before the advantages (RLOO, as in RLHF).

The reward is any function of a finished response; three sources, one algorithm:
    reward_model   the chapter-4 reward model (normalised as for PPO): a learned proxy
    verifier       world.verify: 1 or 0 for a checkable outcome, blind to style (jokes: no say)
    gold           the world's gold reward: the oracle, an upper bound nobody has in practice

DAPO's other details are switches, each to measure by switching it off: clip-higher
(cliprange_high > cliprange_low), dynamic sampling (drop the groups whose rewards are all equal:
their advantages are zero, they only dilute the batch; DAPO resamples to refill it, here the
batch just shrinks and the fraction dropped is logged), and answers that ran out of tokens
(masked out of the loss, or a soft overlong penalty on the reward).

Simplified: a fixed number of prompts per batch (no resampling after dynamic sampling); one
reference model, never refreshed; the KL reported is the k1 estimate per response, as PPO's.

    python -m minialign grpo [--fast] [--out runs/default]
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import tracking
from . import world as world_lib
from .evaluate import FAST_EVAL_PROMPTS, TEMPERATURE
from .model import GPT
from .ppo import masked_mean, rollout, score_responses, take
from .utils import (load_stage_model, pick_device, progress, save_checkpoint, set_seed, timed,
                    timer, write_json)

ADVANTAGES = ("grpo", "dr_grpo", "rloo")
AGGREGATIONS = ("seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm")
REWARD_SOURCES = ("reward_model", "verifier", "gold")


@dataclass
class GRPOConfig:
    iterations: int = 16  # rollout batches (each followed by ppo_epochs of updates). Gold
    #                       stops rising by iteration 16 against the reward model; at 32 the
    #                       policy goes on climbing the proxy, and with a laptop's fp32
    #                       arithmetic (AVX2, no AMX) it hacked it: KL 6.8 nats, gold halved
    prompts_per_batch: int = 8  # P: prompts per rollout batch
    group_size: int = 8  # G: responses sampled per prompt (the group of the baseline)
    minibatch_size: int = 32  # responses per gradient step
    ppo_epochs: int = 2  # passes over each batch (with 1 pass of 1 minibatch the clip is idle)
    lr: float = 5e-5  # learning rate of the policy
    advantage: str = "grpo"  # "grpo" (std-scaled), "dr_grpo" (mean only), "rloo" (leave-one-out)
    loss_aggregation: str = "seq-mean-token-mean"  # GRPO; "token-mean" (DAPO),
    #                                                "seq-mean-token-sum-norm" (Dr. GRPO)
    kl_coef: float = 0.2  # beta, per token; 0: no KL term at all (DAPO). DeepSeekMath's 0.04
    #                       let the KL here run to ~3 nats over 32 iterations, where the reward
    #                       model is hacked (gold falls back while the proxy climbs); 0.2 held
    #                       it near 1.5 over 32 (with an earlier reward model) and at 1.0 over
    #                       16 in the default run
    kl_in: str = "loss"  # "loss": k3 per token in the loss (GRPO); "reward": k1 summed over
    #                      the response, subtracted from its reward before the advantages (RLOO)
    cliprange_low: float = 0.2  # ratio clipped below at 1 - cliprange_low
    cliprange_high: float = 0.28  # ... and above at 1 + cliprange_high (clip-higher; = low: off)
    dynamic_sampling: bool = True  # drop the groups whose rewards are all equal
    truncation: str = "penalty"  # answers without <|end|>: "penalty" (on the reward), "mask"
    #                              (out of the loss: DAPO's overlong filtering) or "none"
    overlong_cache: int = 8  # "penalty": the last this many tokens of the budget ramp from 0 to -1
    reward_source: str = "reward_model"  # "reward_model", "verifier" or "gold"
    temperature: float = TEMPERATURE  # sampling temperature; log-probs use the same everywhere
    max_new_tokens: int = 64  # response budget (L_max of the overlong penalty and of Dr. GRPO)
    eval_interval: int = 4  # iterations between gold evaluations on held-out prompts
    eval_samples: int = 1
    eval_prompts: int = 0  # held-out prompts evaluated on (evaluate.eval_tasks; 0: all 270)
    seed: int = 0

    def __post_init__(self):
        for name, value, allowed in [("advantage", self.advantage, ADVANTAGES),
                                     ("loss_aggregation", self.loss_aggregation, AGGREGATIONS),
                                     ("kl_in", self.kl_in, ("loss", "reward")),
                                     ("truncation", self.truncation, ("penalty", "mask", "none")),
                                     ("reward_source", self.reward_source, REWARD_SOURCES)]:
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if self.group_size < 2:
            raise ValueError("group_size must be at least 2: the group is the baseline")
        if min(self.iterations, self.prompts_per_batch, self.minibatch_size) <= 0:
            raise ValueError("iterations, prompts_per_batch and minibatch_size must be positive")
        if self.temperature <= 0:
            raise ValueError("temperature must be positive (sampling, not greedy, for RL)")
        if self.cliprange_low < 0 or self.cliprange_high < 0 or self.kl_coef < 0:
            raise ValueError("clip ranges and kl_coef must be >= 0")
        if not 0 <= self.overlong_cache < self.max_new_tokens:
            raise ValueError("overlong_cache must be in [0, max_new_tokens)")

    @classmethod
    def fast(cls, **overrides) -> "GRPOConfig":
        base = dict(iterations=8, prompts_per_batch=4, group_size=4, minibatch_size=8,
                    max_new_tokens=24, overlong_cache=4, eval_interval=4,
                    eval_prompts=FAST_EVAL_PROMPTS)
        base.update(overrides)
        return cls(**base)


# ==============================================================================================
# the algorithm: pure functions on (P, G) rewards and (B, T) tensors of the response tokens


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
    # >>> exercise: chapter=8 difficulty=2 minutes=15
    # hint: statistics along each row: .mean(dim=1, keepdim=True) and .std(dim=1,
    #       keepdim=True) are (P, 1) and broadcast against the (P, G) rewards
    # hint: torch.std of one sample is nan (n - 1 = 0), and round-off / eps is not 0: compare
    #       each row with its first entry for all_equal, then torch.where(all_equal, 0.0, ...)
    # hint: scale="std": (r - mean) / (std + eps); scale="none": r - mean
    if scale not in ("std", "none"):
        raise ValueError(f"scale must be 'std' or 'none', got {scale!r}")
    centered = rewards - rewards.mean(dim=1, keepdim=True)  # (P, G)
    if scale == "std" and rewards.size(1) > 1:  # std of one sample is nan (n - 1 = 0)
        centered = centered / (rewards.std(dim=1, keepdim=True) + eps)
    all_equal = (rewards == rewards[:, :1]).all(dim=1, keepdim=True)  # (P, 1)
    return torch.where(all_equal, 0.0, centered)  # exactly 0, not round-off / eps
    # <<< exercise


def rloo_advantages(rewards):
    """REINFORCE leave-one-out: r_i minus the mean of the other K - 1 rewards of its row.

    rewards: (P, K) with K >= 2 (else ValueError). Returns (P, K); equals
    K / (K - 1) * (r_i - mean of the row).
    """
    # >>> exercise: chapter=8 difficulty=1 minutes=10
    # hint: the sum of the others is the row's sum minus r_i
    K = rewards.size(-1)
    if K < 2:
        raise ValueError(f"RLOO needs at least 2 responses per prompt (K = {K}): the baseline "
                         f"of one response is the mean of the others")
    others = (rewards.sum(dim=1, keepdim=True) - rewards) / (K - 1)  # (P, K)
    return rewards - others
    # <<< exercise


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
    # >>> exercise: chapter=8 difficulty=2 minutes=20
    # hint: torch.where(mask, per_token_loss, 0.0), not a multiplication: nan * 0 is nan
    # hint: every count you divide by may be 0 (an empty response, an empty batch):
    #       .clamp(min=1) it; GRPO's mean over responses counts only those with a token
    # hint: token-mean: x.sum() / n_tokens; seq-mean-token-mean: the mean, over the rows with
    #       a token, of x.sum(1) / lengths; seq-mean-token-sum-norm: x.sum() / (B * max_len)
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
    # <<< exercise


def k3_kl(logprobs, ref_logprobs):
    """Per-token k3 estimate of KL(pi || pi_ref) (Schulman 2020) for tokens sampled from pi:
    with d = ref_logprobs - logprobs, exp(d) - d - 1 >= 0, and 0 exactly where the two
    log-probs agree. (B, T) -> (B, T)."""
    # >>> exercise: chapter=8 difficulty=1 minutes=5
    d = ref_logprobs - logprobs  # log(pi_ref / pi)
    return torch.exp(d) - d - 1
    # <<< exercise


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
    # >>> exercise: chapter=8 difficulty=2 minutes=15
    # hint: one advantage per response, (B,): advantages.unsqueeze(1) is (B, 1) and broadcasts
    #       over its tokens; detach old_logprobs
    # hint: rho_t = exp(logprobs_t - old_logprobs_t); clip it with torch.clamp(rho, 1 -
    #       cliprange_low, 1 + cliprange_high); torch.maximum keeps the larger loss
    # hint: loss_t = max(-A rho_t, -A clip(rho_t, 1 - cliprange_low, 1 + cliprange_high));
    #       clipped = the clipped loss > the unclipped one
    A = advantages.unsqueeze(1)  # (B, 1): broadcast over the response's tokens
    ratio = torch.exp(logprobs - old_logprobs.detach())  # (B, T)
    unclipped = -A * ratio
    clipped = -A * torch.clamp(ratio, 1.0 - cliprange_low, 1.0 + cliprange_high)
    return torch.maximum(unclipped, clipped), clipped > unclipped
    # <<< exercise


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
    # >>> exercise: chapter=8 difficulty=2 minutes=15
    # hint: call your clipped_token_loss, k3_kl and aggregate_loss: this exercise wires them
    # hint: masked_mean(x, mask) (from ppo.py) under torch.no_grad() gives each statistic;
    #       clipped at the upper bound = clipped & (advantages.unsqueeze(1) > 0)
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
    # <<< exercise


def overlong_penalty(lengths, ended, max_len, cache):
    """DAPO's soft overlong penalty (B,) for responses of `lengths` tokens (B,) in a budget of
    max_len: 0 up to max_len - cache tokens, then a ramp down to -1 at max_len; -1 for a
    response that never ended (it ran out of tokens). cache = 0: only that -1."""
    lengths = lengths.float()
    ramp = (max_len - cache - lengths) / cache if cache else torch.zeros_like(lengths)
    return torch.where(ended, ramp.clamp(-1.0, 0.0), -1.0)


def equal_reward_groups(rewards, tol=1e-6):
    """(P, G) -> (P,) bool: the groups whose rewards are all equal (within tol): their
    advantages are 0 and dynamic sampling drops them."""
    return (rewards.max(dim=1).values - rewards.min(dim=1).values) <= tol


def advantages_of(rewards, kind):
    """(P, G) rewards -> (P, G) advantages of `kind`: "grpo", "dr_grpo" or "rloo"."""
    if kind == "grpo":
        return group_advantages(rewards, "std")
    if kind == "dr_grpo":
        return group_advantages(rewards, "none")
    if kind == "rloo":
        return rloo_advantages(rewards)
    raise ValueError(f"advantage must be one of {ADVANTAGES}, got {kind!r}")


# ==============================================================================================
# the GRPO loop, independent of the world: prompts in, a reward function, a policy out


def shape_rewards(scores, logprobs, ref_logprobs, ro, cfg: GRPOConfig):
    """The rewards the advantages are computed from, and the mask of the tokens trained on.

    scores: (B,) of the reward source; logprobs, ref_logprobs: (B, R) of the rollout `ro`.
    Returns (outcome (B,): scores with the truncation penalty, reward (B,): the outcome minus
    the KL when it is folded into the reward, loss_mask (B, R))."""
    loss_mask = ro.mask
    outcome = scores
    if cfg.truncation == "penalty":
        outcome = scores + overlong_penalty(ro.mask.sum(1), ro.ended, cfg.max_new_tokens,
                                            cfg.overlong_cache)
    elif cfg.truncation == "mask":  # DAPO's overlong filtering: no gradient from cut answers
        loss_mask = ro.mask * ro.ended.unsqueeze(1).float()
    reward = outcome
    if cfg.kl_in == "reward":  # RLOO / RLHF: r - beta * sum_t (log pi - log pi_ref)
        reward = outcome - cfg.kl_coef * torch.where(ro.mask.bool(), logprobs - ref_logprobs,
                                                     0.0).sum(1)
    return outcome, reward, loss_mask


def grpo_update(policy: GPT, optimizer, ro, rows, advantages, old_logprobs, ref_logprobs,
                loss_mask, cfg: GRPOConfig, generator) -> dict:
    """ppo_epochs passes of minibatches over the responses `rows` (a (N,) index tensor);
    advantages: (B,), one per response. Returns lists of per-step statistics."""
    kl_coef = cfg.kl_coef if cfg.kl_in == "loss" else 0.0
    stats = {"policy/clipfrac": [], "policy/clipfrac_high": [], "policy/approxkl": [],
             "val/ratio": [], "loss/policy": [], "objective/k3": []}
    for _ in range(cfg.ppo_epochs):
        perm = rows[torch.randperm(len(rows), generator=generator).to(rows.device)]
        for s in range(0, len(perm), cfg.minibatch_size):
            idx = perm[s: s + cfg.minibatch_size]
            mb = take(ro, idx)  # trimmed to its longest response
            R = mb.response.size(1)
            logprobs, _, _ = score_responses(policy, mb, cfg.temperature)  # (b, R)
            old = old_logprobs[idx, :R]
            loss, info = grpo_loss(logprobs, old, ref_logprobs[idx, :R], advantages[idx],
                                   loss_mask[idx, :R], cfg.cliprange_low, cfg.cliprange_high,
                                   kl_coef, cfg.loss_aggregation, cfg.max_new_tokens)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            optimizer.step()
            with torch.no_grad():
                log_ratio = logprobs - old
                stats["policy/clipfrac"].append(info["clipfrac"].item())
                stats["policy/clipfrac_high"].append(info["clipfrac_high"].item())
                stats["objective/k3"].append(info["k3"].item())
                stats["policy/approxkl"].append(0.5 * masked_mean(log_ratio ** 2, mb.mask).item())
                stats["val/ratio"].append(masked_mean(log_ratio.exp(), mb.mask).item())
                stats["loss/policy"].append(loss.item())
    return stats


def grpo_loop(policy: GPT, ref: GPT, reward_fn, sample_prompts, cfg: GRPOConfig, pad_id: int,
              end_id: int, on_iteration=None, desc="grpo"):
    """Train `policy` in place. reward_fn(rollout) -> scores (B,); sample_prompts(n, rng) ->
    list of prompt id lists. on_iteration(it, stats, rollout) is called after each update.
    Returns the list of per-iteration stats (TRL's metric names)."""
    device = policy.lm_head.weight.device
    g = torch.Generator().manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    policy.eval()  # dropout off: log-probs must not change between passes
    ref.eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=0.0)
    P, G = cfg.prompts_per_batch, cfg.group_size
    history = []
    bar = progress(range(cfg.iterations), desc=desc)
    for it in bar:
        # ---- 1. rollout: G responses to each of P prompts; rows p*G .. p*G + G - 1 ----
        prompts = sample_prompts(P, rng)
        ro = rollout(policy, [p for p in prompts for _ in range(G)], pad_id, end_id, cfg, g)
        with torch.no_grad():
            # ---- 2. score: the reward source, the policy and the reference ----
            logprobs, entropy, _ = score_responses(policy, ro, cfg.temperature)  # (B, R)
            ref_logprobs, _, _ = score_responses(ref, ro, cfg.temperature)
            scores = reward_fn(ro).to(device).float()  # (B,)
            outcome, reward, loss_mask = shape_rewards(scores, logprobs, ref_logprobs, ro, cfg)
            # ---- 3. one advantage per response, relative to its group ----
            advantages = advantages_of(reward.view(P, G), cfg.advantage).reshape(-1)  # (B,)
            equal = equal_reward_groups(outcome.view(P, G))  # (P,)
            keep = ~equal if cfg.dynamic_sampling else torch.ones_like(equal)
            rows = keep.repeat_interleave(G).nonzero().squeeze(1)  # responses trained on
        # ---- 4. clipped policy-gradient epochs (no value model) ----
        stats = grpo_update(policy, optimizer, ro, rows, advantages, logprobs, ref_logprobs,
                            loss_mask, cfg, g) if len(rows) else {}
        # ---- 5. statistics ----
        kl = torch.where(ro.mask.bool(), logprobs - ref_logprobs, 0.0).sum(1).mean().item()
        row = {k: sum(v) / len(v) for k, v in stats.items() if v}
        row.update({"iteration": it, "objective/kl": kl, "objective/scores": outcome.mean().item(),
                    "objective/entropy": torch.where(ro.mask.bool(), entropy, 0.0).sum(1)
                    .mean().item(),
                    "reward_std": outcome.view(P, G).std(dim=1).mean().item(),
                    "frac_reward_zero_std": equal.float().mean().item(),
                    "policy/ended": ro.ended.float().mean().item(),
                    "response_length": ro.mask.sum(1).mean().item()})
        row.update(lengths_by_advantage(ro.mask.sum(1), advantages, rows))
        history.append(row)
        tracking.log(row, it)
        bar.set_postfix(score=f"{row['objective/scores']:.2f}", kl=f"{kl:.2f}")
        if on_iteration is not None:
            on_iteration(it, row, ro)
    bar.close()
    return history


def lengths_by_advantage(lengths, advantages, rows) -> dict:
    """Mean length (tokens) of the trained responses `rows` whose advantage is positive and of
    those whose advantage is negative: Dr. GRPO's length bias shows as the second growing (a
    long wrong answer is punished less per token when each response is averaged over its own
    length). lengths, advantages: (B,); a side with no response is left out."""
    out = {}
    for name, side in (("response_length/adv_pos", advantages[rows] > 0),
                       ("response_length/adv_neg", advantages[rows] < 0)):
        if side.any():
            out[name] = lengths[rows][side].float().mean().item()
    return out


# ==============================================================================================
# the stage: the world's prompts, three reward sources, gold evaluation


def make_reward_fn(source: str, rm, tokenizer, world):
    """reward_fn(rollout) -> (B,) scores for `source`: the reward model (normalised on SFT
    samples), the verifier (None, for a family it cannot judge, scores 0: such a group has
    all-equal rewards and teaches nothing but the KL term) or the gold reward."""
    if source == "reward_model":
        return lambda ro: rm.normalized(ro.ids, ro.attention)
    task_of = {tuple(tokenizer.encode_prompt(t.prompt)): t for t in world.tasks("train")}

    def judge(ro):
        scores = []
        for ids, attention, response in zip(ro.ids.tolist(), ro.attention.tolist(),
                                            ro.response.tolist()):
            prompt = tuple(i for i, a in zip(ids[: ro.prompt_len], attention) if a)
            task = task_of[prompt]
            text, ended = tokenizer.decode_response(response)
            if source == "verifier":
                scores.append(world_lib.verify_task(task, text) or 0.0)
            else:
                scores.append(world_lib.gold_breakdown(task, text, ended)["total"])
        return torch.tensor(scores)

    return judge


def train(cfg: GRPOConfig, out_dir: str | Path, device: str = "cpu", log=print,
          stage: str = "grpo", reward_stage: str = "reward") -> dict:
    """GRPO from the SFT model against cfg.reward_source; evaluated with the gold reward."""
    from . import evaluate, plots
    from .ppo import evaluate_during_training, rl_start

    out_dir = Path(out_dir)
    dev = pick_device(device)
    set_seed(cfg.seed)

    with timer() as elapsed:
        # the SFT model (trained here, no value head), its frozen copy, the frozen reward model
        start = rl_start(out_dir, dev, reward_stage)
        policy, ref, rm, tokenizer, world = (start.sft_model, start.ref, start.rm,
                                             start.tokenizer, start.world)
        reward_fn = make_reward_fn(cfg.reward_source, rm, tokenizer, world)
        sample_prompts = start.sample_prompts

        eval_tasks = evaluate.eval_tasks(cfg.eval_prompts, world)
        curve = {"iteration": [], "gold": [], "proxy": [], "kl": [], "success": [],
                 "length": []}
        samples_over_training = []

        def evaluate_now(it):
            ev, proxy = evaluate_during_training(policy, ref, rm, tokenizer, eval_tasks, cfg, it,
                                                 curve, samples_over_training)
            lengths = [len(r["response_ids"]) for r in ev["responses"]]  # tokens, <|end|> too
            curve["length"].append(sum(lengths) / len(lengths))  # on the same held-out prompts
            return ev, proxy

        def on_iteration(it, row, ro):
            if (it + 1) % cfg.eval_interval == 0 and it + 1 < cfg.iterations:
                evaluate_now(it + 1)

        sft_eval, _ = evaluate_now(0)
        with timed("training"):  # (the stage's time split: rollouts count as sampling, and
            #                          evaluations as evaluation, utils.TimeSplit)
            history = grpo_loop(policy, ref, reward_fn, sample_prompts, cfg, tokenizer.pad_id,
                                tokenizer.end_id, on_iteration, desc=stage)
        final_eval, _ = evaluate_now(cfg.iterations)
        save_checkpoint(policy.checkpoint(train_config=asdict(cfg)), out_dir / stage / "model.pt")

    metrics = policy_metrics(final_eval, sft_eval, curve)
    metrics.update({
        "reward_source": cfg.reward_source, "seconds": elapsed(), "curve": curve,
        "samples_over_training": samples_over_training,
        "samples": evaluate.side_by_side(eval_tasks, {"sft": sft_eval, stage: final_eval}),
        "config": asdict(cfg), "history": history})
    write_json(metrics, out_dir / stage / "metrics.json")
    plots.grpo_training(history, curve, out_dir / stage / "training.png")
    log(f"{stage} ({cfg.reward_source}): gold {sft_eval['gold_reward_mean']:.2f} (sft) -> "
        f"{metrics['gold_reward_mean']:.2f}, KL {metrics['kl_to_ref']:.2f} nats, win rate vs "
        f"SFT {metrics['win_rate_vs_sft']:.0%} ± {metrics['win_rate_vs_sft_se']:.0%}; "
        f"{metrics['seconds']:.0f} s")
    return metrics


def policy_metrics(final_eval: dict, sft_eval: dict, curve: dict) -> dict:
    """The keys every policy reports, each mean with its standard error (suffix _se)."""
    from .evaluate import error_bars, win_rate

    return {
        "gold_reward_mean": final_eval["gold_reward_mean"],
        "proxy_reward_mean": curve["proxy"][-1],
        "kl_to_ref": curve["kl"][-1],
        "win_rate_vs_sft": win_rate(final_eval["gold"], sft_eval["gold"]),
        "task_success_rate": final_eval["task_success_rate"],
        # gold_reward_mean_se, task_success_rate_se, kl_to_ref_se, win_rate_vs_sft_se
        **error_bars(final_eval, versus=sft_eval),
        "end_rate": final_eval["end_rate"],
        "per_family": final_eval["per_family"],
        "sft_gold_reward_mean": sft_eval["gold_reward_mean"],
    }


def load_policy(out_dir: str | Path, device="cpu", stage="grpo") -> GPT:
    return load_stage_model(out_dir, stage, device)
