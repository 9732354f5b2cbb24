"""Process against outcome reward models, in miniature: which one picks the right answer?

A reward model can be taught from two kinds of labels about a worked solution:
    outcome  one label per solution: is the final answer right?            (an ORM)
    process  one label per step: is this step right?                        (a PRM)
Lightman et al. 2023 ("Let's Verify Step by Step") trained both on the same model and used
each to pick the best of N sampled solutions to MATH problems: the PRM picked right answers
more often than the ORM and than a majority vote over the N final answers (78.2% against
72.4% and 69.6% at N = 1860). Uesato et al. 2022 (GSM8K) found the two kinds of supervision
about as good at final answers, and process supervision better at getting the steps right too.

Here, in miniature, on the world's chained sums ("what is 3 plus 4 plus 5?" -> "3 plus 4 is 7.
7 plus 5 is 12. the answer is 12."):
  1. a generator policy: a tiny GPT trained from scratch (tokenizer included) on chained-sum
     demonstrations, a fraction of them flawed (world.chain_demonstrations), so that its
     samples are sometimes wrong, and sometimes right through a wrong step;
  2. labels on its samples from simulated annotators with known noise (world.StepAnnotator);
  3. two reward models on the policy's trunk (a scalar head, as reward.py builds its RM):
         ORM  the head read at the last token, binary cross-entropy on the outcome label;
         PRM  the head read at the last token of every step (its "."), binary cross-entropy on
              each step's label (the same loss: only where the labels sit differs);
     a PRM scores a solution by the product of its steps' probabilities of being right (the
     probability that every step is right, if the steps' errors are independent: what
     Lightman et al. used), or by their minimum (the weakest step: what a chain is worth);
  4. best-of-N on held-out problems: by PRM, by ORM, by majority vote, and the oracle
     (any right answer among the N): gold final-answer accuracy for N = 1 ... 64, with
     standard errors over problems, and the PRM-minus-ORM difference paired by problem.

What is simplified: steps are sentences of one addition each, so "a step is wrong" is exact
(world.check_chain), not a person's judgement; label noise is a symmetric flip at a known rate;
every step is labelled (PRM800K stopped at the first wrong one); no active learning of
convincing wrong answers; a few hundred held-out problems, not thousands. An extra PRM trained
on as many step labels as the ORM has outcome labels compares the two at equal labelling cost.

What it finds here (default config; DIR/prm/metrics.json has the numbers): the headline does
NOT reproduce at this scale. Majority vote wins by far, the ORM beats the PRM, and both reward
models pick *worse* answers as N grows past 2 to 4: with 64 samples to choose from, the one a
weak verifier likes best is more often a wrong one it misjudges (over-optimisation, as in
Gao et al. 2022). The PRM is the weaker verifier: its step accuracy is only a few points
above that of saying "right" to every step, far below the 90% its labels' noise allows
("diagnostics"): judging "a plus b is c" at one token asks a lot of a two-layer trunk whose
own sums are often wrong, and a wrong answer that skips a step has fewer factors in the
product (the minimum, which does not count steps, does a little better). The policy's slips are mostly independent between samples,
which is what majority vote needs. Lightman et al.'s verifiers were large models, fine-tuned
on far more labels, judging steps that a vote cannot check.

    python -m minialign prm [--fast] [--out runs/default]
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from . import world as world_lib
from .evaluate import sample_responses, standard_error
from .model import GPT, GPTConfig, ScalarHeadGPT
from .preferences import encode_pair
from .sft import build_example, collate, sft_loss
from .tokenizer import Tokenizer
from .utils import (cosine_lr, length_grouped_batches, make_optimizer, pick_device, progress,
                    right_pad, set_seed, timer, write_json)

AGGREGATIONS = ("product", "min")
BLOCK_SIZE = 96  # the policy's context: a prompt and a four-number solution take about 40 tokens


@dataclass
class PRMConfig:
    # the generator policy: a tiny GPT trained from scratch on chained-sum demonstrations
    n_demos: int = 6000  # demonstrations (prompt, worked solution)
    flawed_fraction: float = 0.25  # of them, imperfect solutions (world.CHAIN_FLAWS)
    sft_epochs: int = 3  # passes over the demonstrations (2 leave the policy at ~25% right)
    sft_lr: float = 3e-3  # peak learning rate of the policy
    n_layer: int = 2  # transformer blocks of the policy (and so of both reward models)
    n_embd: int = 128  # channels C (64 leave the policy right on ~20% of held-out problems)
    vocab_size: int = 400  # BPE trained on the demonstrations: enough merges that every number
    #                        up to 36 is one token (fewer split "15" into "1" "5")
    temperature: float = 1.0  # sampling temperature: diverse samples give best-of-N its room
    max_new_tokens: int = 40  # response budget (a four-number solution takes about 25 tokens)
    # labelled data for the reward models: the policy's own samples on training problems
    n_label_problems: int = 800  # training problems to sample and label
    samples_per_problem: int = 4  # policy samples labelled per problem
    step_noise: float = 0.1  # P(an annotator flips a step's right/wrong label)
    outcome_noise: float = 0.1  # P(an annotator flips a final answer's right/wrong label)
    rm_epochs: int = 4  # passes over the labelled samples (ORM and PRM alike)
    rm_lr: float = 1e-3  # trunk learning rate of the reward models (they start from the policy)
    head_lr: float = 3e-3  # the scalar head starts at zero and has everything to learn
    batch_size: int = 32  # sequences per step (policy and reward models)
    # best-of-N on held-out problems
    n_eval_problems: int = 0  # 0: all held-out problems (world.CHAIN_EVAL)
    ns: tuple = (1, 2, 4, 8, 16, 32, 64)  # N values; max(ns) samples are drawn per problem
    n_subsets: int = 32  # random subsets of size N per problem to average best-of-N over
    aggregation: str = "product"  # PRM solution score: "product" or "min" of step scores
    equal_cost: bool = True  # also train a PRM on as many step labels as the ORM's outcome labels
    seed: int = 0

    def __post_init__(self):
        self.ns = tuple(int(n) for n in self.ns)
        if not self.ns or min(self.ns) < 1:
            raise ValueError("ns must be positive integers")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got "
                             f"{self.aggregation!r}")
        if min(self.n_demos, self.n_label_problems, self.samples_per_problem, self.n_subsets,
               self.sft_epochs, self.rm_epochs, self.batch_size) <= 0:
            raise ValueError("n_demos, n_label_problems, samples_per_problem, n_subsets, the "
                             "epochs and batch_size must be positive")
        if self.temperature <= 0:
            raise ValueError("temperature must be positive: best-of-N needs varied samples")
        world_lib.StepAnnotator(self.step_noise, self.outcome_noise)  # checks the noise rates

    @classmethod
    def fast(cls, **overrides) -> "PRMConfig":
        base = dict(n_demos=600, sft_epochs=1, n_label_problems=48, samples_per_problem=2,
                    rm_epochs=1, n_eval_problems=12, ns=(1, 2, 4, 8), n_subsets=4,
                    max_new_tokens=32, n_embd=32)
        base.update(overrides)
        return cls(**base)


# ==============================================================================================
# the algorithm: where the labels sit, how step scores make a solution score, how N are judged


def masked_bce_loss(logits, targets, label_mask):
    """Binary cross-entropy of the scalar head where a label sits, averaged over the labels.

    logits: (B, T) the head's output at every position; targets: (B, T) 1 = right, 0 = wrong;
    label_mask: (B, T) bool, True where a label sits: the last token of each response for an
    ORM, the last token of each step for a PRM. Positions off the mask (padding included,
    whatever it holds) never reach the loss."""
    losses = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype),
                                                reduction="none")  # (B, T)
    return losses[label_mask].mean()


def step_probabilities(logits, positions, step_mask):
    """P(step right) for each step: sigmoid of the head at each step's last token.

    logits: (B, T); positions: (B, S) long, the index of each step's last token (anything
    where step_mask is False); step_mask: (B, S) bool. Returns (B, S), nan off the mask."""
    probs = torch.sigmoid(logits.gather(1, positions.clamp(min=0)))  # (B, S)
    return probs.masked_fill(~step_mask, float("nan"))


def aggregate_steps(step_probs, step_mask, how="product"):
    """A solution's score from its steps' probabilities: (B, S) -> (B,).

    "product": P(every step right) if the steps' errors were independent (Lightman et al.);
    "min": the weakest step. Steps off the mask count as certain (1), whatever they hold."""
    if how not in AGGREGATIONS:
        raise ValueError(f"how must be one of {AGGREGATIONS}, got {how!r}")
    p = torch.where(step_mask, step_probs, torch.ones_like(step_probs))  # (B, S)
    return p.prod(dim=1) if how == "product" else p.min(dim=1).values


def majority_vote(answers) -> int:
    """Index of the sample whose answer the most samples share (self-consistency, Wang et al.
    2023). Ties: the tied answer that appears first wins. A sample without an answer (None)
    votes for nothing; if no sample has one, the first sample is returned."""
    counts: dict = {}
    for a in answers:
        if a is not None:
            counts[a] = counts.get(a, 0) + 1
    if not counts:
        return 0
    most = max(counts.values())
    return next(i for i, a in enumerate(answers) if a is not None and counts[a] == most)


def pick_highest(scores) -> int:
    """Index of the highest score (the first one on ties): best-of-N by a reward model."""
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


def best_of_n(correct, pick, n: int, n_subsets: int, rng: random.Random):
    """Expected accuracy of picking one of n samples, for each problem.

    correct: per problem, a list of K bools (is sample k right?); pick(problem, indices) ->
    the chosen index among `indices` (a random subset of n of the K samples, in random order,
    so ties fall at random). Averages over n_subsets subsets. Returns one float per problem."""
    out = []
    for p, row in enumerate(correct):
        if n > len(row):
            raise ValueError(f"N = {n} but only {len(row)} samples per problem")
        hits = 0
        for _ in range(n_subsets):
            subset = rng.sample(range(len(row)), n)
            hits += row[pick(p, subset)]
        out.append(hits / n_subsets)
    return out


def auroc(scores, labels) -> float:
    """P(a random right sample scores above a random wrong one), ties half (Mann-Whitney);
    nan when one class is empty."""
    pos = sorted(s for s, y in zip(scores, labels) if y)
    neg = sorted(s for s, y in zip(scores, labels) if not y)
    if not pos or not neg:
        return float("nan")
    import bisect

    wins = sum(bisect.bisect_left(neg, s) + 0.5 * (bisect.bisect_right(neg, s)
                                                   - bisect.bisect_left(neg, s)) for s in pos)
    return wins / (len(pos) * len(neg))


# ==============================================================================================
# plumbing: tokens, the policy, labelled examples, the reward models' loop


def encode_steps(tokenizer: Tokenizer, prompt: str, response: str, ended: bool = True):
    """Token ids of the chat and the index of the last token of each step of the response
    (world.chain_split; the chunks of the tokenizer never cross a step, which starts with a
    space, so encoding step by step gives the tokens of the whole text)."""
    ids = tokenizer.encode_prompt(prompt)
    ends = []
    for piece in world_lib.chain_split(response):
        ids = ids + tokenizer.encode(piece)
        ends.append(len(ids) - 1)
    return (ids + [tokenizer.end_id] if ended else ids), ends


def make_example(tokenizer, sample, kind: str, labels=None, max_len: int = BLOCK_SIZE):
    """(ids, label positions, label values) of one sample: kind "orm" labels the last token
    with one outcome label; "prm" labels each step's last token with that step's label.
    labels None (to score, not to train): zeros at the same positions. A sample longer than
    max_len tokens once re-encoded (only a garbled one) is cut, its labels past the cut moved
    to the last token kept."""
    if kind == "orm":
        ids = encode_pair(tokenizer, sample["prompt"], sample["text"], sample["ended"])
        ends, labels = [len(ids) - 1], [labels or 0]
    else:
        ids, ends = encode_steps(tokenizer, sample["prompt"], sample["text"], sample["ended"])
        labels = labels if labels is not None else [0] * len(ends)
    return ids[:max_len], [min(e, max_len - 1) for e in ends], [float(x) for x in labels]


def batch_examples(examples, pad_id):
    """Examples -> ids, padding_mask, targets, label_mask, all (B, T)."""
    ids, mask = right_pad([e[0] for e in examples], pad_id)  # (B, T)
    targets = torch.zeros(ids.shape)
    label_mask = torch.zeros(ids.shape, dtype=torch.bool)
    for b, (_, positions, values) in enumerate(examples):
        targets[b, positions] = torch.tensor(values)
        label_mask[b, positions] = True
    return ids, mask, targets, label_mask


def train_policy(cfg: PRMConfig, dev):
    """A tokenizer and a GPT trained from scratch on chained-sum demonstrations (SFT only: the
    task needs no knowledge of the world, only the format and the sums)."""
    demos = world_lib.chain_demonstrations(cfg.n_demos, cfg.seed, cfg.flawed_fraction)
    tokenizer = Tokenizer.train([f"{p} {r}" for p, r in demos], vocab_size=cfg.vocab_size)
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=BLOCK_SIZE, n_layer=cfg.n_layer,
                       n_head=4, n_embd=cfg.n_embd)
    policy = GPT(config).to(dev)
    examples = [build_example(tokenizer, p, r) for p, r in demos]
    optimizer = make_optimizer(policy, cfg.sft_lr)
    rng = random.Random(cfg.seed)
    batches = [b for _ in range(cfg.sft_epochs) for b in
               length_grouped_batches([len(e[0]) for e in examples], cfg.batch_size, rng)]
    losses = []
    policy.train()
    for step, batch in enumerate(progress(batches, desc="prm: policy")):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, len(batches), cfg.sft_lr, max(1, len(batches) // 20))
        ids, labels = collate([examples[i] for i in batch], tokenizer.pad_id)
        logits, _ = policy(ids.to(dev))
        loss = sft_loss(logits, labels.to(dev))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
    return policy.eval(), tokenizer, losses


def sample_solutions(policy, tokenizer, problems, k, cfg: PRMConfig, seed):
    """k samples per problem: dicts with prompt, text, ended and the gold check."""
    g = torch.Generator().manual_seed(seed)
    prompts = [p.prompt for p in problems for _ in range(k)]
    out = sample_responses(policy, tokenizer, prompts, cfg.max_new_tokens, cfg.temperature, g,
                           batch_size=256)
    for i, r in enumerate(out):
        r["prompt"], r["problem"] = prompts[i], problems[i // k]
        r["check"] = world_lib.check_chain(r["problem"], r["text"])
    return out


def train_scorer(policy: GPT, examples, pad_id: int, cfg: PRMConfig, dev, desc: str):
    """A reward model on the policy's trunk (head at zero), fitted with masked_bce_loss."""
    model = ScalarHeadGPT.from_gpt(policy).to(dev)
    head = list(model.head.parameters())
    trunk = [p for p in model.parameters() if all(p is not h for h in head)]
    optimizer = torch.optim.AdamW([{"params": trunk, "base_lr": cfg.rm_lr},
                                   {"params": head, "base_lr": cfg.head_lr}], weight_decay=0.0)
    rng = random.Random(cfg.seed + 1)
    batches = [b for _ in range(cfg.rm_epochs) for b in
               length_grouped_batches([len(e[0]) for e in examples], cfg.batch_size, rng)]
    model.train()
    losses = []
    for step, batch in enumerate(progress(batches, desc=desc)):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, len(batches), group["base_lr"],
                                    max(1, len(batches) // 20))
        ids, mask, targets, label_mask = batch_examples([examples[i] for i in batch], pad_id)
        loss = masked_bce_loss(model(ids.to(dev), mask.to(dev)), targets.to(dev),
                               label_mask.to(dev))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
    return model.eval(), losses


@torch.no_grad()
def step_scores(model: ScalarHeadGPT, examples, pad_id: int, dev, batch_size: int = 256):
    """Each example's P(right) at its label positions: a list of lists of floats (one per step
    for PRM examples, one per response for ORM examples)."""
    out = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start: start + batch_size]
        ids, mask, _, _ = batch_examples(chunk, pad_id)
        S = max(len(e[1]) for e in chunk)
        positions = torch.tensor([e[1] + [0] * (S - len(e[1])) for e in chunk])  # (B, S)
        step_mask = torch.tensor([[True] * len(e[1]) + [False] * (S - len(e[1]))
                                  for e in chunk])  # (B, S)
        probs = step_probabilities(model(ids.to(dev), mask.to(dev)).float().cpu(), positions,
                                   step_mask)  # (B, S)
        out += [row[: len(e[1])] for row, e in zip(probs.tolist(), chunk)]
    return out


