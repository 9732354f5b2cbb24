"""Graded checks of chapter 6 (DPO): the log-probability of a whole response.

The wrong variants below are the mistakes students make; a student's output that equals one of
them gets that mistake's hint.
"""

from __future__ import annotations

import math

import torch

from minialign import model as ref
from minialign.course.checks import exercise

# ==============================================================================================
# sequence_logprobs


def _sequence_mistakes(logits, tokens, mask):
    logps = ref.gather_logprobs(logits, tokens)  # (B, T)
    m = mask.to(logps.dtype)
    return {
        "a mean instead of a sum: the log-probability of a sequence is the sum over its tokens "
        "(a mean makes a long answer as cheap as a short one)":
            lambda: (logps * m).sum(-1) / m.sum(-1).clamp(min=1),
        "averaged over the padded length T: sum over the masked tokens instead":
            lambda: (logps * m).mean(-1),
        "the mask is ignored: prompt and padding tokens were counted too":
            lambda: logps.sum(-1),
        "the mask is inverted: 1 marks the tokens to score (the response)":
            lambda: (logps * (1 - m)).sum(-1),
        "off-by-one in the log-prob shift: the caller already aligned logits and tokens, so "
        "score tokens[:, t] with logits[:, t]":
            lambda: (ref.gather_logprobs(logits[:, :-1], tokens[:, 1:]) * m[:, 1:]).sum(-1),
        "sum per sequence (over dim -1), not over the whole batch: the result is (B,)":
            lambda: (logps * m).sum(),
        "the masked log-probs still need a sum over time: the result is (B,)":
            lambda: logps * m,
    }


def _check_sequence_case(t, logits, tokens, mask):
    out = t.call(logits, tokens, mask)
    t.expect_close(out, ref.sequence_logprobs(logits, tokens, mask),
                   mistakes=_sequence_mistakes(logits, tokens, mask))


@exercise("ch06.sequence_logprobs")
def check_sequence_logprobs(t):
    with t.case(f"hand-sized: uniform logits over 4 tokens, 2 response tokens: "
                f"2·log(1/4) = {-2 * math.log(4):.4f}"):
        _check_sequence_case(t, torch.zeros(1, 3, 4), torch.tensor([[1, 2, 3]]),
                             torch.tensor([[0, 1, 1]]))
    with t.case("3 sequences with responses of different lengths (float mask)"):
        mask = torch.tensor([[0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1], [0, 0, 0, 1, 0, 0]],
                            dtype=torch.float32)
        _check_sequence_case(t, t.randn(3, 6, 5), t.randint(5, (3, 6)), mask)
    with t.case("a boolean mask"):
        mask = torch.tensor([[False, True, True, False], [True, True, False, False]])
        _check_sequence_case(t, t.randn(2, 4, 6), t.randint(6, (2, 4)), mask)
    with t.case("a sequence with nothing to score gives 0"):
        mask = torch.tensor([[0, 0, 0], [0, 1, 1]])
        _check_sequence_case(t, t.randn(2, 3, 4), t.randint(4, (2, 3)), mask)
