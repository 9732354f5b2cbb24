"""Preference data: candidate answers, simulated labellers, and the file that reward modelling
and DPO both read.

InstructGPT (Ouyang et al. 2022, sec. 3.5) collected comparisons by sampling K answers from the
SFT policy for each prompt and asking labellers to rank them, best first; a ranking of K answers
gives C(K, 2) pairs. This stage does the same on the built-in world. Its labellers are simulated
(`world.Annotator`: Bradley-Terry noise and a taste for longer answers; `world.AIJudge` for
RLAIF), so each one's true P(a > b) is known and stored beside the ranking it drew: the reward
stage compares its accuracy with the best any model could reach (the Bayes ceiling).

What is simplified: one labeller ranks each prompt once; the candidates are K - world_candidates
samples of the SFT policy plus the world's own written answers, for coverage ("contractor" or
"flawed" ones), and identical answers are kept once (they teach nothing).

The file, DIR/preferences/train.jsonl and val.jsonl (held-out prompts, SFT samples only), holds
one ranking per line:

    {"prompt": "what is 7 plus 5?",
     "responses": ["the answer is 12.", "12 i think.", "the answer is 13."],   best first
     "ended": [true, true, false],        did each answer finish with <|end|>? (optional: all true)
     "probabilities": [0.93, 0.99, 0.71]} the labeller's P(i above j) for the pairs (0, 1), (0, 2),
                                          (1, 2), ... in that order (optional: unknown)

A line {"prompt": ..., "chosen": ..., "rejected": ...} is a ranking of two. To train on your
own labels, write them in this format: replace these files, or give the path to DPO
(`DPOConfig(data="prefs.jsonl")`). The reward stage also needs the probabilities of its
held-out rankings and prompts of the built-in world (it measures itself against the gold reward).

    python -m minialign preferences [--fast] [--out runs/default]
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import world as world_lib
from .evaluate import FAST_EVAL_PROMPTS, TEMPERATURE, eval_tasks
from .tokenizer import Tokenizer
from .utils import (HELD_OUT_SEED_OFFSET, LABEL_SEED_OFFSET, pick_device, read_json,
                    read_jsonl, right_pad, set_seed, timed, timer, write_json, write_jsonl)


@dataclass
class PreferencesConfig:
    n_prompts: int = 1200  # training prompts to collect rankings for
    k: int = 4  # candidates per prompt, ranked by a labeller (K-wise, as InstructGPT)
    world_candidates: int = 1  # of the k, how many are the world's templated answers (coverage)
    labeler: str = "human"  # "human" (world.Annotator) or "ai" (world.AIJudge, for RLAIF)
    tau: float = 0.5  # the human labeller's noise (Bradley-Terry temperature)
    length_bias: float = 0.01  # the human labeller's utility per word: a known human bias
    max_new_tokens: int = 64  # answer budget when sampling (the longest good answers use ~45)
    temperature: float = TEMPERATURE  # candidates are sampled as the policy will sample
    eval_prompts: int = 0  # held-out prompts ranked for validation (evaluate.eval_tasks; 0: all)
    seed: int = 0

    def __post_init__(self):
        if self.k < 2:
            raise ValueError("k must be at least 2: a preference needs two responses")
        if not 0 <= self.world_candidates < self.k:
            raise ValueError("world_candidates must be in [0, k)")
        if self.labeler not in ("human", "ai"):
            raise ValueError("labeler must be 'human' or 'ai'")
        if self.n_prompts < 1:
            raise ValueError("n_prompts must be positive")

    @classmethod
    def fast(cls, **overrides) -> "PreferencesConfig":
        base = dict(n_prompts=160, k=3, max_new_tokens=32, eval_prompts=FAST_EVAL_PROMPTS)
        base.update(overrides)
        return cls(**base)


# ==============================================================================================
# the data: a ranking of K answers, and the pairs it implies


@dataclass(frozen=True)
class Pair:
    """One comparison: `chosen` was preferred to `rejected` as an answer to `prompt`."""

    prompt: str
    chosen: str
    rejected: str
    chosen_ended: bool = True  # the answer finished with <|end|> (people see one trail off)
    rejected_ended: bool = True
    p_chosen: float | None = None  # the labeller's true P(chosen > rejected); None if unknown


@dataclass(frozen=True)
class Ranking:
    """One prompt's answers, best first, as a labeller ranked them."""

    prompt: str
    responses: tuple[str, ...]  # best first
    ended: tuple[bool, ...]  # whether each answer finished with <|end|>
    # the labeller's P(response i above response j) for each pair i < j, in the order of
    # `index_pairs` (0,1), (0,2), ..., (1,2), ...; None where nobody knows it (your own labels)
    probabilities: tuple[float, ...] | None = None

    def __post_init__(self):
        k = len(self.responses)
        if k < 2:
            raise ValueError(f"a ranking needs at least two responses ({self.prompt!r} has {k})")
        if len(self.ended) != k:
            raise ValueError(f"{k} responses but {len(self.ended)} 'ended' flags")
        if self.probabilities is not None and len(self.probabilities) != k * (k - 1) // 2:
            raise ValueError(f"{k} responses make {k * (k - 1) // 2} pairs, but "
                             f"{len(self.probabilities)} probabilities are given")

    def index_pairs(self) -> list[tuple[int, int]]:
        """(i, j) for every pair with i ranked above j: C(K, 2) of them."""
        return list(itertools.combinations(range(len(self.responses)), 2))

    def pairs(self) -> list[Pair]:
        return [Pair(self.prompt, self.responses[i], self.responses[j], self.ended[i],
                     self.ended[j], None if self.probabilities is None else self.probabilities[n])
                for n, (i, j) in enumerate(self.index_pairs())]

    def to_json(self) -> dict:
        row = {"prompt": self.prompt, "responses": list(self.responses),
               "ended": list(self.ended)}
        if self.probabilities is not None:
            row["probabilities"] = list(self.probabilities)
        return row

    @classmethod
    def from_json(cls, row: dict, where: str = "") -> "Ranking":
        """A line of the file (see the module docstring); `where` names it in errors."""
        if "chosen" in row and "rejected" in row:
            responses = [row["chosen"], row["rejected"]]
        elif isinstance(row.get("responses"), list):
            responses = row["responses"]
        else:
            raise ValueError(f"{where}: needs 'chosen' and 'rejected', or 'responses' "
                             f"(best first)")
        if not isinstance(row.get("prompt"), str) or len(responses) < 2 or \
                not all(isinstance(r, str) for r in responses):
            raise ValueError(f"{where}: a string 'prompt' and at least two string responses "
                             f"are needed")
        probabilities = row.get("probabilities")
        try:
            return cls(row["prompt"], tuple(responses),
                       tuple(bool(e) for e in row.get("ended", [True] * len(responses))),
                       None if probabilities is None else tuple(float(p) for p in probabilities))
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None


