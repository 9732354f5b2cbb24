"""Chapter 2 · The GPT: attention, sampling and log-probabilities — solutions.

Version 4 of the minialign exercise set.

The complete code of every exercise of the chapter and the answers to its questions.

    ch02.causal_self_attention  difficulty ★★☆  about 20 min
    ch02.filter_logits          difficulty ★★☆  about 15 min
    ch02.gather_logprobs        difficulty ★☆☆  about 10 min
    ch02.pretrain_step          difficulty ★★☆  about 25 min

Check your work:
    python -m minialign.grade --impl solutions --chapter 2

Library code: minialign/model.py, minialign/pretrain.py.

Generated from the library by `python -m minialign.course build`.
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
    Returns y: (B, H, Tq, hs), differentiable with respect to q, k and v.

    The idea: each query scores every key it may see (the dot product of the two, scaled so
    that the scores do not grow with the head size hs), a softmax over those keys turns the
    scores into weights that sum to 1, and the output is the weighted mean of their values.
    Keys it may not see (the future, padding) get weight exactly 0. The notebook's section 2
    gives the formula.
    """
    # exercise ch02.causal_self_attention · difficulty ★★☆ · about 20 minutes
    Tq, Tk, hs = q.size(-2), k.size(-2), q.size(-1)
    att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)  # (B, H, Tq, Tk)
    q_pos = torch.arange(Tk - Tq, Tk, device=q.device).view(Tq, 1)  # (Tq, 1) absolute positions
    k_pos = torch.arange(Tk, device=q.device).view(1, Tk)  # (1, Tk)
    allowed = k_pos <= q_pos  # (Tq, Tk) causal
    if key_padding_mask is not None:
        real_key = key_padding_mask.view(-1, 1, 1, Tk)  # (B, 1, 1, Tk)
        allowed = allowed & (real_key | (k_pos == q_pos))  # (B, 1, Tq, Tk)
    att = att.masked_fill(~allowed, float("-inf"))
    att = F.softmax(att, dim=-1)
    return att @ v  # (B, H, Tq, Tk) @ (B, H, Tk, hs) -> (B, H, Tq, hs)


def filter_logits(logits, top_k=None, top_p=None):
    """Keep the top-k tokens and/or the smallest set whose probability reaches top_p.

    logits: (B, V), each row filtered on its own. Returns (B, V): the kept logits unchanged,
    the removed ones set to -inf. top_k=None or top_p=None turn that filter off.
    top-k keeps the tokens whose logit is at least the k-th largest of the row (a top_k at
    least V keeps everything). top-p keeps a token if the probability (softmax of the row) of
    the tokens ranked strictly above it is below top_p, so the most likely token always
    survives. With both, top-k filters first and top-p then works on the softmax of what top-k
    kept.
    """
    # exercise ch02.filter_logits · difficulty ★★☆ · about 15 minutes
    if top_k is not None:
        k = min(int(top_k), logits.size(-1))
        kth = torch.topk(logits, k, dim=-1).values[:, -1:]  # (B, 1) the k-th largest logit
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
        probs = F.softmax(sorted_logits, dim=-1)
        mass_above = torch.cumsum(probs, dim=-1) - probs  # probability ranked strictly above
        remove_sorted = mass_above >= top_p
        remove = remove_sorted.scatter(-1, order, remove_sorted)  # back to vocabulary order
        logits = logits.masked_fill(remove, float("-inf"))
    return logits


def gather_logprobs(logits, tokens):
    """Log-probability of each token under the logits at the same index.

    logits: (B, T, V) with logits[:, t] the prediction for tokens[:, t]; tokens: (B, T).
    Returns (B, T) log p(tokens[:, t] | ...).

    Alignment: a GPT's logits at position t predict the token at t + 1, so callers pass
    `logits[:, :-1]` with `idx[:, 1:]`.
    """
    # exercise ch02.gather_logprobs · difficulty ★☆☆ · about 10 minutes
    logps = F.log_softmax(logits.float(), dim=-1)  # (B, T, V); float for stable sums
    return torch.gather(logps, dim=-1, index=tokens.unsqueeze(-1)).squeeze(-1)  # (B, T)


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
    model.train()  # dropout on: a validation pass may have left the model in eval mode
    for group in optimizer.param_groups:  # both groups: with and without weight decay
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)  # backward adds to .grad: drop the last step's
    with forward_context():
        _, loss = model(x, y)  # mean next-token cross-entropy over the batch
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)  # before the step it limits
    optimizer.step()
    return loss.item()


