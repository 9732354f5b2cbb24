"""Concept questions: a few auto-graded multiple-choice and ordering questions per chapter.

The student answers in the `ANSWERS` dict at the end of the chapter's exercise file (`python -m
minialign.course build` writes the questions there as comments). The grader reads that dict
without running the student's file (it parses it), so answering works even when the code above
it does not. Points are in `rubric.json`.

This module holds what a student may see: the questions and their options. The answers, the
explanations and the feedback for each wrong option are the answer key, in `answer_key.py`,
which a handout graded for credit leaves out (then `Question.key` is None and an answer is read
but not marked; the instructor grades with `--answer-key`).

Two kinds:
  * "choice": `options` are labelled a, b, c, ...; the answer is one letter, e.g. "b".
  * "order":  `options` are items labelled a, b, c, ... given in a scrambled order; the answer
              is the letters in the right order, e.g. ["c", "a", "b"] (or the string "cab").

Feedback teaches without giving the answer away: a right answer shows the explanation; a wrong
one shows why the option chosen is wrong (for an ordering, what the first misplaced item depends
on), never which option is right, so that the student can think again. The explanation of a
wrong answer is shown only once the instructor releases the explanations.

To add a question: append a `Question` to its chapter's list below, its key to `answer_key.py`,
give it points in rubric.json, and rebuild the exercise files. Write the wrong options from real
misconceptions, and say in the key why each one is wrong.
"""

from __future__ import annotations

import dataclasses
import json
import string
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from .report import FAILED, NOT_ATTEMPTED, NOT_GRADED, PASSED


@dataclass(frozen=True)
class Key:
    """The instructor's side of a question: never shown to a student as a whole."""

    answer: str | tuple[str, ...]  # "b", or ("c", "a", "b") for an ordering
    explanation: str  # why the answer is right: shown after a right answer
    # letter -> why that option is wrong (choice: every wrong option), or what that item depends
    # on (order: every item); shown after a wrong answer, for the option or item concerned
    why_not: dict = dataclasses.field(default_factory=dict)


class QuestionGrade(NamedTuple):
    status: str  # passed / failed / not attempted / not graded
    message: str = ""  # what was wrong with the answer
    hint: str = ""  # why the option chosen is wrong (never which one is right)
    explanation: str = ""  # why the right answer is right (after a right answer, or released)


@dataclass(frozen=True)
class Question:
    id: str  # "q2.1": chapter 2, question 1
    kind: str  # "choice" or "order"
    text: str
    options: tuple[str, ...]  # choices, or the items to put in order (labelled a, b, c, ...)
    key: Key | None = None  # None where the answer key is not at hand

    def __post_init__(self):
        if self.kind not in ("choice", "order"):
            raise ValueError(f"{self.id}: kind must be 'choice' or 'order', got {self.kind!r}")
        if self.key is None:
            return
        labels, answer = self.labels, self.key.answer
        if self.kind == "choice":
            ok = isinstance(answer, str) and answer in labels
            need = set(labels) - {answer}  # a why_not for the right option would give it away
        else:
            ok = isinstance(answer, tuple) and sorted(answer) == list(labels)
            need = set(labels)
        if not ok:
            raise ValueError(f"{self.id}: answer {answer!r} does not fit options {labels}")
        if set(self.key.why_not) != need:
            raise ValueError(f"{self.id}: the key's why_not must cover exactly {sorted(need)}, "
                             f"got {sorted(self.key.why_not)}")

    @property
    def chapter(self) -> int:
        return int(self.id[1:].split(".")[0])

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(string.ascii_lowercase[: len(self.options)])

    @property
    def answer(self):
        """The right answer ("b" or ("c", "a", "b")); None without the key."""
        return self.key.answer if self.key else None

    @property
    def explanation(self) -> str:
        return self.key.explanation if self.key else ""

    @property
    def answer_literal(self):
        """The answer as it is written in ANSWERS: "b" or ["c", "a", "b"]."""
        return self.answer if self.kind == "choice" else list(self.answer)

    def with_key(self, key: Key | None) -> Question:
        return dataclasses.replace(self, key=key)

    def grade(self, given, release: bool = False) -> QuestionGrade:
        """Grade the value found in ANSWERS. release: show the explanation after a wrong answer
        too (an instructor's choice, once the answers may be known)."""
        if given is None:
            return QuestionGrade(NOT_ATTEMPTED, f'answer it in ANSWERS["{self.id}"]')
        normalised = normalise_answer(given, self.kind)
        if normalised is None:
            if self.kind == "choice":
                form = f'one letter among {", ".join(self.labels)}, e.g. "{self.labels[0]}"'
            else:
                form = (f"the {len(self.options)} letters in order, e.g. "
                        f"{list(reversed(self.labels))}")
            return QuestionGrade(FAILED, f"could not read the answer {given!r}: write {form}")
        if self.kind == "order" and sorted(normalised) != list(self.labels):
            return QuestionGrade(FAILED, f"use each of the letters {', '.join(self.labels)} "
                                         f"exactly once; got {list(normalised)}")
        if self.kind == "choice" and normalised not in self.labels:
            return QuestionGrade(FAILED, f"there is no option {normalised!r}: answer one of "
                                         f"{', '.join(self.labels)}")
        shown = _shown(normalised, self.kind)
        if self.key is None:
            return QuestionGrade(NOT_GRADED, f"you answered {shown}; not graded here: the answer "
                                             f"key is not installed (your instructor grades the "
                                             f"concept questions)")
        if normalised == self.key.answer:
            return QuestionGrade(PASSED, explanation=self.key.explanation)
        if self.kind == "choice":
            message, why = f"you answered {shown}: not the right answer", \
                self.key.why_not[normalised]
        else:
            misplaced = next(x for x, y in zip(normalised, self.key.answer) if x != y)
            message = f"you answered {shown}: not the right order"
            why = f"{misplaced}) {self.key.why_not[misplaced]}"
        return QuestionGrade(FAILED, message, why, self.key.explanation if release else "")