def solution_scores(per_step, how: str) -> list[float]:
    """Lists of step probabilities -> one score per solution (aggregate_steps, one at a time)."""
    out = []
    for steps in per_step:
        probs = torch.tensor([steps])  # (1, S)
        out.append(float(aggregate_steps(probs, torch.ones_like(probs, dtype=torch.bool), how)))
    return out


# ==============================================================================================
# the experiment


def label_samples(samples, annotator: world_lib.StepAnnotator, rng: random.Random):
    """Add the annotators' noisy labels to each sample: `outcome_label`, `step_labels`."""
    for s in samples:
        s["outcome_label"] = annotator.label_outcome(s["problem"], s["text"], rng)
        s["step_labels"] = annotator.label_steps(s["problem"], s["text"], rng)
    return samples


def equal_cost_subset(examples, budget: int, rng: random.Random):
    """PRM examples, drawn at random, until they hold `budget` step labels (the number of
    outcome labels the ORM had): process supervision at the price of outcome supervision."""
    order = list(range(len(examples)))
    rng.shuffle(order)
    out, used = [], 0
    for i in order:
        if used >= budget:
            break
        out.append(examples[i])
        used += len(examples[i][1])
    return out


def best_of_n_table(samples, K: int, pickers: dict, cfg: PRMConfig) -> dict:
    """For each method and N: mean gold accuracy of the pick over problems, its standard error
    and the fraction of picks whose every step is right; the same random subsets for every
    method (so differences between methods are paired by problem)."""
    problems = [samples[i: i + K] for i in range(0, len(samples), K)]
    right = [[s["check"].final_correct for s in row] for row in problems]
    sound = [[s["check"].process_correct for s in row] for row in problems]
    table, per_problem = {}, {}
    for name, pick in pickers.items():
        rows = {"n": [], "accuracy": [], "se": [], "process_correct": []}
        for n in cfg.ns:
            acc = best_of_n(right, pick, n, cfg.n_subsets, random.Random(cfg.seed + n))
            proc = best_of_n(sound, pick, n, cfg.n_subsets, random.Random(cfg.seed + n))
            per_problem[(name, n)] = acc
            rows["n"].append(n)
            rows["accuracy"].append(sum(acc) / len(acc))
            rows["se"].append(standard_error(acc))
            rows["process_correct"].append(sum(proc) / len(proc))
        table[name] = rows
    paired = {}
    for a, b in [("prm", "orm"), ("prm", "majority"), ("orm", "majority"),
                 ("prm_equal_labels", "orm")]:
        if a in pickers and b in pickers:
            diffs = [[x - y for x, y in zip(per_problem[(a, n)], per_problem[(b, n)])]
                     for n in cfg.ns]
            paired[f"{a}-{b}"] = {"n": list(cfg.ns),
                                  "difference": [sum(d) / len(d) for d in diffs],
                                  "se": [standard_error(d) for d in diffs]}
    return {"methods": table, "paired": paired}


