"""Process against outcome reward models: the chained-sum checker and flawed solutions, the
annotators' noise, the PRM's step scores and their aggregation, majority vote and best-of-N
selection on hand cases, and the stage end to end in its fast configuration."""

import json
import math
import random

import pytest
import torch

from minialign import pipeline, prm
from minialign import world as W
from minialign.tokenizer import Tokenizer

NAN = float("nan")
P345 = W.chain_problem((3, 4, 5))  # 3 + 4 + 5 = 12


# ==============================================================================================
# the world's chained sums: gold checker, flawed solutions, annotators


def test_good_solution_shows_its_steps_and_passes_every_check():
    assert P345.prompt == "what is 3 plus 4 plus 5?"
    assert P345.solution() == "3 plus 4 is 7. 7 plus 5 is 12. the answer is 12."
    check = W.check_chain(P345, P345.solution())
    assert check.final_correct and check.answer == 12
    assert check.steps == (True, True, True) and check.process_correct


def test_right_answer_through_wrong_steps_is_caught_by_the_steps_not_the_outcome():
    compensating = "3 plus 4 is 8. 8 plus 5 is 12. the answer is 12."  # +1 then -1
    check = W.check_chain(P345, compensating)
    assert check.final_correct  # the outcome checker is fooled
    assert check.steps == (False, False, True) and not check.process_correct
    copied = "3 plus 4 is 8. 7 plus 5 is 12. the answer is 12."  # 8 written, 7 carried
    check = W.check_chain(P345, copied)
    assert check.final_correct and check.steps == (False, False, True)


def test_a_slip_is_one_wrong_step_and_a_wrong_answer():
    check = W.check_chain(P345, "3 plus 4 is 7. 7 plus 5 is 13. the answer is 13.")
    assert not check.final_correct and check.answer == 13
    assert check.steps == (True, False, True)  # the answer line is valid where it stands
    answer_only = W.check_chain(P345, "3 plus 4 is 7. 7 plus 5 is 12. the answer is 7.")
    assert not answer_only.final_correct and answer_only.steps == (True, True, False)


def test_wrong_operand_early_answer_garbage_and_unfinished_responses():
    assert W.check_chain(P345, "3 plus 5 is 8. 8 plus 5 is 13. the answer is 13.").steps \
        == (False, True, True)  # misread the 4: arithmetic right, step wrong
    early = W.check_chain(P345, "3 plus 4 is 7. the answer is 7.")
    assert not early.final_correct and early.steps == (True, False)  # stopped before the 5
    assert W.check_chain(P345, "12.").final_correct  # the last number is the answer...
    assert W.check_chain(P345, "12.").steps == (False,)  # ... but no step was shown
    empty = W.check_chain(P345, "")
    assert not empty.final_correct and empty.answer is None and empty.steps == (False,)
    cut = W.check_chain(P345, "3 plus 4 is 7. 7 plus")
    assert cut.steps == (True, False) and not cut.final_correct


@pytest.mark.parametrize("text", ["3 plus 4 is 7. 7 plus 5 is 12. the answer is 12.",
                                  "3 plus 4 is 7. 7 plus", "", "no steps here", "1. 2.  x"])
def test_chain_split_joins_back_to_the_response(text):
    pieces = W.chain_split(text)
    assert "".join(pieces) == text and len(pieces) == len(W.check_chain(P345, text).steps)


def test_flawed_solutions_disagree_with_their_outcome_as_documented():
    rng = random.Random(0)
    for numbers in [(3, 4, 5), (9, 9, 9, 9), (1, 2), (5, 1, 7, 2)]:
        problem = W.chain_problem(numbers)
        for kind in W.CHAIN_FLAWS:
            for _ in range(5):
                got, text = W.chain_flawed_solution(problem, rng, kind)
                check = W.check_chain(problem, text)
                assert not check.process_correct, (kind, text)
                assert check.final_correct == (got in ("compensate", "copy")), (kind, text)
    with pytest.raises(ValueError, match="kind"):
        W.chain_flawed_solution(P345, rng, "typo")


def test_chain_split_of_problems_is_fixed_and_disjoint():
    train = {p.numbers for p in W.chain_problems("train")}
    held_out = {p.numbers for p in W.chain_problems("eval")}
    assert not train & held_out and len(held_out) == sum(W.CHAIN_EVAL.values())
    assert held_out == {p.numbers for p in W.chain_problems("eval")}  # same every call
    demos = W.chain_demonstrations(50, seed=1, flawed_fraction=0.0)
    assert all(W.check_chain(W.chain_problem(_numbers(p)), r).process_correct for p, r in demos)


