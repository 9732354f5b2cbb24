"""The helpers that compare a reward model with the gold reward (reward.pearson,
center_per_prompt, misordered_pairs, held_out_samples), on numbers worked by hand."""

import pytest

from minialign import reward
from minialign.preferences import Ranking


def test_pearson_by_hand():
    assert reward.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert reward.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # x = (-1, 0, 1) centred, y = (0, 0, 3) -> centred (-1, -1, 2): r = 3 / (sqrt(2) sqrt(6))
    assert reward.pearson([1, 2, 3], [0, 0, 3]) == pytest.approx(3 / (2 ** 0.5 * 6 ** 0.5))


def test_centring_removes_each_prompts_level_only():
    values = [5.0, 6.0, 7.0, -6.0, -5.0]
    prompts = ["p", "p", "p", "q", "q"]
    assert reward.center_per_prompt(values, prompts) == pytest.approx([-1.0, 0.0, 1.0, -0.5, 0.5])
    shifted = [v + (10 if p == "q" else -3) for v, p in zip(values, prompts)]  # new levels
    centred = reward.center_per_prompt(values, prompts)
    assert reward.center_per_prompt(shifted, prompts) == pytest.approx(centred)
    with pytest.raises(ValueError):
        reward.center_per_prompt([1.0], ["p", "q"])


def test_misordered_pairs_within_a_prompt_worst_first():
    prompts = ["p", "p", "p", "q", "q", "r"]
    rm = [0.0, 1.0, 2.0, 5.0, 5.0, 9.0]
    gold = [1.0, 0.5, -1.0, 0.0, 0.0, -3.0]
    wrong, n = reward.misordered_pairs(prompts, rm, gold)
    # p: gold orders 0 > 1 > 2, the scores 2 > 1 > 0: all three pairs the other way; q: a gold
    # tie is no pair; r: alone. Worst first: gold gap 2.0 (0, 2), 1.5 (1, 2), 0.5 (0, 1)
    assert n == 3 and wrong == [(0, 2), (1, 2), (0, 1)]
    wrong, n = reward.misordered_pairs(prompts, [-x for x in rm], gold)
    assert n == 3 and wrong == []
    # across prompts nothing is compared, however far apart the levels
    assert reward.misordered_pairs(["a", "b"], [10.0, -10.0], [0.0, 1.0]) == ([], 0)
    with pytest.raises(ValueError):
        reward.misordered_pairs(["a"], [1.0, 2.0], [0.0, 1.0])


def test_held_out_samples_follow_the_rankings_order():
    recs = [Ranking("a?", ["x", "y"], [True, False], [0.6]),
            Ranking("b?", ["z", "w"], [True, True], [0.5])]
    assert reward.held_out_samples(recs) == [("a?", "x", True), ("a?", "y", False),
                                             ("b?", "z", True), ("b?", "w", True)]
