"""Graded checks of chapter 3 (SFT): the masked labels of a chat, the masked next-token loss, and
one SFT step (on a tiny GPT, with `checks_steps`).

The wrong variants below are the mistakes students make; a student's output that equals one of
them gets that mistake's hint.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from minialign import sft as ref
from minialign.course import fixtures
from minialign.course.checks import exercise
from minialign.course.checks_steps import (FIXTURES, Kept, expect_loss_falls, expect_steps,
                                           step_mistakes, variant_step)
from minialign.course.wire import Build
from minialign.tokenizer import Tokenizer

IGNORE = ref.IGNORE

# a small fixed BPE (the first merges learned on a few chat sentences): fast and deterministic
MERGES = [(32, 116), (104, 101), (115, 101), (118, 101), (32, 46), (32, 105), (32, 112),
          (119, 101), (256, 257), (261, 115), (262, 108), (32, 63)]

# ==============================================================================================
# build_example


def _expect_pair(t, out, what="the result", names=("input_ids", "labels")):
    """A tuple of two things, as `return a, b` gives."""
    if type(out) is not tuple or len(out) != 2:
        t.fail(f"{what} should be a tuple ({', '.join(names)}), got "
               f"{'a tuple of ' + str(len(out)) if type(out) is tuple else type(out).__name__}",
               f"return both: `return {', '.join(names)}`")


def _example_mistakes(tokenizer, prompt, response):
    p = tokenizer.encode_prompt(prompt)
    r = tokenizer.encode_response(response)
    ids = p + r

    def labels(values):
        return torch.tensor(values, dtype=torch.long)

    return {
        "the prompt is not masked: every token of the user turn (and <|assistant|>) gets -100, "
        "so that the model is not trained to write the user's questions": labels(ids),
        "the end-of-turn token <|end|> is masked: it must keep its id as the label, or the model "
        "never learns to stop": labels([IGNORE] * len(p) + r[:-1] + [IGNORE]),
        "<|assistant|> belongs to the prompt part (the template writes it, the model does not): "
        "its label is -100": labels([IGNORE] * (len(p) - 1) + [p[-1]] + r),
        "do not shift the labels here: they stay aligned with input_ids (sft_loss does the "
        "shift)": labels(([IGNORE] * len(p) + r)[1:] + [IGNORE]),
    }


def _ids_mistakes(tokenizer, prompt, response):
    p = tokenizer.encode_prompt(prompt)
    return {
        "the response must end with <|end|>: use tokenizer.encode_response(response), which adds "
        "it": torch.tensor(p + tokenizer.encode(response), dtype=torch.long),
        "the prompt part is <|user|> prompt <|assistant|>: use tokenizer.encode_prompt(prompt)":
            torch.tensor(tokenizer.encode(prompt) + tokenizer.encode_response(response),
                         dtype=torch.long),
    }


def _check_example_case(t, tokenizer, prompt, response):
    out = t.call(Build("minialign.tokenizer:Tokenizer", MERGES), prompt, response)
    _expect_pair(t, out)
    ids, labels = ref.build_example(tokenizer, prompt, response)
    t.expect_close(out[0], ids, what="input_ids",
                   mistakes=_ids_mistakes(tokenizer, prompt, response))
    t.expect_close(out[1], labels, what="labels",
                   mistakes=_example_mistakes(tokenizer, prompt, response))


@exercise("ch03.build_example")
def check_build_example(t):
    tokenizer = Tokenizer(MERGES)
    with t.case("'what is 7 plus 5?' answered '12.': -100 on the 10 prompt tokens, then the "
                "ids of '1', '2', '.', <|end|>"):
        _check_example_case(t, tokenizer, "what is 7 plus 5?", "12.")
    with t.case("a longer chat"):
        _check_example_case(t, tokenizer, "please say hello to the user.",
                            "hello there, see you next week!")
    with t.case("an empty response: only <|end|> is scored"):
        _check_example_case(t, tokenizer, "say nothing", "")
    with t.case("a prompt that contains the text '<|end|>' (encoded as plain text)"):
        _check_example_case(t, tokenizer, "what does <|end|> mean?", "the end of a turn.")


# ==============================================================================================
# sft_loss


def _per_position(logits, labels):
    """Cross-entropy of every shifted position (B, T-1) and the mask of the scored ones."""
    pred, target = logits[:, :-1], labels[:, 1:]
    losses = F.cross_entropy(pred.reshape(-1, pred.size(-1)), target.clamp(min=0).reshape(-1),
                             reduction="none").view(target.shape)
    return losses, (target != IGNORE).to(losses.dtype)


def _sft_mistakes(logits, labels):
    V = logits.size(-1)

    def ce(pred, target, **kw):
        return F.cross_entropy(pred.reshape(-1, V), target.reshape(-1), ignore_index=IGNORE, **kw)

    def per_sequence():
        losses, m = _per_position(logits, labels)
        return ((losses * m).sum(1) / m.sum(1).clamp(min=1)).mean()

    return {
        "the labels are not shifted: the logits at position t predict the token at t + 1, so "
        "compare logits[:, :-1] with labels[:, 1:]": lambda: ce(logits, labels),
        "the labels are not shifted: the logits at position t predict the token at t + 1, so "
        "compare logits[:, :-1] with labels[:, 1:] (not labels[:, :-1])":
            lambda: ce(logits[:, :-1], labels[:, :-1]),
        "the shift goes the wrong way: the prediction made at t (logits[:, :-1]) is compared "
        "with the next token (labels[:, 1:]), not the other way round":
            lambda: ce(logits[:, 1:], labels[:, :-1]),
        "-100 positions were counted: a label of -100 must be skipped (ignore_index=-100), not "
        "turned into a class": lambda: ce(logits[:, :-1], labels[:, 1:].clamp(min=0)),
        "the mean must be over the scored positions only: divide by the number of labels that "
        "are not -100, not by B * (T - 1)":
            lambda: (lambda lm: (lm[0] * lm[1]).sum() / lm[1].numel())(
                _per_position(logits, labels)),
        "the mean is per sequence, then over the batch: take one mean over all the scored "
        "tokens of the batch (a long response weighs more)": per_sequence,
        "a sum instead of a mean over the scored positions":
            lambda: ce(logits[:, :-1], labels[:, 1:], reduction="sum"),
    }


def _check_sft_case(t, logits, labels):
    out = t.call(logits, labels)
    t.expect_close(out, ref.sft_loss(logits, labels), mistakes=_sft_mistakes(logits, labels))


def _chat_labels(lengths, T, V, t):
    """(B, T) labels of right-padded chats: prompt -100, a response of the given length, pad."""
    rows = []
    for prompt_len, response_len in lengths:
        row = [IGNORE] * prompt_len + t.randint(V, (response_len,)).tolist()
        rows.append(row + [IGNORE] * (T - len(row)))
    return torch.tensor(rows, dtype=torch.long)


@exercise("ch03.sft_loss")
def check_sft_loss(t):
    with t.case(f"uniform logits over 4 tokens: the loss is ln 4 = {math.log(4):.4f}"):
        labels = torch.tensor([[IGNORE, IGNORE, 1, 3, IGNORE]])
        _check_sft_case(t, torch.zeros(1, 5, 4), labels)
    with t.case("hand-sized: 1 chat of 4 tokens, the last 2 scored"):
        logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0],
                                [1.0, 1.0, 4.0]]])
        labels = torch.tensor([[IGNORE, IGNORE, 2, 0]])
        _check_sft_case(t, logits, labels)
    with t.case("3 right-padded chats with prompts and responses of different lengths"):
        labels = _chat_labels([(2, 4), (3, 1), (1, 6)], 8, 11, t)
        _check_sft_case(t, t.randn(3, 8, 11) * 2, labels)
    with t.case("4 chats, large logits"):
        labels = _chat_labels([(4, 2), (2, 7), (5, 5), (3, 3)], 10, 9, t)
        _check_sft_case(t, t.randn(4, 10, 9) * 30, labels)
    with t.case("the loss is differentiable: its gradient w.r.t. the logits"):
        labels = _chat_labels([(2, 3), (1, 4)], 6, 7, t)
        t.expect_gradients(ref.sft_loss, (t.randn(2, 6, 7), labels), wrt=[0])


# ==============================================================================================
# sft_step: one optimisation step with the masked loss, on a tiny GPT built alike here and in
# the child (see checks_steps)


def _masked_loss(model, input_ids, labels):
    logits, _ = model(input_ids)
    return ref.sft_loss(logits, labels)


def _every_token_loss(model, input_ids, labels):  # prompt and padding trained on too
    logits, _ = model(input_ids)
    V = logits.size(-1)
    return F.cross_entropy(logits[:, :-1].reshape(-1, V), input_ids[:, 1:].reshape(-1))


def _unshifted_loss(model, input_ids, labels):  # model(input_ids, labels): position t vs t
    return model(input_ids, labels)[1]


def _over_padding_loss(model, input_ids, labels):  # the masked sum over every position
    logits, _ = model(input_ids)
    losses, mask = _per_position(logits, labels)
    return (losses * mask).sum() / mask.numel()


def _sft_step_mistakes():
    mistakes = step_mistakes(_masked_loss)
    mistakes.update({
        "the prompt and padding tokens were trained on too: the loss counts the response "
        "tokens only; compute it with sft_loss(logits, labels), whose -100 labels leave the "
        "rest out": variant_step(_every_token_loss),
        "the labels are not shifted: model(input_ids, labels) compares each position with its "
        "own token; take the logits (model(input_ids)) and use sft_loss, which compares "
        "logits[:, :-1] with labels[:, 1:]": variant_step(_unshifted_loss),
        "the loss is averaged over padding and prompt positions too: it is the mean over the "
        "response tokens only (your sft_loss: does it pass its own check?)":
            variant_step(_over_padding_loss),
    })
    return mistakes


def _sft_setup(**model):
    """A tiny GPT and the library's AdamW over it, built with lr 0.05 (each step passes its own)."""
    return {"model": Build(f"{FIXTURES}:tiny_gpt", seed=0, **model),
            "optimizer": Build(f"{FIXTURES}:adamw", Kept("model"), lr=0.05)}


