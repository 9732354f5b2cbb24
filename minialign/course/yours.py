"""Train it with your code: one chapter's stage trained by *your* functions in a short
configuration, beside the library's own code on the same short run, and what looks wrong said in
words.

    from minialign.course.yours import train_with_your_code
    result = train_with_your_code("dpo")   # your exercises/ (every chapter you wrote) train DPO
    result.plot();                         # your curves and gold reward beside the library's

Where things are. The run starts from the course's saved previous stage (runs/default/sft,
runs/default/preferences, ...: what the earlier notebooks, or `python -m minialign`, trained),
copied into its own folder, runs/yours/<stage> (runs/yours-fast/<stage> in fast mode): it never
writes over runs/default. The library's run of the same short configuration, with the same
seed, goes to runs/yours/library-<stage>; it trains once and is kept.

How to read it. Correct code gives the library's curves: the very same numbers when you wrote
the same arithmetic, nearly the same when you wrote it another way (floating-point rounding then
grows a little over the steps). `diagnose` reads a run's metrics and says in plain words what
looks wrong: a loss that did not fall, a reward model that ranks the rejected answers higher, a
PPO whose gold reward fell while its reward-model score rose, a DPO that made the chosen answers
less likely than the rejected ones. A check fires only when the library's run of the same
configuration passes it, so that a run too short to show something is never blamed on you.

This runs your code in this process, unsandboxed (see impl.py); grading for credit is
`check(N)` / `python -m minialign.grade`.
"""

from __future__ import annotations

import math
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from .. import pipeline
from ..utils import fast_mode, read_json
from . import impl as impl_lib
from .markers import CHAPTERS, REPO_DIR

STAGES = ("pretrain", "sft", "reward", "ppo", "dpo")  # the training chapters 2-6
CHAPTER_OF = {"pretrain": 2, "sft": 3, "reward": 4, "ppo": 5, "dpo": 6}

# The short configurations: overrides of the stage's config (of its fast preset in fast mode).
# At the default size each run (yours, or the library's) should take 15-40 s on 2 CPU cores,
# going by the full runs' time per step and per evaluation. The evaluation on the 540 held-out
# prompts stays whole, so that the gold reward is measured as in the full run.
SHORT = {
    "pretrain": dict(n_docs=10_000, max_steps=80, warmup_steps=10, eval_interval=20,
                     eval_batches=4),
    "sft": dict(n_demos=2000, epochs=2, eval_samples=1),
    "reward": dict(epochs=1),
    "ppo": dict(iterations=12, eval_interval=4),
    "dpo": dict(max_pairs=2000),
}
# Fast mode (MINIALIGN_FAST=1, the notebooks' tests): seconds on the tiny fast models
SHORT_FAST = {
    "pretrain": dict(n_docs=1500, max_steps=20, eval_interval=10),
    "sft": dict(n_demos=200),
    "reward": dict(max_prompts=48),
    "ppo": dict(iterations=2, eval_interval=1),
    "dpo": dict(max_pairs=96),
}


@dataclass
class Finding:
    """One thing the run shows: a problem (something of yours looks wrong) or not."""

    problem: bool
    text: str

    def __str__(self) -> str:
        return ("✗ " if self.problem else "✓ ") + self.text


@dataclass
class Result:
    """Your short run of a stage beside the library's."""

    stage: str
    impl: str  # "exercises", "solutions" or your folder
    library: dict  # the metrics of the library's run of the same short configuration
    yours: dict | None = None  # your run's metrics; None when it did not run or stopped
    error: str | None = None  # what stopped your run (your function's error, in words)
    findings: list[Finding] = field(default_factory=list)
    yours_dir: Path | None = None  # your run folder (the stage's files in yours_dir/stage)
    library_dir: Path | None = None
    record: dict = field(default_factory=dict)  # which functions were yours (impl.Active.record)

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.problem]

    @property
    def ok(self) -> bool:
        """Your run finished and nothing in it looks wrong."""
        return self.yours is not None and not self.problems

    def plot(self, path=None):
        """Your curves and gold reward beside the library's, on one figure."""
        from .. import plots

        if self.yours is None:
            note = "not run: " + (self.error.splitlines()[0] if self.error else
                                  "none of your functions are written yet")
        else:
            note = ""
        return plots.yours_vs_library(self.stage, self.yours, self.library, path, note=note)


