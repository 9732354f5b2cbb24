"""The PPO loop end to end on a toy task where the answer is known: it must drive a reward to
near its maximum, and the classic sanity checks must hold on the way."""

import copy

import torch

from minialign.model import GPT, GPTConfig
from minialign.ppo import PolicyWithValueHead, PPOConfig, ppo_loop

V, PROMPT, END, PAD, TARGET = 12, 1, 2, 0, 7


def toy_models(seed=0):
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=V, block_size=16, n_layer=1, n_head=2, n_embd=32)
    gpt = GPT(cfg)
    return PolicyWithValueHead(gpt), copy.deepcopy(gpt)


def say_the_word(ro):
    """Reward 1 when the response contains the target token, else 0."""
    return ((ro.response == TARGET) & (ro.mask > 0)).any(1).float()


def toy_cfg(**kw):
    base = dict(iterations=40, batch_size=32, minibatch_size=16, ppo_epochs=4, lr=1e-3, value_lr=3e-3,
                kl_coef=0.01, adaptive_kl=False, max_new_tokens=6,
                temperature=1.0, missing_eos_penalty=0.0)
    base.update(kw)
    return PPOConfig(**base)


def run(cfg):
    policy, ref = toy_models()
    history = ppo_loop(policy, ref, say_the_word, lambda n, rng: [[PROMPT]] * n, cfg, PAD, END)
    return history


def test_ppo_learns_to_say_the_word():
    history = run(toy_cfg())
    start = sum(h["objective/scores"] for h in history[:3]) / 3
    end = sum(h["objective/scores"] for h in history[-5:]) / 5
    assert start < 0.6
    assert end > 0.95, [round(h["objective/scores"], 2) for h in history]
    assert history[-1]["objective/kl"] > 0.1  # it moved away from the reference to get there


def test_first_minibatch_ratio_is_one_and_kl_starts_at_zero():
    history = run(toy_cfg(iterations=3))
    for h in history:
        assert abs(h["val/first_ratio"] - 1.0) < 1e-5
    assert abs(history[0]["objective/kl"]) < 1e-5  # policy == reference at the start


def test_without_ppo_updates_nothing_changes():
    cfg = toy_cfg(iterations=2, lr=0.0, value_lr=0.0)
    history = run(cfg)
    for h in history:
        assert h["policy/clipfrac"] == 0.0
        assert abs(h["val/ratio"] - 1.0) < 1e-5
        assert abs(h["objective/kl"]) < 1e-5
