"""The reward model: a learned stand-in for the human expert, trained on preference labels.

Human-preference alignment starts by asking people which of two (or K) responses is better;
the Bradley-Terry model (1952) turns those choices into a score. If people prefer a to b with
probability

    P(a > b) = sigmoid(r(a) - r(b)),

then a network r_phi can be fitted by maximum likelihood: minimise -log sigmoid(r(chosen) -
r(rejected)) over labelled pairs (Ouyang et al. 2022, eq. 1; Stiennon et al. 2020). A ranking
of K responses gives C(K, 2) pairs; InstructGPT puts all pairs of one prompt in one batch
element, so each response needs one forward pass, not one per pair. One optimisation step on a
batch of rankings is `reward_step`; the stage (`train`) collects the rankings, fits, evaluates
and reports.

The reward model is the SFT model with its language-model head replaced by a scalar head, and
its score is read at the last real token of the response (never at padding, which carries no
information about the response). It is only a proxy: it learns the annotators' noise and biases
(here, a taste for longer answers) and knows nothing about responses unlike those it was
trained on, which RL will find.

The preference data comes from the preferences stage (minialign/preferences.py): rankings of
SFT samples by a simulated labeller, in a JSONL file that can hold your own labels instead.

    python -m minialign reward [--fast] [--out runs/default]
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from . import dist, tracking
from . import world as world_lib
from .model import ScalarHeadGPT
from .preferences import (batch_probabilities, batch_rankings, encode_pair, load_rankings,
                          pairs_of)
from .tokenizer import Tokenizer
from .utils import (cosine_lr, length_grouped_batches, load_checkpoint, pick_device, progress,
                    read_json, right_pad, save_checkpoint, set_seed, time_as, timed, timer,
                    write_json)


@dataclass
class RewardConfig:
    preferences: str = "preferences"  # the stage whose rankings it learns from (preferences_ai:
    #                                   the AI judge's, for RLAIF)
    max_prompts: int = 0  # learn from the first max_prompts rankings only (0: all of them)
    loss: str = "ranking"  # "ranking" (all C(k,2) pairs per prompt) or "pairs" (one random pair)
    # "labels": fit the annotator's sampled rankings (what any real project has).
    # "probabilities": fit its exact P(i > j) instead, as if every pair had been labelled by
    # infinitely many annotators: a diagnostic that takes label noise away and leaves what the
    # trunk can learn and carry over to new prompts.
    targets: str = "labels"
    epochs: int = 2
    batch_size: int = 16  # prompts per step (so batch_size * k sequences)
    # Trunk learning rate: under SFT's peak (1e-3), since the trunk starts from SFT and already
    # knows the world. At 3e-5 it hardly moved in two epochs (62.5% held-out agreement, rank
    # correlation 0.32 with gold); at 3e-4 it reaches 66.0% and 0.52 in the same time, against
    # a 70.1% ceiling.
    lr: float = 3e-4
    head_lr: float = 3e-3  # the scalar head starts at zero and has everything to learn
    weight_decay: float = 0.0
    micro_batch_size: int = 0  # prompts per forward pass (gradient accumulation); 0: the batch
    seed: int = 0

    def __post_init__(self):
        if self.max_prompts < 0:
            raise ValueError("max_prompts must be 0 (all) or positive")
        if self.loss not in ("ranking", "pairs"):
            raise ValueError("loss must be 'ranking' or 'pairs'")
        if self.targets not in ("labels", "probabilities"):
            raise ValueError("targets must be 'labels' or 'probabilities'")
        if self.targets == "probabilities" and self.loss != "ranking":
            raise ValueError("targets='probabilities' goes with loss='ranking'")

    @classmethod
    def fast(cls, **overrides) -> "RewardConfig":
        base = dict(epochs=1, batch_size=16)
        base.update(overrides)
        return cls(**base)


# ==============================================================================================
# the algorithm: losses, reading the score, accuracy


def bradley_terry_loss(chosen_rewards, rejected_rewards, margin=None):
    """Pairwise preference loss: mean over pairs of -log sigmoid(r_chosen - r_rejected - margin).

    chosen_rewards, rejected_rewards: (B,) scores of the preferred and the other response.
    margin: optional (B,) how much better the chosen one was rated (Llama 2); None for 0.
    Returns a scalar. (-log sigmoid(x) is F.logsigmoid's negative: stable for any x.)
    """
    # >>> exercise: chapter=4 difficulty=1 minutes=10
    diff = chosen_rewards - rejected_rewards  # (B,)
    if margin is not None:
        diff = diff - margin
    return -F.logsigmoid(diff).mean()
    # <<< exercise


def ranking_loss(rewards, mask=None):
    """K-wise ranking loss (InstructGPT): rewards (B, K) of each prompt's K responses, best
    first. Returns a 0-dim tensor in the graph.

    The idea: a ranking of K responses holds C(K, 2) comparisons, one per pair, the response
    ranked higher being the chosen one. Each pair costs what `bradley_terry_loss` charges it;
    a prompt's loss is the mean over its pairs (a prompt with many responses does not outweigh
    the others), and the batch's is the mean over prompts. With K = 2 this equals
    `bradley_terry_loss(rewards[:, 0], rewards[:, 1])`; it must stay finite for rewards
    hundreds apart.

    mask: optional (B, K) bool, False for missing responses (a prompt with fewer than K), whose
    rewards hold junk; pairs involving a missing response are left out, and each prompt that
    still has a pair counts once (a prompt left with a single response has no pair and is left
    out).
    """
    # >>> exercise: chapter=4 difficulty=2 minutes=20
    # hint: every pair i < j at once: torch.triu_indices(K, K, offset=1) gives the two index
    #       lists, and rewards[:, i] - rewards[:, j] is (B, C(K, 2))
    # hint: with a mask, a pair counts when both its responses do (mask[:, i] & mask[:, j]); a
    #       prompt's mean is the sum over its valid pairs / their number (clamped to 1), and
    #       only the prompts with a valid pair enter the mean over prompts
    # hint: loss = mean over prompts of (mean over pairs i < j of -F.logsigmoid(r_i - r_j))
    B, K = rewards.shape
    i, j = torch.triu_indices(K, K, offset=1)  # all pairs i < j: response i ranked above j
    pair_losses = -F.logsigmoid(rewards[:, i] - rewards[:, j])  # (B, C(K,2))
    if mask is None:
        return pair_losses.mean(dim=1).mean()
    valid = (mask[:, i] & mask[:, j]).to(rewards.dtype)  # (B, C(K,2))
    per_prompt = (pair_losses * valid).sum(1) / valid.sum(1).clamp(min=1)  # (B,)
    has_pair = valid.sum(1) > 0
    return per_prompt[has_pair].mean()
    # <<< exercise


def probability_ranking_loss(rewards, probs, mask=None):
    """The ranking loss with soft targets: rewards (B, K); probs (B, K, K) with probs[b, i, j]
    the annotator's P(i > j), read for i < j. Each pair's loss is the cross-entropy
    -(p log sigmoid(r_i - r_j) + (1 - p) log sigmoid(r_j - r_i)), averaged per prompt and
    then over prompts as in `ranking_loss` (which it equals when every p is 1)."""
    B, K = rewards.shape
    i, j = torch.triu_indices(K, K, offset=1)
    diff = rewards[:, i] - rewards[:, j]  # (B, C(K,2))
    pair_losses = F.binary_cross_entropy_with_logits(diff, probs[:, i, j], reduction="none")
    valid = torch.ones_like(diff) if mask is None else (mask[:, i] & mask[:, j]).to(diff.dtype)
    per_prompt = (pair_losses * valid).sum(1) / valid.sum(1).clamp(min=1)  # (B,)
    return per_prompt[valid.sum(1) > 0].mean()


def last_token_scores(values, padding_mask):
    """Read one score per sequence at its last real token.

    values: (B, T) the scalar head's output at every position; padding_mask: (B, T) bool, True
    on real tokens (padding may be on the left, the right, or both). Returns (B,).
    """
    # >>> exercise: chapter=4 difficulty=1 minutes=10
    T = values.size(1)
    positions = torch.arange(T, device=values.device).expand_as(values)  # (B, T)
    last = torch.where(padding_mask, positions, -1).max(dim=1).values  # (B,) last real index
    return values.gather(1, last.unsqueeze(1)).squeeze(1)  # (B,)
    # <<< exercise


def preference_accuracy(chosen_rewards, rejected_rewards) -> float:
    """Fraction of pairs where the chosen response scores strictly higher (a tie is wrong)."""
    # >>> exercise: chapter=4 difficulty=1 minutes=5
    return (chosen_rewards > rejected_rewards).float().mean().item()
    # <<< exercise


# ==============================================================================================
# the reward model


class RewardModel(torch.nn.Module):
    """ScalarHeadGPT plus the normalisation applied before RL (SFT samples: mean 0, std 1)."""

    def __init__(self, net: ScalarHeadGPT, mean: float = 0.0, std: float = 1.0):
        super().__init__()
        self.net = net
        self.mean, self.std = mean, std

    def forward(self, idx, padding_mask):
        """idx, padding_mask: (B, T) -> raw scores (B,) at each sequence's last real token."""
        return last_token_scores(self.net(idx, padding_mask), padding_mask)

    def normalized(self, idx, padding_mask):
        return (self(idx, padding_mask) - self.mean) / self.std

    @torch.no_grad()
    def score_texts(self, tokenizer: Tokenizer, prompts, responses, ended=None, batch_size=64,
                    normalize=True) -> list[float]:
        """Scores of (prompt, response) texts; `ended[i]` False leaves out the <|end|> token.
        Each distinct text is scored once (the pairs of a ranking share their answers)."""
        device = self.net.head.weight.device
        self.eval()
        ended = ended if ended is not None else [True] * len(prompts)
        rows = {}  # token ids -> row among the distinct sequences
        which = [rows.setdefault(tuple(encode_pair(tokenizer, p, r, e)), len(rows))
                 for p, r, e in zip(prompts, responses, ended)]
        seqs = list(rows)
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))  # batches of equal lengths
        scores = [0.0] * len(seqs)
        fn = self.normalized if normalize else self
        for s in range(0, len(order), batch_size):
            idx = order[s: s + batch_size]
            ids, mask = right_pad([list(seqs[i]) for i in idx], tokenizer.pad_id)
            for i, score in zip(idx, fn(ids.to(device), mask.to(device)).tolist()):
                scores[i] = score
        return [scores[j] for j in which]

    def checkpoint(self, **extra):
        return self.net.checkpoint(mean=self.mean, std=self.std, **extra)

    @classmethod
    def from_checkpoint(cls, ckpt) -> "RewardModel":
        return cls(ScalarHeadGPT.from_checkpoint(ckpt), ckpt["mean"], ckpt["std"])


