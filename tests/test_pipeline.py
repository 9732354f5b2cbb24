"""The pipeline's plumbing: which config each stage gets from the command line's flags, and how a
rerun resumes (stages up to date are skipped, changed or forced ones retrain with all after them)."""

import json

import pytest

from minialign import compare, pipeline, ppo
from minialign.__main__ import main as cli
from minialign.utils import TimeSplit, display_path, time_as, timed


def test_display_path_hides_the_machines_folders_inside_the_repository(tmp_path, monkeypatch):
    from minialign.course.markers import REPO_DIR

    assert display_path(REPO_DIR / "runs" / "default") == "runs/default"
    assert display_path(REPO_DIR) == "."
    monkeypatch.chdir(tmp_path)
    assert display_path(tmp_path / "a" / "b") == "a/b"  # inside the working folder
    assert display_path("/") == "/"  # outside both: as it is


def test_precision_reaches_the_configs_that_have_it_and_only_those():
    assert pipeline.make_config("pretrain", fast=True, precision="fp32").precision == "fp32"
    assert pipeline.make_config("pretrain", fast=False, precision="bf16").precision == "bf16"
    assert pipeline.make_config("pretrain", fast=True).precision == "auto"  # the default
    sft = pipeline.make_config("sft", fast=True, precision="fp32")  # no precision field: ignored
    assert not hasattr(sft, "precision")


def test_a_bad_precision_is_refused_with_a_clear_error(capsys):
    with pytest.raises(SystemExit):
        cli(["pretrain", "--precision", "fp16", "--out", "/nonexistent"])
    assert "invalid choice: 'fp16'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="precision must be"):
        pipeline.make_config("pretrain", fast=True, precision="fp16")


# ==============================================================================================
# where the time goes


def test_time_split_charges_each_lane_and_a_nested_block_to_its_own_category():
    now = [0.0]

    def tick(seconds):
        now[0] += seconds

    with TimeSplit(clock=lambda: now[0]) as split:
        tick(1)  # nothing claimed it: other
        time_as("training")
        tick(2)
        with timed("sampling"):  # a rollout inside the training loop
            tick(3)
        tick(4)  # training again
        with timed("evaluation"):
            tick(5)
            with timed("sampling"):
                tick(6)
            tick(7)  # evaluation again
        tick(8)  # training again
        time_as("other")
        tick(9)
    assert split.seconds == {"sampling": 9, "training": 14, "evaluation": 12, "other": 10}
    time_as("training")  # with no split open: nothing to charge, no error
    with timed("evaluation"):
        pass
    assert split.seconds["training"] == 14
    with pytest.raises(ValueError, match="category"):
        with TimeSplit():
            time_as("thinking")


# ==============================================================================================
# a rerun resumes


TINY = {"pretrain": dict(max_steps=40, n_docs=1500), "sft": dict(n_demos=300),
        "preferences": dict(n_prompts=64), "ppo": dict(iterations=2, eval_interval=2),
        "bon": dict(n_prompts=24)}


@pytest.fixture
def tiny_configs(monkeypatch):
    """Every stage's fast config, made smaller still (as the stage smoke tests have them)."""
    make = pipeline.make_config
    sizes = {stage: dict(kw) for stage, kw in TINY.items()}

    def tiny(stage, fast, seed=0, precision=None, **overrides):
        return make(stage, True, seed, precision, **{**sizes.get(stage, {}), **overrides})

    monkeypatch.setattr(pipeline, "make_config", tiny)
    return sizes


def run_ids(out):
    return {s: json.loads((out / s / "stage.json").read_text())["run_id"]
            for s in pipeline.ORDER if (out / s / "stage.json").exists()}


