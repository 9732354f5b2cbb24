"""Best-of-N: alignment at inference time, with no training at all.

Sample N responses from the SFT policy, score them with the reward model, return the best
(Nakano et al. 2021 "WebGPT"; Stiennon et al. 2020). It needs no gradient and no RL, only N
times the sampling cost, and it is the baseline RLHF has to beat at equal KL.

How far does it move from the base policy? For a finite set of responses ranked by reward
(ties aside), best-of-N picks response i with probability

    pi_N(y_i) = F(y_i)^N - F(y_{i-1})^N,     F = the base policy's CDF in reward order,

so the KL(pi_N || pi) is exact wherever the responses can be enumerated (`best_of_n_distribution`),
and in general is at most log N - (N - 1)/N (`evaluate.kl_best_of_n_bound`), a bound that is
tight for continuous outputs and loose when many samples repeat.

    python -m minialign bon [--fast] [--out runs/default]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import world as world_lib
from .evaluate import TEMPERATURE


@dataclass
class BoNConfig:
    ns: tuple = (1, 2, 4, 8, 16, 32)  # the N values to evaluate
    temperature: float = TEMPERATURE  # as every other stage
    max_new_tokens: int = 64  # response budget when sampling (the longest good answers use ~45)
    n_prompts: int = 0  # 0: all held-out prompts
    seed: int = 0

    def __post_init__(self):
        self.ns = tuple(int(n) for n in self.ns)
        if not self.ns or min(self.ns) < 1:
            raise ValueError("ns must be positive integers")

    @classmethod
    def fast(cls, **overrides) -> "BoNConfig":
        base = dict(ns=(1, 2, 4), max_new_tokens=24, n_prompts=48)
        base.update(overrides)
        return cls(**base)


# ==============================================================================================
# the algorithm


def best_of_n_distribution(probs, rewards, n):
    """The distribution of best-of-n sampling over a finite set of responses.

    probs: (K,) base probabilities of K distinct responses (summing to 1); rewards: (K,) their
    rewards (distinct); n: samples drawn. The best of n draws is response i when all n draws
    have reward <= r_i and not all have reward < r_i:
        p_n(i) = F(r_i)^n - F_<(r_i)^n,  F(r) = P(reward <= r),  F_<(r) = P(reward < r).
    Returns (K,) probabilities in the original order.
    """
    # >>> exercise: chapter=7 difficulty=2 minutes=20
    order = torch.argsort(rewards)  # ascending reward
    cdf = torch.cumsum(probs[order], dim=0)  # F at each response, in reward order
    below = cdf - probs[order]  # F_< : probability of a strictly lower reward
    p_sorted = cdf ** n - below.clamp(min=0) ** n
    out = torch.empty_like(probs)
    out[order] = p_sorted
    return out
    # <<< exercise


def kl_divergence(p, q) -> float:
    """KL(p || q) for two distributions over the same K outcomes (0 log 0 = 0)."""
    keep = p > 0
    return float((p[keep] * (p[keep].log() - q[keep].log())).sum())


def pick_best(scores: list[list[float]]) -> list[int]:
    """Index of the highest-scoring candidate of each prompt (the first one on ties)."""
    return [max(range(len(s)), key=lambda i: s[i]) for s in scores]


# ==============================================================================================
# plumbing: sample N per prompt once, then every smaller N reuses the first N samples


def train(cfg: BoNConfig, out_dir: str | Path, device: str = "cpu", log=print,
          stage: str = "bon", reward_stage: str = "reward") -> dict:
    """Evaluate best-of-N with the reward model for each N; no training ("train" for the CLI)."""
    from . import evaluate, plots
    from .reward import load_reward_model
    from .sft import load_model as load_sft
    from .utils import pick_device, set_seed, timer, write_json

    out_dir = Path(out_dir)
    stage_dir = out_dir / stage
    dev = pick_device(device)
    set_seed(cfg.seed)
    world = world_lib.default_world()
    with timer() as elapsed:
        policy, tokenizer = load_sft(out_dir, dev)
        policy.eval()
        rm = load_reward_model(out_dir, dev, reward_stage)
        tasks = world.tasks("eval")
        if cfg.n_prompts:
            tasks = tasks[:: max(1, len(tasks) // cfg.n_prompts)][: cfg.n_prompts]
        n_max = max(cfg.ns)
        g = torch.Generator().manual_seed(cfg.seed + 1)
        flat = [t for t in tasks for _ in range(n_max)]
        samples = evaluate.sample_responses(policy, tokenizer, [t.prompt for t in flat],
                                            cfg.max_new_tokens, cfg.temperature, g)
        proxy = rm.score_texts(tokenizer, [t.prompt for t in flat], [s["text"] for s in samples],
                               [s["ended"] for s in samples])
        gold = evaluate.score_responses(flat, samples)
        results = {}
        base = None
        for n in sorted(cfg.ns):
            chosen, chosen_gold, chosen_proxy = [], [], []
            for i in range(len(tasks)):
                block = range(i * n_max, i * n_max + n)
                best = i * n_max + pick_best([[proxy[j] for j in block]])[0]
                chosen.append(best)
                chosen_gold.append(gold[best]["total"])
                chosen_proxy.append(proxy[best])
            summary = evaluate.summarize(tasks, [gold[j] for j in chosen])
            if base is None:
                base = chosen_gold  # N = 1 is the SFT policy itself
            summary.update(proxy_reward_mean=sum(chosen_proxy) / len(chosen_proxy),
                           kl_bound=evaluate.kl_best_of_n_bound(n),
                           win_rate_vs_sft=evaluate.win_rate(chosen_gold, base),
                           gold=chosen_gold, chosen=chosen)
            results[n] = summary
        best_n = max(cfg.ns)
        final = results[best_n]

    metrics = {
        "n": best_n,
        "gold_reward_mean": final["gold_reward_mean"],
        "task_success_rate": final["task_success_rate"],
        "proxy_reward_mean": final["proxy_reward_mean"],
        "kl_to_ref": final["kl_bound"],
        "kl_is_bound": True,
        "win_rate_vs_sft": final["win_rate_vs_sft"],
        "per_family": final["per_family"],
        "by_n": {str(n): {k: v for k, v in r.items() if k not in ("gold", "chosen")}
                 for n, r in results.items()},
        "samples_per_prompt": n_max,
        "seconds": elapsed(),
        "config": asdict(cfg),
    }
    write_json(metrics, stage_dir / "metrics.json")
    plots.best_of_n(metrics["by_n"], stage_dir / "best_of_n.png")
    log(f"{stage}: gold {results[min(cfg.ns)]['gold_reward_mean']:.2f} (N={min(cfg.ns)}) -> "
        f"{final['gold_reward_mean']:.2f} (N={best_n}), KL <= {final['kl_bound']:.2f} nats; "
        f"{metrics['seconds']:.0f} s")
    return metrics