def make_pickers(samples, K: int, scores: dict) -> dict:
    """Selection rules, each pick(problem, subset) -> chosen index: highest score for each
    reward model, majority vote over final answers, and the oracle (a right one if any)."""
    def by_score(values):
        return lambda p, subset: subset[pick_highest([values[p * K + k] for k in subset])]

    pickers = {name: by_score(values) for name, values in scores.items()}
    pickers["majority"] = lambda p, subset: subset[
        majority_vote([samples[p * K + k]["check"].answer for k in subset])]
    pickers["oracle"] = lambda p, subset: subset[
        pick_highest([float(samples[p * K + k]["check"].final_correct) for k in subset])]
    return pickers


def diagnostics(samples, scores: dict, prm_steps) -> dict:
    """How the policy's samples fail, and how well each reward model tells right from wrong
    (AUROC against the gold outcome and the gold process) on the held-out samples."""
    checks = [s["check"] for s in samples]
    final = [c.final_correct for c in checks]
    process = [c.process_correct for c in checks]
    gold_steps = [ok for c in checks for ok in c.steps]
    predicted = [p > 0.5 for steps in prm_steps for p in steps]
    out = {"policy": {
        "accuracy": sum(final) / len(final),
        "process_correct": sum(process) / len(process),
        "right_answer_wrong_steps": sum(f and not p for f, p in zip(final, process)) / len(final),
        "ended": sum(s["ended"] for s in samples) / len(samples)},
        "prm_step_accuracy": sum(a == b for a, b in zip(predicted, gold_steps)) / len(gold_steps),
        # what "every step is right" scores: the PRM's step accuracy has to beat it
        "gold_steps_right": sum(gold_steps) / len(gold_steps)}
    for name, values in scores.items():
        out[name] = {"auroc_outcome": auroc(values, final), "auroc_process": auroc(values, process)}
    return out


