"""Chapter 2 · The GPT: attention, sampling and log-probabilities — exercises.

Version 3 of the minialign exercise set.

Write the body of each function below that raises NotImplementedError (keep its
signature), then answer the concept questions in ANSWERS at the end of the file.

    ch02.causal_self_attention  difficulty ★★☆  about 20 min
    ch02.filter_logits          difficulty ★★☆  about 15 min
    ch02.gather_logprobs        difficulty ★☆☆  about 10 min
    ch02.pretrain_step          difficulty ★★☆  about 25 min

Check your work:
    python -m minialign.grade --impl exercises --chapter 2
or, in a notebook:  from minialign.course import check; check(2)

Then train with your own code (what you have not written yet comes from the library):
    python -m minialign pretrain --impl exercises

Library code: minialign/model.py, minialign/pretrain.py.
The answers: the library holds the complete code of every exercise, right under its docstring,
and so does solutions/. Try first; read them after, to compare.

Generated from the library by `python -m minialign.course build`. This file is yours: edit it.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch
import torch.nn.functional as F


def causal_self_attention(q, k, v, key_padding_mask=None):
    """Scaled dot-product attention where each query sees only keys at or before its position.

    q: (B, H, Tq, hs); k, v: (B, H, Tk, hs) with Tq <= Tk. The queries are the *last* Tq
    positions of the sequence: query i sits at position Tk - Tq + i. (Tq == Tk in training;
    Tq < Tk when a KV cache holds the keys of earlier tokens.)
    key_padding_mask: optional (B, Tk) bool, True for real tokens, False for padding keys,
    which no query may attend to. A query still attends to itself, so that a row made only of
    padding is not all -inf (its output is meaningless and is ignored by the caller).
    Returns y: (B, H, Tq, hs).

    softmax(q kᵀ / sqrt(hs) + mask) v, with mask = -inf where attention is not allowed.
    """
    # exercise ch02.causal_self_attention · difficulty ★★☆ · about 20 minutes
    raise NotImplementedError("exercise ch02.causal_self_attention: write this body")


def filter_logits(logits, top_k=None, top_p=None):
    """Keep the top-k tokens and/or the smallest set whose probability reaches top_p.

    logits: (B, V). Returns (B, V) with removed tokens set to -inf. top_k=None or top_p=None
    turn that filter off. top-p keeps a token if the probability of the tokens ranked strictly
    above it is below top_p, so the most likely token always survives.
    """
    # exercise ch02.filter_logits · difficulty ★★☆ · about 15 minutes
    raise NotImplementedError("exercise ch02.filter_logits: write this body")


def gather_logprobs(logits, tokens):
    """Log-probability of each token under the logits at the same index.

    logits: (B, T, V) with logits[:, t] the prediction for tokens[:, t]; tokens: (B, T).
    Returns (B, T) log p(tokens[:, t] | ...).

    Alignment: a GPT's logits at position t predict the token at t + 1, so callers pass
    `logits[:, :-1]` with `idx[:, 1:]`.
    """
    # exercise ch02.gather_logprobs · difficulty ★☆☆ · about 10 minutes
    raise NotImplementedError("exercise ch02.gather_logprobs: write this body")


def pretrain_step(model, optimizer, x, y, lr, grad_clip, forward_context=nullcontext) -> float:
    """One optimisation step of next-token prediction on one batch; returns the batch's loss.

    model: a GPT; `model(x, y)` returns (logits, loss), the loss being the mean cross-entropy
    of the next token over the B * T positions. optimizer: an AdamW over the model's
    parameters, in two parameter groups (matrices with weight decay, the rest without).
    x, y: (B, T) token ids; y[:, t] is the token that follows x[:, t].
    lr: this step's learning rate, from the schedule (`cosine_lr`); the optimizer was built
    with another one, and every parameter group must use this one for this step.
    grad_clip: the largest norm allowed for the gradient of all the parameters together; a
    larger gradient is scaled down to that norm before the update
    (`torch.nn.utils.clip_grad_norm_`).
    forward_context: returns the context the forward pass runs in (`with forward_context():`);
    the loop passes bf16 mixed precision when it is on. Backward runs outside it.
    Returns the batch's loss before the update, as a Python float.

    The idea: the gradient of this batch's loss, and of nothing else, moves the parameters one
    AdamW step downhill. Edge cases: `.grad` still holds the previous step's gradients when
    the step starts (backward adds to whatever is there); the model may arrive in eval mode
    (a validation pass sets it), but it trains in training mode (dropout on); the optimizer
    steps exactly once.
    """
    # exercise ch02.pretrain_step · difficulty ★★☆ · about 25 minutes
    raise NotImplementedError("exercise ch02.pretrain_step: write this body")


# ==============================================================================================
# Concept questions
#
# Answer in ANSWERS below: one letter for a choice question ("b"), the letters in order
# for an ordering question (["c", "a", "b"]). Grading says whether each answer is right:
# a right one is explained; a wrong one is told why the option chosen is wrong.
#
# q2.1  Why does a GPT use a causal mask when it trains on whole sequences?
#         a) To save memory: half of the attention matrix need not be stored.
#         b) So that the prediction made at position t cannot see the token t + 1 it is trained
#            to predict: all T next-token predictions are trained at once without cheating, and
#            each one sees what generation will see.
#         c) To stop tokens from attending to padding.
#         d) Because attention is not defined for keys after the query.
#
# q2.2  What does the KV cache save during generation?
#         a) The logits of earlier steps, so that a token can be resampled.
#         b) The attention probabilities, which are the same at every step.
#         c) The keys and values of the earlier tokens in every layer, so that each step runs
#            the model on the new token only instead of on the whole prefix again.
#         d) A compressed copy of the weights that runs faster.
#
# q2.3  Sampling divides the logits by a temperature T before the softmax. What does T do?
#         a) T < 1 sharpens the distribution towards the most likely token, T > 1 flattens it
#            towards uniform; as T -> 0 sampling becomes greedy (argmax).
#         b) T > 1 makes the model more confident in its top token.
#         c) T changes which token is the most likely one.
#         d) T only matters when top-k is used.
#
# q2.4  Asked 'what is 7 plus 5?', the pretrained model often writes another question instead of
#       an answer. Why?
#         a) The model is too small to know arithmetic.
#         b) It was trained only to continue web text, where a question is often followed by
#            more questions (worksheets, forum threads); nothing yet taught it to answer as an
#            assistant. Supervised fine-tuning does that.
#         c) The sampling temperature is too high.
#         d) The causal mask hides the question from the model.

ANSWERS = {
    "q2.1": None,  # one letter: a, b, c or d
    "q2.2": None,  # one letter: a, b, c or d
    "q2.3": None,  # one letter: a, b, c or d
    "q2.4": None,  # one letter: a, b, c or d
}
