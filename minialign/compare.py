"""Every method side by side: the summary table and the reward-KL frontier.

The pipeline's last step. For the pretrained model, SFT, best-of-N, PPO, GRPO and DPO it
collects, on the same held-out prompts:
    gold_reward_mean   the hidden human values (world.gold_reward)
    task_success_rate  right answer / right behaviour
    win_rate_vs_sft    P(gold of a response > gold of an SFT response), ties half
    kl_to_sft          KL(policy || SFT) in nats per response (best-of-N: the log N - (N-1)/N
                       bound, with bon.py's estimate beside it; the pretrained model: measured
                       on its own samples)
and draws gold reward against KL: each method's points (best-of-N over N, PPO over its KL
coefficient and faintly over its training, DPO over beta) in the style of the DPO paper's
frontier (Rafailov et al. 2023, fig. 2). Methods that buy more gold for less KL sit up and to
the left.

With `CompareConfig(sweep=True)` (`python -m minialign compare --sweep`) it first runs what
chapters 7 and 8 study (minialign/experiments.py: PPO at several KL coefficients, DPO at several
beta, over-optimisation, RLAIF; GRPO, Dr. GRPO, RLOO, three loss aggregations and three reward
sources), each extra run a stage of its own in the run folder, so that
the frontier gets more than one point per method. The figures are drawn by plots.py; after a
whole-pipeline run, `write_summary` writes DIR/summary.json and summary.md.

    python -m minialign compare            (after the other stages; the table and the frontier)
    python -m minialign compare --sweep    (the chapter 7 and 8 experiments: about 45 min on 2 cores)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from . import pipeline
from .course import impl
from .utils import TimeSplit, peak_memory_mb, read_json, timer, write_json, write_text


@dataclass
class CompareConfig:
    sweep: bool = False  # train and measure the chapter 7 experiments (else: only collect)
    # the experiments' knobs (minialign/experiments.py)
    ppo_kl_coefs: tuple = (0.02, 0.05, 0.5)  # fixed KL coefficients (adaptive_kl off) of the
    #                                          extra PPO runs, stages ppo_kl{b}; the smallest is
    #                                          the over-optimisation run
    ppo_eval_interval: int = 5  # iterations between their gold evaluations (0: the ppo stage's)
    dpo_betas: tuple = (0.05, 0.1, 1.0)  # extra DPO runs, stages dpo_beta{b}
    dpo_logprob_temperatures: tuple = (1.0,)  # DPO scoring log-probs at other temperatures than
    #                                           the sampling one (stages dpo_logprobT{t}): what
    #                                           changes when DPO and PPO regularise different
    #                                           distributions
    bon_ns: tuple = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # best-of-N under growing pressure
    bon_prompts: int = 60  # held-out prompts for it (max(bon_ns) samples each), all families
    small_rm_prompts: int = 200  # the weaker reward model (reward_small) learns from the first
    #                              this many rankings of the preference data
    rlaif: bool = True  # reward model, DPO and PPO on the AI judge's labels
    n_fooling: int = 12  # rows of the table of responses that fool the proxy
    grpo_variants: tuple = ("grpo_drgrpo", "grpo_rloo", "grpo_agg_token-mean",
                            "grpo_agg_seq-mean-token-sum-norm", "grpo_verifier", "grpo_gold")
    #                      extra GRPO runs (experiments.GRPO_VARIANTS: the knobs each changes)
    noise_seeds: tuple = (1, 2, 3, 4)  # PPO retrained with these seeds (stages ppo_seed{s});
    #                                  with the ppo stage's seed 0, five runs that differ only in
    #                                  their randomness (rollouts and evaluation samples): the
    #                                  spread a difference between two runs must exceed. DPO
    #                                  gets them too (dpo_seed{s}), and with grpo_variants, GRPO
    #                                  and its verifier run
    grpo_eval_interval: int = 8  # iterations between their gold evaluations (0: the grpo
    #                              stage's); each evaluation costs about 2 training iterations
    seed: int = 0

    def __post_init__(self):
        self.ppo_kl_coefs = tuple(float(b) for b in self.ppo_kl_coefs)
        self.dpo_betas = tuple(float(b) for b in self.dpo_betas)
        self.dpo_logprob_temperatures = tuple(float(t) for t in self.dpo_logprob_temperatures)
        self.bon_ns = tuple(sorted(int(n) for n in self.bon_ns))
        self.noise_seeds = tuple(int(s) for s in self.noise_seeds)
        if any(b <= 0 for b in self.ppo_kl_coefs + self.dpo_betas
               + self.dpo_logprob_temperatures):
            raise ValueError("KL coefficients, betas and temperatures must be positive")
        if not self.bon_ns or self.bon_ns[0] != 1:
            raise ValueError("bon_ns must start at 1 (N = 1 is the SFT policy: the baseline)")
        if self.small_rm_prompts < 2 or self.bon_prompts < 1:
            raise ValueError("small_rm_prompts and bon_prompts must be positive")
        from .experiments import GRPO_VARIANTS

        self.grpo_variants = tuple(self.grpo_variants)
        unknown = [v for v in self.grpo_variants if v not in GRPO_VARIANTS]
        if unknown:
            raise ValueError(f"unknown GRPO variants {unknown}: choose from {list(GRPO_VARIANTS)}")

    @classmethod
    def fast(cls, **overrides) -> "CompareConfig":
        base = dict(ppo_kl_coefs=(0.02,), ppo_eval_interval=2, dpo_betas=(1.0,),
                    bon_ns=(1, 2, 4, 8, 16), bon_prompts=24, small_rm_prompts=48,
                    noise_seeds=(1,), grpo_eval_interval=8)
        base.update(overrides)
        return cls(**base)


METHODS = ["pretrained", "sft", "bon", "ppo", "grpo", "dpo"]
LABELS = {"pretrained": "pretrained", "sft": "SFT", "bon": "best-of-N", "ppo": "PPO (RLHF)",
          "grpo": "GRPO", "dpo": "DPO"}
# the KL estimate of best-of-N weights responses by their true probabilities renormalised over
# the sampled support: trusted where that support holds at least this much of the probability;
# below it, the frequency-weighted estimate is used (bon.best_of_n_curve)
MIN_SUPPORT_MASS = 0.8


# ==============================================================================================
# the summary table and the frontier (the default pipeline: reads the stages, trains nothing)


def pretrained_kl_to_sft(out_dir: Path, n_prompts: int = 64, seed: int = 0) -> float:
    """KL(pretrained || SFT) on the pretrained model's own responses to chat prompts."""
    import torch

    from . import evaluate, world
    from .pretrain import load_model as load_pretrained
    from .sft import load_model as load_sft

    pre, tok = load_pretrained(out_dir)
    sft, _ = load_sft(out_dir)
    tasks = world.default_world().tasks("eval")[:n_prompts]
    prompts = [t.prompt for t in tasks]
    samples = evaluate.sample_responses(pre, tok, prompts, 40, evaluate.TEMPERATURE,
                                        torch.Generator().manual_seed(seed))
    ids = [s["response_ids"] for s in samples]
    return evaluate.kl_to_reference(pre, sft, tok, prompts, ids, evaluate.TEMPERATURE)[0]