def pairs_of(rankings: list[Ranking]) -> list[Pair]:
    """Every pair the rankings imply, ranking by ranking."""
    return [pair for ranking in rankings for pair in ranking.pairs()]


def write_rankings(rankings: list[Ranking], path) -> None:
    write_jsonl([r.to_json() for r in rankings], path)


def read_rankings(path) -> list[Ranking]:
    """A preference file (one ranking, or one pair, per line) -> rankings."""
    return [Ranking.from_json(row, f"{path}, example {n}")
            for n, row in enumerate(read_jsonl(path), 1)]


def load_rankings(out_dir, stage: str = "preferences", split: str = "train") -> list[Ranking]:
    """The rankings a preferences stage wrote: split "train" or "val" (held-out prompts)."""
    path = Path(out_dir) / stage / f"{split}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"no preference data at {path}: run `python -m minialign "
                                f"preferences` first (or write your own, see minialign/"
                                f"preferences.py)")
    return read_rankings(path)


# ==============================================================================================
# batches for the reward model: K answers per prompt, one forward pass each


def encode_pair(tokenizer: Tokenizer, prompt: str, response: str, ended: bool = True):
    """The token ids of a prompt and its answer in the chat template (<|end|> if it ended)."""
    ids = tokenizer.encode_prompt(prompt) + tokenizer.encode(response)
    return ids + [tokenizer.end_id] if ended else ids


