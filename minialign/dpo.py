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
the reference log-probs computed once. One update is `dpo_step`: both responses of every
pair scored in one forward pass, the loss against the reference's log-probs, one AdamW step.
IPO (Azar et al. 2023) replaces -log sigmoid by a squared loss towards a fixed margin
1 / (2 beta), which does not push the margin to infinity.

Which pairs: a ranking of K answers implies K(K - 1)/2 of them. DPO learns from those the
ranking puts at least two places apart (`DPOConfig.min_rank_gap`): a labeller's order of two
neighbours is the noisiest (it agrees with the gold reward's 67% of the time here, against 77%
and 86% two and three places apart); the half of the pairs left, at twice the learning rate,
trains DPO at least as well in half the time. The reward model, whose ranking loss sees every
pair of a ranking in one pass, keeps them all.

The log-probs are those of the distribution the policy samples from: the logits divided by
the sampling temperature (0.6 in every stage, `evaluate.TEMPERATURE`), as PPO's ratio and KL
penalty score them. So DPO's beta regularises the same distribution PPO's KL does, and the
implicit reward is measured where the samples come from (`DPOConfig.logprob_temperature`; 1.0
scores the untempered model instead, for comparison).

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

from . import dist, tracking
from . import world as world_lib
from .evaluate import FAST_EVAL_PROMPTS, TEMPERATURE
from .model import GPT, logprobs_of_responses, sequence_logprobs
from .preferences import encode_pair, load_rankings, pairs_of, read_rankings
from .utils import (EVAL_SEED_OFFSET, cosine_lr, length_grouped_batches, load_stage_model,
                    make_optimizer, pick_device, progress, right_pad, save_checkpoint,
                    set_seed, time_as, timed, timer, write_json)


@dataclass
class DPOConfig:
    beta: float = 0.3  # strength of the KL regularisation (smaller: further from the reference)
    loss_type: str = "sigmoid"  # "sigmoid" (DPO) or "ipo"
    epochs: int = 1
    # Train on the pairs a ranking puts at least this many places apart (a ranking too short
    # for that gives its best and worst answers); 1: every pair. Labels of neighbours are noisy:
    # in the default rankings of 4 answers, the labeller's order of two neighbours agrees with
    # the gold reward's 66% of the time (ties left out), of answers two or three places apart
    # 77% and 86%. With 2, DPO learns from 3 of the 6 pairs of a ranking of 4, the clearer half.
    min_rank_gap: int = 2
    max_pairs: int = 0  # preference pairs trained on, a random subset (0: all of them)
    batch_size: int = 32  # pairs per step
    # On the clearer half of the pairs (min_rank_gap 2), over five seeds of the default run:
    # lr 1e-4 won 71.0% against SFT on average (gold 0.639), lr 5e-5 68.4% (0.619); every pair
    # at 5e-5, twice the steps, 69.9% (0.620).
    lr: float = 1e-4
    temperature: float = TEMPERATURE  # sampling temperature of the evaluation
    logprob_temperature: float = TEMPERATURE  # the temperature log-probs are scored at (policy
    #   and reference alike): the sampling temperature, as in PPO's ratio and KL, so that beta
    #   regularises the distribution PPO's KL does; 1.0 scores the untempered model instead
    grad_clip: float = 1.0  # the largest gradient norm allowed before each update
    max_new_tokens: int = 64  # response budget when sampling (the longest good answers use ~45)
    eval_samples: int = 1
    eval_prompts: int = 0  # held-out prompts evaluated on (evaluate.eval_tasks; 0: all 270)
    seed: int = 0
    preferences: str = "preferences"  # the stage whose rankings it learns from
    #                                   (preferences_ai: the AI judge's, for RLAIF)
    micro_batch_size: int = 0  # pairs per forward pass (gradient accumulation); 0: the batch
    data: str = ""  # your own preferences instead: a JSONL file in the preferences stage's
    #                 format (minialign/preferences.py), 10% of its prompts held out

    def __post_init__(self):
        if self.beta <= 0:
            raise ValueError("beta must be positive")
        if self.loss_type not in ("sigmoid", "ipo"):
            raise ValueError("loss_type must be 'sigmoid' or 'ipo'")
        if self.logprob_temperature <= 0:
            raise ValueError("logprob_temperature must be positive")
        if self.min_rank_gap < 1:
            raise ValueError("min_rank_gap must be at least 1 (1: every pair)")

    @classmethod
    def fast(cls, **overrides) -> "DPOConfig":
        base = dict(epochs=1, batch_size=16, max_new_tokens=24, eval_prompts=FAST_EVAL_PROMPTS)
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
    # >>> exercise: chapter=6 difficulty=2 minutes=15
    # hint: detach the reference's log-probs first; the margin h is (policy_chosen -
    #       ref_chosen) - (policy_rejected - ref_rejected), one per pair
    # hint: F.logsigmoid is stable for any margin; the rewards are implicit_rewards(policy,
    #       ref, beta) of each side
    # hint: sigmoid: losses = -F.logsigmoid(beta * h); ipo: losses = (h - 1 / (2 * beta)) ** 2
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
    # >>> exercise: chapter=6 difficulty=2 minutes=25
    policy.eval()  # no dropout: the same function of the weights as the reference scored with
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)  # backward adds to .grad: drop the last step's
    logits, _ = policy(ids, padding_mask=padding_mask)  # (2B, T, V): one pass, both sides
    # the logits at t predict the token at t + 1; tempered, as the reference's were scored
    logps = sequence_logprobs(logits[:, :-1] / temperature, ids[:, 1:], response_mask[:, 1:])
    n = ids.size(0) // 2  # (2B,) logps: the chosen rows, then the rejected
    losses, chosen_rewards, rejected_rewards = dpo_loss(
        logps[:n], logps[n:], ref_chosen_logps, ref_rejected_logps, beta, loss_type)
    loss = losses.mean()  # over the B pairs
    loss.backward()
    torch.nn.utils.clip_grad_norm_(policy.parameters(), grad_clip)
    optimizer.step()
    return loss.item(), chosen_rewards, rejected_rewards
    # <<< exercise


