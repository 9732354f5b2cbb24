"""The pipeline's stages, in order, and how to make sure one has run: shared by the command
line (`python -m minialign`) and the notebooks.

    pretrain -> sft -> preferences -> reward -> ppo / grpo / bon -> compare
                                   -> dpo (the preferences, not the reward model) -> compare

Each stage writes DIR/STAGE/metrics.json and its checkpoint. `ensure(stage)` returns the
metrics of a stage, running it first (and the stages it needs) when its results are missing.

A rerun resumes: `update` (the command line's way in) skips a stage whose results exist and
were made with the same config, from the same runs of the stages it reads (and, under
`--impl`, the same code of the chapters it runs): DIR/STAGE/stage.json records all three. A
stage retrained upstream, or a changed config, makes the stages after it rerun; `force`
retrains. A stage interrupted half way leaves no stage.json, so it reruns (pretraining then
continues from its last checkpoint).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import time
import uuid
from pathlib import Path

from . import dist, tracking
from .utils import TimeSplit, fast_mode, peak_memory_mb, read_json, write_json

# stage -> (module, config class, the stages whose results it reads)
STAGES = {
    "pretrain": ("pretrain", "PretrainConfig", []),
    "sft": ("sft", "SFTConfig", ["pretrain"]),
    "preferences": ("preferences", "PreferencesConfig", ["sft"]),
    "reward": ("reward", "RewardConfig", ["preferences"]),
    "ppo": ("ppo", "PPOConfig", ["reward"]),
    "grpo": ("grpo", "GRPOConfig", ["reward"]),
    "dpo": ("dpo", "DPOConfig", ["preferences"]),
    "bon": ("bon", "BoNConfig", ["reward"]),
    "compare": ("compare", "CompareConfig", ["ppo", "grpo", "dpo", "bon"]),
    "prm": ("prm", "PRMConfig", []),  # process vs outcome reward models: its own tiny models
    "pretrain_length": ("pretrain_length", "PretrainLengthConfig", ["sft"]),  # SFT against
    #                                                  shorter pretraining runs of its own
}
# the default pipeline (`python -m minialign`): every stage but the side experiments, which
# train their own models and would only spend the pipeline's time budget ("prm": about 3
# minutes, "pretrain_length": about 5; run each alone with `python -m minialign STAGE`)
SIDE_EXPERIMENTS = {"prm", "pretrain_length"}
ORDER = [s for s in STAGES if s not in SIDE_EXPERIMENTS]
# the stages that train data-parallel under torchrun (minialign/dist.py); the others run on
# rank 0 alone while the other ranks wait
DATA_PARALLEL = {"pretrain", "sft", "reward", "ppo", "dpo"}
# stage -> the course chapters whose exercise functions it runs: under `--impl`, an edit of one
# of these files retrains the stage (and so, through their inputs, every stage after it)
CHAPTERS_RUN = {"pretrain": (1, 2), "sft": (3,), "reward": (4,), "ppo": (5,), "grpo": (5, 8),
                "dpo": (6,), "bon": (7,), "compare": (7,)}
REPO = Path(__file__).resolve().parent.parent


def default_run_dir(fast: bool, relative: bool = False) -> Path:
    """MINIALIGN_RUN_DIR if set, else runs/default (runs/fast with the fast configs), under the
    repository (or, relative=True, under the current folder, as the command line has it).

    While a learner's implementation is in use (`minialign.course.use`), runs/NAME instead
    (runs/exercises, or runs/NAME-fast with the fast configs): never over the library's run."""
    if os.environ.get("MINIALIGN_RUN_DIR"):
        return Path(os.environ["MINIALIGN_RUN_DIR"])
    from .course import impl

    name = "fast" if fast else "default"
    if impl.current() is not None:
        name = impl.run_name(impl.current().name) + ("-fast" if fast else "")
    # an installed package (no repository around it): runs/ of the working folder
    in_repo = (REPO / "minialign").is_dir() and (REPO / "notebooks").is_dir()
    return (Path("runs") if relative or not in_repo else REPO / "runs") / name


