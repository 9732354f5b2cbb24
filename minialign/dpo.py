"""DPO: preference alignment without a reward model and without reinforcement learning.

Rafailov et al. 2023. The KL-regularised RLHF objective

    max_pi  E[r(x, y)] - beta * KL(pi || pi_ref)

has a closed-form optimum pi*(y|x) = pi_ref(y|x) exp(r(x, y) / beta) / Z(x). Turned around,
any policy defines an *implicit reward* r(x, y) = beta * log(pi(y|x) / pi_ref(y|x)) + beta log Z(x).
Put that into the Bradley-Terry likelihood of a preference pair and Z(x) cancels, because
both responses share the prompt:

    loss = -log sigmoid( beta * [ (log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l)) ] )

So the policy is fitted to the preference pairs directly, like a classifier: two models in
memory (policy and frozen reference) instead of RLHF's four, no sampling during training, and
the reference log-probs computed once. IPO (Azar et al. 2023) replaces -log sigmoid by a
squared loss towards a fixed margin 1 / (2 beta), which does not push the margin to infinity.

What the logs show (TRL's names): rewards/chosen and rewards/rejected are the implicit rewards
beta * (log pi - log pi_ref); rewards/margins their difference; logps/* the sequence
log-probs. The chosen reward often *falls*: DPO widens the margin, and both log-probs can drop
while it does. That is not a bug (notebook 06 shows it).

    python -m minialign dpo [--fast] [--out runs/default]
"""

from __future__ import annotations

import copy
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from . import world as world_lib
from .evaluate import TEMPERATURE
from .model import GPT, sequence_logprobs
from .reward import encode_pair, pairs_of
from .utils import (cosine_lr, length_grouped_batches, load_stage_model,
                    make_optimizer, pick_device, progress, read_json, right_pad, save_checkpoint,
                    set_seed, timer, write_json)


@dataclass
class DPOConfig:
    beta: float = 0.3  # strength of the KL regularisation (smaller: further from the reference)
    loss_type: str = "sigmoid"  # "sigmoid" (DPO) or "ipo"
    epochs: int = 1
    max_pairs: int = 0  # preference pairs trained on, a random subset (0: all of them)
    batch_size: int = 32  # pairs per step
    lr: float = 5e-5  # small: DPO on noisy labels drifts into degenerate text at 1e-4
    temperature: float = TEMPERATURE  # sampling temperature of the evaluation
    max_new_tokens: int = 64  # response budget when sampling (the longest good answers use ~45)
    eval_samples: int = 1
    seed: int = 0
    reward_stage: str = "reward"  # whose preference data to use (reward, or reward_ai for RLAIF)

    def __post_init__(self):
        if self.beta <= 0:
            raise ValueError("beta must be positive")
        if self.loss_type not in ("sigmoid", "ipo"):
            raise ValueError("loss_type must be 'sigmoid' or 'ipo'")

    @classmethod
    def fast(cls, **overrides) -> "DPOConfig":
        base = dict(epochs=1, batch_size=16, max_new_tokens=24)
        base.update(overrides)
        return cls(**base)


# ==============================================================================================
# the algorithm


def implicit_rewards(policy_logps, ref_logps, beta):
    """DPO's implicit reward beta * (log pi(y|x) - log pi_ref(y|x)), detached: it is a metric,
    never a path for gradients. policy_logps, ref_logps: (B,). Returns (B,)."""
    # >>> exercise: chapter=6 difficulty=1 minutes=5
    return (beta * (policy_logps - ref_logps)).detach()
    # <<< exercise


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
    # >>> exercise: chapter=6 difficulty=2 minutes=15
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
    # <<< exercise


# ==============================================================================================
# plumbing: batches of pairs, one forward pass for chosen and rejected together


def encode_pairs(tokenizer, pairs):
    """Pairs -> ids (2B, T), padding mask (2B, T), response mask (2B, T): chosen rows first.

    The response mask marks the tokens to score: every response token and <|end|>, aligned with
    `ids` (position t is scored by the logits at t - 1).
    """
    seqs, starts = [], []
    for side in ("chosen", "rejected"):
        for p in pairs:
            prompt_len = len(tokenizer.encode_prompt(p["prompt"]))
            seqs.append(encode_pair(tokenizer, p["prompt"], p[side], p[f"{side}_ended"]))
            starts.append(prompt_len)
    ids, mask = right_pad(seqs, tokenizer.pad_id)
    response = mask.clone()
    for i, s in enumerate(starts):
        response[i, :s] = False
    return ids, mask, response