# ==============================================================================================
# plumbing: batches of pairs, one forward pass for chosen and rejected together


def encode_pairs(tokenizer, pairs):
    """Pairs (preferences.Pair) -> ids (2B, T), padding mask (2B, T), response mask (2B, T):
    chosen rows first.

    The response mask marks the tokens to score: every response token and <|end|>, aligned with
    `ids` (position t is scored by the logits at t - 1), as `model.logprobs_of_responses` reads it.
    """
    seqs, starts = [], []
    for side in ("chosen", "rejected"):
        for p in pairs:
            prompt_len = len(tokenizer.encode_prompt(p.prompt))
            seqs.append(encode_pair(tokenizer, p.prompt, getattr(p, side),
                                    getattr(p, f"{side}_ended")))
            starts.append(prompt_len)
    ids, mask = right_pad(seqs, tokenizer.pad_id)
    response = mask.clone()
    for i, s in enumerate(starts):
        response[i, :s] = False
    return ids, mask, response


@torch.no_grad()
def reference_logps(ref: GPT, tokenizer, pairs, batch_size, device,
                    temperature: float = TEMPERATURE):
    """The reference's log-probs of every pair, computed once (no gradients, no re-computation
    during training), at `temperature` (DPOConfig.logprob_temperature: the sampling
    temperature, as PPO's KL; 1: the untempered model). Returns (chosen (N,), rejected (N,))
    on `device`.

    Each distinct answer is scored once (`evaluate.response_logprobs`): a ranking of K answers
    gives K(K - 1)/2 pairs made of only K answers, a third of the rows for K = 4."""
    from .evaluate import response_logprobs

    def answer_ids(p, side):  # encode_pair's tokens after the prompt's (<|end|> if it ended)
        full = encode_pair(tokenizer, p.prompt, getattr(p, side), getattr(p, f"{side}_ended"))
        return full[len(tokenizer.encode_prompt(p.prompt)):]

    answers = [answer_ids(p, side) for side in ("chosen", "rejected") for p in pairs]  # 2N
    logps = torch.tensor(response_logprobs(ref, tokenizer, [p.prompt for p in pairs] * 2,
                                           answers, temperature, batch_size))  # (2N,)
    return logps[: len(pairs)].to(device), logps[len(pairs):].to(device)


def load_pairs(out_dir: Path, preferences_stage: str = "preferences", split: str = "train"):
    """The pairs (preferences.Pair) implied by a preferences stage's rankings."""
    return pairs_of(load_rankings(out_dir, preferences_stage, split))


