"""GRPO, Dr. GRPO and RLOO: the pure functions against hand-computed cases, a toy problem on
which the loop must learn, and the stage end to end in its fast configuration."""

import copy
import json
import math

import pytest
import torch

from minialign import grpo
from minialign.grpo import (GRPOConfig, aggregate_loss, clipped_token_loss, equal_reward_groups,
                            group_advantages, grpo_loop, grpo_loss, k3_kl, overlong_penalty,
                            rloo_advantages, shape_rewards)
from minialign.model import GPT, GPTConfig
from minialign.ppo import Rollout

NAN = float("nan")


# ==============================================================================================
# advantages


def test_group_advantages_std_by_hand():
    adv = group_advantages(torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]]))
    # row 0: mean 2, Bessel std 1; row 1: mean 1/3, std sqrt((2/9 * ... )) = 1/sqrt(3)
    expected0 = torch.tensor([-1.0, 0.0, 1.0]) / (1.0 + 1e-4)
    std1 = math.sqrt(((1 / 3) ** 2 * 2 + (2 / 3) ** 2) / 2)
    expected1 = torch.tensor([-1 / 3, -1 / 3, 2 / 3]) / (std1 + 1e-4)
    assert torch.allclose(adv[0], expected0, atol=1e-6)
    assert torch.allclose(adv[1], expected1, atol=1e-6)


def test_group_advantages_are_per_group_not_per_batch():
    """A second group on another scale must not change the first one's advantages (the mistake:
    the std, or the mean, of the whole batch)."""
    alone = group_advantages(torch.tensor([[0.0, 1.0]]))
    together = group_advantages(torch.tensor([[0.0, 1.0], [10.0, 50.0]]))
    assert torch.allclose(alone[0], together[0])


def test_group_advantages_none_is_the_centered_reward():
    adv = group_advantages(torch.tensor([[1.0, 2.0, 6.0]]), scale="none")
    assert torch.allclose(adv, torch.tensor([[-2.0, -1.0, 3.0]]))


@pytest.mark.parametrize("scale", ["std", "none"])
def test_all_equal_groups_give_exact_zeros_never_nan(scale):
    rewards = torch.tensor([[0.1, 0.1, 0.1], [2.0, 2.0, 2.0], [1.0, 0.0, 1.0]])
    adv = group_advantages(rewards, scale)
    assert torch.equal(adv[:2], torch.zeros(2, 3))  # exactly 0, not round-off / eps
    assert adv[2].abs().sum() > 0
    single = group_advantages(torch.tensor([[5.0], [-1.0]]), scale)  # G = 1: std is nan
    assert torch.equal(single, torch.zeros(2, 1))


def test_rloo_by_hand_and_its_error():
    adv = rloo_advantages(torch.tensor([[1.0, 2.0, 3.0]]))
    assert torch.allclose(adv, torch.tensor([[1 - 2.5, 2 - 2.0, 3 - 1.5]]))
    with pytest.raises(ValueError, match="at least 2"):
        rloo_advantages(torch.tensor([[1.0], [2.0]]))


def test_dr_grpo_times_g_over_g_minus_1_is_rloo():
    torch.manual_seed(0)
    rewards = torch.randn(5, 6)
    G = rewards.size(1)
    assert torch.allclose(rloo_advantages(rewards),
                          G / (G - 1) * group_advantages(rewards, scale="none"), atol=1e-6)


def test_equal_reward_groups():
    rewards = torch.tensor([[1.0, 1.0], [0.0, 1.0], [0.3, 0.3 + 1e-9]])
    assert equal_reward_groups(rewards).tolist() == [True, False, True]


# ==============================================================================================
# aggregation, KL, the clipped objective


PER_TOKEN = torch.tensor([[1.0, 2.0, NAN], [3.0, NAN, NAN], [NAN, NAN, NAN]])
MASK = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]])


@pytest.mark.parametrize("mode, max_len, expected", [
    ("seq-mean-token-mean", None, (1.5 + 3.0) / 2),  # the empty third response does not count
    ("token-mean", None, 6.0 / 3),
    ("seq-mean-token-sum-norm", None, 6.0 / (3 * 3)),  # every row counts, T = 3
    ("seq-mean-token-sum-norm", 4, 6.0 / (3 * 4)),
])
def test_aggregate_loss_by_hand_with_nan_in_padding(mode, max_len, expected):
    x = PER_TOKEN.clone().requires_grad_(True)
    loss = aggregate_loss(x, MASK, mode, max_len)
    assert loss.item() == pytest.approx(expected)
    loss.backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad[MASK == 0] == 0).all()  # padding gets no gradient