def batch_rankings(tokenizer, rankings: list[Ranking], k: int):
    """Rankings -> ids (B*K, T), padding_mask (B*K, T) and slot mask (B, K) (missing = False):
    row b * K + j holds answer j of ranking b."""
    seqs, slots = [], torch.zeros(len(rankings), k, dtype=torch.bool)
    for b, ranking in enumerate(rankings):
        for j in range(k):
            if j < len(ranking.responses):
                seqs.append(encode_pair(tokenizer, ranking.prompt, ranking.responses[j],
                                        ranking.ended[j]))
                slots[b, j] = True
            else:
                seqs.append([tokenizer.pad_id])  # placeholder, masked out of the loss
    ids, mask = right_pad(seqs, tokenizer.pad_id)
    return ids, mask, slots


def batch_probabilities(rankings: list[Ranking], k: int):
    """Rankings -> (B, K, K) with [b, i, j] the labeller's P(answer i > answer j), i < j (the
    rest 0)."""
    probs = torch.zeros(len(rankings), k, k)
    for b, ranking in enumerate(rankings):
        if ranking.probabilities is None:
            raise ValueError(f"the ranking of {ranking.prompt!r} has no probabilities: "
                             f"targets='probabilities' needs simulated labels")
        for (i, j), p in zip(ranking.index_pairs(), ranking.probabilities):
            probs[b, i, j] = p
    return probs


# ==============================================================================================
# collecting them: candidates from the SFT policy (+ the world's answers), ranked by a labeller


def make_labeler(cfg: PreferencesConfig, world):
    if cfg.labeler == "ai":
        return world_lib.AIJudge(world=world)
    return world_lib.Annotator(tau=cfg.tau, length_bias=cfg.length_bias, world=world)


def collect_candidates(policy, tokenizer, tasks, k, world_candidates, max_new_tokens, seed,
                       world, temperature=TEMPERATURE):
    """For each task, k distinct candidates: k - world_candidates sampled from the policy, the
    rest from the world's contractor variants (one that does not fit the model's context with
    its prompt is left out). Returns a list of (task, [(text, ended)...])."""
    from .evaluate import sample_responses

    g = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    n_policy = k - world_candidates
    prompts = [t.prompt for t in tasks for _ in range(n_policy)]
    sampled = sample_responses(policy, tokenizer, prompts, max_new_tokens, temperature, g)
    out = []
    for i, task in enumerate(tasks):
        cands = [(r["text"], r["ended"]) for r in sampled[i * n_policy: (i + 1) * n_policy]]
        for _ in range(world_candidates):
            text = world.response(task, rng, "contractor" if rng.random() < 0.5 else "flawed")
            if len(encode_pair(tokenizer, task.prompt, text)) <= policy.config.block_size:
                cands.append((text, True))
        distinct = list(dict.fromkeys(cands))  # identical responses teach nothing: drop them
        if len(distinct) >= 2:
            out.append((task, distinct))
    return out


def rank(candidates, labeler, seed) -> list[Ranking]:
    """Rank each prompt's candidates with the labeller (its noise drawn from seed +
    LABEL_SEED_OFFSET), recording its true P(i > j) for every pair the ranking implies."""
    rng = random.Random(seed + LABEL_SEED_OFFSET)
    rankings = []
    for task, cands in candidates:
        order = labeler.rank(task.prompt, [c[0] for c in cands], rng, [c[1] for c in cands])
        ranked = [cands[i] for i in order]
        probs = tuple(labeler.prob_prefers(task.prompt, ranked[a][0], ranked[b][0],
                                           ranked[a][1], ranked[b][1])
                      for a, b in itertools.combinations(range(len(ranked)), 2))
        rankings.append(Ranking(task.prompt, tuple(r[0] for r in ranked),
                                tuple(r[1] for r in ranked), probs))
    return rankings


