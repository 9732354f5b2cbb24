"""evaluate_policy keeps its evaluations: the same weights, prompts and seed are sampled once."""

import copy

import pytest
import torch

from minialign import evaluate
from minialign import world as world_lib
from minialign.model import GPT, GPTConfig
from minialign.tokenizer import Tokenizer


@pytest.fixture()
def setup(monkeypatch):
    evaluate.forget_evaluations()
    tok = Tokenizer.train(world_lib.sample_corpus(50, seed=0), vocab_size=280)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=2,
                          n_embd=16))
    tasks = evaluate.eval_tasks(12)
    calls = []
    sample = evaluate.sample_responses

    def counted(*args, **kwargs):
        calls.append(1)
        return sample(*args, **kwargs)

    monkeypatch.setattr(evaluate, "sample_responses", counted)
    yield tok, model, tasks, calls
    evaluate.forget_evaluations()


def test_the_same_weights_are_sampled_once(setup):
    tok, model, tasks, calls = setup
    first = evaluate.evaluate_policy(model, tok, tasks, max_new_tokens=8, seed=1)
    first["kl_per_response"] = [0.0]  # a caller adding to its result changes no kept copy
    again = evaluate.evaluate_policy(copy.deepcopy(model), tok, tasks, max_new_tokens=8, seed=1)
    assert len(calls) == 1
    assert "kl_per_response" not in again
    assert again["gold"] == first["gold"]
    assert [r["response_ids"] for r in again["responses"]] == \
        [r["response_ids"] for r in first["responses"]]


def test_new_weights_seed_or_settings_are_sampled_again(setup):
    tok, model, tasks, calls = setup
    evaluate.evaluate_policy(model, tok, tasks, max_new_tokens=8, seed=1)
    evaluate.evaluate_policy(model, tok, tasks, max_new_tokens=8, seed=2)
    evaluate.evaluate_policy(model, tok, tasks, max_new_tokens=9, seed=1)
    evaluate.evaluate_policy(model, tok, tasks[:6], max_new_tokens=8, seed=1)
    with torch.no_grad():
        model.lm_head.weight[0, 0] += 1e-3  # one weight moved: another model
    evaluate.evaluate_policy(model, tok, tasks, max_new_tokens=8, seed=1)
    assert len(calls) == 5


def test_a_kept_evaluation_equals_a_fresh_one(setup):
    tok, model, tasks, calls = setup
    evaluate.evaluate_policy(model, tok, tasks, max_new_tokens=8, seed=1)
    kept = evaluate.evaluate_policy(model, tok, tasks, max_new_tokens=8, seed=1)
    evaluate.forget_evaluations()
    fresh = evaluate.evaluate_policy(model, tok, tasks, max_new_tokens=8, seed=1)
    assert len(calls) == 2
    assert kept["gold"] == fresh["gold"] and kept["per_family"] == fresh["per_family"]


def test_only_the_latest_evaluations_are_kept(setup):
    tok, model, tasks, calls = setup
    for seed in range(evaluate.KEEP_EVALUATIONS + 1):
        evaluate.evaluate_policy(model, tok, tasks, max_new_tokens=8, seed=seed)
    evaluate.evaluate_policy(model, tok, tasks, max_new_tokens=8, seed=0)  # the oldest: gone
    assert len(calls) == evaluate.KEEP_EVALUATIONS + 2


def test_an_evaluation_asked_for_again_is_kept_longest(setup):
    tok, model, tasks, calls = setup
    evaluate.evaluate_policy(model, tok, tasks, max_new_tokens=8, seed=0)  # the SFT model's
    for seed in range(1, evaluate.KEEP_EVALUATIONS):
        evaluate.evaluate_policy(model, tok, tasks, max_new_tokens=8, seed=seed)
    evaluate.evaluate_policy(model, tok, tasks, max_new_tokens=8, seed=0)  # kept: used again
    evaluate.evaluate_policy(model, tok, tasks, max_new_tokens=8, seed=99)  # seed 1's goes
    evaluate.evaluate_policy(model, tok, tasks, max_new_tokens=8, seed=0)  # still kept
    assert len(calls) == evaluate.KEEP_EVALUATIONS + 1
    evaluate.evaluate_policy(model, tok, tasks, max_new_tokens=8, seed=1)
    assert len(calls) == evaluate.KEEP_EVALUATIONS + 2


def test_using_a_learners_code_forgets_them(setup):
    from minialign.course import impl

    tok, model, tasks, calls = setup
    evaluate.evaluate_policy(model, tok, tasks, max_new_tokens=8, seed=1)
    impl.restore()  # what use() does first, before it swaps in a learner's functions
    evaluate.evaluate_policy(model, tok, tasks, max_new_tokens=8, seed=1)
    assert len(calls) == 2


def test_weights_digest_sees_every_tensor_and_dtype():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=16))
    same = copy.deepcopy(model)
    assert evaluate.weights_digest(model) == evaluate.weights_digest(same)
    with torch.no_grad():
        same.transformer.ln_f.weight[3] += 1e-3
    assert evaluate.weights_digest(model) != evaluate.weights_digest(same)
    assert evaluate.weights_digest(model) != evaluate.weights_digest(copy.deepcopy(model).to(
        torch.bfloat16))