def collect(out_dir: Path) -> dict:
    """The summary rows from the stages' metrics.json files."""
    out_dir = Path(out_dir)
    sft = read_json(out_dir / "sft" / "metrics.json")
    rows = {
        "pretrained": {"gold_reward_mean": sft["pretrained_gold_reward_mean"],
                       "task_success_rate": sft["pretrained_task_success_rate"],
                       "win_rate_vs_sft": 1.0 - sft["win_rate_vs_pretrained"],
                       "kl_to_sft": pretrained_kl_to_sft(out_dir),
                       **_errors(sft, {"gold_reward_mean_se": "pretrained_gold_reward_mean_se",
                                       "task_success_rate_se": "pretrained_task_success_rate_se",
                                       "win_rate_vs_sft_se": "win_rate_vs_pretrained_se"})},
        "sft": {"gold_reward_mean": sft["gold_reward_mean"],
                "task_success_rate": sft["task_success_rate"],
                "win_rate_vs_sft": 0.5, "kl_to_sft": 0.0,  # (exactly: SFT against itself)
                **_errors(sft, {k: k for k in ("gold_reward_mean_se", "task_success_rate_se")})},
    }
    for method in ("bon", "ppo", "grpo", "dpo"):
        path = out_dir / method / "metrics.json"
        if path.exists():
            m = read_json(path)
            rows[method] = {"gold_reward_mean": m["gold_reward_mean"],
                            "task_success_rate": m["task_success_rate"],
                            "win_rate_vs_sft": m["win_rate_vs_sft"], "kl_to_sft": m["kl_to_ref"],
                            **_errors(m, {k: k for k in ("gold_reward_mean_se",
                                                         "task_success_rate_se",
                                                         "win_rate_vs_sft_se")}),
                            **_errors(m, {"kl_to_sft_se": "kl_to_ref_se"})}
            if method == "bon":
                rows[method]["n"] = m["n"]
                if "kl_estimate" in m:
                    rows[method]["kl_estimate"] = bon_kl(m["by_n"][str(m["n"])])[0]
    return rows


def _errors(metrics: dict, keys: dict) -> dict:
    """{row key: metrics[its key]} for the standard errors a stage's metrics hold (a run folder
    from before they were recorded has none: its table shows the means alone)."""
    return {row_key: metrics[key] for row_key, key in keys.items() if key in metrics}