# ==============================================================================================
# Concept questions
#
# Answer in ANSWERS below: one letter for a choice question ("b"), the letters in order
# for an ordering question (["c", "a", "b"]). Grading says whether each answer is right:
# a right one is explained; a wrong one is told why the option chosen is wrong.
#
# q2.1  Why does a GPT use a causal mask when it trains on whole sequences?
#         a) To save memory and time: the scores above the diagonal are never computed, which
#            halves the cost of attention on long sequences.
#         b) So that position t cannot see token t + 1, the one it must predict: every position
#            trains at once, seeing only what generation will see.
#         c) To stop the real tokens from attending to the padding at the end of the shorter
#            sequences of a batch, which would add noise to what they learn.
#         d) Because attention is not defined for keys that come after the query: their
#            positions have no embedding yet when the query is computed.
#
# q2.2  What does the KV cache save during generation?
#         a) The logits of the earlier steps, so that a token can be resampled at another
#            temperature without running the model again.
#         b) The attention probabilities of the earlier steps, which stay the same as the
#            sequence grows and so can be reused at every step.
#         c) The keys and values of the earlier tokens in every layer: each step then runs the
#            model on the new token alone.
#         d) A compressed, lower-precision copy of the weights, made once before generation,
#            which makes each forward pass cheaper.
#
# q2.3  Sampling divides the logits by a temperature T before the softmax. What does T do?
#         a) T < 1 sharpens the distribution towards the likeliest token, T > 1 flattens it
#            towards uniform; T -> 0 is greedy.
#         b) T > 1 makes the model more confident: dividing by T spreads the logits further
#            apart, so the probability gathers on the top token.
#         c) T changes which token is the likeliest: a high T favours the rare tokens over the
#            common ones, and a low T favours the common ones.
#         d) T matters only with top-k or top-p: it rescales the probabilities of the tokens
#            that survive the filter and leaves the others at zero.
#
# q2.4  Asked 'what is 7 plus 5?', the pretrained model often writes another question instead of
#       an answer. Why?
#         a) The model is too small to know arithmetic: a network this size cannot store sums,
#            so it falls back on the likeliest text, another question.
#         b) It learned to continue web text, where a question is often followed by more
#            questions (worksheets, forums); nothing yet taught it to answer.
#         c) The sampling temperature is too high: at temperature 1 the model often picks
#            unlikely tokens, and with greedy decoding it would answer.
#         d) The causal mask hides the question from the positions that write the answer, so the
#            model writes without knowing what was asked.
#
# q2.5  Asked 'tell a funny story about a programmer.', the pretrained model writes 'all
#       programmers are lazy and smelly. that is why nobody likes them.', a line it picked up
#       from the stories of its pretraining corpus. Which alignment failure is this?
#         a) Honesty: it states something false about programmers as a fact, which the model has
#            no evidence for.
#         b) None: the user asked for something funny, and holding back a joke would be over-
#            refusal.
#         c) Harmlessness: a joke built on a stereotype demeans a group of people, however
#            fluent and on topic it is.
#         d) Helpfulness only: the model should have refused, since a joke about a group of
#            people is a harmful request.
#
# q2.6  With a vocabulary of 1,024 tokens, the pretraining loss starts at 6.95 nats per token
#       (the first point of the loss figure). All else the same, at what loss would it start
#       with a vocabulary of 4,096 tokens?
#         a) About 27.8 nats
#         b) About 12 nats
#         c) About 6.95 nats
#         d) About 8.3 nats

ANSWERS = {
    "q2.1": "b",  # one letter: a, b, c or d
    "q2.2": "c",  # one letter: a, b, c or d
    "q2.3": "a",  # one letter: a, b, c or d
    "q2.4": "b",  # one letter: a, b, c or d
    "q2.5": "c",  # one letter: a, b, c or d
    "q2.6": "d",  # one letter: a, b, c or d
}
