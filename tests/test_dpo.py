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


# ----------------------------------------------------------------------------------------------
# the implicit reward of whole responses, and the judges compared


class _FixedLogits(torch.nn.Module):
    """A stand-in model: the same next-token logits (V,) at every position of every row."""

    def __init__(self, row):
        super().__init__()
        self.row = torch.tensor(row)

    def forward(self, ids, padding_mask=None):
        return self.row.expand(ids.size(0), ids.size(1), -1).clone(), None  # (B, T, V)


def test_response_implicit_rewards_by_hand_at_two_temperatures():
    """Two tokens, V = 2. The policy gives token 0 probability 3/4 at temperature 1 (9/10 at
    0.5: logits doubled), the reference 1/2 at any temperature. Row 0 answers 0, 0; row 1
    answers 1, 1; row 2 answers 0 and is padded (one token scored)."""
    from minialign.dpo import response_implicit_rewards

    policy, ref = _FixedLogits([math.log(3.0), 0.0]), _FixedLogits([0.0, 0.0])
    ids = torch.tensor([[1, 0, 0], [1, 1, 1], [1, 0, 0]])  # (3, 3): token 0 of each is the prompt
    padding = torch.tensor([[True, True, True], [True, True, True], [True, True, False]])
    response = torch.tensor([[False, True, True], [False, True, True], [False, True, False]])
    beta = 0.3
    r1 = response_implicit_rewards(policy, ref, ids, padding, response, beta, temperature=1.0)
    expected1 = [2 * beta * math.log(1.5), 2 * beta * math.log(0.5), beta * math.log(1.5)]
    assert r1.tolist() == pytest.approx(expected1, rel=1e-5)
    r05 = response_implicit_rewards(policy, ref, ids, padding, response, beta, temperature=0.5)
    expected05 = [2 * beta * math.log(1.8), 2 * beta * math.log(0.2), beta * math.log(1.8)]
    assert r05.tolist() == pytest.approx(expected05, rel=1e-5)
    assert not r1.requires_grad
    same = response_implicit_rewards(ref, ref, ids, padding, response, beta, temperature=0.6)
    assert torch.equal(same, torch.zeros(3))  # the policy at the reference: no reward


def test_pair_implicit_rewards_agree_with_the_batch_function_and_the_accuracy():
    import copy

    from minialign import world as world_lib
    from minialign.course import fixtures
    from minialign.dpo import (encode_pairs, implicit_accuracy, pair_implicit_rewards,
                               pair_lengths, response_implicit_rewards)
    from minialign.preferences import Pair
    from minialign.tokenizer import Tokenizer

    tok = Tokenizer.train(world_lib.sample_corpus(50, seed=0), vocab_size=280)
    ref = fixtures.tiny_gpt(seed=0, vocab_size=tok.vocab_size, block_size=64, train=False)
    policy = copy.deepcopy(ref)
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        policy.lm_head.weight.add_(0.5 * torch.randn(policy.lm_head.weight.shape, generator=g))
    pairs = [Pair("what is 2 plus 2?", "the answer is 4.", "great question! it is 5.", True, True),
             Pair("say hi.", "hi.", "hello there, my friend", True, False),
             Pair("name a color.", "red.", "blue.", True, True),
             # answers shared with the first pair, as the pairs of one ranking share theirs:
             # each distinct answer is scored once, and both pairs get its reward
             Pair("what is 2 plus 2?", "great question! it is 5.", "4", True, True),
             Pair("what is 2 plus 2?", "the answer is 4.", "4", True, True)]
    rc, rr = pair_implicit_rewards(policy, ref, tok, pairs, 0.5, batch_size=2, temperature=0.6)
    ids, mask, resp = encode_pairs(tok, pairs)
    whole = response_implicit_rewards(policy, ref, ids, mask, resp, 0.5, 0.6)  # (10,)
    assert torch.allclose(torch.cat([rc, rr]), whole, atol=1e-5) and rc.abs().sum() > 0
    assert rc[3] == rr[0] and rc[4] == rc[0] and rr[4] == rr[3]  # one answer, one reward
    acc = implicit_accuracy(policy, ref, tok, pairs, 0.5, batch_size=2, temperature=0.6)
    assert acc == pytest.approx((rc > rr).float().mean().item())
    lc, lr = pair_lengths(tok, pairs)
    assert torch.equal(torch.cat([lc, lr]), resp.sum(1).float())  # the tokens DPO scores
    zc, zr = pair_implicit_rewards(ref, ref, tok, pairs, 0.5, temperature=0.6)
    assert torch.equal(zc, torch.zeros(5)) and torch.equal(zr, torch.zeros(5))