def batch_logps(model: GPT, ids, mask, response):
    """Sequence log-probs (2B,) of the responses: sum over response tokens, prompt and padding
    masked out, with the usual shift (logits at t score token t + 1)."""
    logits, _ = model(ids, padding_mask=mask)
    return sequence_logprobs(logits[:, :-1], ids[:, 1:], response[:, 1:])


@torch.no_grad()
def reference_logps(ref: GPT, tokenizer, pairs, batch_size, device):
    """The reference's log-probs of every pair, computed once (no gradients, no re-computation
    during training)."""
    chosen, rejected = torch.zeros(len(pairs)), torch.zeros(len(pairs))
    order = sorted(range(len(pairs)),
                   key=lambda i: len(pairs[i]["chosen"]) + len(pairs[i]["rejected"]))
    for s in range(0, len(order), batch_size):
        idx = order[s: s + batch_size]  # similar lengths: little padding
        ids, mask, resp = encode_pairs(tokenizer, [pairs[i] for i in idx])
        lp = batch_logps(ref, ids.to(device), mask.to(device), resp.to(device)).cpu()
        chosen[idx], rejected[idx] = lp[: len(idx)], lp[len(idx):]
    return chosen.to(device), rejected.to(device)


def load_pairs(out_dir: Path, reward_stage: str, split: str):
    """The (prompt, chosen, rejected) pairs implied by the reward stage's rankings."""
    return pairs_of(read_json(out_dir / reward_stage / "preferences.json")[split])


@torch.no_grad()
def implicit_accuracy(policy, ref, tokenizer, pairs, beta, device, batch_size=64) -> float:
    """Held-out accuracy of the implicit reward: how often r(chosen) > r(rejected)."""
    hits = 0
    for s in range(0, len(pairs), batch_size):
        batch = pairs[s: s + batch_size]
        ids, mask, resp = encode_pairs(tokenizer, batch)
        args = (ids.to(device), mask.to(device), resp.to(device))
        pol, rf = batch_logps(policy, *args), batch_logps(ref, *args)
        n = len(batch)
        _, rc, rr = dpo_loss(pol[:n], pol[n:], rf[:n], rf[n:], beta)
        hits += int((rc > rr).sum())
    return hits / max(len(pairs), 1)


# ==============================================================================================
# the stage


