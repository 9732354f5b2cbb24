"""PPO's pure functions against hand-computed cases, and the classic failure modes."""

import pytest
import torch

from minialign.ppo import (AdaptiveKLController, compute_gae, kl_penalized_rewards,
                           masked_mean, policy_loss, value_loss, whiten)


def test_kl_penalized_rewards_place_the_score_on_the_last_response_token_only():
    logprobs = torch.tensor([[-1.0, -2.0, -3.0, 0.0], [-1.0, -1.0, 0.0, 0.0]])
    ref = torch.tensor([[-1.5, -2.0, -2.0, 0.0], [-2.0, -1.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    scores = torch.tensor([10.0, 20.0])
    r = kl_penalized_rewards(scores, logprobs, ref, mask, kl_coef=0.1)
    expected = torch.tensor([[-0.05, 0.0, 0.1 + 10.0, 0.0], [-0.1, 0.0 + 20.0, 0.0, 0.0]])
    assert torch.allclose(r, expected, atol=1e-6)
    assert (r[mask == 0] == 0).all()  # nothing lands on padding


def test_kl_sign_penalises_moving_away_from_the_reference():
    # the policy puts more mass on its token than the reference: the reward must go down
    r = kl_penalized_rewards(torch.zeros(1), torch.tensor([[-0.1]]), torch.tensor([[-2.0]]),
                             torch.ones(1, 1), 0.5)
    assert r.item() < 0


def test_gae_with_gamma_lambda_one_is_returns_to_go_minus_values():
    rewards = torch.tensor([[1.0, 2.0, 3.0, 0.0]])
    values = torch.tensor([[0.5, 0.2, 0.1, 9.0]])  # the 9 sits on padding and must be ignored
    mask = torch.tensor([[1, 1, 1, 0]])
    adv, ret = compute_gae(rewards, values, mask, gamma=1.0, lam=1.0)
    assert torch.allclose(adv, torch.tensor([[6 - 0.5, 5 - 0.2, 3 - 0.1, 0.0]]))
    assert torch.allclose(ret, torch.tensor([[6.0, 5.0, 3.0, 0.0]]))


def test_gae_with_lambda_zero_is_the_td_error():
    rewards = torch.tensor([[1.0, 2.0, 3.0]])
    values = torch.tensor([[0.5, 0.2, 0.1]])
    adv, ret = compute_gae(rewards, values, torch.ones(1, 3), gamma=0.9, lam=0.0)
    td = torch.tensor([[1 + 0.9 * 0.2 - 0.5, 2 + 0.9 * 0.1 - 0.2, 3 + 0.0 - 0.1]])
    assert torch.allclose(adv, td)
    assert torch.allclose(ret, td + values)


def test_gae_general_case_by_hand():
    g, lam = 0.9, 0.5
    r, v = [0.0, 1.0], [0.3, 0.6]
    d1 = r[1] + 0 - v[1]
    d0 = r[0] + g * v[1] - v[0]
    a1, a0 = d1, d0 + g * lam * d1
    adv, _ = compute_gae(torch.tensor([r]), torch.tensor([v]), torch.ones(1, 2), g, lam)
    assert torch.allclose(adv, torch.tensor([[a0, a1]]))


def test_whiten_over_masked_entries_only():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    w = whiten(x, mask)
    assert masked_mean(w, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert masked_mean(w ** 2, mask).item() == pytest.approx(1.0, abs=1e-5)
    assert w[0, 3] == 0  # the padded 100 neither leaks in nor out
    w2 = whiten(x, mask, shift_mean=False)
    assert torch.allclose(w2[:, :3], w[:, :3] + 2.0)


def test_policy_loss_ratio_one_means_no_clipping_and_minus_mean_advantage():
    logp = torch.tensor([[-1.0, -2.0, -0.5]])
    adv = torch.tensor([[1.0, -2.0, 3.0]])
    mask = torch.tensor([[1, 1, 0]])
    loss, clipfrac = policy_loss(logp, logp.clone(), adv, mask)
    assert loss.item() == pytest.approx(-(1.0 - 2.0) / 2)
    assert clipfrac.item() == 0.0


def test_policy_loss_clips_the_ratio_not_the_advantage():
    old = torch.zeros(1, 2)
    new = torch.log(torch.tensor([[1.5, 0.5]]))  # ratios 1.5 and 0.5
    adv = torch.tensor([[1.0, -1.0]])
    loss, clipfrac = policy_loss(new, old, adv, torch.ones(1, 2), cliprange=0.2)
    # token 0: max(-1.5, -1.2) = -1.2 (clipped); token 1: max(0.5, 0.8) = 0.8 (clipped)
    assert loss.item() == pytest.approx((-1.2 + 0.8) / 2, rel=1e-5)
    assert clipfrac.item() == 1.0
    # a ratio that moved against the advantage is not clipped (the pessimistic bound)
    loss2, clipfrac2 = policy_loss(torch.log(torch.tensor([[0.5]])), torch.zeros(1, 1),
                                   torch.tensor([[1.0]]), torch.ones(1, 1))
    assert loss2.item() == pytest.approx(-0.5) and clipfrac2.item() == 0.0


def test_value_loss_by_hand():
    old = torch.tensor([[0.0, 0.0]])
    new = torch.tensor([[1.0, 0.1]])
    ret = torch.tensor([[2.0, 0.0]])
    # token 0: clipped to 0.2: max((1-2)^2, (0.2-2)^2) = 3.24; token 1: max(0.01, 0.01)
    assert value_loss(new, old, ret, torch.ones(1, 2)).item() == pytest.approx(0.5 * (3.24 + 0.01) / 2)
    assert value_loss(new, old, ret, torch.tensor([[0, 1]])).item() == pytest.approx(0.5 * 0.01)


def test_masked_positions_never_affect_losses():
    torch.manual_seed(0)
    a, b, adv = torch.randn(3, 2, 5).unbind(0)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]])
    junk = torch.where(mask.bool(), a, torch.full_like(a, 1e6))
    assert policy_loss(junk, b, adv, mask)[0].item() == pytest.approx(policy_loss(a, b, adv, mask)[0].item())
    assert value_loss(junk, b, adv, mask).item() == pytest.approx(value_loss(a, b, adv, mask).item())


def test_adaptive_kl_controller_update_rule():
    ctl = AdaptiveKLController(0.2, target=6.0, horizon=10_000)
    assert ctl.update(12.0, 1000) == pytest.approx(0.2 * (1 + 0.2 * 0.1))  # error clipped at 0.2
    ctl = AdaptiveKLController(0.2, target=6.0, horizon=10_000)
    assert ctl.update(5.7, 1000) == pytest.approx(0.2 * (1 - 0.05 * 0.1))
    ctl = AdaptiveKLController(0.2, target=6.0, horizon=10_000)
    assert ctl.update(6.0, 1000) == pytest.approx(0.2)
