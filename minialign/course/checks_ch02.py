"""Graded checks of chapter 2: causal attention, top-k / top-p filtering, token log-probs, and
one pretraining step (on a tiny GPT, with `checks_steps`).

The wrong variants below are the mistakes students make; a student's output that equals one of
them gets that mistake's hint.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from minialign import model as ref
from minialign import pretrain as ref_pretrain
from minialign.course import fixtures
from minialign.course.checks import exercise
from minialign.course.checks_steps import (FIXTURES, Kept, expect_loss_falls, expect_steps,
                                           step_mistakes)
from minialign.course.wire import Build

NEG_INF = float("-inf")

# ==============================================================================================
# causal_self_attention


def _attention_variant(q, k, v, key_padding_mask=None, *, causal=True, aligned_end=True,
                       see_self=True, scale="sqrt", softmax_dim=-1, mask_before_softmax=True,
                       padding="as documented"):
    """Attention with one design choice changed; the defaults give the right answer."""
    Tq, Tk, hs = q.size(-2), k.size(-2), q.size(-1)
    divisor = {"sqrt": math.sqrt(hs), "none": 1.0, "hs": float(hs)}[scale]
    att = (q @ k.transpose(-2, -1)) / divisor  # (B, H, Tq, Tk)
    first = Tk - Tq if aligned_end else 0
    q_pos = torch.arange(first, first + Tq).view(Tq, 1)
    k_pos = torch.arange(Tk).view(1, Tk)
    allowed = (k_pos <= q_pos) if see_self else (k_pos < q_pos)
    if not causal:
        allowed = torch.ones(Tq, Tk, dtype=torch.bool)
    if key_padding_mask is not None and padding != "ignored":
        real = key_padding_mask.view(-1, 1, 1, Tk)
        if padding == "inverted":
            real = ~real
        if padding == "no self exception":
            allowed = allowed & real
        else:
            allowed = allowed & (real | (k_pos == q_pos))
    if mask_before_softmax:
        return F.softmax(att.masked_fill(~allowed, NEG_INF), dim=softmax_dim) @ v
    return (F.softmax(att, dim=softmax_dim) * allowed) @ v


def _attention_mistakes(q, k, v, key_padding_mask=None):
    def variant(**change):
        return lambda: _attention_variant(q, k, v, key_padding_mask, **change)

    mistakes = {
        "the causal mask is missing: query i must not see the keys after its own position":
            variant(causal=False),
        "with a KV cache (Tq < Tk) the queries are the LAST Tq positions: query i sits at "
        "position Tk - Tq + i, not i": variant(aligned_end=False),
        "the scores are not scaled: divide q kᵀ by sqrt(hs)": variant(scale="none"),
        "divide the scores by sqrt(hs), not by hs": variant(scale="hs"),
        "each query must also see its own position: allow k_pos <= q_pos, not <":
            variant(see_self=False),
        "the softmax must run over the keys (the last dimension), so that each query's "
        "weights sum to 1": variant(softmax_dim=-2),
        "mask before the softmax (scores set to -inf), not after it: zeroing weights after "
        "the softmax leaves rows that do not sum to 1": variant(mask_before_softmax=False),
    }
    if key_padding_mask is not None:
        mistakes.update({
            "padding keys are not masked: a False in key_padding_mask means padding, which no "
            "query may attend to": variant(padding="ignored"),
            "key_padding_mask is True for real tokens and False for padding; this masks the real "
            "tokens instead": variant(padding="inverted"),
        })
    return mistakes


def _check_attention_case(t, q, k, v, key_padding_mask=None):
    args = (q, k, v) if key_padding_mask is None else (q, k, v, key_padding_mask)
    out = t.call(*args)
    expected = ref.causal_self_attention(q, k, v, key_padding_mask)
    only = None
    if key_padding_mask is not None:  # a padding query's output is ignored by the caller
        Tq, Tk = q.size(-2), k.size(-2)
        only = key_padding_mask[:, Tk - Tq:].view(-1, 1, Tq, 1)  # (B, 1, Tq, 1) real queries
    t.expect_close(out, expected, mistakes=_attention_mistakes(q, k, v, key_padding_mask),
                   only=only)
    t.expect(bool(torch.isfinite(out).all()),
             "the output holds nan or inf (at a padding position)",
             "a query whose keys are all padding gets only -inf scores and a softmax of nan, "
             "which spreads to every token in the next layer: let each query attend to itself "
             "(see the docstring)")


@exercise("ch02.causal_self_attention")
def check_causal_self_attention(t):
    with t.case("hand-sized: one head, three tokens"):
        x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]).view(1, 1, 3, 2)
        v = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]).view(1, 1, 3, 2)
        _check_attention_case(t, x, x * 2, v)
    with t.case("2 sequences, 2 heads, 5 tokens"):
        _check_attention_case(t, t.randn(2, 2, 5, 4), t.randn(2, 2, 5, 4), t.randn(2, 2, 5, 4))
    with t.case("a KV cache: 2 new queries over 5 keys (Tq < Tk)"):
        _check_attention_case(t, t.randn(2, 2, 2, 4), t.randn(2, 2, 5, 4), t.randn(2, 2, 5, 4))
    with t.case("a KV cache: 1 new query over 4 keys"):
        _check_attention_case(t, t.randn(1, 3, 1, 4), t.randn(1, 3, 4, 4), t.randn(1, 3, 4, 4))
    with t.case("left padding: key_padding_mask, 2 sequences of 5 (the second starts with 2 "
                "pads)"):
        mask = torch.tensor([[True] * 5, [False, False, True, True, True]])
        _check_attention_case(t, t.randn(2, 2, 5, 4), t.randn(2, 2, 5, 4), t.randn(2, 2, 5, 4),
                              mask)
    with t.case("left padding with a KV cache: 1 query over 4 keys, first key is padding"):
        mask = torch.tensor([[False, True, True, True], [True, True, True, True]])
        _check_attention_case(t, t.randn(2, 1, 1, 4), t.randn(2, 1, 4, 4), t.randn(2, 1, 4, 4),
                              mask)
    with t.case("gradients reach q, k and v (the model trains through attention)"):
        t.expect_gradients(ref.causal_self_attention,
                           (t.randn(2, 2, 4, 3), t.randn(2, 2, 4, 3), t.randn(2, 2, 4, 3)),
                           wrt=[0, 1, 2])


# ==============================================================================================
# filter_logits


def _top_p_variant(logits, top_p, *, rule="mass above", back_to_vocab=True, sort=True):
    """Top-p with one choice changed; the defaults give the right answer."""
    if sort:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    else:
        sorted_logits, order = logits, torch.arange(logits.size(-1)).expand_as(logits)
    probs = F.softmax(sorted_logits, dim=-1)
    cumulative = torch.cumsum(probs, dim=-1)
    remove_sorted = {"mass above": cumulative - probs >= top_p,
                     "cumulative >= top_p": cumulative >= top_p,
                     "cumulative > top_p": cumulative > top_p}[rule]
    remove = remove_sorted.scatter(-1, order, remove_sorted) if back_to_vocab else remove_sorted
    return logits.masked_fill(remove, NEG_INF)


def _filter_mistakes(logits, top_k=None, top_p=None):
    def with_top_p(**change):
        def run():
            kept = ref.filter_logits(logits, top_k=top_k)
            return _top_p_variant(kept, top_p, **change)
        return run

    mistakes = {}
    if top_k is not None:
        mistakes.update({
            "top-k keeps one token too few: keep the tokens whose logit is >= the k-th largest "
            "(remove only those strictly below it)":
                lambda: ref.filter_logits(logits, top_k=top_k - 1, top_p=top_p)
                if top_k > 1 else torch.full_like(logits, NEG_INF),
            "top-k keeps one token too many: torch.topk(logits, k).values[:, -1:] is the k-th "
            "largest": lambda: ref.filter_logits(logits, top_k=top_k + 1, top_p=top_p),
            "removed tokens must be set to -inf (probability 0 after the softmax), not to 0":
                lambda: _zero_instead_of_inf(logits, top_k, top_p),
        })
    if top_p is not None:
        mistakes.update({
            "top-p must keep the token that crosses top_p, and always the most likely token: "
            "remove a token only when the probability ranked strictly above it reaches top_p":
                with_top_p(rule="cumulative >= top_p"),
            "top-p drops the token that crosses top_p (and the top token when top_p is tiny): "
            "compare the mass ranked strictly above a token with top_p":
                with_top_p(rule="cumulative > top_p"),
            "the top-p mask was computed in sorted order but applied in vocabulary order: "
            "scatter it back with the sort's indices": with_top_p(back_to_vocab=False),
            "sort the probabilities in decreasing order before the cumulative sum":
                with_top_p(sort=False),
            "removed tokens must be set to -inf (probability 0 after the softmax), not to 0":
                lambda: _zero_instead_of_inf(logits, top_k, top_p),
        })
    return mistakes


def _zero_instead_of_inf(logits, top_k, top_p):
    kept = ref.filter_logits(logits, top_k, top_p)
    return torch.where(torch.isinf(kept), torch.zeros_like(logits), logits)


def _check_filter_case(t, logits, **options):
    result = t.fn.run((logits.clone(),), options, return_args=True)
    t.expect_close(result.value, ref.filter_logits(logits, **options),
                   mistakes=_filter_mistakes(logits, **options))
    t.expect_close(result.args[0], logits, what="`logits` after the call",
                   hint="do not change the input in place (masked_fill_): return a new tensor "
                        "(masked_fill), since the caller may still need the logits")


@exercise("ch02.filter_logits")
def check_filter_logits(t):
    with t.case("no filter: the logits come back unchanged"):
        _check_filter_case(t, t.randn(2, 6))
    with t.case("top_k=2 on [1, 3, 2, 0]: keeps 3 and 2"):
        _check_filter_case(t, torch.tensor([[1.0, 3.0, 2.0, 0.0]]), top_k=2)
    with t.case("top_k=1 keeps only the largest logit of each row"):
        _check_filter_case(t, t.randn(3, 8), top_k=1)
    with t.case("top_k larger than the vocabulary keeps everything"):
        _check_filter_case(t, t.randn(2, 4), top_k=10)
    with t.case("top_p=0.6 with probabilities 0.5, 0.3, 0.15, 0.05 (shuffled): keeps 0.5 and "
                "0.3"):
        probs = torch.tensor([[0.15, 0.5, 0.05, 0.3], [0.3, 0.05, 0.5, 0.15]])
        _check_filter_case(t, probs.log(), top_p=0.6)
    with t.case("a tiny top_p still keeps the most likely token"):
        _check_filter_case(t, t.randn(3, 7), top_p=1e-4)
    with t.case("top_p=0.9 on random rows"):
        _check_filter_case(t, t.randn(4, 12) * 2, top_p=0.9)
    with t.case("top_k=5 and top_p=0.8 together"):
        _check_filter_case(t, t.randn(3, 10) * 2, top_k=5, top_p=0.8)


# ==============================================================================================
# gather_logprobs


def _gather_mistakes(logits, tokens):
    def pick(values):
        return torch.gather(values, -1, tokens.unsqueeze(-1)).squeeze(-1)

    return {
        "these are probabilities, not log-probabilities: use F.log_softmax":
            lambda: pick(F.softmax(logits.float(), dim=-1)),
        "the raw logits were gathered: normalise them first with F.log_softmax over the "
        "vocabulary": lambda: pick(logits.float()),
        "log(softmax(x)) underflows to -inf for large logits: F.log_softmax computes the same "
        "thing stably": lambda: pick(torch.log(F.softmax(logits.float(), dim=-1))),
        "log_softmax must normalise over the vocabulary (the last dimension)":
            lambda: pick(F.log_softmax(logits.float(), dim=1)),
        "the shift is the caller's job (it passes logits[:, :-1] with idx[:, 1:]): here "
        "logits[:, t] scores tokens[:, t]": lambda: ref.gather_logprobs(logits[:, :-1],
                                                                          tokens[:, 1:]),
        "squeeze the last dimension: the result is (B, T), not (B, T, 1)":
            lambda: ref.gather_logprobs(logits, tokens).unsqueeze(-1),
    }


def _check_gather_case(t, logits, tokens):
    out = t.call(logits, tokens)
    t.expect_close(out, ref.gather_logprobs(logits, tokens),
                   mistakes=_gather_mistakes(logits, tokens))


@exercise("ch02.gather_logprobs")
def check_gather_logprobs(t):
    with t.case("hand-sized: 2 positions, 3 tokens; the answers are -log 3 and "
                "3 - log(e + e² + e³)"):
        _check_gather_case(t, torch.tensor([[[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]]]),
                           torch.tensor([[0, 2]]))
    with t.case("2 sequences of 5 tokens, vocabulary of 7"):
        _check_gather_case(t, t.randn(2, 5, 7), t.randint(7, (2, 5)))
    with t.case("large logits (in the hundreds): numerically stable?"):
        logits = t.randn(2, 4, 6) * 300
        tokens = logits.argmin(dim=-1)  # the least likely tokens: far below the top one
        _check_gather_case(t, logits, tokens)
    with t.case("one position per sequence (T = 1)"):
        _check_gather_case(t, t.randn(3, 1, 5), t.randint(5, (3, 1)))
    with t.case("gradients reach the logits (every loss of the course is built on these "
                "log-probs)"):
        t.expect_gradients(ref.gather_logprobs, (t.randn(2, 4, 6), t.randint(6, (2, 4))), wrt=[0])


# ==============================================================================================
# pretrain_step: one optimisation step, checked on a tiny GPT built alike here and in the child


def _next_token_loss(model, x, y):
    return model(x, y)[1]


def _pretrain_setup(**model):
    """A tiny GPT and the library's AdamW over it, built with lr 0.05 (each step passes its own)."""
    return {"model": Build(f"{FIXTURES}:tiny_gpt", seed=0, **model),
            "optimizer": Build(f"{FIXTURES}:adamw", Kept("model"), lr=0.05)}