def _sft_calls(batches, lrs, grad_clip=0.5):
    model, optimizer = Kept("model"), Kept("optimizer")
    return [(model, optimizer, *fixtures.chat_batch(seed, lengths), lr, grad_clip)
            for (seed, lengths), lr in zip(batches, lrs)]


CHATS = ((3, 4), (6, 2), (2, 9))  # (prompt, response) lengths: right-padded to 11 tokens


@exercise("ch03.sft_step")
def check_sft_step(t):
    mistakes = _sft_step_mistakes()
    with t.case("one step on 3 right-padded chats (prompts of 3, 6, 2 tokens, responses of "
                "4, 2, 9); the schedule's lr is 0.01 (the optimizer was built with 0.05), "
                "grad_clip 0.5"):
        expect_steps(t, _sft_setup(), _sft_calls([(1, CHATS)], [0.01]),
                     reference=ref.sft_step, mistakes=mistakes)
    with t.case("three steps on three batches, lr 0.01, 0.02, 0.005: each step starts with "
                "the last one's gradients still in .grad"):
        batches = [(2, CHATS), (3, ((5, 5), (1, 3))), (4, ((2, 2), (4, 8), (3, 1), (7, 4)))]
        expect_steps(t, _sft_setup(), _sft_calls(batches, [0.01, 0.02, 0.005]),
                     reference=ref.sft_step, mistakes=mistakes)
    with t.case("the model arrives in eval mode, as a validation pass leaves it; it has "
                "dropout 0.2 (torch seeded alike on both sides)"):
        expect_steps(t, _sft_setup(dropout=0.2, train=False),
                     _sft_calls([(5, CHATS), (6, CHATS)], [0.01, 0.01]), seed=7,
                     reference=ref.sft_step, mistakes=mistakes)
    with t.case("behaviour: 15 steps on one batch (lr 0.01) lower its loss by 10% or more"):
        expect_loss_falls(t, _sft_setup(), _sft_calls([(8, CHATS)] * 15, [0.01] * 15))