# ==============================================================================================
# one update of the reward model


def reward_step(rm, optimizer, ids, padding_mask, slots, lrs, grad_clip):
    """One optimisation step of the reward model on a batch of rankings; returns the batch's
    loss and accuracy.

    rm: a RewardModel; `rm(ids, padding_mask)` returns one score per row, (B*K,).
    optimizer: an AdamW over its parameters in two groups, the trunk then the scalar head,
    each with its own learning rate. ids, padding_mask: (B*K, T) as `batch_rankings` makes
    them: row b*K + j holds answer j of ranking b (answers best first), right-padded, the mask
    True on real tokens. slots: (B, K) bool, False where ranking b has no answer j (a prompt
    with fewer than K answers); such a row holds a placeholder, whose score means nothing.
    lrs: this step's learning rate of each parameter group, in the optimizer's order (from the
    schedule: the optimizer was built with others). grad_clip: the largest norm allowed for the
    gradient of all the parameters together, before the update.
    Returns (loss, accuracy) before the update, as Python floats: the batch's `ranking_loss`
    (each prompt's answers ranked as labelled, missing ones left out, a mean per prompt and
    then over prompts), and the fraction of prompts whose top answer scores strictly above the
    second (`preference_accuracy`).

    The idea: pretraining's step (chapter 2) with the ranking loss: the gradient of this
    batch's Bradley-Terry loss, and of nothing else, moves the parameters one AdamW step
    downhill. Edge cases: `.grad` still holds the previous step's gradients; the model may
    arrive in eval mode (a validation pass sets it) but trains in training mode; the gradient
    is clipped before the update, and the optimizer steps exactly once.
    """
    # >>> exercise: chapter=4 difficulty=2 minutes=20
    rm.train()  # dropout on: the validation pass leaves the model in eval mode
    for group, lr in zip(optimizer.param_groups, lrs):  # the trunk's, then the head's
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)  # backward adds to .grad: drop the last step's
    scores = rm(ids, padding_mask).view(slots.shape)  # (B, K): row b*K + j -> [b, j]
    loss = ranking_loss(scores, slots)  # every labelled pair i < j of each prompt
    loss.backward()
    torch.nn.utils.clip_grad_norm_(rm.parameters(), grad_clip)  # before the step it limits
    optimizer.step()
    # both numbers are the batch's before the update: scores were computed before the step
    accuracy = preference_accuracy(scores[:, 0].detach(), scores[:, 1].detach())
    return loss.item(), accuracy
    # <<< exercise