def test_aggregation_weights_tokens_differently():
    """GRPO: a token of a short answer weighs more than one of a long answer; DAPO and Dr.
    GRPO weigh every token the same."""
    per_token = torch.ones(2, 4, requires_grad=True)
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 1]])
    grads = {}
    for mode in grpo.AGGREGATIONS:
        x = per_token.detach().clone().requires_grad_(True)
        aggregate_loss(x, mask, mode).backward()
        grads[mode] = x.grad
    grpo_grad = grads["seq-mean-token-mean"]
    assert grpo_grad[0, 0] == pytest.approx(4 * grpo_grad[1, 0])
    for mode in ("token-mean", "seq-mean-token-sum-norm"):
        assert grads[mode][0, 0] == pytest.approx(grads[mode][1, 0])


def test_aggregate_loss_empty_batch_and_bad_mode():
    assert aggregate_loss(torch.full((2, 3), NAN), torch.zeros(2, 3), "seq-mean-token-mean") == 0
    assert aggregate_loss(torch.full((2, 3), NAN), torch.zeros(2, 3), "token-mean") == 0
    with pytest.raises(ValueError, match="mode"):
        aggregate_loss(torch.ones(1, 1), torch.ones(1, 1), "mean")


def test_k3_by_hand_nonnegative_and_zero_when_equal():
    lp = torch.tensor([[0.0]])
    ref = torch.tensor([[math.log(0.5)]])
    assert k3_kl(lp, ref).item() == pytest.approx(0.5 + math.log(2) - 1)
    torch.manual_seed(0)
    a, b = torch.randn(4, 7), torch.randn(4, 7)
    assert (k3_kl(a, b) >= 0).all()
    assert torch.equal(k3_kl(a, a), torch.zeros(4, 7))


def test_clipped_token_loss_by_hand_and_clip_higher():
    old = torch.zeros(4, 1)
    lp = torch.log(torch.tensor([[1.5], [0.5], [1.2], [1.25]]))
    adv = torch.tensor([1.0, -1.0, 1.0, 1.0])
    loss, clipped = clipped_token_loss(lp, old, adv, cliprange_low=0.2, cliprange_high=0.28)
    assert loss[:, 0].tolist() == pytest.approx([-1.28, 0.8, -1.2, -1.25])
    assert clipped[:, 0].tolist() == [True, True, False, False]
    _, symmetric = clipped_token_loss(lp, old, adv, cliprange_low=0.2, cliprange_high=0.2)
    assert symmetric[3, 0]  # ratio 1.25 is clipped without clip-higher


def test_grpo_loss_at_the_reference_is_minus_the_mean_advantage():
    """policy = old policy = reference: ratio 1, no clip, k3 = 0; the gradient of each token
    of response i is -A_i / |o_i| / B (GRPO's aggregation)."""
    lp = torch.zeros(2, 3, requires_grad=True)
    adv = torch.tensor([1.0, -2.0])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    loss, stats = grpo_loss(lp, lp.detach(), lp.detach(), adv, mask)
    assert loss.item() == pytest.approx(0.5)
    assert stats["clipfrac"] == 0 and stats["k3"] == 0
    loss.backward()
    assert lp.grad[0, 0] == pytest.approx(-1.0 / 2 / 2)
    assert lp.grad[1, 2] == pytest.approx(2.0 / 3 / 2)
    assert lp.grad[0, 2] == 0


def test_overlong_penalty_by_hand():
    lengths = torch.tensor([10, 60, 62, 64])
    ended = torch.tensor([True, True, True, False])
    pen = overlong_penalty(lengths, ended, max_len=64, cache=8)
    assert pen.tolist() == pytest.approx([0.0, -0.5, -0.75, -1.0])
    assert overlong_penalty(lengths, ended, 64, 0).tolist() == [0.0, 0.0, 0.0, -1.0]


def fake_rollout():
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    return Rollout(ids=torch.zeros(2, 4, dtype=torch.long), attention=torch.ones(2, 4),
                   response=torch.zeros(2, 3, dtype=torch.long), mask=mask, prompt_len=1,
                   ended=torch.tensor([True, False]))


