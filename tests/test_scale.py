"""Scaling out: the `--size` presets (a GPU size, built here on the meta device or shrunk),
the benchmark's GPU path, and `--log tensorboard` (with a stand-in writer: tensorboard is an
optional extra and need not be installed)."""

import json
import sys
from dataclasses import replace

import pytest
import torch

from minialign import bench, tracking
from minialign.model import GPT
from minialign.pretrain import SIZES, PretrainConfig
from minialign.utils import autocast, make_optimizer


def test_gpt2_size_is_gpt2_small():
    cfg = PretrainConfig(**SIZES["gpt2"])
    model_cfg = cfg.model_config(cfg.vocab_size)
    assert (model_cfg.n_layer, model_cfg.n_head, model_cfg.n_embd, model_cfg.block_size) == \
        (12, 12, 768, 1024)
    with torch.device("meta"):  # shapes only: no memory, no time
        ours = GPT(model_cfg)
        gpt2 = GPT(replace(model_cfg, vocab_size=50257))
    assert 84e6 < ours.num_params() < 87e6  # non-embedding
    assert 123e6 < gpt2.num_params(non_embedding=False) < 126e6  # GPT-2 small: 124M
    assert cfg.micro_batch_size and cfg.batch_size % cfg.micro_batch_size == 0
    assert PretrainConfig.fast(**SIZES["gpt2"]).n_layer == 12  # --fast keeps the size's shape
    assert PretrainConfig(**SIZES["default"]) == PretrainConfig()


def test_a_shrunk_gpt2_shape_trains_one_step_with_micro_batches():
    cfg = PretrainConfig(**{**SIZES["gpt2"], "n_layer": 2, "n_embd": 48, "n_head": 12,
                            "block_size": 64, "batch_size": 4, "micro_batch_size": 2})
    model = GPT(cfg.model_config(300))
    opt = make_optimizer(model, cfg.lr, cfg.weight_decay)
    x = torch.randint(0, 300, (cfg.batch_size, cfg.block_size + 1))
    before = model.transformer.wte.weight.detach().clone()
    for rows in (slice(0, 2), slice(2, 4)):  # gradient accumulation over two micro-batches
        with autocast(torch.device("cpu"), False):  # bf16 autocast is for CUDA (or AMX)
            _, loss = model(x[rows, :-1], x[rows, 1:])
        (loss * 0.5).backward()
    opt.step()
    assert torch.isfinite(loss) and not torch.equal(before, model.transformer.wte.weight)


def test_datasheet_peak_lookup(monkeypatch):
    assert bench.datasheet_bf16_peak(torch.device("cpu")) is None
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: "NVIDIA H100 PCIe")
    assert bench.datasheet_bf16_peak(torch.device("cuda")) == 756_000.0  # not the SXM's 989
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: "NVIDIA A100-SXM4-80GB")
    assert bench.datasheet_bf16_peak(torch.device("cuda")) == 312_000.0
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: "Some Future GPU")
    assert bench.datasheet_bf16_peak(torch.device("cuda")) is None


# ----------------------------------------------------------------------------------------------
# --log tensorboard


class ListWriter:
    """Stands in for torch's SummaryWriter: records what would be written."""

    def __init__(self, log_dir):
        self.log_dir, self.scalars, self.closed = log_dir, [], False
        WRITERS.append(self)

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def close(self):
        self.closed = True


WRITERS: list = []


def test_stage_scalars_use_trl_names():
    sft_like = {"history": {"step": [0, 1], "train_loss": [2.0, 1.5], "val_step": [0, 2],
                            "val_loss": [2.1, 1.7]}}
    assert tracking.stage_scalars(sft_like) == [
        ("train/loss", 2.0, 0), ("train/loss", 1.5, 1), ("eval/loss", 2.1, 0),
        ("eval/loss", 1.7, 2)]
    dpo_like = {"history": {"step": [0], "loss": [0.69], "rewards/margins": [0.1]}}
    assert ("train/rewards/margins", 0.1, 0) in tracking.stage_scalars(dpo_like)
    ppo_like = {"history": [{"iteration": 0, "objective/kl": 0.0, "val/first_ratio": None},
                            {"iteration": 1, "objective/kl": float("nan")}]}
    assert tracking.stage_scalars(ppo_like) == [("objective/kl", 0.0, 0)]  # no None, no nan