def _numbers(prompt):
    return tuple(int(x) for x in prompt.replace("?", " ").replace(".", " ").split() if x.isdigit())


@pytest.mark.parametrize("step_noise,outcome_noise", [(0.0, 0.0), (0.1, 0.3), (0.25, 0.05)])
def test_annotators_flip_labels_at_their_stated_rates(step_noise, outcome_noise):
    annotator = W.StepAnnotator(step_noise=step_noise, outcome_noise=outcome_noise)
    rng = random.Random(7)
    texts = [P345.solution(), "3 plus 4 is 8. 8 plus 5 is 12. the answer is 12.",
             "3 plus 4 is 7. 7 plus 5 is 13. the answer is 13."]
    step_flips = outcome_flips = n_steps = 0
    n = 4000
    for i in range(n):
        text = texts[i % 3]
        gold = W.check_chain(P345, text)
        step_flips += sum(a != b for a, b in zip(annotator.label_steps(P345, text, rng),
                                                 gold.steps))
        n_steps += len(gold.steps)
        outcome_flips += annotator.label_outcome(P345, text, rng) != gold.final_correct
    for flips, count, rate in [(step_flips, n_steps, step_noise),
                               (outcome_flips, n, outcome_noise)]:
        se = math.sqrt(max(rate * (1 - rate), 1e-12) / count)
        assert abs(flips / count - rate) <= 4 * se + 1e-12, (flips / count, rate)


def test_annotator_noise_must_be_below_one_half():
    with pytest.raises(ValueError, match="step_noise"):
        W.StepAnnotator(step_noise=0.5)
    with pytest.raises(ValueError, match="outcome_noise"):
        W.StepAnnotator(outcome_noise=-0.1)


# ==============================================================================================
# the reward models' pure functions


def test_masked_bce_reads_only_where_labels_sit():
    logits = torch.tensor([[0.0, 2.0, NAN], [NAN, -1.0, 3.0]])
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    mask = torch.tensor([[False, True, False], [False, True, True]])
    expected = (-math.log(1 - 1 / (1 + math.exp(-2.0))) - math.log(1 / (1 + math.exp(1.0)))
                - math.log(1 - 1 / (1 + math.exp(-3.0)))) / 3
    assert prm.masked_bce_loss(logits, targets, mask).item() == pytest.approx(expected, rel=1e-5)


def test_step_probabilities_gather_at_step_ends():
    logits = torch.tensor([[0.0, math.log(3.0), 5.0, math.log(1 / 3)]])  # P = .5, .75, ~1, .25
    probs = prm.step_probabilities(logits, torch.tensor([[1, 3, 0]]),
                                   torch.tensor([[True, True, False]]))
    assert probs[0, :2].tolist() == pytest.approx([0.75, 0.25])
    assert math.isnan(probs[0, 2].item())  # off the mask: nothing, not a number


def test_aggregate_steps_product_and_min_by_hand():
    probs = torch.tensor([[0.9, 0.5, 0.8], [0.6, NAN, NAN], [0.99, 0.99, 0.99]])
    mask = torch.tensor([[True, True, True], [True, False, False], [True, True, True]])
    product = prm.aggregate_steps(probs, mask, "product")
    assert product.tolist() == pytest.approx([0.36, 0.6, 0.99 ** 3])
    minimum = prm.aggregate_steps(probs, mask, "min")
    assert minimum.tolist() == pytest.approx([0.5, 0.6, 0.99])
    # the product punishes length: three good steps lose to one good step, the min does not
    assert product[2] < 0.99 and minimum[2] == pytest.approx(0.99)
    with pytest.raises(ValueError, match="how"):
        prm.aggregate_steps(probs, mask, "mean")


def test_majority_vote_by_hand_with_ties_and_missing_answers():
    assert prm.majority_vote([3, 5, 5, 3, 5]) == 1  # 5 wins; its first sample is index 1
    assert prm.majority_vote([7, 3, 3, 7]) == 0  # tie: the answer seen first (7) wins
    assert prm.majority_vote([3, 7, 7, 3]) == 0  # tie again: now 3 is seen first
    assert prm.majority_vote([None, None, 4]) == 2  # no answer votes for nothing
    assert prm.majority_vote([None, None]) == 0
    assert prm.majority_vote([12]) == 0


