"""Reward model: the Bradley-Terry and ranking losses by hand, reading the score at the last
real token, accuracy with a strict >, and the Bayes ceiling."""

import math

import pytest
import torch

from minialign.preferences import Ranking, batch_probabilities
from minialign.reward import (RewardConfig, bradley_terry_loss, last_token_scores,
                              preference_accuracy, probability_ranking_loss, ranking_loss,
                              spearman)


def test_bradley_terry_by_hand():
    c, r = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 0.0])
    expected = (-math.log(1 / (1 + math.exp(-1))) + math.log(2)) / 2
    assert bradley_terry_loss(c, r).item() == pytest.approx(expected, rel=1e-6)
    # zero rewards: ln 2, whatever the pairs
    assert bradley_terry_loss(torch.zeros(5), torch.zeros(5)).item() == pytest.approx(math.log(2))
    # a margin asks for more: the loss grows
    m = torch.tensor([1.0, 1.0])
    assert bradley_terry_loss(c, r, m) > bradley_terry_loss(c, r)
    assert bradley_terry_loss(c, r, m).item() == pytest.approx(bradley_terry_loss(c - m, r).item())
    # stable for huge differences
    assert torch.isfinite(bradley_terry_loss(torch.tensor([-1e4]), torch.tensor([1e4])))


def test_bradley_terry_invariant_to_a_shift_and_gradient_direction():
    c = torch.tensor([0.3, -1.0], requires_grad=True)
    r = torch.tensor([0.1, 0.5], requires_grad=True)
    loss = bradley_terry_loss(c, r)
    loss.backward()
    assert (c.grad < 0).all() and (r.grad > 0).all()  # raise chosen, lower rejected
    assert bradley_terry_loss(c + 7, r + 7).item() == pytest.approx(loss.item())


def test_ranking_loss_with_k2_equals_pairwise():
    torch.manual_seed(0)
    rewards = torch.randn(6, 2)
    assert ranking_loss(rewards).item() == pytest.approx(
        bradley_terry_loss(rewards[:, 0], rewards[:, 1]).item(), rel=1e-6)


def test_ranking_loss_by_hand_is_a_mean_per_prompt():
    rewards = torch.tensor([[3.0, 2.0, 0.0]])  # pairs (0,1), (0,2), (1,2)
    pairs = [-math.log(torch.sigmoid(torch.tensor(d)).item()) for d in (1.0, 3.0, 2.0)]
    assert ranking_loss(rewards).item() == pytest.approx(sum(pairs) / 3, rel=1e-5)


def test_ranking_loss_averages_per_prompt_not_over_all_pairs():
    rewards = torch.tensor([[1.0, 0.0, -1.0, -2.0], [0.0, 2.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    per_prompt_0 = ranking_loss(rewards[:1]).item()  # 6 pairs
    per_prompt_1 = bradley_terry_loss(rewards[1:, 0], rewards[1:, 1]).item()  # 1 pair
    assert ranking_loss(rewards, mask).item() == pytest.approx((per_prompt_0 + per_prompt_1) / 2, rel=1e-5)
    # (a mean over all 7 pairs of the batch would weight the first prompt 6 times more)
    all_pairs = (per_prompt_0 * 6 + per_prompt_1) / 7
    assert ranking_loss(rewards, mask).item() != pytest.approx(all_pairs, rel=1e-3)


def test_probability_targets_of_one_give_the_ranking_loss():
    rewards = torch.tensor([[1.0, 0.0, -1.0, -2.0], [0.0, 2.0, 0.5, 0.0]])
    mask = torch.tensor([[True, True, True, True], [True, True, True, False]])
    ones = torch.ones(2, 4, 4)
    assert probability_ranking_loss(rewards, ones, mask).item() == pytest.approx(
        ranking_loss(rewards, mask).item(), rel=1e-6)


def test_probability_ranking_loss_by_hand_and_its_minimum():
    # one prompt, two responses, P(0 > 1) = 0.8: cross-entropy against sigmoid(r0 - r1)
    probs = torch.zeros(1, 2, 2)
    probs[0, 0, 1] = 0.8
    d = 0.5
    expected = -(0.8 * math.log(1 / (1 + math.exp(-d))) + 0.2 * math.log(1 / (1 + math.exp(d))))
    loss = probability_ranking_loss(torch.tensor([[d, 0.0]]), probs)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # the best score difference is the annotator's log-odds, log(0.8 / 0.2), not infinity
    diff = torch.tensor([[math.log(4.0), 0.0]], requires_grad=True)
    probability_ranking_loss(diff, probs).backward()
    assert diff.grad.abs().max().item() < 1e-6


def test_batch_probabilities_reads_the_rankings():
    ranking = Ranking("p", ("a", "b", "c"), (True, True, True), (0.9, 0.7, 0.4))
    probs = batch_probabilities([ranking], 3)
    assert probs[0, 0, 1].item() == pytest.approx(0.9)
    assert probs[0, 1, 2].item() == pytest.approx(0.4)
    assert probs[0, 1, 0].item() == 0.0  # only i < j is filled, and only i < j is read


def test_reward_config_rejects_bad_targets():
    with pytest.raises(ValueError, match="targets"):
        RewardConfig(targets="gold")
    with pytest.raises(ValueError, match="ranking"):
        RewardConfig(targets="probabilities", loss="pairs")


def test_last_token_scores_with_left_and_right_padding():
    values = torch.arange(12.0).view(2, 6)
    mask = torch.tensor([[True, True, True, True, False, False],  # right-padded: last real = 3
                         [False, False, True, True, True, True]])  # left-padded: last real = 5
    assert last_token_scores(values, mask).tolist() == [3.0, 11.0]


def test_accuracy_is_strict():
    assert preference_accuracy(torch.zeros(4), torch.zeros(4)) == 0.0  # a zero head scores 0
    assert preference_accuracy(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])) == 0.5


def test_spearman():
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2], [5, 5, 9]) == pytest.approx(1.0)


