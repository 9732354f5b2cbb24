"""DPO and IPO losses by hand, implicit rewards, and the gradient's direction."""

import math

import pytest
import torch

from minialign.dpo import dpo_loss, implicit_rewards


def test_policy_equal_to_reference_gives_ln2_and_zero_rewards():
    lp = torch.tensor([-3.0, -7.5])
    losses, rc, rr = dpo_loss(lp, lp - 1, lp, lp - 1, beta=0.1)
    assert torch.allclose(losses, torch.full((2,), math.log(2)))
    assert torch.equal(rc, torch.zeros(2)) and torch.equal(rr, torch.zeros(2))


def test_sigmoid_loss_by_hand():
    losses, rc, rr = dpo_loss(torch.tensor([-1.0]), torch.tensor([-4.0]), torch.tensor([-2.0]),
                              torch.tensor([-3.0]), beta=0.5)
    h = (-1 + 2) - (-4 + 3)  # 2
    assert losses.item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.5 * h))), rel=1e-6)
    assert rc.item() == pytest.approx(0.5) and rr.item() == pytest.approx(-0.5)


def test_ipo_loss_by_hand():
    losses, _, _ = dpo_loss(torch.tensor([-1.0]), torch.tensor([-4.0]), torch.tensor([-2.0]),
                            torch.tensor([-3.0]), beta=0.5, loss_type="ipo")
    assert losses.item() == pytest.approx((2 - 1 / (2 * 0.5)) ** 2)


def test_gradient_raises_chosen_relative_to_rejected_and_skips_the_reference():
    pc = torch.tensor([-2.0], requires_grad=True)
    pr = torch.tensor([-2.0], requires_grad=True)
    rc_ref = torch.tensor([-2.0], requires_grad=True)
    rr_ref = torch.tensor([-2.0], requires_grad=True)
    losses, rc, rr = dpo_loss(pc, pr, rc_ref, rr_ref)
    losses.sum().backward()
    assert pc.grad.item() < 0 < pr.grad.item()  # descent raises chosen, lowers rejected
    assert rc_ref.grad is None or rc_ref.grad.abs().sum() == 0
    assert not rc.requires_grad and not rr.requires_grad


def test_beta_scales_the_implicit_margin():
    args = (torch.tensor([-1.0]), torch.tensor([-4.0]), torch.tensor([-2.0]), torch.tensor([-3.0]))
    _, c1, r1 = dpo_loss(*args, beta=0.1)
    _, c2, r2 = dpo_loss(*args, beta=0.4)
    assert (c2 - r2).item() == pytest.approx(4 * (c1 - r1).item())
    assert implicit_rewards(torch.tensor([1.0]), torch.tensor([0.0]), 0.3).item() == pytest.approx(0.3)


# ----------------------------------------------------------------------------------------------
# dpo_step and the temperature DPO scores at


def _tiny_pairs():
    from minialign.course import fixtures

    policy = fixtures.tiny_gpt(seed=0, train=False)
    batch = fixtures.pair_batch(seed=1)  # ids, padding_mask, response_mask: (2B, T)
    return policy, batch


def _reference(policy, batch, temperature):
    import copy

    from minialign.model import logprobs_of_responses

    ref = copy.deepcopy(policy).eval().requires_grad_(False)
    with torch.no_grad():
        logps = logprobs_of_responses(ref, *batch, temperature)  # (2B,)
    n = logps.size(0) // 2
    return logps[:n], logps[n:]


def test_dpo_step_scores_as_logprobs_of_responses_at_the_same_temperature():
    """The step's log-probs and the reference's (model.logprobs_of_responses) are one
    computation: with policy = reference the first loss is ln 2 and every reward 0, at the
    sampling temperature; scored at another temperature, they are not."""
    from minialign.dpo import dpo_step
    from minialign.evaluate import TEMPERATURE
    from minialign.utils import make_optimizer

    for ref_temperature, same in ((TEMPERATURE, True), (1.0, False)):
        policy, batch = _tiny_pairs()
        ref_c, ref_r = _reference(policy, batch, ref_temperature)
        loss, rc, rr = dpo_step(policy, make_optimizer(policy, 0.01), *batch, ref_c, ref_r, 0.5,
                                TEMPERATURE, "sigmoid", 0.01, 1.0)
        assert isinstance(loss, float) and rc.shape == rr.shape == (3,)
        assert (loss == pytest.approx(math.log(2), abs=1e-6)) is same
        assert (rc.abs().max().item() < 1e-6 and rr.abs().max().item() < 1e-6) is same


def test_dpo_step_lowers_the_loss_and_leaves_the_policy_in_eval_mode():
    from minialign.dpo import dpo_step
    from minialign.utils import make_optimizer

    policy, batch = _tiny_pairs()
    ref_c, ref_r = _reference(policy, batch, 0.6)
    policy.train()
    optimizer = make_optimizer(policy, 0.01)
    losses = [dpo_step(policy, optimizer, *batch, ref_c, ref_r, 0.5, 0.6, "sigmoid", 0.01,
                       1.0)[0] for _ in range(10)]
    assert losses[-1] < 0.8 * losses[0] and not policy.training


def test_logprob_temperature_defaults_to_the_sampling_temperature():
    from minialign.dpo import DPOConfig
    from minialign.evaluate import TEMPERATURE
    from minialign.ppo import PPOConfig

    cfg = DPOConfig()
    assert cfg.logprob_temperature == cfg.temperature == PPOConfig().temperature == TEMPERATURE
    assert DPOConfig(logprob_temperature=1.0).logprob_temperature == 1.0  # the old behaviour
    with pytest.raises(ValueError):
        DPOConfig(logprob_temperature=0.0)