def test_order_agreement_and_compare_judges_by_hand():
    from minialign.dpo import compare_judges, order_agreement

    a = (torch.tensor([1.0, 2.0, 0.0, 5.0]), torch.tensor([0.0, 3.0, 0.0, 1.0]))  # +, -, tie, +
    b = (torch.tensor([2.0, 1.0, 1.0, 0.0]), torch.tensor([1.0, 0.0, 0.0, 1.0]))  # +, +, +, -
    assert order_agreement(a, b) == (pytest.approx(1 / 3), 3)  # the tie left out
    assert order_agreement(a, a) == (1.0, 3)
    # c = a shifted by a constant per pair: the margins, and so the agreement, do not move
    shift = torch.tensor([10.0, -4.0, 7.0, 0.5])
    c = (a[0] + shift, a[1] + shift)
    rows = compare_judges({"a": a, "b": b, "c": c})
    assert [(r["a"], r["b"]) for r in rows] == [("a", "b"), ("a", "c"), ("b", "c")]
    ac = rows[1]
    assert ac["agreement"] == 1.0 and ac["spearman_margins"] == pytest.approx(1.0)
    assert ac["spearman_responses"] < 0.99  # the raw scores carry the per-pair constant


def test_response_logprobs_scores_repeats_once_and_matches_each_response_alone():
    """evaluate.response_logprobs dedupes and sorts its rows: every response still gets the
    log-probability it has when scored alone, unpadded, by hand (log-softmax of the tempered
    logits, summed over the response's tokens), in the order given, repeats included."""
    from minialign import world as world_lib
    from minialign.course import fixtures
    from minialign.evaluate import response_logprobs
    from minialign.tokenizer import Tokenizer

    tok = Tokenizer.train(world_lib.sample_corpus(50, seed=0), vocab_size=280)
    model = fixtures.tiny_gpt(seed=1, vocab_size=tok.vocab_size, block_size=64, train=False)
    prompts = ["say hi.", "what is 2 plus 2?", "say hi.", "name a color.", "say hi."]
    responses = [tok.encode("hi."), tok.encode("4") + [tok.end_id], tok.encode("hi."),
                 tok.encode("a long answer about blue and red"), tok.encode("hello!")]
    got = response_logprobs(model, tok, prompts, responses, temperature=0.6, batch_size=2)
    want = []
    for p, r in zip(prompts, responses):
        ids = torch.tensor([tok.encode_prompt(p) + r])  # (1, T): one row, no padding
        with torch.no_grad():
            logps = torch.log_softmax(model(ids)[0][0, :-1] / 0.6, dim=-1)  # (T - 1, V)
        targets = ids[0, 1:]
        want.append(logps[torch.arange(len(targets)), targets][-len(r):].sum().item())
    assert got == pytest.approx(want, abs=1e-4)
    assert got[0] == got[2] and got[0] != got[4]  # a repeat gets the very same number


def test_spread_pairs_keeps_the_pairs_ranked_far_enough_apart():
    from minialign.dpo import DPOConfig, spread_pairs
    from minialign.preferences import Ranking, pairs_of

    four = Ranking("p4", ("a", "b", "c", "d"), (True,) * 4, (0.6, 0.7, 0.8, 0.55, 0.65, 0.6))
    three = Ranking("p3", ("e", "f", "g"), (True, False, True))
    two = Ranking("p2", ("h", "i"), (True, True))

    def names(pairs):
        return [(p.chosen, p.rejected) for p in pairs]

    assert names(spread_pairs([four, three, two], 2)) == [
        ("a", "c"), ("a", "d"), ("b", "d"), ("e", "g"), ("h", "i")]
    assert names(spread_pairs([four], 3)) == [("a", "d")]
    assert names(spread_pairs([four, three], 5)) == [("a", "d"), ("e", "g")]  # best and worst
    assert spread_pairs([four, three, two], 1) == pairs_of([four, three, two])
    kept = spread_pairs([four], 2)  # each pair keeps its own labeller probability and flags
    assert [p.p_chosen for p in kept] == [0.7, 0.8, 0.65]
    assert spread_pairs([three], 2)[0].rejected_ended is True
    with pytest.raises(ValueError, match="min_rank_gap"):
        DPOConfig(min_rank_gap=0)
