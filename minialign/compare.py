"""Every method side by side: the summary table, and the reward-KL frontier.

The pipeline's last step. For the pretrained model, SFT, best-of-N, PPO and DPO it collects,
on the same held-out prompts:
    gold_reward_mean   the hidden human values (world.gold_reward)
    task_success_rate  right answer / right behaviour
    win_rate_vs_sft    P(gold of a response > gold of an SFT response), ties half
    kl_to_sft          KL(policy || SFT) in nats per response (best-of-N: the log N - (N-1)/N
                       bound; the pretrained model: measured on its own samples)
and draws gold reward against KL: each method's points (best-of-N over N, PPO over its
training, DPO over beta) in the style of the DPO paper's frontier (Rafailov et al. 2023,
fig. 2). Methods that buy more gold for less KL sit up and to the left.

    python -m minialign compare       (after the other stages; writes DIR/summary.{json,md})
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from .utils import peak_memory_mb, read_json, timer, write_json, write_text


@dataclass
class CompareConfig:
    dpo_betas: tuple = ()  # extra DPO runs for the frontier (each one a short DPO run)
    seed: int = 0

    @classmethod
    def fast(cls, **overrides) -> "CompareConfig":
        return cls(**overrides)


METHODS = ["pretrained", "sft", "bon", "ppo", "dpo"]
LABELS = {"pretrained": "pretrained", "sft": "SFT", "bon": "best-of-N", "ppo": "PPO (RLHF)",
          "dpo": "DPO"}


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
    return evaluate.kl_from_samples(evaluate.response_logprobs(pre, tok, prompts, ids),
                                    evaluate.response_logprobs(sft, tok, prompts, ids))


def collect(out_dir: Path) -> dict:
    """The summary rows from the stages' metrics.json files."""
    sft = read_json(out_dir / "sft" / "metrics.json")
    rows = {
        "pretrained": {"gold_reward_mean": sft["pretrained_gold_reward_mean"],
                       "task_success_rate": sft["pretrained_task_success_rate"],
                       "win_rate_vs_sft": 1.0 - sft["win_rate_vs_pretrained"],
                       "kl_to_sft": pretrained_kl_to_sft(out_dir)},
        "sft": {"gold_reward_mean": sft["gold_reward_mean"],
                "task_success_rate": sft["task_success_rate"],
                "win_rate_vs_sft": 0.5, "kl_to_sft": 0.0},
    }
    for method in ("bon", "ppo", "dpo"):
        path = out_dir / method / "metrics.json"
        if path.exists():
            m = read_json(path)
            rows[method] = {"gold_reward_mean": m["gold_reward_mean"],
                            "task_success_rate": m["task_success_rate"],
                            "win_rate_vs_sft": m["win_rate_vs_sft"], "kl_to_sft": m["kl_to_ref"]}
            if method == "bon":
                rows[method]["n"] = m["n"]
    return rows


def frontier_points(out_dir: Path) -> dict:
    """(KL, gold) points per method for the frontier figure."""
    points = {}
    bon = out_dir / "bon" / "metrics.json"
    if bon.exists():
        by_n = read_json(bon)["by_n"]
        points["best-of-N"] = [(v["kl_bound"], v["gold_reward_mean"], f"N={n}")
                               for n, v in sorted(by_n.items(), key=lambda kv: int(kv[0]))]
    ppo = out_dir / "ppo" / "metrics.json"
    if ppo.exists():
        c = read_json(ppo)["curve"]
        points["PPO (over training)"] = [(k, g, f"it {i}") for k, g, i in
                                         zip(c["kl"], c["gold"], c["iteration"])]
    dpo_runs = sorted(p for p in out_dir.glob("dpo*/metrics.json"))
    dpo_points = []
    for p in dpo_runs:
        m = read_json(p)
        dpo_points.append((m["kl_to_ref"], m["gold_reward_mean"],
                           f"beta={m['config']['beta']}"))
    if dpo_points:
        points["DPO (over beta)"] = sorted(dpo_points)
    sft = read_json(out_dir / "sft" / "metrics.json")
    points["SFT"] = [(0.0, sft["gold_reward_mean"], "")]
    return points


def markdown_table(rows: dict) -> str:
    lines = ["| policy | gold reward | task success | win rate vs SFT | KL to SFT (nats) |",
             "|---|---|---|---|---|"]
    for method in METHODS:
        if method not in rows:
            continue
        r = rows[method]
        name = LABELS[method] + (f" (N={r['n']})" if "n" in r else "")
        kl = f"{r['kl_to_sft']:.2f}" + (" (bound)" if method == "bon" else "")
        lines.append(f"| {name} | {r['gold_reward_mean']:.3f} | {r['task_success_rate']:.1%} | "
                     f"{r['win_rate_vs_sft']:.1%} | {kl} |")
    return "\n".join(lines)


def train(cfg: CompareConfig, out_dir, device: str = "cpu", log=print) -> dict:
    """Extra DPO runs for the frontier (if asked), then the frontier figure (no summary timing:
    that is written by the whole-pipeline command)."""
    from . import dpo, plots

    out_dir = Path(out_dir)
    with timer() as elapsed:
        for beta in cfg.dpo_betas:
            dpo.train(dpo.DPOConfig(beta=beta, seed=cfg.seed), out_dir, device, log,
                      stage=f"dpo_beta{beta}")
        rows = collect(out_dir)
        points = frontier_points(out_dir)
        plots.frontier(points, out_dir / "compare" / "frontier.png")
    metrics = {"rows": rows, "frontier": points, "seconds": elapsed(), "config": asdict(cfg)}
    write_json(metrics, out_dir / "compare" / "metrics.json")
    log(markdown_table(rows))
    return metrics


def write_summary(out_dir, timings: dict, total_seconds: float, fast: bool) -> dict:
    """DIR/summary.json and DIR/summary.md after a whole-pipeline run."""
    out_dir = Path(out_dir)
    rows = read_json(out_dir / "compare" / "metrics.json")["rows"]
    summary = {"policies": rows,
               "seconds": {k: v["seconds"] for k, v in timings.items()},
               "total_seconds": total_seconds, "peak_memory_mb": peak_memory_mb(),
               "stages": timings, "frontier_figure": "compare/frontier.png", "fast": fast}
    write_json(summary, out_dir / "summary.json")
    md = ["# minialign summary", "",
          f"Whole pipeline: {total_seconds:.0f} s, peak memory {summary['peak_memory_mb']:.0f} MB "
          f"({'fast' if fast else 'default'} configuration).", "",
          markdown_table(rows), "",
          "Stage times: " + ", ".join(f"{k} {v['seconds']:.0f} s" for k, v in timings.items())
          + ".", "", "![reward-KL frontier](compare/frontier.png)", ""]
    write_text("\n".join(md), out_dir / "summary.md")
    return summary