def is_done(out_dir: Path, stage: str) -> bool:
    return (Path(out_dir) / stage / "metrics.json").exists()


def make_config(stage: str, fast: bool, seed: int = 0, precision: str | None = None,
                **overrides):
    """The stage's config (its fast preset with fast=True). precision ("fp32", "bf16", "auto")
    is passed to the stages whose config has a `precision` field and ignored by the others."""
    module_name, class_name, _ = STAGES[stage]
    cls = getattr(importlib.import_module(f"minialign.{module_name}"), class_name)
    if precision is not None and "precision" in {f.name for f in dataclasses.fields(cls)}:
        overrides["precision"] = precision
    return cls.fast(seed=seed, **overrides) if fast else cls(seed=seed, **overrides)


def run(stage: str, out_dir, fast: bool = False, seed: int = 0, device: str = "cpu",
        timings: dict | None = None, log=print, precision: str | None = None,
        overrides: dict | None = None) -> dict:
    """Run one stage now (after the stages it needs, if their results are missing).

    timings, if given, receives {stage: {"seconds", "peak_memory_mb"}} (the process's peak
    resident memory so far: cumulative over the stages run in this process). precision, if
    given, overrides the configs' default ("auto": bf16 where the hardware has it natively);
    overrides, other fields of this stage's config (compare's sweep=True)."""
    out_dir = Path(out_dir)
    for dep in STAGES[stage][2]:
        if not is_done(out_dir, dep):
            log(f"[{stage}] needs {dep}: running it first")
            run(dep, out_dir, fast, seed, device, timings, log, precision)
    module = importlib.import_module(f"minialign.{STAGES[stage][0]}")
    log(f"== {stage} ({'fast' if fast else 'default'} config) ==")
    start = time.perf_counter()
    cfg = make_config(stage, fast, seed, precision, **(overrides or {}))
    (out_dir / stage / "stage.json").unlink(missing_ok=True)  # not up to date until it ends
    split = TimeSplit()  # sampling / training / evaluation / other (utils.TimeSplit)
    if stage in DATA_PARALLEL or dist.is_main():
        if dist.is_main():
            tracking.begin(out_dir, stage)  # live curves for --log tensorboard (else a no-op)
        try:
            with split:
                metrics = module.train(cfg, out_dir, device=device,
                                       log=log if dist.is_main() else _quiet)
        finally:
            tracking.end()
    else:
        metrics = {}
    record_impl(out_dir / stage / "metrics.json", metrics)
    record_time_split(out_dir / stage / "metrics.json", metrics, split.seconds)
    if (out_dir / stage).is_dir():  # (a rank of a torchrun other than 0 writes nothing)
        write_json({**stage_inputs(out_dir, stage, cfg), "run_id": uuid.uuid4().hex},
                   out_dir / stage / "stage.json")
    if timings is not None:
        timings[stage] = {"seconds": time.perf_counter() - start,
                          "peak_memory_mb": peak_memory_mb(), "split": dict(split.seconds)}
    dist.barrier()  # under torchrun: every rank waits for rank 0's files before going on
    return metrics


def _quiet(*args, **kwargs):
    """The log of ranks other than 0 under torchrun: rank 0 speaks for the job."""


# ==============================================================================================
# resuming: which stages are up to date


def stage_inputs(out_dir: Path, stage: str, cfg) -> dict:
    """What a stage's results depend on: its config, the runs of the stages it reads, and
    (under `--impl`) a digest of the learner's chapter files that it runs."""
    return {"config": json.loads(json.dumps(dataclasses.asdict(cfg), default=str)),
            "inputs": {dep: stage_record(out_dir, dep).get("run_id")
                       for dep in STAGES[stage][2]},
            "code": _code_digest(stage)}


def up_to_date(out_dir: Path, stage: str, cfg) -> bool:
    """Whether the stage's results in out_dir were made with cfg from the current runs of the
    stages it reads. Config fields the record lacks (added to the code since, with a default
    that keeps the old behaviour) are left out, as the sweep's stages do."""
    record = stage_record(out_dir, stage)
    want = stage_inputs(out_dir, stage, cfg)
    saved = record.get("config", {})
    want["config"] = {k: v for k, v in want["config"].items() if k in saved}
    return is_done(out_dir, stage) and bool(record) and \
        all(record.get(key) == value for key, value in want.items())