@torch.no_grad()
def implicit_accuracy(policy, ref, tokenizer, pairs, beta, batch_size=64,
                      temperature: float = TEMPERATURE) -> float:
    """Held-out accuracy of the implicit reward: how often r(chosen) > r(rejected), the
    log-probs scored at `temperature` (the one DPO trained with)."""
    chosen, rejected = pair_implicit_rewards(policy, ref, tokenizer, pairs, beta, batch_size,
                                             temperature)
    return int((chosen > rejected).sum()) / max(len(pairs), 1)


# ==============================================================================================
# the implicit reward against the other judges of a response: the reward model, the gold reward


@torch.no_grad()
def response_implicit_rewards(policy, ref, ids, padding_mask, response_mask, beta,
                              temperature: float = TEMPERATURE):
    """DPO's implicit reward beta * (log pi(y|x) - log pi_ref(y|x)) of every row of a batch.

    ids, padding_mask, response_mask: (B, T) as `encode_pairs` makes them; both models score the
    responses through `model.logprobs_of_responses` at `temperature` (the one DPO trained at,
    DPOConfig.logprob_temperature). Returns (B,), detached.

    Only differences between two responses to the same prompt mean anything: the reward this
    recovers is the true one minus beta log Z(x), a constant per prompt (notebook 06, section 1).
    """
    policy_logps = logprobs_of_responses(policy, ids, padding_mask, response_mask,
                                         temperature)  # (B,)
    ref_logps = logprobs_of_responses(ref, ids, padding_mask, response_mask, temperature)
    return implicit_rewards(policy_logps, ref_logps, beta)


@torch.no_grad()
def pair_implicit_rewards(policy, ref, tokenizer, pairs, beta, batch_size=64,
                          temperature: float = TEMPERATURE):
    """The implicit rewards of the chosen (N,) and of the rejected (N,) responses of `pairs`
    (preferences.Pair), both models scoring each distinct answer once (`reference_logps`), in
    batches of `batch_size` answers, on the CPU."""
    policy_c, policy_r = reference_logps(policy, tokenizer, pairs, batch_size, "cpu", temperature)
    ref_c, ref_r = reference_logps(ref, tokenizer, pairs, batch_size, "cpu", temperature)
    return implicit_rewards(policy_c, ref_c, beta), implicit_rewards(policy_r, ref_r, beta)


def reward_views(policy, ref, rm, tokenizer, pairs, beta, temperature) -> dict:
    """Three judges of the same preference pairs: DPO's implicit reward (`pair_implicit_rewards`
    at `temperature`), the reward model's score (reward.pair_scores) and the gold reward.
    Returns {name: (chosen (N,), rejected (N,))}."""
    from .reward import pair_scores

    w = world_lib.default_world()
    gold = [torch.tensor([w.gold_reward(p.prompt, getattr(p, side), getattr(p, f"{side}_ended"))
                          for p in pairs]) for side in ("chosen", "rejected")]
    return {"DPO implicit reward": pair_implicit_rewards(policy, ref, tokenizer, pairs, beta,
                                                         temperature=temperature),
            "reward model": pair_scores(rm, tokenizer, pairs),
            "gold": tuple(gold)}


def order_agreement(a, b) -> tuple[float, int]:
    """How often two judges order the pairs the same way. a, b: (chosen (N,), rejected (N,)) of
    each judge. Pairs either judge ties are left out. Returns (share of the pairs counted that
    both order alike, pairs counted); nan of 0 pairs."""
    da, db = a[0] - a[1], b[0] - b[1]  # (N,) each: the margin of every pair
    counted = (da != 0) & (db != 0)
    n = int(counted.sum())
    same = ((da > 0) == (db > 0))[counted]
    return (same.float().mean().item() if n else float("nan")), n


def compare_judges(views: dict) -> list[dict]:
    """Every two judges of `reward_views` side by side: how often they order a pair alike
    (`order_agreement`), and their rank correlation over all responses (raw scores: the
    implicit reward's per-prompt constant included) and over the pairs' margins (chosen minus
    rejected: the constant cancels)."""
    from .reward import spearman

    names, rows = list(views), []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            agree, n = order_agreement(views[a], views[b])
            raw = spearman(torch.cat(views[a]).tolist(), torch.cat(views[b]).tolist())
            margins = spearman((views[a][0] - views[a][1]).tolist(),
                               (views[b][0] - views[b][1]).tolist())
            rows.append({"a": a, "b": b, "agreement": agree, "pairs": n,
                         "spearman_responses": raw, "spearman_margins": margins})
    return rows