def train(cfg: PRMConfig, out_dir: str | Path, device: str = "cpu", log=print) -> dict:
    """The whole experiment: policy, labels, ORM and PRM, best-of-N on held-out problems."""
    from . import plots

    stage_dir = Path(out_dir) / "prm"
    dev = pick_device(device)
    set_seed(cfg.seed)
    annotator = world_lib.StepAnnotator(cfg.step_noise, cfg.outcome_noise)
    rng = random.Random(cfg.seed)
    with timer() as elapsed:
        policy, tokenizer, sft_losses = train_policy(cfg, dev)
        problems = world_lib.sample_chain_problems(cfg.n_label_problems, rng)
        labelled = label_samples(sample_solutions(policy, tokenizer, problems,
                                                  cfg.samples_per_problem, cfg, cfg.seed + 1),
                                 annotator, rng)
        examples = {"orm": [make_example(tokenizer, s, "orm", s["outcome_label"])
                            for s in labelled],
                    "prm": [make_example(tokenizer, s, "prm", s["step_labels"])
                            for s in labelled]}
        if cfg.equal_cost:
            examples["prm_equal_labels"] = equal_cost_subset(examples["prm"],
                                                             len(examples["orm"]), rng)
        models, losses = {}, {}
        for name, ex in examples.items():
            models[name], losses[name] = train_scorer(policy, ex, tokenizer.pad_id, cfg, dev,
                                                      f"prm: {name}")

        eval_problems = world_lib.chain_problems("eval")
        if cfg.n_eval_problems:
            eval_problems = random.Random(cfg.seed).sample(eval_problems, cfg.n_eval_problems)
        K = max(cfg.ns)
        samples = sample_solutions(policy, tokenizer, eval_problems, K, cfg, cfg.seed + 2)
        steps = {}  # name -> per sample, P(right) at each label position
        for name, model in models.items():
            kind = "orm" if name == "orm" else "prm"
            steps[name] = step_scores(model, [make_example(tokenizer, s, kind)
                                              for s in samples], tokenizer.pad_id, dev)
        scores = {"orm": [x[0] for x in steps["orm"]]}
        for name in (n for n in models if n != "orm"):
            scores[name] = solution_scores(steps[name], cfg.aggregation)
        other = "min" if cfg.aggregation == "product" else "product"  # reported beside it
        scores[f"prm_{other}"] = solution_scores(steps["prm"], other)
        table = best_of_n_table(samples, K, make_pickers(samples, K, scores), cfg)

    metrics = {
        **table,
        "diagnostics": diagnostics(samples, scores, steps["prm"]),
        "labels": label_stats(labelled, examples),
        "n_eval_problems": len(eval_problems), "samples_per_problem": K,
        "aggregation": cfg.aggregation,
        "examples": [{"prompt": s["prompt"], "text": s["text"],
                      "steps": list(s["check"].steps), "final_correct": s["check"].final_correct}
                     for s in samples[: 4 * K: K]],
        "seconds": elapsed(), "config": asdict(cfg),
        "history": {"sft_loss": sft_losses, **{f"{k}_loss": v for k, v in losses.items()}},
    }
    write_json(metrics, stage_dir / "metrics.json")
    plots.prm_best_of_n(metrics["methods"], stage_dir / "best_of_n.png")
    log(format_table(metrics))
    log(f"prm: {metrics['seconds']:.0f} s; wrote {stage_dir / 'metrics.json'} and best_of_n.png")
    return metrics