def test_world_candidates_that_overflow_the_context_are_left_out():
    from minialign import world as world_lib
    from minialign.model import GPT, GPTConfig
    from minialign.preferences import collect_candidates, encode_pair
    from minialign.tokenizer import Tokenizer

    W = world_lib.default_world()
    tok = Tokenizer.train(world_lib.sample_corpus(200, seed=0), vocab_size=300)
    tasks = W.tasks("train")[:12]
    longest_prompt = max(len(tok.encode_prompt(t.prompt)) for t in tasks)
    block = longest_prompt + 16  # room for 4 sampled tokens (re-encoded), not for most world answers
    policy = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=block, n_layer=1, n_head=2,
                           n_embd=16)).eval()
    out = collect_candidates(policy, tok, tasks, k=3, world_candidates=1, max_new_tokens=4,
                             seed=0, world=W)
    lengths = [len(encode_pair(tok, task.prompt, text, ended)) for task, cands in out
               for text, ended in cands]
    assert lengths and max(lengths) <= block
    sampled_only = sum(len(cands) <= 2 for _, cands in out)
    assert sampled_only > 0  # some world answers were too long and were dropped


def test_padding_on_either_side_by_hand():
    from minialign.utils import pad_sequences

    ids, mask = pad_sequences([[5, 6, 7], [8]], pad_id=0, side="left")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[True, True, True], [False, False, True]]
    ids, mask = pad_sequences([[5, 6, 7], [8], []], pad_id=0, side="right")
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0], [0, 0, 0]]
    assert mask.tolist() == [[True, True, True], [True, False, False], [False, False, False]]
    with pytest.raises(ValueError):
        pad_sequences([], pad_id=0, side="left")
    with pytest.raises(ValueError):
        pad_sequences([[1]], pad_id=0, side="middle")


def test_score_texts_scores_repeats_once_and_matches_each_text_alone():
    """RewardModel.score_texts dedupes and sorts its rows: each text keeps the score it has
    alone (one unpadded row), in the order given, repeats included, ended or not."""
    from minialign import world as world_lib
    from minialign.course import fixtures
    from minialign.model import ScalarHeadGPT
    from minialign.preferences import encode_pair
    from minialign.reward import RewardModel
    from minialign.tokenizer import Tokenizer

    tok = Tokenizer.train(world_lib.sample_corpus(50, seed=0), vocab_size=280)
    net = ScalarHeadGPT.from_gpt(fixtures.tiny_gpt(seed=2, vocab_size=tok.vocab_size,
                                                   block_size=64))
    torch.nn.init.normal_(net.head.weight, generator=torch.Generator().manual_seed(0))
    rm = RewardModel(net, mean=0.5, std=2.0)
    prompts = ["say hi.", "say hi.", "name a color.", "say hi.", "say hi."]
    responses = ["hi.", "hello there, my friend", "blue and red and green", "hi.", "hi."]
    ended = [True, True, True, True, False]
    got = rm.score_texts(tok, prompts, responses, ended, batch_size=2)
    want = []
    for p, r, e in zip(prompts, responses, ended):
        ids = torch.tensor([encode_pair(tok, p, r, e)])
        with torch.no_grad():
            want.append(rm.normalized(ids, torch.ones_like(ids, dtype=torch.bool)).item())
    assert got == pytest.approx(want, abs=1e-5)
    assert got[0] == got[3] and got[0] != got[4] and len(set(got)) == 4