def update(stages: list[str], out_dir, fast: bool = False, seed: int = 0, device: str = "cpu",
           timings: dict | None = None, log=print, precision: str | None = None,
           force=(), overrides: dict | None = None) -> list[str]:
    """Bring `stages` (and the stages they read) up to date: train what is missing, stale or
    forced ("all" forces every stage), skip the rest, saying so. overrides: {stage: {field:
    value}}. Returns the stages skipped."""
    out_dir, overrides, skipped = Path(out_dir), overrides or {}, []
    wanted = set(stages)
    for stage in stages:  # with everything they read, in pipeline order
        wanted.update(_upstream(stage))
    for stage in [s for s in STAGES if s in wanted]:  # (pipeline order, side experiments too)
        cfg = make_config(stage, fast, seed, precision, **overrides.get(stage, {}))
        if stage not in force and "all" not in force and up_to_date(out_dir, stage, cfg):
            log(f"== {stage}: up to date in {out_dir}, skipped (--force {stage} retrains it) ==")
            skipped.append(stage)
            continue
        run(stage, out_dir, fast, seed, device, timings, log, precision, overrides.get(stage))
    return skipped


def _upstream(stage: str) -> set[str]:
    found = set()
    for dep in STAGES[stage][2]:
        found |= {dep} | _upstream(dep)
    return found


def stage_record(out_dir: Path, stage: str) -> dict:
    """DIR/STAGE/stage.json (config, inputs, run_id), or {} when it is missing or unreadable."""
    path = Path(out_dir) / stage / "stage.json"
    try:
        return read_json(path) if path.exists() else {}
    except (OSError, ValueError):
        return {}  # unreadable: as if absent, so the stage reruns


def _code_digest(stage: str) -> str | None:
    from .course import impl
    from .course.markers import CHAPTERS

    active = impl.current()
    if active is None:
        return None
    digest = hashlib.sha256(active.name.encode())
    for number in CHAPTERS_RUN.get(stage, ()):
        path = active.folder / CHAPTERS[number].filename if number in CHAPTERS else None
        digest.update(path.read_bytes() if path is not None and path.is_file() else b"-")
    return digest.hexdigest()


def record_impl(metrics_path: Path, metrics: dict) -> None:
    """Note in a stage's metrics which functions were the learner's (when `course.use` is on)."""
    from .course import impl

    if impl.current() is not None and metrics_path.exists():
        metrics["impl"] = impl.current().record()
        write_json(metrics, metrics_path)


def record_time_split(metrics_path: Path, metrics: dict, seconds: dict) -> None:
    """Note in a stage's metrics where its time went ("time_split": seconds of sampling,
    training, evaluation and other, utils.TimeSplit)."""
    if metrics_path.exists() and dist.is_main():
        metrics["time_split"] = dict(seconds)
        write_json(metrics, metrics_path)


def time_splits(out_dir) -> dict:
    """{stage: its time split} of the stages of a run folder that recorded one, in pipeline
    order (read from their metrics.json: a stage skipped as up to date keeps the split of the
    run that trained it)."""
    found = {}
    for stage in STAGES:
        path = Path(out_dir) / stage / "metrics.json"
        if path.exists():
            split = read_json(path).get("time_split")
            if split:
                found[stage] = split
    return found


def ensure(stage: str, out_dir=None, fast: bool | None = None, seed: int = 0,
           device: str = "cpu", log=print) -> dict:
    """The metrics of `stage` in out_dir, running it (and what it needs) only if missing.

    fast defaults to MINIALIGN_FAST; out_dir to `default_run_dir(fast)`."""
    fast = fast_mode() if fast is None else fast
    out_dir = Path(out_dir) if out_dir is not None else default_run_dir(fast)
    if not is_done(out_dir, stage):
        run(stage, out_dir, fast, seed, device, log=log)
    return read_json(out_dir / stage / "metrics.json")
