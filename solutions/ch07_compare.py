"""Chapter 7 · Best-of-N and comparing the methods — solutions.

Version 3 of the minialign exercise set.

The complete code of every exercise of the chapter and the answers to its questions.

    ch07.best_of_n_distribution  difficulty ★★☆  about 20 min
    ch07.kl_best_of_n_bound      difficulty ★☆☆  about 5 min

Check your work:
    python -m minialign.grade --impl solutions --chapter 7

Library code: minialign/bon.py, minialign/evaluate.py.

Generated from the library by `python -m minialign.course build`.
"""

from __future__ import annotations

import math

import torch


def best_of_n_distribution(probs, rewards, n):
    """The distribution of best-of-n sampling over a finite set of responses.

    probs: (K,) base probabilities of K distinct responses (summing to 1); rewards: (K,) their
    rewards (distinct); n: samples drawn. The best of n draws is response i when all n draws
    have reward <= r_i and not all have reward < r_i:
        p_n(i) = F(r_i)^n - F_<(r_i)^n,  F(r) = P(reward <= r),  F_<(r) = P(reward < r).
    Returns (K,) probabilities in the original order.
    """
    # exercise ch07.best_of_n_distribution · difficulty ★★☆ · about 20 minutes
    order = torch.argsort(rewards)  # ascending reward
    cdf = torch.cumsum(probs[order], dim=0)  # F at each response, in reward order
    below = cdf - probs[order]  # F_< : probability of a strictly lower reward
    p_sorted = cdf ** n - below.clamp(min=0) ** n
    out = torch.empty_like(probs)
    out[order] = p_sorted
    return out


def kl_best_of_n_bound(n: int) -> float:
    """Upper bound on KL(best-of-n || base): log n - (n - 1) / n (Stiennon et al. 2020)."""
    # exercise ch07.kl_best_of_n_bound · difficulty ★☆☆ · about 5 minutes
    if n < 1:
        raise ValueError("n must be at least 1")
    return math.log(n) - (n - 1) / n


# ==============================================================================================
# Concept questions
#
# Answer in ANSWERS below: one letter for a choice question ("b"), the letters in order
# for an ordering question (["c", "a", "b"]). Grading says whether each answer is right:
# a right one is explained; a wrong one is told why the option chosen is wrong.
#
# q7.1  Which statement about best-of-N sampling (sample N responses, return the one the reward
#       model scores highest) is right?
#         a) It cannot over-optimise the reward model: the policy's weights never change, so the
#            gold reward can only rise as N grows, never fall.
#         b) Its KL from the base policy grows linearly with N, which is why it is only used
#            with N of 2 or 3.
#         c) It needs no training, costs N samples per query, and its KL from the base policy is
#            at most log N - (N - 1)/N.
#         d) It fine-tunes the policy on the best of the N responses, one step per query.
#
# q7.2  RLAIF replaces the human annotators by an AI judge. Which statement is right?
#         a) An AI judge has no biases, so the reward model trained on its labels is the gold
#            reward.
#         b) AI labels are cheaper and more consistent, but the judge has blind spots and biases
#            of its own.
#         c) AI feedback cannot train a reward model, because an AI judge gives scores, not
#            comparisons: it can only be used with DPO.
#         d) AI labels are always noisier than human ones, so a reward model trained on them
#            needs many more pairs to reach the same accuracy.

ANSWERS = {
    "q7.1": "c",  # one letter: a, b, c or d
    "q7.2": "b",  # one letter: a, b, c or d
}