def bon_kl(by_n_row: dict) -> tuple[float, str]:
    """The KL to show for one N of best-of-N, and what it is: the estimate weighted by true
    probabilities where the sampled support covers MIN_SUPPORT_MASS, else the one weighted by
    sample frequencies; the bound when the stage predates the estimates."""
    if "kl_estimate" not in by_n_row:
        return by_n_row["kl_bound"], "bound"
    if by_n_row.get("support_mass", 1.0) >= MIN_SUPPORT_MASS:
        return by_n_row["kl_estimate"], "estimate"
    return by_n_row["kl_estimate_freq"], "estimate, sample frequencies"


def _stage_metrics(out_dir: Path, stage: str, variants: str) -> dict:
    """{stage: metrics} of `stage` and of the stages named `variants`{number}, e.g. dpo and
    dpo_beta0.1 (not dpo_ai, nor notebook 05's ppo_ablation_*)."""
    found = {}
    for path in sorted(out_dir.glob("*/metrics.json")):
        name = path.parent.name
        number = name[len(variants):]
        if name == stage or (name.startswith(variants) and number.replace(".", "", 1).isdigit()):
            found[name] = read_json(path)
    return found


def frontier_points(out_dir: Path) -> dict:
    """(KL, gold, label) points per method for the frontier figure (a None breaks a line).

    best-of-N over N (KL estimated, and faintly the bound), PPO's final policies over their KL
    coefficient (the ppo stage: adaptive) and faintly each PPO run during training, DPO over
    beta (dpo and dpo_beta*), GRPO over its training, and SFT. The RLAIF stages (*_ai) and
    the ablations are left out.
    """
    out_dir = Path(out_dir)
    points = {}
    sft = read_json(out_dir / "sft" / "metrics.json")
    points["SFT"] = [(0.0, sft["gold_reward_mean"], "")]
    bon = out_dir / "bon" / "metrics.json"
    if bon.exists():
        by_n = sorted(read_json(bon)["by_n"].items(), key=lambda kv: int(kv[0]))
        kind = bon_kl(by_n[-1][1])[1]
        points[f"best-of-N (KL {kind})"] = [(bon_kl(v)[0], v["gold_reward_mean"], f"N={n}")
                                            for n, v in by_n]
        if kind != "bound":
            points["best-of-N (KL bound)"] = [(v["kl_bound"], v["gold_reward_mean"], "")
                                              for _, v in by_n]
    ppo_runs = {}
    for stage, m in _stage_metrics(out_dir, "ppo", "ppo_kl").items():
        c = m["config"]
        ppo_runs[stage] = (m, "adaptive" if c["adaptive_kl"] else f"β={c['kl_coef']:g}")
    if ppo_runs:
        points["PPO (final, over KL coef.)"] = sorted(
            (m["kl_to_ref"], m["gold_reward_mean"], label) for m, label in ppo_runs.values())
        during = []
        for m, _ in ppo_runs.values():
            c = m["curve"]
            during += [(k, g, "") for k, g in zip(c["kl"], c["gold"])] + [None]
        points["PPO (during training)"] = during[:-1]
    dpo = [(m["kl_to_ref"], m["gold_reward_mean"], f"β={m['config']['beta']:g}")
           for m in _stage_metrics(out_dir, "dpo", "dpo_beta").values()]
    if dpo:
        points["DPO (over β)"] = sorted(dpo)
    grpo = out_dir / "grpo" / "metrics.json"
    if grpo.exists():  # its evaluations during training, ending at the final policy
        c = read_json(grpo)["curve"]
        points["GRPO (during training)"] = [(k, g, "") for k, g in zip(c["kl"], c["gold"])]
    return points


def markdown_table(rows: dict) -> str:
    lines = ["| policy | gold reward | task success | win rate vs SFT | KL to SFT (nats) |",
             "|---|---|---|---|---|"]
    for method in METHODS:
        if method not in rows:
            continue
        r = rows[method]
        name = LABELS[method] + (f" (N={r['n']})" if "n" in r else "")
        kl = plus_minus(r, "kl_to_sft", "{:.2f}")
        if method == "bon":
            kl = (f"{r['kl_estimate']:.2f} (estimate; bound {kl})" if "kl_estimate" in r
                  else f"{kl} (bound)")
        lines.append(f"| {name} | {plus_minus(r, 'gold_reward_mean', '{:.3f}')} | "
                     f"{plus_minus(r, 'task_success_rate', '{:.1%}')} | "
                     f"{plus_minus(r, 'win_rate_vs_sft', '{:.1%}')} | {kl} |")
    return "\n".join(lines)


