"""Chapter 7 · Best-of-N and comparing the methods — exercises.

Version 4 of the minialign exercise set.

Write the body of each function below that raises NotImplementedError (keep its
signature), then answer the concept questions in ANSWERS at the end of the file.

    ch07.best_of_n_distribution  difficulty ★★☆  about 20 min
    ch07.kl_best_of_n_bound      difficulty ★☆☆  about 5 min

Check your work:
    python -m minialign.grade --impl exercises --chapter 7
or, in a notebook:  from minialign.course import check; check(7)
Stuck? `--hints 1` (or `check(7, hints=1)`) adds a first hint for each exercise not passed;
`--hints 2`, 3, ... more, down to the formula.

Then train with your own code (what you have not written yet comes from the library):
    python -m minialign bon --impl exercises

Library code: minialign/bon.py, minialign/evaluate.py.
The answers: the library holds the complete code of every exercise, right under its docstring,
and so does solutions/. Try first; read them after, to compare.

Generated from the library by `python -m minialign.course build`. This file is yours: edit it.
"""

from __future__ import annotations

import math

import torch


def best_of_n_distribution(probs, rewards, n):
    """The distribution of best-of-n sampling over a finite set of responses.

    probs: (K,) base probabilities of K distinct responses (summing to 1); rewards: (K,) their
    rewards (distinct, in any order); n >= 1: samples drawn. Returns (K,) probabilities, in
    the original order of the responses, summing to 1; n = 1 gives probs back, and a large n
    puts almost all the mass on the best response.

    The idea: draw n responses independently from probs and keep the one with the highest
    reward. That is response i exactly when all n draws score at most r_i, but not all of
    them score below r_i; each of those two events is n independent draws landing in a set
    whose probability sums the probs of the responses rewarded at most (below) r_i. The
    notebook's section 2 gives the formula.
    """
    # exercise ch07.best_of_n_distribution · difficulty ★★☆ · about 20 minutes
    raise NotImplementedError("exercise ch07.best_of_n_distribution: write this body")


def kl_best_of_n_bound(n: int) -> float:
    """Upper bound on KL(best-of-n || base): log n - (n - 1) / n (Stiennon et al. 2020)."""
    # exercise ch07.kl_best_of_n_bound · difficulty ★☆☆ · about 5 minutes
    raise NotImplementedError("exercise ch07.kl_best_of_n_bound: write this body")


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
#
# q7.3  Classify the methods by their stage and by when they act: at training time (new weights)
#       or at inference time (the same weights, more work per query).
#         a) Training time: SFT and DPO, which fit fixed data; inference time: RLHF and best-
#            of-N, which consult a reward model.
#         b) Training time: SFT (instruction alignment), then RLHF or DPO (preference
#            alignment); inference time: best-of-N, prompting.
#         c) Training time: SFT, RLHF, DPO and best-of-N, which needs a trained reward model;
#            inference time: prompting alone.
#         d) Training time: RLHF and DPO; SFT is part of pretraining; inference time: best-of-N
#            and prompting.
#
# q7.4  A team has an SFT chatbot and 5,000 preference pairs between its answers. Each answer
#       must stay at one sample when served, and they cannot afford to tune an RL loop. Which
#       plan fits?
#         a) Best-of-N with N = 16 and a reward model trained on the pairs: the chatbot needs no
#            training at all, and best-of-N is a strong baseline.
#         b) PPO against a reward model trained on the pairs, with a weak KL penalty so that the
#            policy can move far from the SFT model.
#         c) SFT on the chosen responses only: it is the cheapest loop of all, and the chosen
#            responses are the better half of the data.
#         d) DPO on the pairs, with beta picked on held-out prompts: no reward model, no
#            sampling in training, one sample per answer.
#
# q7.5  On the same held-out prompts (SFT's gold reward: 0.33; evaluating one policy again moves
#       its gold by about 0.02): best-of-16 reaches gold 0.70 at a KL of 1.9 nats; PPO with beta
#       = 0.05, 0.80 at 2.2 nats; PPO with beta = 0.02, 0.64 at 3.1 nats, after a peak of 0.76
#       at 2.5 nats while its proxy reward kept rising. Which reading is right?
#         a) PPO with beta = 0.02 did best: it moved furthest from SFT, and distance from SFT
#            measures how aligned a policy is.
#         b) beta = 0.05 beats best-of-16 by 0.10, five times the spread; beta = 0.02 over-
#            optimised: gold fell 0.12 as the proxy rose.
#         c) Best-of-16 is the one to deploy: it reaches 0.70 without any training, and the PPO
#            policies are within the noise of it.
#         d) None can be compared: they sit at different KLs, and policies are comparable only
#            at an equal KL from SFT.

ANSWERS = {
    "q7.1": None,  # one letter: a, b, c or d
    "q7.2": None,  # one letter: a, b, c or d
    "q7.3": None,  # one letter: a, b, c or d
    "q7.4": None,  # one letter: a, b, c or d
    "q7.5": None,  # one letter: a, b, c or d
}