def test_truncation_switches_and_kl_in_the_reward():
    ro, scores = fake_rollout(), torch.tensor([1.0, 1.0])
    lp, ref = torch.full((2, 3), -1.0), torch.full((2, 3), -1.5)  # 0.5 nats per token
    base = dict(max_new_tokens=3, overlong_cache=0)
    outcome, reward, loss_mask = shape_rewards(scores, lp, ref, ro, GRPOConfig(**base))
    assert outcome.tolist() == [1.0, 0.0] and torch.equal(reward, outcome)  # truncated: -1
    outcome, _, loss_mask = shape_rewards(scores, lp, ref, ro,
                                          GRPOConfig(truncation="mask", **base))
    assert outcome.tolist() == [1.0, 1.0] and loss_mask[1].sum() == 0  # out of the loss
    _, reward, _ = shape_rewards(scores, lp, ref, ro, GRPOConfig(
        truncation="none", kl_in="reward", kl_coef=0.1, **base))
    assert reward.tolist() == pytest.approx([1.0 - 0.1 * 1.0, 1.0 - 0.1 * 1.5])


def test_config_checks():
    with pytest.raises(ValueError, match="advantage"):
        GRPOConfig(advantage="ppo")
    with pytest.raises(ValueError, match="group_size"):
        GRPOConfig(group_size=1)
    with pytest.raises(ValueError, match="reward_source"):
        GRPOConfig(reward_source="vibes")
    assert GRPOConfig.fast().iterations < GRPOConfig().iterations


# ==============================================================================================
# a toy problem: say the target token (as tests/test_ppo_loop.py does for PPO)

V, PROMPT, END, PAD, TARGET = 12, 1, 2, 0, 7


def toy_models(seed=0):
    torch.manual_seed(seed)
    gpt = GPT(GPTConfig(vocab_size=V, block_size=16, n_layer=1, n_head=2, n_embd=32))
    return gpt, copy.deepcopy(gpt)


def say_the_word(ro):
    return ((ro.response == TARGET) & (ro.mask > 0)).any(1).float()


def toy_cfg(**kw):
    base = dict(iterations=30, prompts_per_batch=4, group_size=8, minibatch_size=16,
                ppo_epochs=2, lr=1e-3, kl_coef=0.0, max_new_tokens=6, temperature=1.0,
                truncation="none", overlong_cache=0)
    base.update(kw)
    return GRPOConfig(**base)


def run(cfg, reward_fn=say_the_word):
    policy, ref = toy_models()
    history = grpo_loop(policy, ref, reward_fn, lambda n, rng: [[PROMPT]] * n, cfg, PAD, END)
    return policy, ref, history


@pytest.mark.parametrize("advantage, aggregation", [
    ("grpo", "seq-mean-token-mean"), ("dr_grpo", "seq-mean-token-sum-norm"),
    ("rloo", "token-mean")])
def test_grpo_learns_to_say_the_word(advantage, aggregation):
    kw = dict(lr=3e-3) if advantage != "grpo" else {}  # unscaled advantages: smaller steps
    _, _, history = run(toy_cfg(advantage=advantage, loss_aggregation=aggregation, **kw))
    start = sum(h["objective/scores"] for h in history[:3]) / 3
    end = sum(h["objective/scores"] for h in history[-5:]) / 5
    assert start < 0.7
    assert end > 0.95, [round(h["objective/scores"], 2) for h in history]
    assert history[-1]["objective/kl"] > 0.1  # it moved away from the reference to get there
    assert history[-1]["frac_reward_zero_std"] > 0.5  # solved groups: all right, zero advantage


def test_without_updates_nothing_changes():
    _, _, history = run(toy_cfg(iterations=2, lr=0.0, kl_coef=0.04))
    for h in history:
        assert h["policy/clipfrac"] == 0.0
        assert h["val/ratio"] == pytest.approx(1.0, abs=1e-5)
        assert abs(h["objective/kl"]) < 1e-5 and h["objective/k3"] < 1e-6


def test_lengths_by_advantage_split_the_trained_answers_by_sign():
    lengths = torch.tensor([4, 10, 6, 20])  # (B,) tokens per answer
    advantages = torch.tensor([1.0, -1.0, 0.0, -0.5])  # the third: neither side
    every = grpo.lengths_by_advantage(lengths, advantages, torch.arange(4))
    assert every == {"response_length/adv_pos": 4.0, "response_length/adv_neg": 15.0}
    kept = grpo.lengths_by_advantage(lengths, advantages, torch.tensor([0, 2]))  # rows trained on
    assert kept == {"response_length/adv_pos": 4.0}  # no negative answer among them: no key


