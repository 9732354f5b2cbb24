"""Best-of-N: alignment at inference time, with no training at all.

Sample N responses from the SFT policy, score them with the reward model, return the best
(Nakano et al. 2021 "WebGPT"; Stiennon et al. 2020). It needs no gradient and no RL, only N
times the sampling cost, and it is the baseline RLHF has to beat at equal KL.

How far does it move from the base policy? For a finite set of responses ranked by reward
(ties aside), best-of-N picks response i with probability

    pi_N(y_i) = F(y_i)^N - F(y_{i-1})^N,     F = the base policy's CDF in reward order,

so the KL(pi_N || pi) is exact wherever the responses can be enumerated (`best_of_n_distribution`),
and in general is at most log N - (N - 1)/N (`evaluate.kl_best_of_n_bound`).

Why the bound is loose here. The bound is what best-of-N costs when every draw is a different
response (a continuous output space): then each extra sample is a fresh chance to move. This
world's SFT policy is nothing like that. Its answers repeat: a few responses per prompt carry
most of the probability (the same correct sum, the same refusal), so many of the N draws are
copies of one another, and the best of N is very often the response the base policy would have
given anyway. If one response has probability 0.9 and the reward model likes it best, best-of-N
is that response with probability 1 - 0.1^N, and its KL from the base policy never exceeds
log(1/0.9) = 0.1 nats, while the bound grows like log N without limit. The more a prompt's
answers repeat, the further below the bound the true KL sits.

So next to the bound we *estimate* the KL (`kl_best_of_n_estimate`). For each prompt, take the
distinct responses among its samples, their true probabilities under the base (tempered)
policy (`evaluate.response_logprobs`) renormalised over that sampled support, and their
reward-model scores; best-of-N on that finite set is `best_of_n_distribution` exactly, and its
KL is a sum over K terms; average over prompts. It is exact when the distinct samples hold all
of the policy's probability (`support_mass`, reported beside it, near 1). It is not when they
hold little of it: if every sample is a different response, renormalising their true
probabilities piles the mass onto the few likeliest ones and the estimate falls far below the
truth, which is then close to the bound. A cross-check weights the same responses by how
often they were sampled instead (`kl_estimate_freq`): the two agree where the support is well
covered, and the frequency version behaves like the continuous case where it is not.
`compare.bon_kl` picks between them by `support_mass`. The frequency-weighted best-of-N also
gives the *expected* gold and proxy reward of best-of-N (`gold_expected`, `proxy_expected`),
smoother than the one draw per prompt of `gold_reward_mean`.

    python -m minialign bon [--fast] [--out runs/default]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import world as world_lib
from .evaluate import TEMPERATURE, kl_best_of_n_bound
from .utils import EVAL_SEED_OFFSET, timed


@dataclass
class BoNConfig:
    ns: tuple = (1, 2, 4, 8, 16)  # the N values to evaluate
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
    rewards (distinct, in any order); n >= 1: samples drawn. Returns (K,) probabilities, in
    the original order of the responses, summing to 1; n = 1 gives probs back, and a large n
    puts almost all the mass on the best response.

    The idea: draw n responses independently from probs and keep the one with the highest
    reward. That is response i exactly when all n draws score at most r_i, but not all of
    them score below r_i; each of those two events is n independent draws landing in a set
    whose probability sums the probs of the responses rewarded at most (below) r_i. The
    notebook's section 2 gives the formula.
    """
    # >>> exercise: chapter=7 difficulty=2 minutes=20
    # hint: sort the responses by reward (torch.argsort): in that order, a cumulative sum of
    #       their probabilities is F(r_i) = P(reward <= r_i), and F minus the response's own
    #       probability is F_<(r_i) = P(reward < r_i)
    # hint: P(all n draws <= r_i) = F(r_i) ** n; write the result back in the original order
    #       (out[order] = ...); clamp F_< at 0 against round-off
    # hint: p_n(i) = F(r_i) ** n - F_<(r_i) ** n
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


def reward_ranks(scores) -> torch.Tensor:
    """Scores (K,) -> their ranks 0..K-1 (float64), distinct even where scores tie: of two equal
    scores the earlier response ranks higher (pick_best takes the first one on ties), so
    best_of_n_distribution, which needs distinct rewards, sees a strict order."""
    scores = [float(x) for x in scores]
    order = sorted(range(len(scores)), key=lambda i: (scores[i], -i))  # worst first
    ranks = torch.empty(len(scores), dtype=torch.float64)
    ranks[order] = torch.arange(len(scores), dtype=torch.float64)
    return ranks


def kl_best_of_n_estimate(logps, scores, n) -> float:
    """KL(best-of-n || base) on one prompt's distinct sampled responses.

    logps: (K,) log-probabilities of K distinct responses under the base policy (they need not
    sum to 1: they are renormalised over this sampled support); scores: (K,) their reward-model
    scores (ties: the earlier response wins); n: samples per best-of-n draw. Best-of-n over
    this finite set is best_of_n_distribution exactly; its KL from the renormalised base
    probabilities is at most log n - (n - 1)/n, and far less when a few responses carry most
    of the probability.
    """
    probs = torch.softmax(torch.as_tensor(logps, dtype=torch.float64), dim=0)  # (K,)
    p_n = best_of_n_distribution(probs, reward_ranks(scores), n)  # (K,)
    return kl_divergence(p_n, probs)