def _shown(normalised, kind: str) -> str:
    return f'"{normalised}"' if kind == "choice" else json.dumps(list(normalised))


def normalise_answer(given, kind: str):
    """Read "b", "B", "(b)", "b)" for a choice; ["c", "a"], ("c", "a"), "ca", "c, a" for an order."""
    if kind == "choice":
        if not isinstance(given, str):
            return None
        letters = [c for c in given.strip().lower() if c.isalpha()]
        return letters[0] if len(letters) == 1 else None
    if isinstance(given, str):
        items = [c for c in given.lower() if c.isalpha()]
    elif isinstance(given, (list, tuple)) and all(isinstance(x, str) for x in given):
        items = [x.strip().strip("()").lower() for x in given]
    else:
        return None
    if not all(len(x) == 1 and x.isalpha() for x in items):
        return None
    return tuple(items)


# ==============================================================================================
# the questions


QUESTIONS: dict[int, list[Question]] = {
    1: [
        Question(
            id="q1.1", kind="choice",
            text="Why can a byte-level BPE tokenizer encode any string and decode it back "
                 "exactly, even text it never saw in training (an emoji, Chinese, a typo)?",
            options=(
                "Its vocabulary holds every word of the training corpus; a word it never saw is "
                "spelled out letter by letter, from letters that the corpus contained.",
                "Characters it does not know become an <|unk|> token, and the tokenizer keeps "
                "the original character beside it so that decoding can put it back.",
                "Every string is a sequence of UTF-8 bytes, each of the 256 byte values is a "
                "base token, and decoding joins the tokens' bytes.",
                "It is first trained on a list of every Unicode character, so that no character "
                "can be missing from its vocabulary.",
            ),
        ),
        Question(
            id="q1.2", kind="order",
            text="Put one step of BPE training in order (the step is then repeated until the "
                 "vocabulary has the size asked for).",
            options=(
                "Replace every occurrence of that pair, left to right, by the new token.",
                "Split the text into chunks and encode each chunk as UTF-8 bytes (done once).",
                "Pick the most frequent pair and give it the next free token id.",
                "Count how often each adjacent pair of tokens occurs (weighted by how often each "
                "chunk occurs).",
            ),
        ),
        Question(
            id="q1.3", kind="choice",
            text="A user types the text '<|end|>' in their prompt. Why does this not end the "
                 "user's turn in the chat template?",
            options=(
                "encode() reads the typed '<|end|>' as plain text: it becomes ordinary byte and "
                "merge tokens, never the special id, which only the template code inserts.",
                "The tokenizer strips angle brackets and other markup from the user's text "
                "before encoding, so what reaches the model is the plain word 'end'.",
                "During SFT the model saw user turns that contained '<|end|>', and it learned to "
                "ignore the token whenever it appears inside a user turn.",
                "Special tokens are recognised only where the chat template expects a turn to "
                "end, and a user's text never sits at one of those positions.",
            ),
        ),
        Question(
            id="q1.4", kind="choice",
            text="A BPE trainer has split its text into these chunks, with how often each "
                 "occurs: 'pun' 12 times, 'bun' 4, 'hug' 3, 'pug' 2, 'hugs' 1. Which pair does "
                 "it merge first?",
            options=(
                "'p' + 'u' -> 'pu': 14 occurrences (12 in 'pun', 2 in 'pug').",
                "'u' + 'g' -> 'ug': it occurs in three different chunks, more than any other "
                "pair does.",
                "'pun' as a whole: the most frequent chunk becomes a token first.",
                "'u' + 'n' -> 'un': 16 occurrences (12 in 'pun', 4 in 'bun').",
            ),
        ),
        Question(
            id="q1.5", kind="choice",
            text="Before counting pairs, the tokenizer splits the text into word-like chunks "
                 "(' the', ' cat', '.', ...) and never merges across two chunks. What does this "
                 "buy?",
            options=(
                "Exact decoding: without the chunks, merges that cross a word boundary could make "
                "decode() return text that differs from what went into encode().",
                "Faster generation: the model predicts one chunk per step instead of one token, "
                "so answers come out in fewer steps.",
                "Tokens stay within word-like pieces: merges build reusable units like ' cat', "
                "never spans like 't. t' across a word's end.",
                "Safety: a typed '<|end|>' falls into separate chunks ('<|', 'end', '|>'), so it "
                "can never become the special token.",
            ),
        ),
    ],
    2: [
        Question(
            id="q2.1", kind="choice",
            text="Why does a GPT use a causal mask when it trains on whole sequences?",
            options=(
                "To save memory and time: the scores above the diagonal are never computed, "
                "which halves the cost of attention on long sequences.",
                "So that position t cannot see token t + 1, the one it must predict: every "
                "position trains at once, seeing only what generation will see.",
                "To stop the real tokens from attending to the padding at the end of the shorter "
                "sequences of a batch, which would add noise to what they learn.",
                "Because attention is not defined for keys that come after the query: their "
                "positions have no embedding yet when the query is computed.",
            ),
        ),
        Question(
            id="q2.2", kind="choice",
            text="What does the KV cache save during generation?",
            options=(
                "The logits of the earlier steps, so that a token can be resampled at another "
                "temperature without running the model again.",
                "The attention probabilities of the earlier steps, which stay the same as the "
                "sequence grows and so can be reused at every step.",
                "The keys and values of the earlier tokens in every layer: each step then runs "
                "the model on the new token alone.",
                "A compressed, lower-precision copy of the weights, made once before generation, "
                "which makes each forward pass cheaper.",
            ),
        ),
        Question(
            id="q2.3", kind="choice",
            text="Sampling divides the logits by a temperature T before the softmax. What does "
                 "T do?",
            options=(
                "T < 1 sharpens the distribution towards the likeliest token, T > 1 flattens it "
                "towards uniform; T -> 0 is greedy.",
                "T > 1 makes the model more confident: dividing by T spreads the logits further "
                "apart, so the probability gathers on the top token.",
                "T changes which token is the likeliest: a high T favours the rare tokens over "
                "the common ones, and a low T favours the common ones.",
                "T matters only with top-k or top-p: it rescales the probabilities of the tokens "
                "that survive the filter and leaves the others at zero.",
            ),
        ),
        Question(
            id="q2.4", kind="choice",
            text="Asked 'what is 7 plus 5?', the pretrained model often writes another question "
                 "instead of an answer. Why?",
            options=(
                "The model is too small to know arithmetic: a network this size cannot store "
                "sums, so it falls back on the likeliest text, another question.",
                "It learned to continue web text, where a question is often followed by more "
                "questions (worksheets, forums); nothing yet taught it to answer.",
                "The sampling temperature is too high: at temperature 1 the model often picks "
                "unlikely tokens, and with greedy decoding it would answer.",
                "The causal mask hides the question from the positions that write the answer, so "
                "the model writes without knowing what was asked.",
            ),
        ),
        Question(
            id="q2.5", kind="choice",
            text="Asked 'tell a funny story about a programmer.', the pretrained model writes "
                 "'all programmers are lazy and smelly. that is why nobody likes them.', a line "
                 "it picked up from the stories of its pretraining corpus. Which alignment "
                 "failure is this?",
            options=(
                "Honesty: it states something false about programmers as a fact, which the model "
                "has no evidence for.",
                "None: the user asked for something funny, and holding back a joke would be "
                "over-refusal.",
                "Harmlessness: a joke built on a stereotype demeans a group of people, however "
                "fluent and on topic it is.",
                "Helpfulness only: the model should have refused, since a joke about a group of "
                "people is a harmful request.",
            ),
        ),
        Question(
            id="q2.6", kind="choice",
            text="With a vocabulary of 1,024 tokens, the pretraining loss starts at 6.95 nats per "
                 "token (the first point of the loss figure). All else the same, at what loss "
                 "would it start with a vocabulary of 4,096 tokens?",
            options=(
                "About 27.8 nats",
                "About 12 nats",
                "About 6.95 nats",
                "About 8.3 nats",
            ),
        ),
    ],
    3: [
        Question(
            id="q3.1", kind="choice",
            text="A team collects two kinds of data: (1) prompts, each with one response "
                 "written by an expert as the ideal answer; (2) prompts, each with four model "
                 "responses that people ranked from best to worst. What does each kind of data "
                 "train?",
            options=(
                "(1) trains the reward model, since experts know the best score; (2) is used "
                "for supervised fine-tuning on the top-ranked response.",
                "Both are supervised fine-tuning data: the rankings simply give four "
                "demonstrations per prompt instead of one.",
                "(1) supervised fine-tuning (instruction alignment: imitate the ideal answers); "
                "(2) a reward model (human-preference alignment).",
                "(1) is pretraining data, because it is text; (2) is supervised fine-tuning "
                "data, because it has labels.",
            ),
        ),
        Question(
            id="q3.2", kind="order",
            text="Put the stages of building an assistant with RLHF in order (InstructGPT).",
            options=(
                "Train a reward model on people's rankings of the model's responses.",
                "Pretrain on a large text corpus with the next-token loss.",
                "Optimise the policy against the reward model with RL (PPO), with a KL penalty "
                "to the fine-tuned model.",
                "Fine-tune on demonstrations (prompt, ideal response): SFT.",
            ),
        ),
        Question(
            id="q3.3", kind="choice",
            text="build_example gives the label -100 to every prompt token (and <|assistant|>), "
                 "and the token id to every response token, <|end|> included. Why?",
            options=(
                "The model should learn to write the assistant's answers, not to predict the "
                "user's text; and scoring <|end|> is what teaches it to stop after answering.",
                "Without the -100 labels the causal mask would let the prompt tokens see the "
                "response; <|end|> is kept so that padding can be told apart from the real text "
                "of the chat.",
                "Masking the prompt saves computation, since no logits are computed for it; "
                "<|end|> is scored so that the model learns to begin the next user turn.",
                "The prompt is masked because it is usually longer than the response and would "
                "dominate the loss; <|end|> is scored only to keep the lengths equal.",
            ),
        ),
        Question(
            id="q3.4", kind="choice",
            text="Four answers to 'my child has a fever of 103 f. what should i do?'. Which one "
                 "shows an aligned assistant, and why?",
            options=(
                "'people have had fevers since ancient times. the greeks believed the body held "
                "four humors...': it is true and fluent, and shows what the model knows.",
                "'do not worry about it. it is probably nothing.': it is short and polite, and "
                "it calms a worried parent.",
                "'please call a doctor right away. keep them cool and give them water.': it "
                "gives the help the person needs.",
                "'help! my son has a fever of 104 f.': it stays on topic and gives no medical "
                "advice that a model is not qualified to give.",
            ),
        ),
        Question(
            id="q3.5", kind="choice",
            text="After SFT the model answers in the assistant's format and ends its turn, but "
                 "many answers open with 'great question!' or close with 'i hope this helps!', "
                 "and some contain 'ugh, fine.'. What is the most likely cause?",
            options=(
                "SFT imitates its demonstrations, and the people who wrote them often padded "
                "them with filler and sometimes added a rude remark.",
                "The sampling temperature (0.6) lets unlikely tokens through: greedy decoding "
                "would drop the filler and the rude remarks.",
                "The pretraining data leaks through: a few epochs of SFT are too short to "
                "overwrite the web, so the forum's habits remain.",
                "SFT has not fit the demonstrations yet: more epochs would bring the answers "
                "closer to them and remove the filler.",
            ),
        ),
    ],
    4: [
        Question(
            id="q4.1", kind="choice",
            text="What is a preference dataset (prompts with responses compared by people) "
                 "used for in RLHF?",
            options=(
                "As extra demonstrations: the preferred response of each pair is imitated with "
                "the next-token loss, and the other response is simply dropped.",
                "As the final benchmark: the aligned policy's win rate on these pairs is the "
                "score reported at the end of training, so they are never trained on.",
                "To pick the sampling temperature that makes the policy's answers match the "
                "annotators' taste.",
                "To train a reward model that stands in for the annotators when RL scores new "
                "responses.",
            ),
        ),
        Question(
            id="q4.2", kind="choice",
            text="The simulated labelers are noisy, disagree with each other, and add a small "
                 "bonus for length (0.01 per word) to the gold reward, which itself charges 0.05 "
                 "per word beyond an answer's ideal length and 0.25 for filler. What does a "
                 "reward model trained on their comparisons learn about length?",
            options=(
                "What the labels say, bias included: they favour shorter answers (the bonus is "
                "smaller than gold's cost of length), only less firmly than gold.",
                "That longer is better: the length bonus is the one signal that every labeler "
                "shares, so it outweighs the rest, and a policy optimised against the reward "
                "model pads its answers.",
                "Nothing of the labelers' own: noise, disagreement and the small bias all average "
                "out over thousands of comparisons, and gold's trade-off remains.",
                "Nothing reliable: when labelers disagree about a pair, the Bradley-Terry loss "
                "has no minimum, and training diverges unless such pairs are removed.",
            ),
        ),
        Question(
            id="q4.3", kind="choice",
            text="Even a reward model that knows the annotators' exact preference "
                 "probabilities gets only about 70% accuracy on the default run's held-out "
                 "labelled pairs. Why?",
            options=(
                "It overfits the training pairs: held-out accuracy is always lower than "
                "training accuracy, and more data would bring it to 100%.",
                "Accuracy uses a strict '>', so the pairs where the two responses get the same "
                "score count as errors.",
                "The labels are noisy: an annotator who prefers a with probability 0.7 still "
                "picks b 30% of the time, and no model can predict that.",
                "The score is read at the last token only, which hides the start of the "
                "response from the reward model and makes it guess on long answers.",
            ),
        ),
        Question(
            id="q4.4", kind="choice",
            text="Which limit of human feedback do more labels from the same people not fix?",
            options=(
                "Their noise: a labeler who prefers a with probability 0.7 still picks b three "
                "times in ten.",
                "What they all get wrong the same way: a shared bias, or an error none of them "
                "checks.",
                "Their disagreement: where two labelers disagree about a pair, a reward model has "
                "no single answer to learn.",
                "Their speed: each label takes a person's time, so RL must wait for people to "
                "score every answer it samples.",
            ),
        ),
        Question(
            id="q4.5", kind="choice",
            text="In the reward model's training figure, the held-out accuracy at step 0 is 0% "
                 "and the held-out loss 0.693. What explains both numbers?",
            options=(
                "The head starts at zero: every pair is a tie, -log sigmoid(0) = ln 2, and a tie "
                "counts as a miss.",
                "The scores start random, so the model is confidently wrong about every pair: "
                "0.693 is what a confident wrong prediction costs.",
                "Step 0 is measured before any pair was seen: the model guesses, and its guesses "
                "happen to point the wrong way on the held-out pairs.",
                "The held-out labels are stored rejected-first, so at step 0 the model is right "
                "about every pair, but in reverse.",
            ),
        ),
        Question(
            id="q4.6", kind="choice",
            text="The reward model gives a whole response one score, read at its last token. "
                 "What kind of reward model is it, and what does that leave to RL?",
            options=(
                "A process reward model: through causal attention every token has a score of its "
                "own, and RL uses it as that token's reward.",
                "An outcome reward model: one number for the finished answer; RL must work out "
                "which tokens earned it.",
                "A verifier: it checks whether the outcome is right, so RL against it needs no "
                "KL penalty to keep it honest.",
                "A sequence classifier: it gives RL no signal for single tokens, so it can only "
                "be used to rerank whole answers (best-of-N).",
            ),
        ),
    ],
    5: [
        Question(
            id="q5.1", kind="choice",
            text="Why does RLHF subtract a KL penalty, beta * (log pi - log pi_ref), from the "
                 "reward?",
            options=(
                "To keep PPO's probability ratio inside the clip range [1 - eps, 1 + eps], "
                "which the clipped loss alone cannot guarantee.",
                "The reward model is only trustworthy near the responses it was trained on; far "
                "from them the policy finds outputs it over-scores.",
                "To reward the policy for moving away from the reference: a larger divergence "
                "means more exploration, and more exploration finds better responses.",
                "It replaces the value function: with a per-token KL penalty the advantages "
                "can be computed without a critic.",
            ),
        ),
        Question(
            id="q5.2", kind="choice",
            text="During a long PPO run the reward model's score of the samples keeps rising, "
                 "while the gold reward (the true quality, measured separately) rises and then "
                 "falls. What is happening?",
            options=(
                "The value function has diverged, so the advantages are wrong: lowering the "
                "critic's learning rate fixes it.",
                "The gold reward is noisy; with more iterations it will rise again.",
                "The KL penalty is too strong: it pulls the policy back towards the reference, "
                "which undoes the gold reward gained earlier.",
                "Over-optimisation: the policy now gains proxy reward by exploiting the reward "
                "model's errors.",
            ),
        ),
        Question(
            id="q5.3", kind="choice",
            text="On the first minibatch of the first PPO epoch after a rollout, what should "
                 "the ratio pi(a_t) / pi_old(a_t) be?",
            options=(
                "1 + eps, the top of the clip range, since the advantages are positive on "
                "average.",
                "Exactly 1 for every token: the policy has not changed since the rollout.",
                "exp(KL) per token, since the policy has already moved away from the reference "
                "during earlier iterations.",
                "It depends on the advantages: tokens with a positive advantage have a ratio "
                "above 1.",
            ),
        ),
        Question(
            id="q5.4", kind="choice",
            text="After PPO with a weak KL penalty, the policy answers 'what color is "
                 "chocolate?' with 'that is un lit in french.'. The reward model scores this "
                 "answer +1.85 (well above the average SFT answer); the gold reward gives it 0. "
                 "What went wrong, and what helps?",
            options=(
                "The value function diverged and its advantages point the wrong way: a lower "
                "learning rate for the critic fixes it.",
                "PPO has not converged yet: more iterations at the same KL coefficient will "
                "bring the policy to the right answer.",
                "The gold reward is too strict: the answer is fluent and well formed, and a "
                "score of +1.85 is evidence that it is good.",
                "Reward hacking: PPO found an answer the reward model over-rates without reading "
                "the prompt; a tighter KL leash or labels on such answers help.",
            ),
        ),
        Question(
            id="q5.5", kind="choice",
            text="In a PPO run the mean response length falls from 26 tokens at the first "
                 "iteration to 18 at the last, although the labelers behind the reward model "
                 "value every extra word at +0.01. What is the best explanation?",
            options=(
                "The KL penalty is charged on every token, so every token costs reward, and the "
                "shortest answers pay the least.",
                "The extra words of SFT answers are mostly filler and rude remarks, which the "
                "labels (so the reward model) rate down by far more.",
                "The missing-end penalty makes long answers risky: the policy shortens them to "
                "end before the token budget runs out.",
                "Whitening the advantages removes any reward for length: once the mean is "
                "subtracted, extra words gain nothing.",
            ),
        ),
        Question(
            id="q5.6", kind="choice",
            text="During a PPO run the logged KL to the reference (objective/kl) turns negative "
                 "and keeps falling, while the reward model's score rises. What is the likely "
                 "cause?",
            options=(
                "Rollouts use top-k or top-p: the tokens do not come from the distribution whose "
                "log-probs are compared.",
                "Nothing is wrong: a negative KL means that the policy has come closer to the "
                "reference than it was at the start of training.",
                "The KL coefficient is too large: it pushes the policy past the reference, to "
                "the other side of it.",
                "Sampling noise: the estimate log pi - log pi_ref is unbiased, so a negative "
                "average is chance, and more rollouts per batch would remove it.",
            ),
        ),
    ],
    6: [
        Question(
            id="q6.1", kind="choice",
            text="Starting from the SFT model and the same preference pairs, how does DPO's "
                 "pipeline differ from RLHF with PPO?",
            options=(
                "DPO trains a reward model too, like PPO, but replaces PPO's value model by the "
                "frozen reference, which saves one model.",
                "DPO samples responses from the policy during training, like PPO, but scores "
                "them with a classification loss.",
                "DPO keeps more models in memory than PPO, since the reference must be updated "
                "as the policy moves and an old copy kept for the ratio.",
                "DPO trains no reward model and samples nothing during training; it holds two "
                "models, not four.",
            ),
        ),
        Question(
            id="q6.2", kind="choice",
            text="During DPO training the logged rewards/chosen (the implicit reward of the "
                 "chosen responses) goes down. Is something broken?",
            options=(
                "Yes: DPO's gradient always raises the chosen log-probs, so a falling chosen "
                "reward means the learning rate is too high.",
                "Not necessarily: the loss depends only on the margin, which can widen while "
                "both log-ratios fall.",
                "Yes: a falling chosen reward means that the reference log-probs were not "
                "detached and the reference is being trained too.",
                "No, and it always happens: the chosen reward falls whenever beta is positive.",
            ),
        ),
        Question(
            id="q6.3", kind="choice",
            text="What does beta control in DPO?",
            options=(
                "How strongly the policy is held near the reference (smaller: it moves "
                "further).",
                "The learning rate of the policy, scaled by the number of pairs, so that the "
                "step size does not depend on the batch size.",
                "The weight of the rejected response relative to the chosen one in the loss "
                "(beta = 1 weighs both alike).",
                "The temperature used to sample responses during training.",
            ),
        ),
        Question(
            id="q6.4", kind="choice",
            text="One preference pair, beta = 0.1. The policy's sequence log-probs: chosen "
                 "-12.0, rejected -15.0; the reference's: chosen -13.0, rejected -14.0. What is "
                 "the DPO loss of this pair?",
            options=("0.127", "0.554", "0.598", "0.798"),
        ),
        Question(
            id="q6.5", kind="choice",
            text="DPO trains on pairs sampled once from the SFT model; PPO samples fresh answers "
                 "from its own policy as it trains. What follows for DPO?",
            options=(
                "It needs new pairs, sampled from the current policy, at every epoch: on old "
                "pairs its loss gives biased gradients and the policy drifts.",
                "It learns only what the pairs say: no reward model to exploit, and no way to "
                "improve where the pairs are silent.",
                "It can only raise the probability of the chosen responses: nothing in a fixed "
                "dataset lets it lower the probability of the rejected ones.",
                "A reward model must score both responses of every pair before training starts, "
                "since a fixed dataset has no rewards of its own.",
            ),
        ),
    ],
    7: [
        Question(
            id="q7.1", kind="choice",
            text="Which statement about best-of-N sampling (sample N responses, return the one "
                 "the reward model scores highest) is right?",
            options=(
                "It cannot over-optimise the reward model: the policy's weights never change, "
                "so the gold reward can only rise as N grows, never fall.",
                "Its KL from the base policy grows linearly with N, which is why it is only "
                "used with N of 2 or 3.",
                "It needs no training, costs N samples per query, and its KL from the base "
                "policy is at most log N - (N - 1)/N.",
                "It fine-tunes the policy on the best of the N responses, one step per query.",
            ),
        ),
        Question(
            id="q7.2", kind="choice",
            text="RLAIF replaces the human annotators by an AI judge. Which statement is right?",
            options=(
                "An AI judge has no biases, so the reward model trained on its labels is the "
                "gold reward.",
                "AI labels are cheaper and more consistent, but the judge has blind spots and "
                "biases of its own.",
                "AI feedback cannot train a reward model, because an AI judge gives scores, "
                "not comparisons: it can only be used with DPO.",
                "AI labels are always noisier than human ones, so a reward model trained on "
                "them needs many more pairs to reach the same accuracy.",
            ),
        ),
        Question(
            id="q7.3", kind="choice",
            text="Classify the methods by their stage and by when they act: at training time "
                 "(new weights) or at inference time (the same weights, more work per query).",
            options=(
                "Training time: SFT and DPO, which fit fixed data; inference time: RLHF and "
                "best-of-N, which consult a reward model.",
                "Training time: SFT (instruction alignment), then RLHF or DPO (preference "
                "alignment); inference time: best-of-N, prompting.",
                "Training time: SFT, RLHF, DPO and best-of-N, which needs a trained reward "
                "model; inference time: prompting alone.",
                "Training time: RLHF and DPO; SFT is part of pretraining; inference time: "
                "best-of-N and prompting.",
            ),
        ),
        Question(
            id="q7.4", kind="choice",
            text="A team has an SFT chatbot and 5,000 preference pairs between its answers. Each "
                 "answer must stay at one sample when served, and they cannot afford to tune an "
                 "RL loop. Which plan fits?",
            options=(
                "Best-of-N with N = 16 and a reward model trained on the pairs: the chatbot needs "
                "no training at all, and best-of-N is a strong baseline.",
                "PPO against a reward model trained on the pairs, with a weak KL penalty so that "
                "the policy can move far from the SFT model.",
                "SFT on the chosen responses only: it is the cheapest loop of all, and the chosen "
                "responses are the better half of the data.",
                "DPO on the pairs, with beta picked on held-out prompts: no reward model, no "
                "sampling in training, one sample per answer.",
            ),
        ),
        Question(
            id="q7.5", kind="choice",
            text="On the same held-out prompts (SFT's gold reward: 0.33; evaluating one policy "
                 "again moves its gold by about 0.02): best-of-16 reaches gold 0.70 at a KL of "
                 "1.9 nats; PPO with beta = 0.05, 0.80 at 2.2 nats; PPO with beta = 0.02, 0.64 "
                 "at 3.1 nats, after a peak of 0.76 at 2.5 nats while its proxy reward kept "
                 "rising. Which reading is right?",
            options=(
                "PPO with beta = 0.02 did best: it moved furthest from SFT, and distance from "
                "SFT measures how aligned a policy is.",
                "beta = 0.05 beats best-of-16 by 0.10, five times the spread; beta = 0.02 "
                "over-optimised: gold fell 0.12 as the proxy rose.",
                "Best-of-16 is the one to deploy: it reaches 0.70 without any training, and the "
                "PPO policies are within the noise of it.",
                "None can be compared: they sit at different KLs, and policies are comparable "
                "only at an equal KL from SFT.",
            ),
        ),
    ],
    8: [
        Question(
            id="q8.1", kind="choice",
            text="PPO trains a value model next to the policy; GRPO trains none. What takes its "
                 "place?",
            options=(
                "The KL penalty to the reference: it is subtracted from every token's reward, "
                "which centres the rewards the way a baseline would.",
                "The other responses sampled for the same prompt: their mean reward is the "
                "baseline each response is compared with.",
                "Nothing: the clipped ratio keeps each update small, and with small steps the "
                "raw reward is a low-variance enough signal.",
                "The reward model, which scores every token of a response, so the advantage of "
                "a token can be read off directly.",
            ),
        ),
        Question(
            id="q8.2", kind="choice",
            text="GRPO against the verifier (1 for a right outcome, 0 otherwise) raises task "
                 "success on arithmetic and translation, yet the jokes do not get funnier and "
                 "the rude remarks in answers do not go away. Why?",
            options=(
                "A 0/1 reward has no gradient, so the policy learns only from the KL term.",
                "Jokes are longer than arithmetic answers, so the overlong penalty on the "
                "reward cancels whatever the verifier gives them, and rude remarks are too short "
                "to be penalised.",
                "The learning rate is too small for the humour family, which needs more "
                "iterations than the others.",
                "The verifier sees only a checkable outcome: style, politeness and humour "
                "change no score, so no advantage rewards them.",
            ),
        ),
        Question(
            id="q8.3", kind="choice",
            text="What separates an outcome reward from a process reward?",
            options=(
                "An outcome reward scores only the finished answer; a process reward scores "
                "each step of the reasoning, so it can catch a wrong step.",
                "An outcome reward comes from people and a process reward from a program, which "
                "is why process rewards cannot be hacked.",
                "A process reward is the per-token KL penalty, summed over the steps of the "
                "response; the outcome reward is the score at its end.",
                "They differ only in cost: trained on the same problems, both make the same "
                "best-of-N selections, so the cheaper outcome reward model is always the one to "
                "prefer in practice.",
            ),
        ),
        Question(
            id="q8.4", kind="choice",
            text="With the verifier's reward, all G = 8 answers to one prompt are right (reward "
                 "1 each). What does this group teach the policy in a GRPO update, the KL term "
                 "aside?",
            options=(
                "Much: every answer earned the maximum reward, so all eight are reinforced "
                "strongly.",
                "It teaches the policy to make all eight answers more likely by the same amount, "
                "which sharpens it on this prompt.",
                "Nothing: every advantage is 0, so its gradient is 0; dynamic sampling drops "
                "such groups.",
                "It blows up the update: the std is 0, so each advantage is (1 - 1) / eps, and "
                "the group must be clipped.",
            ),
        ),
        Question(
            id="q8.5", kind="choice",
            text="A group of G = 4 answers gets the rewards [1, 0, 0, 1]. What are its GRPO "
                 "advantages (r - mean) / std, with std torch.std's (Bessel-corrected, n - 1) "
                 "and eps left out?",
            options=(
                "[1, -1, -1, 1]",
                "[0.866, -0.866, -0.866, 0.866]",
                "[0.5, -0.5, -0.5, 0.5]",
                "[0.667, -0.667, -0.667, 0.667]",
            ),
        ),
    ],
}