# ==============================================================================================
# scoring the pairs of the preference data


@torch.no_grad()
def pair_scores(rm: RewardModel, tokenizer, pairs, normalize=False):
    """The reward model's scores (N,) of the chosen and (N,) of the rejected answers of pairs
    (preferences.Pair)."""
    prompts = [p.prompt for p in pairs]
    chosen = rm.score_texts(tokenizer, prompts, [p.chosen for p in pairs],
                            [p.chosen_ended for p in pairs], normalize=normalize)
    rejected = rm.score_texts(tokenizer, prompts, [p.rejected for p in pairs],
                              [p.rejected_ended for p in pairs], normalize=normalize)
    return torch.tensor(chosen), torch.tensor(rejected)


def spearman(x, y) -> float:
    """Rank correlation (ties get their average rank)."""
    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(v):
            j = i
            while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for t in range(i, j + 1):
                r[order[t]] = (i + j) / 2
            i = j + 1
        return torch.tensor(r)

    rx, ry = ranks(list(x)), ranks(list(y))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return float((rx * ry).sum() / (rx.norm() * ry.norm()).clamp(min=1e-12))


def pearson(x, y) -> float:
    """Linear correlation of two equally long lists of numbers."""
    x, y = torch.tensor(list(x), dtype=torch.float64), torch.tensor(list(y), dtype=torch.float64)
    x, y = x - x.mean(), y - y.mean()  # (N,) each
    return float((x * y).sum() / (x.norm() * y.norm()).clamp(min=1e-12))