# ==============================================================================================
# the run


def train_with_your_code(stage: str, impl: str | Path = "exercises", run_dir=None, out=None,
                         fast: bool | None = None, log=print, **overrides) -> Result:
    """Train `stage` ("pretrain", "sft", "reward", "ppo" or "dpo") with the functions written in
    `impl` ("exercises", "solutions" or a folder of chapter files) in the short configuration,
    starting from the stages before it in `run_dir` (default: the course's run folder,
    runs/default, or runs/fast in fast mode), beside the library's run of the same
    configuration. Prints what was yours, where the runs are, and the findings; returns them.

    out: the folder of the short runs (default: runs/yours next to run_dir).
    fast: the fast presets (default: MINIALIGN_FAST). overrides: fields of the stage's config.
    Your code failing (an exception, a wrong shape, nan) does not raise: the result says what
    went wrong (`result.error`)."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {', '.join(STAGES)}, not {stage!r}")
    fast = fast_mode() if fast is None else fast
    config = {**(SHORT_FAST if fast else SHORT)[stage], **overrides}
    previous = impl_lib.current()
    impl_lib.restore()  # the library's code for the inputs and for the library's run
    try:
        base = Path(run_dir) if run_dir is not None else pipeline.default_run_dir(fast)
        root = Path(out) if out is not None else base.parent / (
            "yours" if base.name == "default" else f"yours-{base.name}")
        for dep in pipeline.STAGES[stage][2]:  # the course's previous stage, trained if missing
            pipeline.ensure(dep, base, fast, log=log)
        result = Result(stage, str(impl), {}, library_dir=root / f"library-{stage}")
        result.library = _library_run(stage, base, result.library_dir, fast, config, log)
        _your_run(result, base, root / stage, fast, config, log)
    finally:
        impl_lib.restore()
        if previous is not None:  # put back what the notebook had set with `use`
            impl_lib.use(previous.name, log=lambda *_: None)
    if result.yours is not None:
        result.findings = diagnose(stage, result.yours, result.library)
    _report(result, log)
    return result


def _library_run(stage, base: Path, out_dir: Path, fast: bool, config: dict, log) -> dict:
    """The library's run of the short configuration, trained once and kept while its config and
    the runs it starts from stay the same."""
    _copy_inputs(stage, base, out_dir)
    cfg = pipeline.make_config(stage, fast, **config)
    if pipeline.up_to_date(out_dir, stage, cfg):
        return read_json(out_dir / stage / "metrics.json")
    log(f"== {stage}, short configuration, the library's code (once): {_shown(out_dir)} ==")
    return _run(stage, out_dir, fast, config, log)


def _your_run(result: Result, base: Path, out_dir: Path, fast: bool, config: dict, log):
    """Your run, into out_dir (its stage folder trained afresh every time): fills `result`."""
    lines = []
    try:
        active = impl_lib.use(result.impl, log=lines.append)
    except (SyntaxError, impl_lib.StudentCodeError) as e:  # a chapter file that does not load
        result.error = f"{type(e).__name__}: {e}" if isinstance(e, SyntaxError) else str(e)
        return
    result.record = active.record()
    if not result.record["student"]:
        return  # nothing of yours: the run would be the library's
    result.yours_dir = out_dir
    _copy_inputs(result.stage, base, out_dir)
    log(f"== {result.stage}, short configuration, your code: {_shown(out_dir)} ==")
    try:
        result.yours = _run(result.stage, out_dir, fast, config, log)
    except impl_lib.StudentCodeError as e:  # your function raised, or returned a wrong shape or nan
        result.error = str(e)
    except Exception as e:  # the library's code failed on what your functions returned
        where = traceback.extract_tb(e.__traceback__)[-1]
        result.error = (f"the stage failed in the library's code ({Path(where.filename).name} "
                        f"line {where.lineno}: {type(e).__name__}: {e}), on what your functions "
                        f"returned: one returns the right shape but not the right thing")
    result.record = active.record()  # with the functions that fell back while running


def _run(stage: str, out_dir: Path, fast: bool, config: dict, log) -> dict:
    shutil.rmtree(out_dir / stage, ignore_errors=True)  # afresh: never resume an older run
    start = time.perf_counter()
    metrics = pipeline.run(stage, out_dir, fast, overrides=config,
                           log=lambda line: None if str(line).startswith("== ") else log(line))
    metrics["short_run_seconds"] = time.perf_counter() - start
    return metrics


def _copy_inputs(stage: str, base: Path, out_dir: Path) -> None:
    """The stages `stage` reads (and theirs), and the tokenizer, copied from the course's run
    folder: copies, not links, so that nothing written here can reach the course's run."""
    out_dir.mkdir(parents=True, exist_ok=True)
    needed, todo = set(), list(pipeline.STAGES[stage][2])
    while todo:
        dep = todo.pop()
        needed.add(dep)
        todo += pipeline.STAGES[dep][2]
    for dep in sorted(needed):
        shutil.rmtree(out_dir / dep, ignore_errors=True)
        shutil.copytree(base / dep, out_dir / dep)
    if needed and (base / "tokenizer.json").exists():
        shutil.copy2(base / "tokenizer.json", out_dir / "tokenizer.json")


