"""How long to pretrain: SFT's quality against the number of pretraining tokens.

Pretraining is the longest stage of the pipeline, so it is the first place to look for time.
But what SFT can teach depends on what pretraining left: the facts, the French words, the
sums. This side experiment pretrains the same model for fewer steps (the learning-rate schedule
ending at each length, as a shorter run would have it), fine-tunes each with the same SFT
config, and evaluates each SFT model with the gold reward on the held-out prompts. The run
folder's own pretrain and sft stages are the default length's point.

    python -m minialign pretrain_length      (after the default run; about 5 minutes here)

Each length is a small run folder of its own, DIR/pretrain_length/steps{N} (pretrain and sft
stages, resumed like any run), and the result is DIR/pretrain_length/metrics.json and
curve.png.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from .utils import read_json, timer, write_json


@dataclass
class PretrainLengthConfig:
    steps: tuple = (320, 480)  # shorter pretraining runs (the run folder's own is the default)
    fast_stages: bool = False  # the pretrain and sft stages' fast presets (set by fast())
    seed: int = 0

    def __post_init__(self):
        self.steps = tuple(sorted(int(n) for n in self.steps))
        if not self.steps or self.steps[0] <= 0:
            raise ValueError("steps must hold positive step counts")

    @classmethod
    def fast(cls, **overrides) -> "PretrainLengthConfig":
        base = dict(steps=(20,), fast_stages=True)
        base.update(overrides)
        return cls(**base)


def length_row(run_dir: Path) -> dict:
    """One length's point: pretraining steps and tokens, its time and validation loss, and the
    SFT model's held-out task success (± one standard error), gold reward and success per
    family, read from the run folder's pretrain and sft stages."""
    p = read_json(Path(run_dir) / "pretrain" / "metrics.json")
    s = read_json(Path(run_dir) / "sft" / "metrics.json")
    c = p["config"]
    return {"steps": c["max_steps"], "tokens": c["max_steps"] * c["batch_size"] * c["block_size"],
            "pretrain_seconds": p["seconds"], "val_loss": p["val_loss"],
            "sft_success": s["task_success_rate"], "sft_success_se": s["task_success_rate_se"],
            "sft_gold": s["gold_reward_mean"], "sft_gold_se": s["gold_reward_mean_se"],
            "per_family": {f: v["success"] for f, v in s["per_family"].items()}}


def train(cfg: PretrainLengthConfig, out_dir: str | Path, device: str = "cpu",
          log=print) -> dict:
    """Pretrain for each of cfg.steps and fine-tune (the run folder's pretrain config, its
    max_steps changed), then tabulate every length with the run folder's own."""
    from . import pipeline, plots

    out_dir = Path(out_dir)
    stage_dir = out_dir / "pretrain_length"
    base = read_json(out_dir / "pretrain" / "metrics.json")["config"]
    with timer() as elapsed:
        rows = [length_row(out_dir)]
        for n in cfg.steps:
            if n == base["max_steps"]:
                continue  # the run folder's own point
            log(f"[pretrain_length] {n} steps: pretrain, then sft")
            sub = stage_dir / f"steps{n}"
            same = {k: v for k, v in base.items() if k not in ("seed", "precision")}  # (passed
            #                                                                  on their own)
            pipeline.update(["sft"], sub, fast=cfg.fast_stages, seed=cfg.seed, device=device,
                            log=lambda *a, **k: None, precision=base["precision"],
                            overrides={"pretrain": {**same, "max_steps": n}})
            rows.append(length_row(sub))
    rows.sort(key=lambda r: r["steps"])
    metrics = {"rows": rows, "default_steps": base["max_steps"], "config": asdict(cfg),
               "seconds": elapsed()}
    write_json(metrics, stage_dir / "metrics.json")
    plots.pretrain_length(rows, stage_dir / "curve.png", default_steps=base["max_steps"])
    for r in rows:
        log(f"[pretrain_length] {r['steps']} steps ({r['tokens'] / 1e6:.1f}M tokens, "
            f"{r['pretrain_seconds']:.0f} s): val loss {r['val_loss']:.3f}; SFT task success "
            f"{r['sft_success']:.1%} ± {r['sft_success_se']:.1%}, gold {r['sft_gold']:+.3f}")
    return metrics
