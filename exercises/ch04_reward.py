"""Chapter 4 · Reward modelling with Bradley-Terry — exercises.

Version 3 of the minialign exercise set.

Write the body of each function below that raises NotImplementedError (keep its
signature), then answer the concept questions in ANSWERS at the end of the file.

    ch04.bradley_terry_loss   difficulty ★☆☆  about 10 min
    ch04.ranking_loss         difficulty ★★☆  about 20 min
    ch04.last_token_scores    difficulty ★☆☆  about 10 min
    ch04.preference_accuracy  difficulty ★☆☆  about 5 min

Check your work:
    python -m minialign.grade --impl exercises --chapter 4
or, in a notebook:  from minialign.course import check; check(4)

Then train with your own code (what you have not written yet comes from the library):
    python -m minialign reward --impl exercises

Library code: minialign/reward.py.
The answers: the library holds the complete code of every exercise, right under its docstring,
and so does solutions/. Try first; read them after, to compare.

Generated from the library by `python -m minialign.course build`. This file is yours: edit it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(chosen_rewards, rejected_rewards, margin=None):
    """Pairwise preference loss: mean over pairs of -log sigmoid(r_chosen - r_rejected - margin).

    chosen_rewards, rejected_rewards: (B,) scores of the preferred and the other response.
    margin: optional (B,) how much better the chosen one was rated (Llama 2); None for 0.
    Returns a scalar. (-log sigmoid(x) is F.logsigmoid's negative: stable for any x.)
    """
    # exercise ch04.bradley_terry_loss · difficulty ★☆☆ · about 10 minutes
    raise NotImplementedError("exercise ch04.bradley_terry_loss: write this body")


def ranking_loss(rewards, mask=None):
    """K-wise ranking loss (InstructGPT): rewards (B, K) of each prompt's K responses, best
    first. The loss of one prompt is the mean over its C(K, 2) pairs (i < j) of
    -log sigmoid(r_i - r_j); the batch loss is the mean over prompts.

    mask: optional (B, K) bool, False for missing responses (a prompt with fewer than K);
    pairs involving a missing response are left out, and each prompt that still has a pair
    counts once (a prompt left with a single response has no pair and is left out).
    With K = 2 this equals `bradley_terry_loss(rewards[:, 0], rewards[:, 1])`.
    """
    # exercise ch04.ranking_loss · difficulty ★★☆ · about 20 minutes
    raise NotImplementedError("exercise ch04.ranking_loss: write this body")


def last_token_scores(values, padding_mask):
    """Read one score per sequence at its last real token.

    values: (B, T) the scalar head's output at every position; padding_mask: (B, T) bool, True
    on real tokens (padding may be on the left, the right, or both). Returns (B,).
    """
    # exercise ch04.last_token_scores · difficulty ★☆☆ · about 10 minutes
    raise NotImplementedError("exercise ch04.last_token_scores: write this body")


def preference_accuracy(chosen_rewards, rejected_rewards) -> float:
    """Fraction of pairs where the chosen response scores strictly higher (a tie is wrong)."""
    # exercise ch04.preference_accuracy · difficulty ★☆☆ · about 5 minutes
    raise NotImplementedError("exercise ch04.preference_accuracy: write this body")


# ==============================================================================================
# Concept questions
#
# Answer in ANSWERS below: one letter for a choice question ("b"), the letters in order
# for an ordering question (["c", "a", "b"]). Grading says whether each answer is right:
# a right one is explained; a wrong one is told why the option chosen is wrong.
#
# q4.1  What is a preference dataset (prompts with responses compared by people) used for in
#       RLHF?
#         a) As extra demonstrations: the preferred response of each pair is imitated with the
#            next-token loss, and the other response is simply dropped.
#         b) As the final benchmark: the aligned policy's win rate on these pairs is the score
#            reported at the end of training, so they are never trained on.
#         c) To pick the sampling temperature that makes the policy's answers match the
#            annotators' taste.
#         d) To train a reward model that stands in for the annotators when RL scores new
#            responses.
#
# q4.2  The annotators are noisy, slightly prefer longer answers, and do not always agree with
#       each other. What does the reward model trained on their comparisons learn?
#         a) Their preferences, bias included: longer answers get higher scores for their length
#            alone.
#         b) The true quality of each response: with enough comparisons the noise, the
#            disagreements and the length bias all average out.
#         c) Nothing useful: when annotators disagree about a pair, the Bradley-Terry loss has
#            no minimum, and training diverges unless those pairs are removed.
#         d) Only the length preference, because it is the one signal shared by all annotators.
#
# q4.3  Even a reward model that knows the annotators' exact preference probabilities gets only
#       about 70% accuracy on the default run's held-out labelled pairs. Why?
#         a) It overfits the training pairs: held-out accuracy is always lower than training
#            accuracy, and more data would bring it to 100%.
#         b) Accuracy uses a strict '>', so the pairs where the two responses get the same score
#            count as errors.
#         c) The labels are noisy: an annotator who prefers a with probability 0.7 still picks b
#            30% of the time, and no model can predict that.
#         d) The score is read at the last token only, which hides the start of the response
#            from the reward model and makes it guess on long answers.

ANSWERS = {
    "q4.1": None,  # one letter: a, b, c or d
    "q4.2": None,  # one letter: a, b, c or d
    "q4.3": None,  # one letter: a, b, c or d
}
