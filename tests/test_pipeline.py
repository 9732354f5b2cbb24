"""The pipeline's plumbing: which config each stage gets from the command line's flags, and how a
rerun resumes (stages up to date are skipped, changed or forced ones retrain with all after them)."""

import json

import pytest

from minialign import pipeline, ppo
from minialign.__main__ import main as cli


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
    assert json.loads((out / "summary.json").read_text())["skipped"] == [
        "pretrain", "sft", "preferences", "reward"]

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
    (out / "reward" / "stage.json").unlink()  # a run folder from before stage records
    assert not pipeline.up_to_date(out, "reward", pipeline.make_config("reward", True))