def center_per_prompt(values, prompts) -> list[float]:
    """Each value minus the mean of the values that share its prompt. A reward model is trained
    on comparisons within a prompt only, so its level on one prompt against another is
    arbitrary; centred, scores keep only what the loss constrains: the order within a prompt."""
    values, prompts = list(values), list(prompts)
    if len(values) != len(prompts):
        raise ValueError(f"{len(values)} values for {len(prompts)} prompts")
    groups = {}
    for v, p in zip(values, prompts):
        groups.setdefault(p, []).append(float(v))
    return [float(v) - sum(groups[p]) / len(groups[p]) for v, p in zip(values, prompts)]


def misordered_pairs(prompts, rm_scores, gold) -> tuple[list[tuple[int, int]], int]:
    """Where a reward model disagrees with the gold reward in the terms of its own loss: the
    pairs of answers to the same prompt that it orders the other way. Returns the pairs (i, j),
    i the answer the gold reward prefers, with rm_scores[i] <= rm_scores[j], worst first (the
    largest gold gap, then the largest score gap), and the number of same-prompt pairs whose
    gold differs (ties in gold are no pair; a tie in score counts as misordered)."""
    prompts, rm_scores, gold = list(prompts), list(rm_scores), list(gold)
    if not len(prompts) == len(rm_scores) == len(gold):
        raise ValueError("prompts, rm_scores and gold must be equally long")
    by_prompt = {}
    for i, p in enumerate(prompts):
        by_prompt.setdefault(p, []).append(i)
    pairs = [(i, j) for idx in by_prompt.values() for i in idx for j in idx if gold[i] > gold[j]]
    wrong = [(i, j) for i, j in pairs if rm_scores[i] <= rm_scores[j]]
    wrong.sort(key=lambda ij: (gold[ij[0]] - gold[ij[1]], rm_scores[ij[1]] - rm_scores[ij[0]]),
               reverse=True)
    return wrong, len(pairs)