# ==============================================================================================
# the answer key


def library_key() -> dict[str, Key] | None:
    """The key that ships with the library (answer_key.py), or None where it was left out."""
    try:
        from .answer_key import KEY
    except ImportError:
        return None
    return KEY


def questions_for(chapter: int, key: dict[str, Key] | None = None) -> list[Question]:
    """The questions of a chapter with their key: `key` (from `load_answer_key`) when given,
    else the library's when it is installed; a question missing from the key has none."""
    key = library_key() if key is None else key
    return [q.with_key((key or {}).get(q.id)) for q in QUESTIONS.get(chapter, [])]


def all_questions(key: dict[str, Key] | None = None) -> list[Question]:
    return [q for ch in sorted(QUESTIONS) for q in questions_for(ch, key)]


def answer_key_json(key: dict[str, Key]) -> str:
    """The key as the JSON file that `--answer-key` reads."""
    questions = {qid: {"answer": k.answer if isinstance(k.answer, str) else list(k.answer),
                       "explanation": k.explanation, "why_not": dict(k.why_not)}
                 for qid, k in key.items()}
    return json.dumps({"about": "minialign answer key: keep it out of the students' hands",
                       "questions": questions}, indent=2, ensure_ascii=False) + "\n"


def load_answer_key(path) -> dict[str, Key]:
    """Read a key written by `python -m minialign.course answer-key PATH`; ValueError (saying
    what is wrong) when it does not fit the questions."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        entries = data["questions"]
        key = {str(qid): Key(e["answer"] if isinstance(e["answer"], str) else tuple(e["answer"]),
                             str(e.get("explanation", "")), dict(e.get("why_not", {})))
               for qid, e in entries.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"--answer-key {path}: not an answer key written by `python -m "
                         f"minialign.course answer-key` ({type(e).__name__}: {e})") from None
    known = {q.id: q for ch in QUESTIONS.values() for q in ch}
    unknown = sorted(set(key) - set(known))
    if unknown:
        raise ValueError(f"--answer-key {path}: no such question(s) {unknown}")
    for qid, k in key.items():
        known[qid].with_key(k)  # raises ValueError when the key does not fit the question
    return key
