"""Curves for TensorBoard: every stage's logged scalars, under TRL's names.

    python -m minialign sft --log tensorboard       then: tensorboard --logdir runs/default/tensorboard

Live: while a stage trains, its loop hands each step's scalars to `log` (a no-op unless the
command line turned tracking on), under the names TRL's trainers use (`train/loss`,
`eval/loss`, `train/rewards/margins`, `objective/kl`, ...), one TensorBoard run per stage
(DIR/tensorboard/STAGE), flushed every few seconds, so a run can be watched as it goes. A stage
skipped because it was up to date is exported afterwards from the `history` of its
metrics.json (`write_run`), under the same names.

TensorBoard is an optional extra (`pip install tensorboard`), imported only when asked for.
Any object with `add_scalar(tag, value, step)` and `close()` can stand in for the writer (the
tests use a list).
"""

from __future__ import annotations

import math
from pathlib import Path

from .utils import read_json

# the curves of each stage's history: {history key: TRL's tag}; the step comes from "step",
# or "val_step" for the held-out evaluations
_EVAL_KEYS = {"val_loss": "eval/loss", "val_accuracy": "eval/accuracy"}
_TRAIN_KEYS = {"train_loss": "train/loss", "train_accuracy": "train/accuracy",
               "lr": "train/learning_rate"}


def tensorboard_writer(log_dir):
    """A torch.utils.tensorboard SummaryWriter for log_dir (flushed every 5 s, for watching a
    run live); a clear error if tensorboard is not installed (an optional extra)."""
    return _summary_writer_class()(log_dir=str(log_dir), flush_secs=5)


# ----------------------------------------------------------------------------------------------
# live: the writer of the stage now training (None when tracking is off)

_live = {"make_writer": None, "writer": None}


def enable(make_writer=tensorboard_writer) -> None:
    """Turn live tracking on for the stages run from now on in this process."""
    _live["make_writer"] = make_writer


def begin(out_dir, stage: str) -> None:
    """Called by the pipeline as a stage starts: open DIR/tensorboard/STAGE (when enabled)."""
    end()
    if _live["make_writer"] is not None:
        _live["writer"] = _live["make_writer"](Path(out_dir) / "tensorboard" / stage)


def log(values: dict, step: int) -> None:
    """One step's scalars, {TRL's name: value}; a name without a "/" becomes "train/NAME".
    Non-numbers and non-finite values are left out. Does nothing while tracking is off."""
    writer = _live["writer"]
    if writer is None:
        return
    for tag, value in values.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) \
                and math.isfinite(value):
            writer.add_scalar(tag if "/" in tag else f"train/{tag}", float(value), int(step))


def end() -> None:
    if _live["writer"] is not None:
        _live["writer"].close()
        _live["writer"] = None


def check_tensorboard() -> None:
    """Raise the install hint now (before hours of training) if tensorboard is missing."""
    _summary_writer_class()


def _summary_writer_class():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:  # torch's module imports the tensorboard package
        raise RuntimeError("--log tensorboard needs the tensorboard package: "
                           "pip install tensorboard (or pip install 'minialign[tensorboard]')"
                           ) from e
    return SummaryWriter


def stage_scalars(metrics: dict) -> list[tuple[str, float, int]]:
    """A stage's metrics (as in its metrics.json) -> [(tag, value, step)], TRL's tag names.

    Two shapes of history exist: a dict of lists with a "step" list (pretrain, SFT, reward,
    DPO: their keys are already TRL's where TRL has one, as `rewards/margins`), or a list of
    per-iteration rows (PPO and the other RL stages: `objective/kl`, `policy/clipfrac`, ...).
    Non-numbers and non-finite values are left out."""
    history = metrics.get("history") or {}
    out = []
    if isinstance(history, list):  # one row per RL iteration
        for i, row in enumerate(history):
            step = int(row.get("iteration", i))
            out += [(tag, value, step) for tag, value in row.items() if tag != "iteration"]
    else:
        for key, values in history.items():
            if key in ("step", "val_step") or not isinstance(values, list):
                continue
            steps = history.get("val_step" if key in _EVAL_KEYS else "step", [])
            tag = _EVAL_KEYS.get(key) or _TRAIN_KEYS.get(key) or f"train/{key}"
            out += [(tag, value, int(step)) for step, value in zip(steps, values)]
    return [(tag, float(v), s) for tag, v, s in out
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]


def write_run(out_dir, stages, make_writer=tensorboard_writer) -> Path:
    """Write the scalars of `stages` (those with a metrics.json in out_dir) to
    DIR/tensorboard/STAGE; returns DIR/tensorboard."""
    root = Path(out_dir) / "tensorboard"
    for stage in stages:
        path = Path(out_dir) / stage / "metrics.json"
        if not path.exists():
            continue
        writer = make_writer(root / stage)
        try:
            for tag, value, step in stage_scalars(read_json(path)):
                writer.add_scalar(tag, value, step)
        finally:
            writer.close()
    return root
