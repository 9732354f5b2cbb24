"""Chapter 4 · Reward modelling with Bradley-Terry — exercises.

Version 4 of the minialign exercise set.

Write the body of each function below that raises NotImplementedError (keep its
signature), then answer the concept questions in ANSWERS at the end of the file.

    ch04.bradley_terry_loss   difficulty ★☆☆  about 10 min
    ch04.ranking_loss         difficulty ★★☆  about 20 min
    ch04.last_token_scores    difficulty ★☆☆  about 10 min
    ch04.preference_accuracy  difficulty ★☆☆  about 5 min
    ch04.reward_step          difficulty ★★☆  about 20 min

Check your work:
    python -m minialign.grade --impl exercises --chapter 4
or, in a notebook:  from minialign.course import check; check(4)
Stuck? `--hints 1` (or `check(4, hints=1)`) adds a first hint for each exercise not passed;
`--hints 2`, 3, ... more, down to the formula.

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
    first. Returns a 0-dim tensor in the graph.

    The idea: a ranking of K responses holds C(K, 2) comparisons, one per pair, the response
    ranked higher being the chosen one. Each pair costs what `bradley_terry_loss` charges it;
    a prompt's loss is the mean over its pairs (a prompt with many responses does not outweigh
    the others), and the batch's is the mean over prompts. With K = 2 this equals
    `bradley_terry_loss(rewards[:, 0], rewards[:, 1])`; it must stay finite for rewards
    hundreds apart.

    mask: optional (B, K) bool, False for missing responses (a prompt with fewer than K), whose
    rewards hold junk; pairs involving a missing response are left out, and each prompt that
    still has a pair counts once (a prompt left with a single response has no pair and is left
    out).
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


def reward_step(rm, optimizer, ids, padding_mask, slots, lrs, grad_clip):
    """One optimisation step of the reward model on a batch of rankings; returns the batch's
    loss and accuracy.

    rm: a RewardModel; `rm(ids, padding_mask)` returns one score per row, (B*K,).
    optimizer: an AdamW over its parameters in two groups, the trunk then the scalar head,
    each with its own learning rate. ids, padding_mask: (B*K, T) as `batch_rankings` makes
    them: row b*K + j holds answer j of ranking b (answers best first), right-padded, the mask
    True on real tokens. slots: (B, K) bool, False where ranking b has no answer j (a prompt
    with fewer than K answers); such a row holds a placeholder, whose score means nothing.
    lrs: this step's learning rate of each parameter group, in the optimizer's order (from the
    schedule: the optimizer was built with others). grad_clip: the largest norm allowed for the
    gradient of all the parameters together, before the update.
    Returns (loss, accuracy) before the update, as Python floats: the batch's `ranking_loss`
    (each prompt's answers ranked as labelled, missing ones left out, a mean per prompt and
    then over prompts), and the fraction of prompts whose top answer scores strictly above the
    second (`preference_accuracy`).

    The idea: pretraining's step (chapter 2) with the ranking loss: the gradient of this
    batch's Bradley-Terry loss, and of nothing else, moves the parameters one AdamW step
    downhill. Edge cases: `.grad` still holds the previous step's gradients; the model may
    arrive in eval mode (a validation pass sets it) but trains in training mode; the gradient
    is clipped before the update, and the optimizer steps exactly once.
    """
    # exercise ch04.reward_step · difficulty ★★☆ · about 20 minutes
    raise NotImplementedError("exercise ch04.reward_step: write this body")


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
# q4.2  The simulated labelers are noisy, disagree with each other, and add a small bonus for
#       length (0.01 per word) to the gold reward, which itself charges 0.05 per word beyond an
#       answer's ideal length and 0.25 for filler. What does a reward model trained on their
#       comparisons learn about length?
#         a) What the labels say, bias included: they favour shorter answers (the bonus is
#            smaller than gold's cost of length), only less firmly than gold.
#         b) That longer is better: the length bonus is the one signal that every labeler
#            shares, so it outweighs the rest, and a policy optimised against the reward model
#            pads its answers.
#         c) Nothing of the labelers' own: noise, disagreement and the small bias all average
#            out over thousands of comparisons, and gold's trade-off remains.
#         d) Nothing reliable: when labelers disagree about a pair, the Bradley-Terry loss has
#            no minimum, and training diverges unless such pairs are removed.
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
#
# q4.4  Which limit of human feedback do more labels from the same people not fix?
#         a) Their noise: a labeler who prefers a with probability 0.7 still picks b three times
#            in ten.
#         b) What they all get wrong the same way: a shared bias, or an error none of them
#            checks.
#         c) Their disagreement: where two labelers disagree about a pair, a reward model has no
#            single answer to learn.
#         d) Their speed: each label takes a person's time, so RL must wait for people to score
#            every answer it samples.
#
# q4.5  In the reward model's training figure, the held-out accuracy at step 0 is 0% and the
#       held-out loss 0.693. What explains both numbers?
#         a) The head starts at zero: every pair is a tie, -log sigmoid(0) = ln 2, and a tie
#            counts as a miss.
#         b) The scores start random, so the model is confidently wrong about every pair: 0.693
#            is what a confident wrong prediction costs.
#         c) Step 0 is measured before any pair was seen: the model guesses, and its guesses
#            happen to point the wrong way on the held-out pairs.
#         d) The held-out labels are stored rejected-first, so at step 0 the model is right
#            about every pair, but in reverse.
#
# q4.6  The reward model gives a whole response one score, read at its last token. What kind of
#       reward model is it, and what does that leave to RL?
#         a) A process reward model: through causal attention every token has a score of its
#            own, and RL uses it as that token's reward.
#         b) An outcome reward model: one number for the finished answer; RL must work out which
#            tokens earned it.
#         c) A verifier: it checks whether the outcome is right, so RL against it needs no KL
#            penalty to keep it honest.
#         d) A sequence classifier: it gives RL no signal for single tokens, so it can only be
#            used to rerank whole answers (best-of-N).

ANSWERS = {
    "q4.1": None,  # one letter: a, b, c or d
    "q4.2": None,  # one letter: a, b, c or d
    "q4.3": None,  # one letter: a, b, c or d
    "q4.4": None,  # one letter: a, b, c or d
    "q4.5": None,  # one letter: a, b, c or d
    "q4.6": None,  # one letter: a, b, c or d
}
