"""The pretraining-length side experiment: shorter pretraining runs, each fine-tuned, tabulated
with the run folder's own (fast configs: tiny models, seconds)."""

import json

import pytest

from minialign import pipeline
from minialign.pretrain_length import PretrainLengthConfig, length_row


def test_config_sorts_steps_and_refuses_nonsense():
    assert PretrainLengthConfig(steps=(480, 320)).steps == (320, 480)
    with pytest.raises(ValueError):
        PretrainLengthConfig(steps=())
    with pytest.raises(ValueError):
        PretrainLengthConfig(steps=(0, 100))
    assert "pretrain_length" not in pipeline.ORDER  # not the default run's time to spend
    assert PretrainLengthConfig().fast_stages is False and PretrainLengthConfig.fast().fast_stages


def test_stage_fast_pretrains_shorter_and_tabulates_every_length(tmp_path):
    quiet = lambda *a, **k: None  # noqa: E731
    skipped = pipeline.update(["pretrain_length"], tmp_path, fast=True, log=quiet)
    assert skipped == []
    m = json.loads((tmp_path / "pretrain_length" / "metrics.json").read_text())
    default = json.loads((tmp_path / "pretrain" / "metrics.json").read_text())["config"]
    steps = [r["steps"] for r in m["rows"]]
    assert steps == sorted({*PretrainLengthConfig.fast().steps, default["max_steps"]})
    assert m["default_steps"] == default["max_steps"]
    short = m["rows"][0]
    sub = tmp_path / "pretrain_length" / f"steps{short['steps']}"
    # the shorter run: the run folder's pretrain config with only max_steps changed
    c = json.loads((sub / "pretrain" / "metrics.json").read_text())["config"]
    assert {k for k in c if c[k] != default[k]} == {"max_steps"}
    assert short == length_row(sub)
    assert short["tokens"] == c["max_steps"] * c["batch_size"] * c["block_size"]
    assert short["tokens"] < m["rows"][-1]["tokens"]
    for r in m["rows"]:
        assert 0 <= r["sft_success"] <= 1 and r["sft_success_se"] >= 0 and r["val_loss"] > 0
    assert (tmp_path / "pretrain_length" / "curve.png").stat().st_size > 0
    # a rerun finds the shorter run up to date: nothing retrained
    before = (sub / "sft" / "metrics.json").stat().st_mtime_ns
    pipeline.update(["pretrain_length"], tmp_path, fast=True, log=quiet, force=["pretrain_length"])
    assert (sub / "sft" / "metrics.json").stat().st_mtime_ns == before