def held_out_samples(val_rankings) -> list[tuple[str, str, bool]]:
    """(prompt, response, ended) of every answer in the held-out rankings: the SFT samples the
    reward stage normalises its scores on and evaluates on, in the order of the lists in its
    metrics["scores"]."""
    return [(rec.prompt, r, e) for rec in val_rankings for r, e in zip(rec.responses, rec.ended)]


# ==============================================================================================
# the stage: collect the rankings, fit the reward model, normalise and evaluate it, report


def train(cfg: RewardConfig, out_dir: str | Path, device: str = "cpu", log=print,
          stage: str = "reward") -> dict:
    """Fit the reward model to the preference stage's rankings; measure it against the truth."""
    from .sft import load_model as load_sft

    out_dir = Path(out_dir)
    dev = pick_device(device)
    set_seed(cfg.seed)
    world = world_lib.default_world()

    with timer() as elapsed:
        # ---- collect: the rankings, and the SFT model the reward model starts from ----
        sft_model, tokenizer = load_sft(out_dir, dev)
        train_rankings, val_rankings = load_data(out_dir, cfg)
        val_pairs = pairs_of(val_rankings)
        rm = RewardModel(ScalarHeadGPT.from_gpt(sft_model.eval())).to(dev)  # SFT + scalar head
        del sft_model

        # ---- fit: the ranking loss, one batch of prompts per step ----
        history, val_scores = fit(rm, tokenizer, train_rankings, val_pairs, cfg, dev, stage)
        train_seconds = elapsed()
        if not dist.is_main():  # plumbing: rank 0 evaluates and writes; the others are done
            return {"world_size": dist.world_size()}

        # ---- evaluate: normalised on SFT samples, then against labels and the gold reward ----
        time_as("evaluation")
        sft_texts, raw = normalize_on_sft_samples(rm, tokenizer, val_rankings)
        gold = [world.gold_reward(p, r, e) for p, r, e in sft_texts]
        metrics = evaluate_reward_model(rm, tokenizer, val_pairs, sft_texts, raw, gold, world,
                                        val_scores)
        time_as("other")
        save_checkpoint(rm.checkpoint(train_config=asdict(cfg)), out_dir / stage / "model.pt")

    # ---- report: metrics.json, the figures, one line ----
    return report(metrics, cfg, out_dir, stage, train_rankings, val_pairs, history,
                  train_seconds, elapsed(), log)