def test_dynamic_sampling_drops_groups_with_equal_rewards():
    """A constant reward: every group has zero advantages, is dropped, and nothing is trained."""
    policy, ref, history = run(toy_cfg(iterations=2),
                               reward_fn=lambda ro: torch.ones(len(ro.ids)))
    assert all(h["frac_reward_zero_std"] == 1.0 for h in history)
    assert "loss/policy" not in history[0]  # no update at all
    for p, q in zip(policy.parameters(), ref.parameters()):
        assert torch.equal(p, q)


# ==============================================================================================
# the stage, fast, on a hand-made run folder (an untrained byte-level model: seconds, not the
# minutes of pretraining; the quality of the default run is measured by the full pipeline)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from minialign.model import ScalarHeadGPT
    from minialign.reward import RewardModel
    from minialign.tokenizer import Tokenizer
    from minialign.utils import save_checkpoint

    d = tmp_path_factory.mktemp("grpo_run")
    tok = Tokenizer([])  # bytes and special tokens only
    tok.save(d / "tokenizer.json")
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=128, n_layer=1, n_head=2, n_embd=32))
    save_checkpoint(gpt.checkpoint(), d / "sft" / "model.pt")
    rm = ScalarHeadGPT.from_gpt(gpt)
    torch.nn.init.normal_(rm.head.weight)  # a zero head would score every response the same
    save_checkpoint(RewardModel(rm).checkpoint(), d / "reward" / "model.pt")
    return d


def test_stage_writes_metrics_checkpoint_and_figure(run_dir):
    grpo.train(GRPOConfig.fast(iterations=2, eval_interval=100, prompts_per_batch=2), run_dir,
               log=lambda *_: None)
    m = json.loads((run_dir / "grpo" / "metrics.json").read_text())
    for key in ["gold_reward_mean", "gold_reward_mean_se", "task_success_rate", "kl_to_ref",
                "kl_to_ref_se", "win_rate_vs_sft", "win_rate_vs_sft_se", "proxy_reward_mean"]:
        assert key in m and math.isfinite(m[key])
    assert 0 <= m["win_rate_vs_sft"] <= 1 and m["reward_source"] == "reward_model"
    h = m["history"]
    assert abs(h[0]["objective/kl"]) < 1e-4  # the policy starts as the reference
    for key in ["objective/kl", "objective/scores", "objective/entropy", "frac_reward_zero_std",
                "response_length", "policy/ended", "policy/clipfrac", "loss/policy"]:
        assert key in h[0]
    assert (run_dir / "grpo" / "model.pt").exists()
    assert (run_dir / "grpo" / "training.png").exists()


def test_verifier_and_gold_reward_sources_read_the_world(run_dir):
    """make_reward_fn finds each row's task from its prompt tokens and scores the decoded answer."""
    from minialign import world as W
    from minialign.tokenizer import Tokenizer
    from minialign.utils import left_pad

    tok = Tokenizer.load(run_dir / "tokenizer.json")
    world = W.default_world()
    sums = [t for t in world.tasks("train", "arithmetic") if t.kind == "plus"][:2]
    joke = world.tasks("train", "humor")[0]
    rows = [(sums[0], f"the answer is {sums[0].answer}.", True),
            (sums[1], "great question! ugh, 999.", True),
            (joke, "a chef walked into a bar.", False)]
    prompts, attention = left_pad([tok.encode_prompt(t.prompt) for t, _, _ in rows], tok.pad_id)
    responses = [tok.encode(r) + ([tok.end_id] if e else []) for _, r, e in rows]
    response = torch.full((3, max(map(len, responses))), tok.pad_id)
    for i, r in enumerate(responses):
        response[i, :len(r)] = torch.tensor(r)
    ro = Rollout(torch.cat([prompts, response], 1), attention, response,
                 (response != tok.pad_id).float(), prompts.size(1),
                 torch.tensor([True, True, False]))
    verifier = grpo.make_reward_fn("verifier", None, tok, world)(ro)
    assert verifier.tolist() == [1.0, 0.0, 0.0]  # the joke: no rule can judge it, neutral 0
    gold = grpo.make_reward_fn("gold", None, tok, world)(ro)
    assert gold.tolist() == pytest.approx([W.gold_reward(t.prompt, r, e) for t, r, e in rows])


def test_grpo_is_a_stage_of_the_pipeline():
    from minialign import pipeline

    assert pipeline.STAGES["grpo"] == ("grpo", "GRPOConfig", ["reward"])
    order = pipeline.ORDER
    assert order.index("reward") < order.index("grpo") < order.index("compare")
    assert isinstance(pipeline.make_config("grpo", fast=True), GRPOConfig)