def test_write_run_writes_one_run_per_stage(tmp_path):
    WRITERS.clear()
    for stage, history in [("sft", {"step": [0], "train_loss": [1.0]}),
                           ("ppo", [{"iteration": 0, "objective/scores": 0.5}])]:
        (tmp_path / stage).mkdir()
        (tmp_path / stage / "metrics.json").write_text(json.dumps({"history": history}))
    root = tracking.write_run(tmp_path, ["pretrain", "sft", "ppo"], make_writer=ListWriter)
    assert [w.log_dir for w in WRITERS] == [root / "sft", root / "ppo"]  # pretrain: not run
    assert WRITERS[0].scalars == [("train/loss", 1.0, 0)] and all(w.closed for w in WRITERS)
    assert WRITERS[1].scalars == [("objective/scores", 0.5, 0)]


def test_missing_tensorboard_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(RuntimeError, match="pip install tensorboard"):
        tracking.check_tensorboard()
    from minialign.__main__ import main

    with pytest.raises(SystemExit):
        main(["sft", "--fast", "--log", "tensorboard"])
    assert "pip install tensorboard" in capsys.readouterr().err


def test_a_stage_writes_its_curves_live_as_it_trains(tmp_path, monkeypatch):
    """With tracking on, the pipeline opens DIR/tensorboard/STAGE before the stage trains and
    the loop hands over every step's scalars; the run's history says the same."""
    from minialign import pipeline, pretrain

    WRITERS.clear()
    make = pipeline.make_config
    monkeypatch.setattr(pipeline, "make_config", lambda stage, fast, seed=0, precision=None, **kw:
                        make(stage, True, seed, precision, max_steps=6, eval_interval=3,
                             n_docs=300, **kw))
    seen_while_training = []
    train = pretrain.train

    def spy(*args, **kwargs):  # what the writer holds while the stage runs
        out = train(*args, **kwargs)
        seen_while_training.extend(WRITERS[0].scalars)
        return out

    monkeypatch.setattr(pretrain, "train", spy)
    tracking.enable(ListWriter)
    try:
        pipeline.run("pretrain", tmp_path, fast=True, log=lambda *_: None)
    finally:
        tracking.enable(None)
    (writer,) = WRITERS
    assert writer.log_dir == tmp_path / "tensorboard" / "pretrain" and writer.closed
    assert [s for t, _, s in seen_while_training if t == "train/loss"] == list(range(6))
    assert [s for t, _, s in seen_while_training if t == "eval/loss"] == [3, 6]
    history = json.loads((tmp_path / "pretrain" / "metrics.json").read_text())
    assert sorted(tracking.stage_scalars(history)) == sorted(seen_while_training)
    tracking.log({"train/loss": 1.0}, 0)  # tracking off again: nothing is written anywhere
    assert len(writer.scalars) == len(seen_while_training)


def test_op_kinds_of_profiler_names():
    assert bench.op_kind("aten::addmm") == bench.op_kind("aten::bmm") == "matmul"
    assert bench.op_kind("aten::_scaled_dot_product_flash_attention_for_cpu") == "attention"
    assert bench.op_kind("aten::_log_softmax_backward_data") == "softmax and loss"
    assert bench.op_kind("aten::native_layer_norm") == "norms"
    assert bench.op_kind("aten::_foreach_addcmul_") == bench.op_kind("aten::_fused_adamw_") == "optimizer"
    assert bench.op_kind("aten::gelu") == bench.op_kind("aten::add_") == "other elementwise"


def test_step_profile_splits_a_tiny_step_into_fractions():
    from minialign.model import GPTConfig

    cfg = GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=16)
    profile = bench.step_profile(cfg, batch_size=4, device=torch.device("cpu"), steps=2)
    assert set(profile) == set(bench.OP_KINDS)
    assert abs(sum(profile.values()) - 1) < 1e-9 and profile["matmul"] > 0
    assert profile["optimizer"] > 0  # AdamW ran inside the profiled steps


# ----------------------------------------------------------------------------------------------
# bench --compile: torch.compile is timed in a child process, whose failures are reported


def test_compiled_speed_reports_a_failing_child_instead_of_raising():
    from types import SimpleNamespace

    bad = SimpleNamespace(vocab_size=16, block_size=8, n_layer=0, n_head=1, n_embd=8)
    out = bench.compiled_training_speed(bad, 2, torch.device("cpu"))
    assert set(out) == {"error"} and "exited with 1" in out["error"]
    assert "n_layer" in out["error"]  # the child's last line of stderr: what went wrong
    cfg = PretrainConfig.fast().model_config(64)
    slow = bench.compiled_training_speed(cfg, 2, torch.device("cpu"), timeout_s=0.01)
    assert slow == {"error": "no result within 0 s"}


def test_compile_flag_goes_with_bench_only():
    from minialign.__main__ import main

    with pytest.raises(SystemExit) as e:
        main(["sft", "--compile", "--fast", "--out", "/nonexistent"])
    assert e.value.code == 2
