"""The pipeline's stages, in order, and how to make sure one has run: shared by the command
line (`python -m minialign`) and the notebooks.

    pretrain -> sft -> reward -> ppo / dpo / bon -> compare

Each stage writes DIR/STAGE/metrics.json and its checkpoint. `ensure(stage)` returns the
metrics of a stage, running it first (and the stages it needs) when its results are missing.
"""

from __future__ import annotations

import importlib
import os
import time
from pathlib import Path

from .utils import fast_mode, peak_memory_mb, read_json

# stage -> (module, config class, the stages whose results it reads)
STAGES = {
    "pretrain": ("pretrain", "PretrainConfig", []),
    "sft": ("sft", "SFTConfig", ["pretrain"]),
    "reward": ("reward", "RewardConfig", ["sft"]),
    "ppo": ("ppo", "PPOConfig", ["reward"]),
    "dpo": ("dpo", "DPOConfig", ["reward"]),
    "bon": ("bon", "BoNConfig", ["reward"]),
    "compare": ("compare", "CompareConfig", ["ppo", "dpo", "bon"]),
}
ORDER = list(STAGES)
REPO = Path(__file__).resolve().parent.parent


def default_run_dir(fast: bool) -> Path:
    """MINIALIGN_RUN_DIR if set, else runs/default (runs/fast with the fast configs)."""
    if os.environ.get("MINIALIGN_RUN_DIR"):
        return Path(os.environ["MINIALIGN_RUN_DIR"])
    return REPO / "runs" / ("fast" if fast else "default")


def available(stage: str) -> bool:
    return importlib.util.find_spec(f"minialign.{STAGES[stage][0]}") is not None


def is_done(out_dir: Path, stage: str) -> bool:
    return (Path(out_dir) / stage / "metrics.json").exists()


def make_config(stage: str, fast: bool, seed: int = 0, **overrides):
    module_name, class_name, _ = STAGES[stage]
    cls = getattr(importlib.import_module(f"minialign.{module_name}"), class_name)
    return cls.fast(seed=seed, **overrides) if fast else cls(seed=seed, **overrides)


def run(stage: str, out_dir, fast: bool = False, seed: int = 0, device: str = "cpu",
        timings: dict | None = None, log=print) -> dict:
    """Run one stage now (after the stages it needs, if their results are missing).

    timings, if given, receives {stage: {"seconds", "peak_memory_mb"}} (the process's peak
    resident memory so far: cumulative over the stages run in this process)."""
    out_dir = Path(out_dir)
    for dep in STAGES[stage][2]:
        if not is_done(out_dir, dep):
            log(f"[{stage}] needs {dep}: running it first")
            run(dep, out_dir, fast, seed, device, timings, log)
    module = importlib.import_module(f"minialign.{STAGES[stage][0]}")
    log(f"== {stage} ({'fast' if fast else 'default'} config) ==")
    start = time.perf_counter()
    metrics = module.train(make_config(stage, fast, seed), out_dir, device=device, log=log)
    if timings is not None:
        timings[stage] = {"seconds": time.perf_counter() - start,
                          "peak_memory_mb": peak_memory_mb()}
    return metrics


def ensure(stage: str, out_dir=None, fast: bool | None = None, seed: int = 0,
           device: str = "cpu", log=print) -> dict:
    """The metrics of `stage` in out_dir, running it (and what it needs) only if missing.

    fast defaults to MINIALIGN_FAST; out_dir to `default_run_dir(fast)`."""
    fast = fast_mode() if fast is None else fast
    out_dir = Path(out_dir) if out_dir is not None else default_run_dir(fast)
    if not is_done(out_dir, stage):
        run(stage, out_dir, fast, seed, device, log=log)
    return read_json(out_dir / stage / "metrics.json")