def label_stats(labelled, examples) -> dict:
    """How many labels each reward model got, and how often the annotators were wrong."""
    steps = [(lab, gold) for s in labelled for lab, gold in zip(s["step_labels"], s["check"].steps)]
    return {
        "outcome_labels": len(examples["orm"]),
        "step_labels": sum(len(e[1]) for e in examples["prm"]),
        "step_labels_equal_cost": sum(len(e[1]) for e in examples.get("prm_equal_labels", [])),
        "outcome_label_error": sum(s["outcome_label"] != s["check"].final_correct
                                   for s in labelled) / len(labelled),
        "step_label_error": sum(a != b for a, b in steps) / max(len(steps), 1),
        "labelled_accuracy": sum(s["check"].final_correct for s in labelled) / len(labelled)}


def format_table(metrics) -> str:
    """Gold accuracy ± standard error of each selection rule against N, as text."""
    methods = metrics["methods"]
    names = [n for n in ("prm", "prm_min", "prm_product", "orm", "majority", "prm_equal_labels",
                         "oracle") if n in methods]
    lines = ["best-of-N gold accuracy on held-out chained sums (± standard error over problems)",
             "N    " + "".join(f"{n:>18}" for n in names)]
    for i, n in enumerate(methods["orm"]["n"]):
        lines.append(f"{n:<5}" + "".join(
            f"{methods[m]['accuracy'][i]:>11.3f} ±{methods[m]['se'][i]:.3f}" for m in names))
    return "\n".join(lines)
