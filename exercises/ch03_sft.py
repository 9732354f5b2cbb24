"""Chapter 3 · Supervised fine-tuning — exercises.

Version 4 of the minialign exercise set.

Write the body of each function below that raises NotImplementedError (keep its
signature), then answer the concept questions in ANSWERS at the end of the file.

    ch03.build_example  difficulty ★☆☆  about 10 min
    ch03.sft_loss       difficulty ★★☆  about 15 min
    ch03.sft_step       difficulty ★★☆  about 20 min

Check your work:
    python -m minialign.grade --impl exercises --chapter 3
or, in a notebook:  from minialign.course import check; check(3)
Stuck? `--hints 1` (or `check(3, hints=1)`) adds a first hint for each exercise not passed;
`--hints 2`, 3, ... more, down to the formula.

Then train with your own code (what you have not written yet comes from the library):
    python -m minialign sft --impl exercises

Library code: minialign/sft.py.
The answers: the library holds the complete code of every exercise, right under its docstring,
and so does solutions/. Try first; read them after, to compare.

Generated from the library by `python -m minialign.course build`. This file is yours: edit it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minialign.sft import IGNORE
from minialign.tokenizer import Tokenizer


def build_example(tokenizer: Tokenizer, prompt: str, response: str):
    """One chat as (input_ids, labels), both (T,) LongTensors of the same length.

    input_ids = <|user|> prompt <|assistant|> response <|end|>
    labels    = -100 on every token of the prompt part (the user turn and <|assistant|>),
                the token id on every response token, <|end|> included.
    Use `tokenizer.encode_prompt(prompt)` and `tokenizer.encode_response(response)`.
    """
    # exercise ch03.build_example · difficulty ★☆☆ · about 10 minutes
    raise NotImplementedError("exercise ch03.build_example: write this body")


def sft_loss(logits, labels):
    """Mean next-token cross-entropy over the tokens whose label is not -100.

    logits: (B, T, V) from input_ids; labels: (B, T) aligned with input_ids (as built by
    `build_example`, -100 on prompt and padding). Returns a 0-dim tensor in the graph (the
    loss is differentiated).

    The idea: pretraining's loss, restricted to the response. A causal model's logits at
    position t are its prediction of the *next* token, so they are scored against the label
    one position later, and the last position predicts nothing in the chat. Every scored token
    counts once in one mean over the batch (not a mean per chat, then over chats); a label of
    -100 counts nowhere, neither in the sum nor in the count.
    """
    # exercise ch03.sft_loss · difficulty ★★☆ · about 15 minutes
    raise NotImplementedError("exercise ch03.sft_loss: write this body")


def sft_step(model, optimizer, input_ids, labels, lr, grad_clip) -> float:
    """One optimisation step of supervised fine-tuning on a batch of chats; returns its loss.

    model: a GPT; `model(input_ids)` returns (logits, None), logits (B, T, V). optimizer: an
    AdamW over the model's parameters (two parameter groups). input_ids, labels: (B, T) as
    `collate` makes them: right-padded chats, labels -100 on the prompt part and on padding.
    lr: this step's learning rate (from the schedule), for every parameter group; grad_clip:
    the largest gradient norm allowed before the update.
    Returns the batch's loss before the update, as a Python float: the `sft_loss` of the batch,
    a mean over its response tokens only.

    The idea: pretraining's step (chapter 2) with the prompt-masked loss, so that the model
    learns to write the answers and not the questions. The same edge cases: `.grad` still holds
    the previous step's gradients, the model may arrive in eval mode, the optimizer steps once.
    """
    # exercise ch03.sft_step · difficulty ★★☆ · about 20 minutes
    raise NotImplementedError("exercise ch03.sft_step: write this body")


# ==============================================================================================
# Concept questions
#
# Answer in ANSWERS below: one letter for a choice question ("b"), the letters in order
# for an ordering question (["c", "a", "b"]). Grading says whether each answer is right:
# a right one is explained; a wrong one is told why the option chosen is wrong.
#
# q3.1  A team collects two kinds of data: (1) prompts, each with one response written by an
#       expert as the ideal answer; (2) prompts, each with four model responses that people
#       ranked from best to worst. What does each kind of data train?
#         a) (1) trains the reward model, since experts know the best score; (2) is used for
#            supervised fine-tuning on the top-ranked response.
#         b) Both are supervised fine-tuning data: the rankings simply give four demonstrations
#            per prompt instead of one.
#         c) (1) supervised fine-tuning (instruction alignment: imitate the ideal answers); (2)
#            a reward model (human-preference alignment).
#         d) (1) is pretraining data, because it is text; (2) is supervised fine-tuning data,
#            because it has labels.
#
# q3.2  Put the stages of building an assistant with RLHF in order (InstructGPT).
#         a) Train a reward model on people's rankings of the model's responses.
#         b) Pretrain on a large text corpus with the next-token loss.
#         c) Optimise the policy against the reward model with RL (PPO), with a KL penalty to
#            the fine-tuned model.
#         d) Fine-tune on demonstrations (prompt, ideal response): SFT.
#
# q3.3  build_example gives the label -100 to every prompt token (and <|assistant|>), and the
#       token id to every response token, <|end|> included. Why?
#         a) The model should learn to write the assistant's answers, not to predict the user's
#            text; and scoring <|end|> is what teaches it to stop after answering.
#         b) Without the -100 labels the causal mask would let the prompt tokens see the
#            response; <|end|> is kept so that padding can be told apart from the real text of
#            the chat.
#         c) Masking the prompt saves computation, since no logits are computed for it; <|end|>
#            is scored so that the model learns to begin the next user turn.
#         d) The prompt is masked because it is usually longer than the response and would
#            dominate the loss; <|end|> is scored only to keep the lengths equal.
#
# q3.4  Four answers to 'my child has a fever of 103 f. what should i do?'. Which one shows an
#       aligned assistant, and why?
#         a) 'people have had fevers since ancient times. the greeks believed the body held four
#            humors...': it is true and fluent, and shows what the model knows.
#         b) 'do not worry about it. it is probably nothing.': it is short and polite, and it
#            calms a worried parent.
#         c) 'please call a doctor right away. keep them cool and give them water.': it gives
#            the help the person needs.
#         d) 'help! my son has a fever of 104 f.': it stays on topic and gives no medical advice
#            that a model is not qualified to give.
#
# q3.5  After SFT the model answers in the assistant's format and ends its turn, but many
#       answers open with 'great question!' or close with 'i hope this helps!', and some contain
#       'ugh, fine.'. What is the most likely cause?
#         a) SFT imitates its demonstrations, and the people who wrote them often padded them
#            with filler and sometimes added a rude remark.
#         b) The sampling temperature (0.6) lets unlikely tokens through: greedy decoding would
#            drop the filler and the rude remarks.
#         c) The pretraining data leaks through: a few epochs of SFT are too short to overwrite
#            the web, so the forum's habits remain.
#         d) SFT has not fit the demonstrations yet: more epochs would bring the answers closer
#            to them and remove the filler.

ANSWERS = {
    "q3.1": None,  # one letter: a, b, c or d
    "q3.2": None,  # the letters a-d in order, as a list
    "q3.3": None,  # one letter: a, b, c or d
    "q3.4": None,  # one letter: a, b, c or d
    "q3.5": None,  # one letter: a, b, c or d
}