def test_pick_highest_and_best_of_n_on_hand_scores():
    assert prm.pick_highest([0.1, 0.9, 0.3]) == 1
    assert prm.pick_highest([0.5, 0.9, 0.9]) == 1  # ties: the first one
    correct = [[False, True, False], [False, False, False]]
    scores = [[0.2, 0.7, 0.4], [0.9, 0.1, 0.5]]

    def by_score(p, subset):
        return subset[prm.pick_highest([scores[p][k] for k in subset])]

    rng = random.Random(0)
    assert prm.best_of_n(correct, by_score, 3, 5, rng) == [1.0, 0.0]  # all 3: the best is right
    one = prm.best_of_n(correct, by_score, 1, 3000, rng)  # N = 1: a random sample
    assert one[0] == pytest.approx(1 / 3, abs=0.03) and one[1] == 0.0
    # N = 2 of 3: the right one (highest score) is in the pair 2 times out of 3
    assert prm.best_of_n(correct, by_score, 2, 3000, rng)[0] == pytest.approx(2 / 3, abs=0.03)
    with pytest.raises(ValueError, match="samples per problem"):
        prm.best_of_n(correct, by_score, 4, 1, rng)


def test_auroc_by_hand():
    assert prm.auroc([0.9, 0.8, 0.1], [True, True, False]) == 1.0
    assert prm.auroc([0.1, 0.8, 0.9], [True, True, False]) == 0.0
    assert prm.auroc([0.5, 0.5], [True, False]) == 0.5
    assert math.isnan(prm.auroc([0.5], [True]))


def test_encode_steps_points_at_each_steps_full_stop_and_matches_whole_encoding():
    demos = W.chain_demonstrations(200, seed=0)
    tok = Tokenizer.train([f"{p} {r}" for p, r in demos], vocab_size=300)
    text = "3 plus 4 is 7. 7 plus 5 is 12. the answer is 12."
    ids, ends = prm.encode_steps(tok, P345.prompt, text)
    assert ids == tok.encode_prompt(P345.prompt) + tok.encode(text) + [tok.end_id]
    assert [tok.decode([ids[e]]) for e in ends] == [".", ".", "."]
    assert len(ends) == 3 and ends[-1] == len(ids) - 2  # the last step ends before <|end|>
    orm_ids, orm_pos, orm_lab = prm.make_example(tok, {"prompt": P345.prompt, "text": text,
                                                      "ended": True}, "orm", True)
    assert orm_ids == ids and orm_pos == [len(ids) - 1] and orm_lab == [1.0]


def test_config_checks_and_fast_preset():
    with pytest.raises(ValueError, match="aggregation"):
        prm.PRMConfig(aggregation="mean")
    with pytest.raises(ValueError, match="ns"):
        prm.PRMConfig(ns=(0, 2))
    with pytest.raises(ValueError, match="noise"):
        prm.PRMConfig(step_noise=0.6)
    fast = prm.PRMConfig.fast()
    assert 0 < fast.n_eval_problems <= 20 and max(fast.ns) <= 8  # seconds, not minutes
    assert prm.PRMConfig().ns == (1, 2, 4, 8, 16, 32, 64)


# ==============================================================================================
# the stage


def test_prm_is_a_stage_outside_the_default_pipeline():
    assert pipeline.STAGES["prm"] == ("prm", "PRMConfig", [])
    assert "prm" not in pipeline.ORDER  # the default run's time budget is not its to spend


def test_prm_stage_fast_writes_table_and_figure(tmp_path):
    skipped = pipeline.update(["prm"], tmp_path, fast=True, log=lambda *a, **k: None)
    assert skipped == [] and (tmp_path / "prm" / "stage.json").exists()
    out = tmp_path / "prm"
    assert (out / "best_of_n.png").stat().st_size > 0
    m = json.loads((out / "metrics.json").read_text())
    methods = m["methods"]
    assert {"prm", "orm", "majority", "oracle", "prm_equal_labels"} <= set(methods)
    ns = list(prm.PRMConfig.fast().ns)
    for name, rows in methods.items():
        assert rows["n"] == ns and len(rows["accuracy"]) == len(rows["se"]) == len(ns)
        assert all(0 <= a <= 1 for a in rows["accuracy"])
    # N = 1 is one random sample, the same one for every rule
    assert len({rows["accuracy"][0] for rows in methods.values()}) == 1
    # no rule beats the oracle (a right answer among the N, if there is one)
    for name, rows in methods.items():
        assert all(a <= o + 1e-9 for a, o in zip(rows["accuracy"],
                                                   methods["oracle"]["accuracy"]))
    assert m["labels"]["step_labels"] >= m["labels"]["outcome_labels"]
    assert m["labels"]["step_labels_equal_cost"] >= m["labels"]["outcome_labels"]
    assert "prm-orm" in m["paired"]