def _report(result: Result, log) -> None:
    """Which functions were yours, where the runs are, and the findings, in a few lines."""
    chapter = CHAPTER_OF[result.stage]
    record = result.record
    mine = record.get("student", [])
    unwritten = [k for k, why in record.get("library", {}).items()
                 if k.startswith(f"ch{chapter:02d}.")]
    log(f"\n{result.stage} with your code ({result.impl}), short configuration")
    if mine:
        log(f"  yours: {', '.join(mine)}")
    if unwritten:
        log(f"  the library's, yours not written yet: {', '.join(unwritten)}")
    if result.error:
        log(f"  ✗ your code stopped the run: {result.error}")
    elif not mine and record:
        log(f"  none of your functions are written yet: write them in "
            f"exercises/{CHAPTERS[chapter].filename} (check({chapter}) grades them), then run "
            f"this again. The figure shows the library's short run alone.")
    if result.yours is not None:
        log(f"  your run: {_shown(result.yours_dir / result.stage)}; the library's, same "
            f"configuration and seed: {_shown(result.library_dir / result.stage)}")
    for finding in result.findings:
        log(f"  {finding}")


def _shown(path: Path) -> str:
    """A path as the student knows it: relative to the repository when it is inside."""
    try:
        return str(Path(path).resolve().relative_to(REPO_DIR))
    except ValueError:
        return str(path)


# ==============================================================================================
# diagnoses: a run's metrics -> findings in plain words


def diagnose(stage: str, yours: dict, library: dict | None = None) -> list[Finding]:
    """What a run of `stage` shows, in plain words. yours: the run's metrics (metrics.json);
    library: the library's run of the same configuration, if any. A check that the library's
    run fails too (a run too short to show it) is not reported."""
    findings = []
    for healthy, says in RULES[stage]:
        try:
            if healthy(yours) or (library and not healthy(library)):
                continue
            findings.append(Finding(True, says(yours, library or {})))
        except (KeyError, IndexError, TypeError, ZeroDivisionError):
            continue  # a metric this run does not have
    if library:
        findings.append(_against_library(stage, yours, library, bool(findings)))
    return findings


def _first_last(values: list, share: float = 0.1) -> tuple[float, float]:
    """The means of the first and the last tenth of a curve (at least one point each)."""
    k = max(1, int(len(values) * share))
    return sum(values[:k]) / k, sum(values[-k:]) / k


def _fell(values: list, by: float = 0.02) -> bool:
    """Did the curve end lower than it started, by more than `by` of its start?"""
    first, last = _first_last(values)
    return last < first - by * abs(first)


def _loss_fell(m: dict) -> bool:
    return _fell(m["history"]["train_loss"])


def _loss_did_not_fall(what: str, advice: str):
    def says(m: dict, lib: dict) -> str:
        first, last = _first_last(m["history"]["train_loss"])
        return (f"your {what} loss did not fall ({first:.3f} over the first steps, {last:.3f} "
                f"over the last): {advice}")
    return says


def _sft_beats_pretrained(m):
    return m["gold_reward_mean"] > m["pretrained_gold_reward_mean"]


def _sft_worse(m, lib):
    return (f"your SFT model's answers are no better than the pretrained model's (gold reward "
            f"{m['gold_reward_mean']:+.2f} against {m['pretrained_gold_reward_mean']:+.2f}): check "
            f"that the labels score the response, and only the response")