def distinct_support(response_ids: list[list[int]], logps: list[float], *values: list[float]):
    """One prompt's samples -> its distinct responses (by token ids), in order of first
    appearance. Returns (index of each one's first sample, counts (K,), logps (K,), [each of
    `values` (say, proxy and gold) read at the first sample, (K,)], the base probability mass
    the support covers = sum of exp(logps)); tensors in float64."""
    first, counts = {}, {}
    for i, ids in enumerate(response_ids):
        first.setdefault(tuple(ids), i)
        counts[tuple(ids)] = counts.get(tuple(ids), 0) + 1
    idx = list(first.values())
    count = torch.tensor([counts[k] for k in first], dtype=torch.float64)
    lp = torch.tensor([logps[i] for i in idx], dtype=torch.float64)
    vals = [torch.tensor([v[i] for i in idx], dtype=torch.float64) for v in values]
    return idx, count, lp, vals, float(lp.exp().sum())


def best_of_n_curve(samples: list[dict], logps: list[float], proxy: list[float], gold: list[float],
                    n_prompts: int, ns) -> dict:
    """Best-of-N for each N in ns, from n_max = len(samples) // n_prompts samples per prompt
    (prompt i owns samples i * n_max ... (i + 1) * n_max - 1). For each N, averaged over prompts:

      gold, proxy, chosen     one draw: the best of the first N samples of each prompt (nested:
                              a larger N only adds samples), as a deployed best-of-N would do
      kl_estimate             KL(best-of-N || base) on the distinct responses of all n_max
                              samples, weighted by their true base probabilities renormalised
                              over that support (kl_best_of_n_estimate)
      kl_estimate_freq        the same with the responses weighted by how often they were
                              sampled instead: a cross-check, the two agree when the support
                              covers most of the probability (support_mass near 1)
      gold_expected,          E[gold], E[proxy] under best-of-N over the sampled responses
      proxy_expected          weighted by frequency (the average over every way of drawing N of
                              the n_max samples with replacement: smooth, and at N = 1 exactly
                              the mean over all samples)
    """
    n_max = len(samples) // n_prompts
    if n_max < max(ns) or n_max * n_prompts != len(samples):
        raise ValueError(f"{len(samples)} samples for {n_prompts} prompts: need max(ns) = "
                         f"{max(ns)} samples per prompt")
    supports = []
    for i in range(n_prompts):
        block = slice(i * n_max, (i + 1) * n_max)
        _, count, lp, (px, gd), mass = distinct_support(
            [s["response_ids"] for s in samples[block]], logps[block], proxy[block], gold[block])
        supports.append((torch.softmax(lp, dim=0), count / count.sum(), reward_ranks(px), px, gd,
                         mass))
    results = {}
    for n in sorted(ns):
        chosen = [i * n_max + pick_best([proxy[i * n_max: i * n_max + n]])[0]
                  for i in range(n_prompts)]
        kl, kl_freq, g_exp, p_exp = 0.0, 0.0, 0.0, 0.0
        for probs, freq, ranks, px, gd, _ in supports:
            kl += kl_divergence(best_of_n_distribution(probs, ranks, n), probs)
            p_freq = best_of_n_distribution(freq, ranks, n)
            kl_freq += kl_divergence(p_freq, freq)
            g_exp += float((p_freq * gd).sum())
            p_exp += float((p_freq * px).sum())
        results[n] = {"gold": [gold[j] for j in chosen], "chosen": chosen,
                      "proxy_reward_mean": sum(proxy[j] for j in chosen) / n_prompts,
                      "kl_bound": kl_best_of_n_bound(n),
                      "kl_estimate": kl / n_prompts, "kl_estimate_freq": kl_freq / n_prompts,
                      "gold_expected": g_exp / n_prompts, "proxy_expected": p_exp / n_prompts,
                      "support_mass": sum(s[5] for s in supports) / n_prompts,
                      "distinct_per_prompt": sum(len(s[0]) for s in supports) / n_prompts}
    return results


def sample_candidates(policy, tokenizer, tasks, n: int, max_new_tokens: int,
                      temperature: float = TEMPERATURE, seed: int = 0) -> dict:
    """n samples per task from the base policy, with their gold breakdowns and their log-probs
    under the base policy itself (tempered, as sampled). Returns a dict: tasks (the n * len(tasks)
    flat list, each task n times in a row), samples, gold (breakdowns), logps."""
    from . import evaluate

    g = torch.Generator().manual_seed(seed)
    flat = [t for t in tasks for _ in range(n)]
    prompts = [t.prompt for t in flat]
    with timed("sampling"):  # (the stage's time split, utils.TimeSplit)
        samples = evaluate.sample_responses(policy, tokenizer, prompts, max_new_tokens,
                                            temperature, g)
    gold = evaluate.gold_breakdowns(flat, samples)
    logps = evaluate.response_logprobs(policy, tokenizer, prompts,
                                       [s["response_ids"] for s in samples], temperature)
    return {"tasks": flat, "samples": samples, "gold": gold, "logps": logps}