def plus_minus(row: dict, key: str, fmt: str) -> str:
    """row[key] with its standard error row[key + "_se"] where the row has one, both written
    with fmt: "0.622 ± 0.030", "69.1% ± 2.8%"."""
    text = fmt.format(row[key])
    if f"{key}_se" in row:
        text += " ± " + fmt.format(row[f"{key}_se"])
    return text


# ==============================================================================================
# the stage


def train(cfg: CompareConfig, out_dir, device: str = "cpu", log=print) -> dict:
    """The summary table and the frontier figure; with cfg.sweep, first the chapter 7
    experiments (experiments.run: frontier_sweep, overoptimization, rlaif). No summary timing:
    that is written by the whole-pipeline command."""
    from . import plots

    out_dir = Path(out_dir)
    extra = {}
    with timer() as elapsed:
        if cfg.sweep:
            from . import experiments

            extra = experiments.run(out_dir, cfg, device, log)
        rows = collect(out_dir)
        points = frontier_points(out_dir)
        plots.reward_kl_frontier(points, out_dir / "compare" / "frontier.png")
    metrics = {"rows": rows, "frontier": points, **extra, "seconds": elapsed(),
               "config": asdict(cfg)}
    write_json(metrics, out_dir / "compare" / "metrics.json")
    log(markdown_table(rows))
    return metrics


def _impl_line(code: dict) -> str:
    """Which functions trained this run: the learner's (`--impl`) or, for the rest, the library's."""
    n = len(code["student"]) + len(code["library"])
    line = f"Trained with `{code['impl']}`: {len(code['student'])} of {n} exercise functions yours"
    if code["student"] and code["library"]:
        line += f" ({', '.join(code['student'])})"
    if code["library"]:
        line += "; the library's " + ", ".join(code["library"])
    return line + "."


def time_split_table(splits: dict) -> list[str]:
    """Markdown lines: where each stage's seconds went (utils.TimeSplit), and the total."""
    cats = TimeSplit.CATEGORIES
    lines = ["Where the time went (seconds): sampling = responses generated to learn from "
             "(rollouts, preference and best-of-N candidates), training = forward, backward and "
             "optimizer steps, evaluation = held-out sampling, scoring and validation.", "",
             "| stage | total | " + " | ".join(cats) + " |", "|---" * (len(cats) + 2) + "|"]
    totals = {c: 0.0 for c in cats}
    for stage, split in splits.items():
        lines.append(f"| {stage} | {sum(split.values()):.0f} | "
                     + " | ".join(f"{split.get(c, 0.0):.0f}" for c in cats) + " |")
        for c in cats:
            totals[c] += split.get(c, 0.0)
    total = sum(totals.values()) or 1.0
    lines.append(f"| all | {sum(totals.values()):.0f} | "
                 + " | ".join(f"{totals[c]:.0f} ({totals[c] / total:.0%})" for c in cats) + " |")
    return lines


def write_summary(out_dir, timings: dict, total_seconds: float, fast: bool,
                  skipped=()) -> dict:
    """DIR/summary.json and DIR/summary.md after a whole-pipeline run. `skipped`: the stages
    that were up to date (their times are from the run that trained them, not this one)."""
    out_dir = Path(out_dir)
    rows = read_json(out_dir / "compare" / "metrics.json")["rows"]
    precision = read_json(out_dir / "pretrain" / "metrics.json").get("precision", "fp32")
    code = impl.current().record() if impl.current() is not None else None
    splits = pipeline.time_splits(out_dir)  # every stage's, the skipped ones' included
    summary = {"policies": rows, "precision": precision, "impl": code,
               "seconds": {k: v["seconds"] for k, v in timings.items()},
               "total_seconds": total_seconds, "peak_memory_mb": peak_memory_mb(),
               "stages": timings, "skipped": list(skipped),
               "time_split": splits,
               "time_split_total": {c: sum(s.get(c, 0.0) for s in splits.values())
                                    for c in TimeSplit.CATEGORIES},
               "frontier_figure": "compare/frontier.png", "fast": fast}
    write_json(summary, out_dir / "summary.json")
    reused = (f" Up to date from an earlier run, not retrained: {', '.join(skipped)}."
              if skipped else "")
    md = ["# minialign summary", "",
          f"Whole pipeline: {total_seconds:.0f} s, peak memory {summary['peak_memory_mb']:.0f} MB "
          f"({'fast' if fast else 'default'} configuration; pretraining in {precision}).{reused}",
          "", *([_impl_line(code), ""] if code else []),
          markdown_table(rows), "",
          "±: one standard error of the mean, over the held-out prompts.", "",
          *time_split_table(splits), "",
          "![reward-KL frontier](compare/frontier.png)", ""]
    write_text("\n".join(md), out_dir / "summary.md")
    return summary