def _sft_ends(m):
    return m["end_rate"] >= 0.5


def _sft_never_ends(m, lib):
    return (f"your SFT model rarely ends its turn ({m['end_rate']:.0%} of its answers, the "
            f"library's {lib.get('end_rate', float('nan')):.0%}): is <|end|> a label the loss "
            f"scores?")


def _rm_separates(m):
    return abs(m["history"]["val_loss"][-1] - math.log(2)) > 1e-3


def _rm_flat(m, lib):
    return (f"your reward model gives every answer the same score (held-out loss "
            f"{m['history']['val_loss'][-1]:.4f} = ln 2): it learned nothing — does the loss's "
            f"gradient reach the scores?")


def _rm_right_way(m):
    return m["val_accuracy"] >= 0.5 or not _rm_separates(m)


def _rm_wrong_way(m, lib):
    return (f"your reward model ranks the rejected answer higher on most held-out pairs "
            f"(accuracy {m['val_accuracy']:.0%}) — check the sign: the loss must push the "
            f"chosen answer's score above the rejected one's")


def _held_out_loss_fell(m):
    return m["history"]["val_loss"][-1] < m["history"]["val_loss"][0] - 0.002


def _held_out_loss_did_not_fall(m, lib):
    v = m["history"]["val_loss"]
    return (f"your reward model's loss on held-out pairs did not fall ({v[0]:.3f} → {v[-1]:.3f}):"
            f" check the update (zero the gradients, backward, step) and the ranking loss")


def _rm_agrees_with_gold(m):
    return m["gold_pair_accuracy"] >= 0.5


def _rm_against_gold(m, lib):
    return (f"your reward model disagrees with the gold reward on most pairs of SFT answers "
            f"(it orders {m['gold_pair_accuracy']:.0%} of them as the gold reward does)")


def _ppo_proxy_rose(m):
    return m["curve"]["proxy"][-1] > m["curve"]["proxy"][0]


def _ppo_proxy_fell(m, lib):
    p = m["curve"]["proxy"]
    return (f"your PPO lowered the reward model's score ({p[0]:+.2f} → {p[-1]:+.2f}): it learned "
            f"to do what the reward model dislikes — check the sign of the policy loss and of "
            f"the advantages")


def _ppo_gold_held(m):
    g, p = m["curve"]["gold"], m["curve"]["proxy"]
    return g[-1] >= g[0] - 0.02 or p[-1] <= p[0]


def _ppo_hacked(m, lib):
    g, p, kl = m["curve"]["gold"], m["curve"]["proxy"], m["curve"]["kl"][-1]
    lib_kl = lib.get("curve", {}).get("kl", [float("nan")])[-1]
    return (f"your PPO's gold reward fell ({g[0]:+.2f} → {g[-1]:+.2f}) while its reward-model "
            f"score rose ({p[0]:+.2f} → {p[-1]:+.2f}): it is gaming the reward model, far from "
            f"the SFT model (KL {kl:.2f} nats, the library's {lib_kl:.2f}) — check the KL "
            f"penalty in the rewards and the clipping")


def _ppo_kl_sane(m):
    return -0.5 < m["kl_to_ref"] < 20


def _ppo_kl_wild(m, lib):
    return (f"your policy's KL to the SFT model is {m['kl_to_ref']:.2f} nats per answer (the "
            f"library's {lib.get('kl_to_ref', float('nan')):.2f}) — is the KL penalty "
            f"subtracted from the reward, with log pi - log pi_ref?")


def _dpo_margin(m) -> float:
    """The implicit reward margin (chosen - rejected) over the last tenth of the training steps."""
    return _first_last(m["history"]["rewards/margins"])[1]


def _dpo_learned_the_pairs(m):
    return _dpo_margin(m) > 0


def _dpo_wrong_way_on_training_pairs(m, lib):
    library = f" (the library's {_dpo_margin(lib):+.2f})" if lib else ""
    return (f"your DPO made the chosen answers less likely than the rejected ones (relative to "
            f"the reference) on its training pairs: the implicit reward margin ended at "
            f"{_dpo_margin(m):+.2f}{library} — check the sign")


def _dpo_right_way(m):  # (a wrong-way margin is said by the rule above)
    return m["implicit_reward_accuracy"] >= 0.5 or not _dpo_learned_the_pairs(m)