def fit(rm: RewardModel, tokenizer, train_rankings, val_pairs, cfg: RewardConfig, dev,
        stage: str) -> tuple[dict, tuple]:
    """The training loop: cfg.epochs passes over the rankings, cfg.batch_size prompts per
    `reward_step`, the held-out pairs' loss and accuracy before the first step and after each
    epoch. Returns the curves (the history) and the last validation's raw (chosen, rejected)
    scores of the held-out pairs, which the evaluation reuses."""
    rng = random.Random(cfg.seed)  # the order of the batches (and the 'pairs' baseline's picks)
    k = max(len(r.responses) for r in train_rankings)  # answers per prompt, at most
    optimizer = make_reward_optimizer(rm, cfg)
    rm_ddp = dist.wrap(rm)  # plumbing: DDP under torchrun, the reward model otherwise
    max_steps = cfg.epochs * ((len(train_rankings) + cfg.batch_size - 1) // cfg.batch_size)
    history = {"step": [], "train_loss": [], "train_accuracy": [], "val_step": [],
               "val_loss": [], "val_accuracy": []}
    val_scores = validate(rm, tokenizer, val_pairs, history, step=0)
    time_as("training")  # (the stage's time split, utils.TimeSplit)
    # the ranking loss on the labels, one process: reward_step; the 'pairs' baseline, the
    # 'probabilities' diagnostic, torchrun and micro-batches write the same update out below
    written_out = (cfg.loss != "ranking" or cfg.targets != "labels" or dist.is_distributed()
                   or cfg.micro_batch_size)
    lengths = [max(len(encode_pair(tokenizer, r.prompt, x)) for x in r.responses)
               for r in train_rankings]  # batches of similar lengths: little padding
    step, grad_clip = 0, 1.0
    bar = progress(total=max_steps, desc=stage)
    for _ in range(cfg.epochs):
        for batch_idx in length_grouped_batches(lengths, cfg.batch_size, rng):
            batch = [train_rankings[i] for i in batch_idx]
            if len(batch) < dist.world_size():
                continue  # plumbing (torchrun only): a last batch too small to share out
            lrs = [cosine_lr(step, max_steps, group["base_lr"], max(1, max_steps // 20))
                   for group in optimizer.param_groups]  # the trunk's and the head's
            picks = random_pairs(batch, rng) if cfg.loss == "pairs" else None
            if written_out:
                # reward_step's update written out (so that the library holds no other
                # callable copy of the exercise): this rank's prompts, in micro-batches, the
                # metrics averaged over ranks; the loss of cfg.loss and cfg.targets
                for group, lr in zip(optimizer.param_groups, lrs):
                    group["lr"] = lr
                optimizer.zero_grad(set_to_none=True)
                out = dist.forward_backward(
                    rm_ddp, dist.shard(list(range(len(batch)))),
                    lambda rows: rankings_batch_loss(rm_ddp, tokenizer, [batch[i] for i in rows],
                                                     k, cfg, picks and [picks[i] for i in rows]),
                    micro_batch_size=cfg.micro_batch_size)
                torch.nn.utils.clip_grad_norm_(rm.parameters(), grad_clip)
                optimizer.step()
                loss, accuracy = out["loss"], out["accuracy"]
            else:
                ids, mask, slots = batch_rankings(tokenizer, batch, k)  # (B*K, T), (B, K)
                loss, accuracy = reward_step(rm, optimizer, ids.to(dev), mask.to(dev),
                                             slots.to(dev), lrs, grad_clip)
            history["step"].append(step)
            history["train_loss"].append(loss)
            history["train_accuracy"].append(accuracy)
            tracking.log({"train/loss": loss, "train/accuracy": accuracy}, step)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")
            step += 1
        if dist.is_main():  # rank 0 evaluates
            val_scores = validate(rm, tokenizer, val_pairs, history, step)
    bar.close()
    time_as("other")
    return history, val_scores


def load_data(out_dir: Path, cfg: RewardConfig):
    """The training rankings (the first cfg.max_prompts of them, if set) and the held-out ones:
    the eval prompts, SFT samples only (the distribution RL will start from)."""
    train_rankings = load_rankings(out_dir, cfg.preferences, "train")
    if cfg.max_prompts:
        train_rankings = train_rankings[: cfg.max_prompts]
    return train_rankings, load_rankings(out_dir, cfg.preferences, "val")


def make_reward_optimizer(rm: RewardModel, cfg: RewardConfig):
    """AdamW with two learning rates: cfg.lr for the trunk, cfg.head_lr for the scalar head
    (each group keeps its "base_lr" for the cosine schedule)."""
    head = list(rm.net.head.parameters())
    trunk = [p for p in rm.parameters() if all(p is not h for h in head)]
    return torch.optim.AdamW([{"params": trunk, "lr": cfg.lr, "base_lr": cfg.lr},
                              {"params": head, "lr": cfg.head_lr, "base_lr": cfg.head_lr}],
                             weight_decay=cfg.weight_decay)


def rankings_batch_loss(rm, tokenizer, records, k: int, cfg: RewardConfig, picks):
    """The loss of some prompts' rankings (a mean over prompts) and the batch's accuracy (is the
    top-ranked answer scored above the second?). rm: the reward model (DDP-wrapped or not)."""
    device = next(rm.parameters()).device
    ids, mask, slots = batch_rankings(tokenizer, records, k)
    scores = rm(ids.to(device), mask.to(device)).view(len(records), k)  # (B, K)
    slots = slots.to(device)
    if cfg.loss == "pairs":  # one random labelled pair per prompt
        loss, chosen, rejected = _one_pair_per_prompt(scores, picks)
    else:
        if cfg.targets == "probabilities":  # the diagnostic: no label noise
            probs = batch_probabilities(records, k).to(device)  # (B, K, K)
            loss = probability_ranking_loss(scores, probs, slots)
        else:
            loss = ranking_loss(scores, slots)
        chosen, rejected = scores[:, 0], scores[:, 1]
    return loss, {"accuracy": preference_accuracy(chosen.detach(), rejected.detach())}


def random_pairs(batch, rng) -> list[list[int]]:
    """The 'pairs' baseline's random pair [i, j] (i ranked above j) of each ranking, drawn for
    the whole batch so that every rank's random stream stays the same."""
    return [sorted(rng.sample(range(len(r.responses)), 2)) for r in batch]


def validate(rm: RewardModel, tokenizer, val_pairs, history: dict, step: int):
    """Loss and accuracy on the held-out pairs, appended to `history` at `step`; leaves the
    model in training mode. Returns the pairs' raw (chosen, rejected) scores, (P,) each."""
    rm.eval()
    with timed("evaluation"):
        c, r = pair_scores(rm, tokenizer, val_pairs)
    history["val_step"].append(step)
    history["val_loss"].append(bradley_terry_loss(c, r).item())
    history["val_accuracy"].append(preference_accuracy(c, r))
    tracking.log({"eval/loss": history["val_loss"][-1],
                  "eval/accuracy": history["val_accuracy"][-1]}, step)
    rm.train()
    return c, r


def normalize_on_sft_samples(rm: RewardModel, tokenizer, val_rankings):
    """Set rm.mean and rm.std from its raw scores of SFT samples (the held-out rankings'
    answers): mean 0, std 1 before RL, so that the KL coefficient and the critic's zero start
    mean the same whatever scale the Bradley-Terry fit happened to pick. Returns the
    (prompt, response, ended) triples and their raw scores."""
    rm.eval()
    sft_texts = held_out_samples(val_rankings)
    raw = rm.score_texts(tokenizer, *map(list, zip(*sft_texts)), normalize=False)
    raw_t = torch.tensor(raw)
    rm.mean, rm.std = raw_t.mean().item(), raw_t.std().clamp(min=1e-6).item()
    return sft_texts, raw


def report(metrics: dict, cfg: RewardConfig, out_dir: Path, stage: str, train_rankings,
           val_pairs, history: dict, train_seconds: float, seconds: float, log) -> dict:
    """The evaluation's metrics with the data, the timings and the curves: written to
    DIR/STAGE/metrics.json with the figures, one line logged."""
    from . import plots

    stage_dir = out_dir / stage
    metrics.update({
        "n_train_prompts": len(train_rankings),
        "n_train_pairs": len(pairs_of(train_rankings)),
        "n_val_pairs": len(val_pairs),
        "labeler": read_json(out_dir / cfg.preferences / "metrics.json")["labeler"],
        "world_size": dist.world_size(),  # processes that trained it (torchrun); 1 otherwise
        "train_seconds": train_seconds,
        "seconds": seconds,
        "config": asdict(cfg),
        "history": history,
    })
    write_json(metrics, stage_dir / "metrics.json")
    plots.reward_training(history, stage_dir / "training.png")
    plots.calibration(metrics["calibration"], stage_dir / "calibration.png")
    log(f"{stage}: val accuracy {metrics['val_accuracy']:.1%} vs Bayes ceiling "
        f"{metrics['bayes_accuracy']:.1%}; rank correlation with gold "
        f"{metrics['gold_correlation']:.2f}; {metrics['seconds']:.0f} s")
    return metrics


def _one_pair_per_prompt(scores, picks):
    """The 'pairs' baseline: from each prompt's ranking keep one pair, picks[b] = (i, j) with
    response i ranked above j (drawn at random by the loop)."""
    chosen, rejected = [], []
    for b in range(scores.size(0)):
        i, j = picks[b]
        chosen.append(scores[b, i])
        rejected.append(scores[b, j])
    chosen, rejected = torch.stack(chosen), torch.stack(rejected)
    return bradley_terry_loss(chosen, rejected), chosen, rejected


@torch.no_grad()
def evaluate_reward_model(rm, tokenizer, val_pairs, sft_texts, raw_scores, gold, world,
                          val_scores=None) -> dict:
    """Accuracy against labels and against the Bayes ceiling; agreement with the gold reward;
    calibration; length sensitivity. val_scores: the held-out pairs' raw (chosen, rejected)
    scores by these weights, if already computed (the last validation's); else scored here."""
    c, r = val_scores if val_scores is not None else pair_scores(rm, tokenizer, val_pairs)
    probs = [p.p_chosen for p in val_pairs]
    if None in probs:
        raise ValueError("the held-out rankings have no labeller probabilities: the reward "
                         "stage measures itself against the Bayes ceiling, which needs them")
    labels_agree = preference_accuracy(c, r)  # labels = the sampled ranking (chosen first)
    # the gold truth: does the RM order each pair as the gold reward does (ties left out)?
    gold_c = [world.gold_reward(p.prompt, p.chosen, p.chosen_ended) for p in val_pairs]
    gold_r = [world.gold_reward(p.prompt, p.rejected, p.rejected_ended) for p in val_pairs]
    decided = [(a > b, ci > ri) for a, b, ci, ri in zip(gold_c, gold_r, c.tolist(), r.tolist())
               if a != b]
    gold_pair_acc = sum(x == y for x, y in decided) / max(len(decided), 1)
    # calibration: predicted P(chosen > rejected) = sigmoid(rc - rr) vs the labeler's true p
    pred = torch.sigmoid(c - r).tolist()
    bins = [[] for _ in range(10)]
    for q, p in zip(pred, probs):
        bins[min(int(q * 10), 9)].append(p)
    calibration = [{"predicted": (i + 0.5) / 10, "observed": sum(b) / len(b), "n": len(b)}
                   for i, b in enumerate(bins) if b]
    words = [len(world_lib.words_of(t[1])) for t in sft_texts]
    per_family = {}
    for fam in world_lib.FAMILIES:
        idx = [i for i, t in enumerate(sft_texts) if world.task(t[0]).family == fam]
        if idx:
            per_family[fam] = {
                "rm_mean": sum((raw_scores[i] - rm.mean) / rm.std for i in idx) / len(idx),
                "gold_mean": sum(gold[i] for i in idx) / len(idx),
                "gold_correlation": spearman([raw_scores[i] for i in idx],
                                             [gold[i] for i in idx])}
    return {
        "val_accuracy": labels_agree,
        "bayes_accuracy": world_lib.bayes_accuracy(probs),
        "bayes_accuracy_on_labels": sum(1.0 for p in probs if p > 0.5) / len(probs)
        + 0.5 * sum(1.0 for p in probs if p == 0.5) / len(probs),
        "gold_pair_accuracy": gold_pair_acc,
        "gold_correlation": spearman(raw_scores, gold),
        "length_correlation": spearman(raw_scores, words),
        "gold_length_correlation": spearman(gold, words),
        "rm_mean": rm.mean, "rm_std": rm.std,
        "calibration": calibration,
        "per_family": per_family,
        "scores": {"rm": [(s - rm.mean) / rm.std for s in raw_scores], "gold": gold,
                   "words": words},
    }


def load_reward_model(out_dir: str | Path, device="cpu", stage="reward") -> RewardModel:
    ckpt = load_checkpoint(Path(out_dir) / stage / "model.pt", map_location=pick_device(device))
    return RewardModel.from_checkpoint(ckpt).to(pick_device(device)).eval()