def training_tasks(cfg: PreferencesConfig, world) -> list:
    """The cfg.n_prompts training tasks to collect rankings for, drawn as SFT's demonstrations
    and the RL prompts are (World.sample_tasks: a family by its weight, then a task of it)."""
    return world.sample_tasks(cfg.n_prompts, random.Random(cfg.seed))


def family_mix(prompts: list[str], world) -> dict:
    """{family: fraction of the prompts}, in the world's family order."""
    counts = Counter(world.task(p).family for p in prompts)
    return {f: counts[f] / len(prompts) for f in world_lib.FAMILIES}


# ==============================================================================================
# the stage


def train(cfg: PreferencesConfig, out_dir: str | Path, device: str = "cpu", log=print,
          stage: str = "preferences") -> dict:
    """Sample candidates from the SFT policy, have them ranked, write DIR/STAGE/{train,val}.jsonl."""
    from .sft import load_model as load_sft

    out_dir = Path(out_dir)
    stage_dir = out_dir / stage
    dev = pick_device(device)
    set_seed(cfg.seed)
    world = world_lib.default_world()
    labeler = make_labeler(cfg, world)

    with timer() as elapsed:
        # ---- collect: SFT samples for the training prompts, then ranked by the labeller ----
        policy, tokenizer = load_sft(out_dir, dev)
        policy.eval()
        tasks = training_tasks(cfg, world)
        with timed("sampling"):  # (the stage's time split, utils.TimeSplit)
            cands = collect_candidates(policy, tokenizer, tasks, cfg.k, cfg.world_candidates,
                                       cfg.max_new_tokens, cfg.seed, world, cfg.temperature)
        train_rankings = rank(cands, labeler, cfg.seed)
        # held out: the eval prompts, SFT samples only (the distribution RL will start from)
        held_out_seed = cfg.seed + HELD_OUT_SEED_OFFSET
        with timed("sampling"):
            val_cands = collect_candidates(policy, tokenizer, eval_tasks(cfg.eval_prompts, world),
                                           cfg.k, 0, cfg.max_new_tokens, held_out_seed, world,
                                           cfg.temperature)
        val_rankings = rank(val_cands, labeler, held_out_seed)
        write_rankings(train_rankings, stage_dir / "train.jsonl")
        write_rankings(val_rankings, stage_dir / "val.jsonl")

    return report(cfg, stage_dir, stage, train_rankings, val_rankings, elapsed(), log)


def report(cfg: PreferencesConfig, stage_dir: Path, stage: str, train_rankings: list[Ranking],
           val_rankings: list[Ranking], seconds: float, log) -> dict:
    """What the data holds (sizes, family mix, the Bayes ceiling of a reward model on the
    held-out pairs): written to DIR/STAGE/metrics.json, one line logged."""
    world = world_lib.default_world()
    mix = family_mix([r.prompt for r in train_rankings], world)
    metrics = {
        "n_train_prompts": len(train_rankings),
        "n_train_pairs": len(pairs_of(train_rankings)),
        "n_val_prompts": len(val_rankings),
        "n_val_pairs": len(pairs_of(val_rankings)),
        "labeler": cfg.labeler,
        "family_mix": mix,
        "bayes_accuracy": world_lib.bayes_accuracy(
            [p.p_chosen for p in pairs_of(val_rankings)]),
        "seconds": seconds,
        "config": asdict(cfg),
    }
    write_json(metrics, stage_dir / "metrics.json")
    log(f"{stage}: {metrics['n_train_prompts']} ranked prompts ({metrics['n_train_pairs']} pairs),"
        f" {metrics['n_val_pairs']} held-out pairs, labeller {cfg.labeler}; family mix "
        + ", ".join(f"{f} {v:.0%}" for f, v in mix.items())
        + f"; {metrics['seconds']:.0f} s")
    return metrics


def load_metrics(out_dir, stage: str = "preferences") -> dict:
    return read_json(Path(out_dir) / stage / "metrics.json")