def _dpo_wrong_way(m, lib):
    return (f"your DPO made the chosen answers less likely than the rejected ones on most "
            f"held-out pairs: its implicit reward prefers the chosen answer on only "
            f"{m['implicit_reward_accuracy']:.0%} of them — check the sign")


def _dpo_gold_held(m):
    return m["gold_reward_mean"] >= m["sft_gold_reward_mean"] - 0.02


def _dpo_gold_fell(m, lib):
    return (f"your DPO's answers are worse than the SFT model's (gold reward "
            f"{m['gold_reward_mean']:+.2f} against {m['sft_gold_reward_mean']:+.2f})")


def _dpo_loss_fell(m):
    return _first_last(m["history"]["loss"])[1] < math.log(2) - 0.005


def _dpo_loss_stuck(m, lib):
    last = _first_last(m["history"]["loss"])[1]
    return (f"your DPO loss did not fall below ln 2 = 0.693 (the loss of a policy equal to the "
            f"reference; {last:.3f} over the last steps): the policy is not learning from the "
            f"pairs — are the log-probs the policy's, with gradients?")


# stage -> [(healthy(metrics) -> bool, says(yours, library) -> the finding when not healthy)]
RULES = {
    "pretrain": [(_loss_fell, _loss_did_not_fall(
        "pretraining", "the parameters are not moving downhill — does pretrain_step zero the "
                       "gradients, call backward on the loss and step the optimizer?"))],
    "sft": [(_loss_fell, _loss_did_not_fall(
                "SFT", "check sft_step (zero the gradients, backward, step) and that the loss "
                       "is the next-token loss of the response tokens")),
            (_sft_beats_pretrained, _sft_worse),
            (_sft_ends, _sft_never_ends)],
    "reward": [(_rm_separates, _rm_flat), (_rm_right_way, _rm_wrong_way),
               (_held_out_loss_fell, _held_out_loss_did_not_fall),
               (_rm_agrees_with_gold, _rm_against_gold)],
    "ppo": [(_ppo_proxy_rose, _ppo_proxy_fell), (_ppo_gold_held, _ppo_hacked),
            (_ppo_kl_sane, _ppo_kl_wild)],
    "dpo": [(_dpo_learned_the_pairs, _dpo_wrong_way_on_training_pairs),
            (_dpo_right_way, _dpo_wrong_way), (_dpo_gold_held, _dpo_gold_fell),
            (_dpo_loss_fell, _dpo_loss_stuck)],
}

# stage -> (the curve compared step by step, the headline number, its name, higher is better,
# how much worse than the library's counts as a problem)
HEADLINE = {
    "pretrain": (("history", "train_loss"), "val_loss", "validation loss", False, 0.15),
    "sft": (("history", "train_loss"), "gold_reward_mean", "gold reward", True, 0.15),
    "reward": (("history", "train_loss"), "val_accuracy", "held-out accuracy", True, 0.08),
    "ppo": (("curve", "proxy"), "gold_reward_mean", "gold reward", True, 0.15),
    "dpo": (("history", "loss"), "gold_reward_mean", "gold reward", True, 0.15),
}


def _against_library(stage: str, yours: dict, library: dict, found: bool) -> Finding:
    """Your run beside the library's: the same numbers, close, or clearly worse."""
    (group, curve), key, name, higher, worse_by = HEADLINE[stage]
    mine, theirs = yours.get(key), library.get(key)
    if mine is None or theirs is None:
        return Finding(False, f"no {name} to compare with the library's")
    if yours.get(group, {}).get(curve) == library.get(group, {}).get(curve) and mine == theirs:
        return Finding(False, f"the library's numbers exactly, step for step ({name} "
                              f"{mine:.3f}): your code computes what the library's does")
    gap = (theirs - mine) if higher else (mine - theirs)
    if gap > worse_by and not found:
        return Finding(True, f"your {name} is {mine:.3f}, the library's {theirs:.3f} on the "
                             f"same run: your code trains, but less well — compare your "
                             f"functions with their docstrings' contracts")
    close = " (close: the arithmetic differs a little)" if abs(gap) <= worse_by else ""
    return Finding(False, f"{name} {mine:.3f}, the library's {theirs:.3f} on the same run{close}")
