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