def pair_lengths(tokenizer, pairs):
    """Response lengths in tokens (<|end|> included, as `mean_response_length` counts them) of
    the chosen (N,) and the rejected (N,) responses of `pairs`."""
    def n_tokens(p, side):
        full = encode_pair(tokenizer, p.prompt, getattr(p, side), getattr(p, f"{side}_ended"))
        return len(full) - len(tokenizer.encode_prompt(p.prompt))

    return (torch.tensor([n_tokens(p, "chosen") for p in pairs], dtype=torch.float),
            torch.tensor([n_tokens(p, "rejected") for p in pairs], dtype=torch.float))


# ==============================================================================================
# the stage: collect the pairs, fit the policy, evaluate it against SFT, report


HISTORY_KEYS = ["loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies",
                "rewards/margins", "logps/chosen", "logps/rejected"]  # TRL's metric names


def train(cfg: DPOConfig, out_dir: str | Path, device: str = "cpu", log=print,
          stage: str = "dpo") -> dict:
    """DPO from the SFT model on the preference stage's pairs; gold evaluation."""
    from .sft import load_model as load_sft

    out_dir = Path(out_dir)
    dev = pick_device(device)
    set_seed(cfg.seed)

    with timer() as elapsed:
        # ---- collect: the pairs, the policy, and its frozen reference's log-probs ----
        policy, tokenizer = load_sft(out_dir, dev)
        ref = copy.deepcopy(policy).eval().requires_grad_(False)
        policy.eval()  # no dropout: log-probs must match the reference's at the start
        pairs, val_pairs = load_data(out_dir, cfg)
        time_as("training")  # (the stage's time split, utils.TimeSplit)
        ref_chosen, ref_rejected = reference_logps(ref, tokenizer, pairs, 64, dev,
                                                   cfg.logprob_temperature)

        # ---- fit: the DPO loss, one batch of pairs per step ----
        history = fit(policy, tokenizer, pairs, ref_chosen, ref_rejected, cfg, dev, stage)
        time_as("other")
        train_seconds = elapsed()
        if not dist.is_main():  # plumbing: rank 0 evaluates and writes; the others are done
            return {"world_size": dist.world_size()}
        policy.eval()
        save_checkpoint(policy.checkpoint(train_config=asdict(cfg)), out_dir / stage / "model.pt")

        # ---- evaluate: gold reward and KL on held-out prompts, the implicit reward's accuracy ----
        with timed("evaluation"):
            metrics = evaluate_against_sft(policy, ref, tokenizer, val_pairs, cfg, dev)

    return report(metrics, cfg, out_dir / stage, stage, len(pairs), history, train_seconds,
                  elapsed(), log)