def test_an_interrupted_pipeline_reruns_only_the_interrupted_stage_and_after(
        tiny_configs, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    ppo_train = ppo.train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C during the PPO stage

    monkeypatch.setattr(ppo, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cli(["--fast", "--out", str(out)])
    first = run_ids(out)
    assert set(first) == {"pretrain", "sft", "preferences", "reward"}  # ppo never finished

    monkeypatch.setattr(ppo, "train", ppo_train)
    assert cli(["--fast", "--out", str(out)]) == 0
    second = run_ids(out)
    assert set(second) == set(pipeline.ORDER)
    assert all(second[s] == first[s] for s in first)  # not retrained
    printed = capsys.readouterr().out
    for stage in ("pretrain", "sft", "preferences", "reward"):
        assert f"== {stage}: up to date" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped"] == ["pretrain", "sft", "preferences", "reward"]
    # where the time went: every stage's split, the skipped ones' from the run that trained them
    assert set(summary["time_split"]) == set(pipeline.ORDER)
    ppo_run = summary["stages"]["ppo"]
    assert sum(ppo_run["split"].values()) == pytest.approx(ppo_run["seconds"], rel=0.1, abs=1.0)
    assert all(ppo_run["split"][c] > 0 for c in ("sampling", "training", "evaluation"))
    assert summary["time_split"]["preferences"]["sampling"] > 0
    assert json.loads((out / "ppo" / "metrics.json").read_text())["time_split"] == \
        ppo_run["split"]
    # error bars: the gold reward of every policy, and every win rate but SFT's own 50%
    md = (out / "summary.md").read_text()
    rows = [line.split(" | ") for line in md.splitlines()
            if line.startswith(tuple(f"| {label}" for label in compare.LABELS.values()))]
    assert len(rows) == len(compare.METHODS)
    for name, gold, success, win, kl in rows:
        assert "±" in gold and "±" in success, name
        assert "±" in win or name == "| SFT", name
    assert "| all |" in md  # the time split's table

    # a third run has nothing to do; --force retrains a stage and everything that reads it
    assert cli(["--fast", "--out", str(out), "--force", "bon"]) == 0
    third = run_ids(out)
    assert {s for s in third if third[s] != second[s]} == {"bon", "compare"}


def test_a_changed_config_retrains_that_stage_and_the_stages_after_it(tiny_configs, tmp_path):
    out = tmp_path / "run"
    quiet = lambda *_: None  # noqa: E731
    pipeline.update(["reward"], out, fast=True, log=quiet)
    before = run_ids(out)
    assert pipeline.update(["reward"], out, fast=True, log=quiet) == ["pretrain", "sft",
                                                                      "preferences", "reward"]
    tiny_configs["sft"]["n_demos"] = 200
    assert pipeline.update(["reward"], out, fast=True, log=quiet) == ["pretrain"]
    after = run_ids(out)
    assert after["pretrain"] == before["pretrain"]
    assert all(after[s] != before[s] for s in ("sft", "preferences", "reward"))
    # a field added to a config since the run (so missing from its record) changes nothing
    record = json.loads((out / "sft" / "stage.json").read_text())
    del record["config"]["eval_prompts"]
    (out / "sft" / "stage.json").write_text(json.dumps(record))
    assert pipeline.up_to_date(out, "sft", pipeline.make_config("sft", True))
    record["config"]["n_demos"] = 300  # ...while a field it has, changed, does
    (out / "sft" / "stage.json").write_text(json.dumps(record))
    assert not pipeline.up_to_date(out, "sft", pipeline.make_config("sft", True))
    (out / "reward" / "stage.json").unlink()  # a run folder from before stage records
    assert not pipeline.up_to_date(out, "reward", pipeline.make_config("reward", True))


def test_sweep_always_reruns_the_compare_stage(tmp_path, monkeypatch):
    """`compare --sweep` forces the compare stage (the sweep is its work: a change in the
    experiments' code is part of no stage's record, so it must not be skipped); without
    --sweep, or for another stage, only --force forces anything."""
    seen = []

    def update(stages, out, fast, seed, device, timings, precision=None, force=(),
               overrides=None):
        seen.append((list(stages), list(force), overrides))
        return []

    monkeypatch.setattr(pipeline, "update", update)
    assert cli(["compare", "--sweep", "--out", str(tmp_path)]) == 0
    assert cli(["compare", "--out", str(tmp_path)]) == 0
    assert cli(["dpo", "--force", "dpo", "--out", str(tmp_path)]) == 0
    assert seen[0] == (["compare"], ["compare"], {"compare": {"sweep": True}})
    assert seen[1] == (["compare"], [], {})
    assert seen[2] == (["dpo"], ["dpo"], {})