def held_out_tasks(n_prompts: int, world=None) -> list:
    """The held-out tasks, or n_prompts of them spread evenly over the list (0: all)."""
    world = world or world_lib.default_world()
    tasks = world.tasks("eval")
    if n_prompts:
        tasks = tasks[:: max(1, len(tasks) // n_prompts)][:n_prompts]
    return tasks


def train(cfg: BoNConfig, out_dir: str | Path, device: str = "cpu", log=print,
          stage: str = "bon", reward_stage: str = "reward") -> dict:
    """Evaluate best-of-N with the reward model for each N; no training ("train" for the CLI)."""
    from . import evaluate
    from .reward import load_reward_model
    from .sft import load_model as load_sft
    from .utils import pick_device, set_seed, time_as, timer

    out_dir = Path(out_dir)
    dev = pick_device(device)
    set_seed(cfg.seed)
    with timer() as elapsed:
        # ---- collect: N samples per held-out prompt, scored by the reward model and gold ----
        policy, tokenizer = load_sft(out_dir, dev)
        policy.eval()
        rm = load_reward_model(out_dir, dev, reward_stage)
        time_as("evaluation")  # (the stage's time split: all but the candidates' sampling)
        tasks = held_out_tasks(cfg.n_prompts)
        n_max = max(cfg.ns)
        cands = sample_candidates(policy, tokenizer, tasks, n_max, cfg.max_new_tokens,
                                  cfg.temperature, cfg.seed + EVAL_SEED_OFFSET)
        samples, gold = cands["samples"], cands["gold"]
        proxy = rm.score_texts(tokenizer, [t.prompt for t in cands["tasks"]],
                               [s["text"] for s in samples], [s["ended"] for s in samples])
        # ---- evaluate: the pick of best-of-N for each N (no fit: nothing is trained) ----
        results = best_of_n_curve(samples, cands["logps"], proxy, [s["total"] for s in gold],
                                  len(tasks), cfg.ns)
        base = results[min(cfg.ns)]["gold"]  # N = 1 is the SFT policy itself
        for n, r in results.items():
            picked = [gold[j] for j in r["chosen"]]
            r.update(evaluate.summarize(tasks, picked))
            r["win_rate_vs_sft"] = evaluate.win_rate(r["gold"], base)
            # gold_reward_mean_se, task_success_rate_se, win_rate_vs_sft_se: over the prompts
            r.update(evaluate.error_bars({"tasks": tasks, "gold": r["gold"], "breakdown": picked},
                                         versus={"gold": base}))
        time_as("other")

    return report(cfg, out_dir / stage, stage, results, reward_stage, elapsed(), log)


def report(cfg: BoNConfig, stage_dir: Path, stage: str, results: dict, reward_stage: str,
           seconds: float, log) -> dict:
    """The metrics of the largest N, with every N's in "by_n": written to
    DIR/STAGE/metrics.json with the figure, one line logged."""
    from . import plots
    from .utils import write_json

    best_n = max(cfg.ns)
    final = results[best_n]
    metrics = {
        "n": best_n,
        "gold_reward_mean": final["gold_reward_mean"],
        "gold_reward_mean_se": final["gold_reward_mean_se"],
        "task_success_rate": final["task_success_rate"],
        "task_success_rate_se": final["task_success_rate_se"],
        "proxy_reward_mean": final["proxy_reward_mean"],
        "kl_to_ref": final["kl_bound"],
        "kl_is_bound": True,
        "kl_estimate": final["kl_estimate"],
        "support_mass": final["support_mass"],
        "win_rate_vs_sft": final["win_rate_vs_sft"],
        "win_rate_vs_sft_se": final["win_rate_vs_sft_se"],
        "per_family": final["per_family"],
        "by_n": {str(n): {k: v for k, v in r.items() if k not in ("gold", "chosen")}
                 for n, r in results.items()},
        "samples_per_prompt": best_n,
        "reward_stage": reward_stage,
        "seconds": seconds,
        "config": asdict(cfg),
    }
    write_json(metrics, stage_dir / "metrics.json")
    plots.best_of_n(metrics["by_n"], stage_dir / "best_of_n.png")
    from .compare import bon_kl  # the estimate the summary table shows (by support mass)

    kl, kind = bon_kl(metrics["by_n"][str(best_n)])
    log(f"{stage}: gold {results[min(cfg.ns)]['gold_reward_mean']:.2f} (N={min(cfg.ns)}) -> "
        f"{final['gold_reward_mean']:.2f} (N={best_n}), KL ~ {kl:.2f} nats "
        f"({kind}; bound {final['kl_bound']:.2f}); {metrics['seconds']:.0f} s")
    return metrics