def train(cfg: DPOConfig, out_dir: str | Path, device: str = "cpu", log=print,
          stage: str = "dpo") -> dict:
    """DPO from the SFT model on the reward stage's preference pairs; gold evaluation."""
    from . import evaluate, plots
    from .sft import load_model as load_sft

    out_dir = Path(out_dir)
    stage_dir = out_dir / stage
    dev = pick_device(device)
    set_seed(cfg.seed)
    world = world_lib.default_world()

    with timer() as elapsed:
        policy, tokenizer = load_sft(out_dir, dev)
        ref = copy.deepcopy(policy).eval().requires_grad_(False)
        policy.eval()  # no dropout: log-probs must match the reference's at the start
        pairs = load_pairs(out_dir, cfg.reward_stage, "train")
        val_pairs = load_pairs(out_dir, cfg.reward_stage, "val")
        if not pairs:
            raise ValueError(f"no preference pairs in {out_dir / cfg.reward_stage}")
        if 0 < cfg.max_pairs < len(pairs):  # the time budget: a subset, the same for every run
            pairs = random.Random(cfg.seed).sample(pairs, cfg.max_pairs)
        ref_chosen, ref_rejected = reference_logps(ref, tokenizer, pairs, 64, dev)

        optimizer = make_optimizer(policy, cfg.lr)
        steps_per_epoch = (len(pairs) + cfg.batch_size - 1) // cfg.batch_size
        max_steps = steps_per_epoch * cfg.epochs
        keys = ["loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies",
                "rewards/margins", "logps/chosen", "logps/rejected"]
        history = {k: [] for k in ["step", *keys]}
        rng = random.Random(cfg.seed)
        step = 0
        bar = progress(total=max_steps, desc=stage)
        lengths = [max(len(encode_pair(tokenizer, p["prompt"], p["chosen"])),
                       len(encode_pair(tokenizer, p["prompt"], p["rejected"]))) for p in pairs]
        for _ in range(cfg.epochs):
            for idx in length_grouped_batches(lengths, cfg.batch_size, rng):
                for group in optimizer.param_groups:
                    group["lr"] = cosine_lr(step, max_steps, cfg.lr, max(1, max_steps // 20))
                ids, mask, resp = encode_pairs(tokenizer, [pairs[i] for i in idx])
                logps = batch_logps(policy, ids.to(dev), mask.to(dev), resp.to(dev))  # (2B,)
                n = len(idx)
                losses, rc, rr = dpo_loss(logps[:n], logps[n:], ref_chosen[idx],
                                          ref_rejected[idx], cfg.beta, cfg.loss_type)
                loss = losses.mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
                optimizer.step()
                row = {"loss": loss.item(), "rewards/chosen": rc.mean().item(),
                       "rewards/rejected": rr.mean().item(),
                       "rewards/accuracies": (rc > rr).float().mean().item(),
                       "rewards/margins": (rc - rr).mean().item(),
                       "logps/chosen": logps[:n].mean().item(),
                       "logps/rejected": logps[n:].mean().item()}
                history["step"].append(step)
                for k in keys:
                    history[k].append(row[k])
                bar.update(1)
                bar.set_postfix(loss=f"{row['loss']:.3f}", margin=f"{row['rewards/margins']:.2f}")
                step += 1
        bar.close()
        train_seconds = elapsed()
        policy.eval()
        save_checkpoint(policy.checkpoint(train_config=asdict(cfg)), stage_dir / "model.pt")

        eval_tasks = world.tasks("eval")
        kw = dict(n_samples=cfg.eval_samples, max_new_tokens=cfg.max_new_tokens,
                  seed=cfg.seed + 1, temperature=cfg.temperature)
        dpo_eval = evaluate.evaluate_policy(policy, tokenizer, eval_tasks, **kw)
        sft_eval = evaluate.evaluate_policy(ref, tokenizer, eval_tasks, **kw)
        prompts = [t.prompt for t in dpo_eval["tasks"]]
        resp_ids = [r["response_ids"] for r in dpo_eval["responses"]]
        kl = evaluate.kl_from_samples(
            evaluate.response_logprobs(policy, tokenizer, prompts, resp_ids, cfg.temperature),
            evaluate.response_logprobs(ref, tokenizer, prompts, resp_ids, cfg.temperature))
        val_acc = implicit_accuracy(policy, ref, tokenizer, val_pairs, cfg.beta, dev)

    metrics = {
        "gold_reward_mean": dpo_eval["gold_reward_mean"],
        "task_success_rate": dpo_eval["task_success_rate"],
        "end_rate": dpo_eval["end_rate"],
        "kl_to_ref": kl,
        "win_rate_vs_sft": evaluate.win_rate(dpo_eval["gold"], sft_eval["gold"]),
        "implicit_reward_accuracy": val_acc,
        "per_family": dpo_eval["per_family"],
        "sft_gold_reward_mean": sft_eval["gold_reward_mean"],
        "n_pairs": len(pairs),
        "train_seconds": train_seconds,
        "seconds": elapsed(),
        "samples": evaluate.side_by_side(eval_tasks, {"sft": sft_eval, "dpo": dpo_eval}),
        "config": asdict(cfg),
        "history": history,
    }
    write_json(metrics, stage_dir / "metrics.json")
    plots.dpo_training(history, stage_dir / "training.png")
    log(f"{stage}: gold {sft_eval['gold_reward_mean']:.2f} (sft) -> "
        f"{dpo_eval['gold_reward_mean']:.2f}, KL {kl:.2f} nats, win rate vs SFT "
        f"{metrics['win_rate_vs_sft']:.0%}, held-out implicit-reward accuracy {val_acc:.0%}; "
        f"{metrics['seconds']:.0f} s")
    return metrics


def load_policy(out_dir: str | Path, device="cpu", stage="dpo") -> GPT:
    return load_stage_model(out_dir, stage, device)