def _pretrain_calls(batches, lrs, grad_clip=0.5):
    model, optimizer = Kept("model"), Kept("optimizer")
    return [(model, optimizer, *fixtures.token_batch(seed), lr, grad_clip)
            for seed, lr in zip(batches, lrs)]


@exercise("ch02.pretrain_step")
def check_pretrain_step(t):
    mistakes = step_mistakes(_next_token_loss)
    with t.case("one step on 4 windows of 16 tokens; the schedule's lr is 0.01 (the optimizer "
                "was built with 0.05), grad_clip 0.5"):
        expect_steps(t, _pretrain_setup(), _pretrain_calls([1], [0.01]),
                     reference=ref_pretrain.pretrain_step, mistakes=mistakes)
    with t.case("three steps on three batches, lr 0.01, 0.02, 0.005: each step starts with "
                "the last one's gradients still in .grad"):
        expect_steps(t, _pretrain_setup(), _pretrain_calls([1, 2, 3], [0.01, 0.02, 0.005]),
                     reference=ref_pretrain.pretrain_step, mistakes=mistakes)
    with t.case("the model arrives in eval mode, as a validation pass leaves it; it has "
                "dropout 0.2 (torch seeded alike on both sides)"):
        expect_steps(t, _pretrain_setup(dropout=0.2, train=False),
                     _pretrain_calls([4, 5], [0.01, 0.01]), seed=7,
                     reference=ref_pretrain.pretrain_step, mistakes=mistakes)
    with t.case("behaviour: 15 steps on one batch (lr 0.01) lower its loss by 10% or more"):
        expect_loss_falls(t, _pretrain_setup(), _pretrain_calls([6] * 15, [0.01] * 15))