def fit(policy, tokenizer, pairs, ref_chosen, ref_rejected, cfg: DPOConfig, device,
        stage: str = "dpo") -> dict:
    """cfg.epochs passes over the pairs, one `dpo_step` per batch of similar lengths; returns
    the history of TRL's metrics (HISTORY_KEYS) per step. ref_chosen, ref_rejected: (N,)."""
    optimizer = make_optimizer(policy, cfg.lr)
    ddp_policy = dist.wrap(policy)  # plumbing: DDP under torchrun, the policy otherwise
    max_steps = cfg.epochs * ((len(pairs) + cfg.batch_size - 1) // cfg.batch_size)
    history = {k: [] for k in ["step", *HISTORY_KEYS]}
    rng = random.Random(cfg.seed)
    lengths = [max(len(encode_pair(tokenizer, p.prompt, p.chosen)),
                   len(encode_pair(tokenizer, p.prompt, p.rejected))) for p in pairs]
    step = 0
    bar = progress(total=max_steps, desc=stage)
    for _ in range(cfg.epochs):
        for idx in length_grouped_batches(lengths, cfg.batch_size, rng):
            if len(idx) < dist.world_size():
                continue  # plumbing (torchrun only): a last batch too small to share out
            lr = cosine_lr(step, max_steps, cfg.lr, max(1, max_steps // 20))
            if dist.is_distributed() or cfg.micro_batch_size:
                # plumbing: dpo_step's update over this rank's pairs, in micro-batches, its
                # metrics averaged over all ranks (written out here, so that the library holds
                # no other callable copy of the exercise)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                optimizer.zero_grad(set_to_none=True)
                row = dist.forward_backward(
                    ddp_policy, dist.shard(idx),
                    lambda rows: pairs_loss(ddp_policy, tokenizer, [pairs[i] for i in rows],
                                            ref_chosen[rows], ref_rejected[rows], cfg),
                    micro_batch_size=cfg.micro_batch_size)
                torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip)
                optimizer.step()
            else:
                ids, mask, resp = encode_pairs(tokenizer, [pairs[i] for i in idx])
                loss, rc, rr = dpo_step(policy, optimizer, ids.to(device), mask.to(device),
                                        resp.to(device), ref_chosen[idx], ref_rejected[idx],
                                        cfg.beta, cfg.logprob_temperature, cfg.loss_type, lr,
                                        cfg.grad_clip)
                row = {"loss": loss, **pair_metrics(rc, rr, ref_chosen[idx], ref_rejected[idx],
                                                    cfg.beta)}
            history["step"].append(step)
            for k in HISTORY_KEYS:
                history[k].append(row[k])
            tracking.log({f"train/{k}": row[k] for k in HISTORY_KEYS}, step)
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.3f}", margin=f"{row['rewards/margins']:.2f}")
            step += 1
    bar.close()
    return history


def pair_metrics(chosen_rewards, rejected_rewards, ref_chosen, ref_rejected, beta) -> dict:
    """TRL's metrics of a batch from its implicit rewards (B,) each: means over the pairs. The
    policy's log-probs come back from the rewards: log pi = log pi_ref + r / beta."""
    return {"rewards/chosen": chosen_rewards.mean().item(),
            "rewards/rejected": rejected_rewards.mean().item(),
            "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean().item(),
            "rewards/margins": (chosen_rewards - rejected_rewards).mean().item(),
            "logps/chosen": (ref_chosen + chosen_rewards / beta).mean().item(),
            "logps/rejected": (ref_rejected + rejected_rewards / beta).mean().item()}


def load_data(out_dir: Path, cfg: DPOConfig):
    """The training pairs (those `cfg.min_rank_gap` apart, at most cfg.max_pairs of them, a
    random subset the same for every run) and the held-out ones (every pair: the implicit
    reward's accuracy is measured against all the labels): the preferences stage's, or those of
    your own file (cfg.data, 10% of its prompts held out)."""
    if cfg.data:
        from .own import split

        train_rankings, val_rankings = split(read_rankings(cfg.data), seed=cfg.seed)
    else:
        train_rankings = load_rankings(out_dir, cfg.preferences, "train")
        val_rankings = load_rankings(out_dir, cfg.preferences, "val")
    pairs, val_pairs = spread_pairs(train_rankings, cfg.min_rank_gap), pairs_of(val_rankings)
    if not pairs:
        raise ValueError(f"no preference pairs in {cfg.data or out_dir / cfg.preferences}")
    if 0 < cfg.max_pairs < len(pairs):  # the time budget: a subset, the same for every run
        pairs = random.Random(cfg.seed).sample(pairs, cfg.max_pairs)
    return pairs, val_pairs


def spread_pairs(rankings, min_gap: int = 1) -> list:
    """The pairs (preferences.Pair) of each ranking whose answers it ranks at least `min_gap`
    places apart; a ranking of K answers with K - 1 < min_gap gives its best and its worst
    (K = 2: its one pair). min_gap 1 gives every pair (`preferences.pairs_of`)."""
    out = []
    for ranking in rankings:
        gap = min(min_gap, len(ranking.responses) - 1)
        out += [pair for (i, j), pair in zip(ranking.index_pairs(), ranking.pairs())
                if j - i >= gap]
    return out


def pairs_loss(policy, tokenizer, pairs, ref_chosen, ref_rejected, cfg: DPOConfig):
    """The DPO loss of some pairs (a mean over pairs) and its metrics, for the loop's
    micro-batched (torchrun) update. ref_chosen, ref_rejected: (B,) the reference's log-probs
    of the pairs' answers."""
    device = next(policy.parameters()).device
    ids, mask, resp = encode_pairs(tokenizer, pairs)
    logps = logprobs_of_responses(policy, ids.to(device), mask.to(device), resp.to(device),
                                  cfg.logprob_temperature)  # (2B,) the chosen, then the rejected
    n = len(pairs)
    losses, rc, rr = dpo_loss(logps[:n], logps[n:], ref_chosen, ref_rejected, cfg.beta,
                              cfg.loss_type)
    return losses.mean(), pair_metrics(rc, rr, ref_chosen, ref_rejected, cfg.beta)


def evaluate_against_sft(policy, ref, tokenizer, val_pairs, cfg: DPOConfig, device) -> dict:
    """Gold reward, task success and KL to the reference (the SFT model) of the policy's
    samples on the held-out prompts, its win rate against SFT's, and the held-out accuracy of
    its implicit reward."""
    from . import evaluate

    eval_tasks = evaluate.eval_tasks(cfg.eval_prompts)
    kw = dict(n_samples=cfg.eval_samples, max_new_tokens=cfg.max_new_tokens,
              seed=cfg.seed + EVAL_SEED_OFFSET, temperature=cfg.temperature)
    dpo_eval = evaluate.evaluate_policy(policy, tokenizer, eval_tasks, **kw)
    sft_eval = evaluate.evaluate_policy(ref, tokenizer, eval_tasks, **kw)
    prompts = [t.prompt for t in dpo_eval["tasks"]]
    resp_ids = [r["response_ids"] for r in dpo_eval["responses"]]
    kl, dpo_eval["kl_per_response"] = evaluate.kl_to_reference(policy, ref, tokenizer, prompts,
                                                                resp_ids, cfg.temperature)
    return {
        "gold_reward_mean": dpo_eval["gold_reward_mean"],
        "task_success_rate": dpo_eval["task_success_rate"],
        "end_rate": dpo_eval["end_rate"],
        "kl_to_ref": kl,
        "win_rate_vs_sft": evaluate.win_rate(dpo_eval["gold"], sft_eval["gold"]),
        # gold_reward_mean_se, task_success_rate_se, kl_to_ref_se, win_rate_vs_sft_se
        **evaluate.error_bars(dpo_eval, versus=sft_eval),
        "implicit_reward_accuracy": implicit_accuracy(policy, ref, tokenizer, val_pairs,
                                                      cfg.beta,
                                                      temperature=cfg.logprob_temperature),
        "logprob_temperature": cfg.logprob_temperature,  # the one DPO scored log-probs at
        "response_length_mean": mean_response_length(dpo_eval),  # tokens, <|end|> included
        "sft_response_length_mean": mean_response_length(sft_eval),
        "per_family": dpo_eval["per_family"],
        "sft_gold_reward_mean": sft_eval["gold_reward_mean"],
        "samples": evaluate.side_by_side(eval_tasks, {"sft": sft_eval, "dpo": dpo_eval}),
    }


def mean_response_length(evaluation: dict) -> float:
    """Mean length in tokens (<|end|> included) of an `evaluate_policy`'s sampled responses:
    DPO's drift in length shows against the SFT model's."""
    lengths = [len(r["response_ids"]) for r in evaluation["responses"]]
    return sum(lengths) / max(len(lengths), 1)


def report(metrics: dict, cfg: DPOConfig, stage_dir: Path, stage: str, n_pairs: int,
           history: dict, train_seconds: float, seconds: float, log) -> dict:
    """The evaluation's metrics with the data, the timings and the curves: written to
    DIR/STAGE/metrics.json with the training figure, one line logged."""
    from . import plots

    metrics.update({
        "n_pairs": n_pairs,
        "world_size": dist.world_size(),  # processes that trained it (torchrun); 1 otherwise
        "train_seconds": train_seconds,
        "seconds": seconds,
        "config": asdict(cfg),
        "history": history,
    })
    write_json(metrics, stage_dir / "metrics.json")
    plots.dpo_training(history, stage_dir / "training.png")
    log(f"{stage}: gold {metrics['sft_gold_reward_mean']:.2f} (sft) -> "
        f"{metrics['gold_reward_mean']:.2f}, KL {metrics['kl_to_ref']:.2f} nats, win rate vs SFT "
        f"{metrics['win_rate_vs_sft']:.0%} ± {metrics['win_rate_vs_sft_se']:.0%}, held-out "
        f"implicit-reward accuracy "
        f"{metrics['implicit_reward_accuracy']:.0%}; {metrics['seconds']:.0f} s")
    return metrics


def load_policy(out_dir: str | Path, device="cpu", stage="dpo") -> GPT:
    return load_stage_model(out_dir, stage, device)
