"""Pretraining smoke runs: the loop learns, is reproducible from a seed, resumes, and writes
its files atomically."""

import json

import pytest
import torch

from minialign import pretrain
from minialign.pretrain import PretrainConfig, get_batch


def tiny_cfg(**kw):
    base = dict(n_docs=300, vocab_size=300, n_layer=1, n_head=2, n_embd=32, block_size=48,
                batch_size=8, max_steps=12, warmup_steps=2, eval_interval=6, eval_batches=2)
    base.update(kw)
    return PretrainConfig(**base)


def test_get_batch_targets_are_inputs_shifted_by_one():
    stream = torch.arange(100)
    x, y = get_batch(stream, 4, 10, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 10)
    assert torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(y[:, -1], x[:, -1] + 1)
    with pytest.raises(ValueError, match="too short"):
        get_batch(torch.arange(5), 4, 10, torch.Generator())


def test_pretraining_learns_and_writes_its_files(tmp_path):
    m = pretrain.train(tiny_cfg(max_steps=60, eval_interval=20), tmp_path, log=lambda *_: None)
    hist = m["history"]
    assert m["val_loss"] < hist["val_loss"][0] or m["val_loss"] < m["initial_loss_expected"] - 1
    assert m["train_loss"] < m["initial_loss_expected"] - 1  # far below the uniform guess
    for name in ["pretrain/model.pt", "pretrain/metrics.json", "pretrain/loss.png", "tokenizer.json"]:
        assert (tmp_path / name).exists(), name
    saved = json.loads((tmp_path / "pretrain/metrics.json").read_text())
    for key in ["val_loss", "tokens_per_second", "seconds"]:
        assert saved[key] > 0
    assert not list(tmp_path.rglob("*.tmp"))  # no half-written files left behind
    model, tok = pretrain.load_model(tmp_path)
    assert model.config.vocab_size == tok.vocab_size == 300


def test_same_seed_same_numbers(tmp_path):
    a = pretrain.train(tiny_cfg(), tmp_path / "a", log=lambda *_: None)
    b = pretrain.train(tiny_cfg(), tmp_path / "b", log=lambda *_: None)
    c = pretrain.train(tiny_cfg(seed=1), tmp_path / "c", log=lambda *_: None)
    assert a["history"]["train_loss"] == b["history"]["train_loss"]
    assert a["val_loss"] == b["val_loss"]
    assert a["history"]["train_loss"] != c["history"]["train_loss"]


def test_resume_after_a_crash_gives_the_same_result(tmp_path, monkeypatch):
    full = pretrain.train(tiny_cfg(), tmp_path / "full", log=lambda *_: None)
    # crash right after the first checkpoint (step 6)
    calls = {"n": 0}
    real_step = torch.optim.AdamW.step

    def crashing_step(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt("simulated crash")
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", crashing_step)
    with pytest.raises(KeyboardInterrupt):
        pretrain.train(tiny_cfg(), tmp_path / "crash", log=lambda *_: None)
    monkeypatch.setattr(torch.optim.AdamW, "step", real_step)
    ckpt = torch.load(tmp_path / "crash/pretrain/model.pt", weights_only=True)
    assert ckpt["step"] == 6 and not ckpt["done"]
    resumed = pretrain.train(tiny_cfg(), tmp_path / "crash", log=lambda *_: None)
    assert resumed["history"]["train_loss"] == full["history"]["train_loss"]


def test_resuming_with_another_config_is_a_clear_error(tmp_path, monkeypatch):
    real_step = torch.optim.AdamW.step
    calls = {"n": 0}

    def crashing_step(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt("simulated crash")
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", crashing_step)
    with pytest.raises(KeyboardInterrupt):
        pretrain.train(tiny_cfg(), tmp_path, log=lambda *_: None)
    monkeypatch.setattr(torch.optim.AdamW, "step", real_step)
    with pytest.raises(ValueError, match="another pretraining config"):
        pretrain.train(tiny_cfg(vocab_size=320), tmp_path, log=lambda *_: None)


def test_bf16_mixed_precision_learns_like_fp32(tmp_path):
    runs = {p: pretrain.train(tiny_cfg(max_steps=60, eval_interval=20, precision=p),
                              tmp_path / p, log=lambda *_: None) for p in ("fp32", "bf16")}
    assert runs["fp32"]["precision"] == "fp32" and runs["bf16"]["precision"] == "bf16"
    fp32, bf16 = runs["fp32"]["val_loss"], runs["bf16"]["val_loss"]
    assert bf16 < runs["bf16"]["initial_loss_expected"] - 1
    assert abs(bf16 - fp32) < 0.05 * fp32  # the same run up to bf16 rounding
    with pytest.raises(ValueError, match="precision"):
        tiny_cfg(precision="fp16")


def test_micro_batches_take_the_same_steps_as_pretrain_step(tmp_path):
    """With micro_batch_size the loop writes pretrain_step's update out with gradient
    accumulation (plumbing); it must train the same model, up to float rounding."""
    cfg = dict(precision="fp32")  # bf16 rounds each micro-batch apart
    whole = pretrain.train(tiny_cfg(**cfg), tmp_path / "whole", log=lambda *_: None)
    micro = pretrain.train(tiny_cfg(micro_batch_size=3, **cfg), tmp_path / "micro",
                           log=lambda *_: None)
    assert micro["history"]["train_loss"] == pytest.approx(whole["history"]["train_loss"],
                                                           rel=1e-4)
    assert micro["val_loss"] == pytest.approx(whole["val_loss"], rel=1e-4)


def test_pretrain_step_updates_the_model_once_per_call():
    from minialign.course import fixtures

    model = fixtures.tiny_gpt(seed=0, train=False)
    optimizer = fixtures.adamw(model, lr=0.05)
    x, y = fixtures.token_batch(seed=1)
    before = fixtures.state_of(model)
    losses = [pretrain.pretrain_step(model, optimizer, x, y, lr=0.01, grad_clip=1.0)
              for _ in range(3)]
    assert all(type(loss) is float for loss in losses) and losses[2] < losses[0]
    assert model.training  # the step trains in training mode
    assert fixtures.optimizer_steps(optimizer) == 3
    assert {group["lr"] for group in optimizer.param_groups} == {0.01}
    after = fixtures.state_of(model)
    assert not torch.equal(after["lm_head.weight"], before["lm_head.weight"])
