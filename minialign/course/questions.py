"""Concept questions: a few auto-graded multiple-choice and ordering questions per chapter.

The answers live here, in the library; the student answers in the `ANSWERS` dict at the end of
the chapter's exercise file (`python -m minialign.course build` writes the questions there as
comments). The grader reads that dict without running the student's file (it parses it), so
answering works even when the code above it does not. Points are in `rubric.json`.

Two kinds:
  * "choice": `options` are labelled a, b, c, ...; the answer is one letter, e.g. "b".
  * "order":  `options` are items labelled a, b, c, ... given in a scrambled order; the answer
              is the letters in the right order, e.g. ["c", "a", "b"] (or the string "cab").

To add a question: append a `Question` to its chapter's list below, give it points in
rubric.json, and rebuild the exercise files. Write the wrong options from real misconceptions,
and an explanation that teaches why the right answer is right (it is shown after grading).
"""

from __future__ import annotations

import string
from dataclasses import dataclass


@dataclass(frozen=True)
class Question:
    id: str  # "q2.1": chapter 2, question 1
    kind: str  # "choice" or "order"
    text: str
    options: tuple[str, ...]  # choices, or the items to put in order (labelled a, b, c, ...)
    answer: str | tuple[str, ...]  # "b", or ("c", "a", "b") for an ordering
    explanation: str  # shown after grading

    def __post_init__(self):
        labels = self.labels
        if self.kind == "choice":
            ok = isinstance(self.answer, str) and self.answer in labels
        elif self.kind == "order":
            ok = isinstance(self.answer, tuple) and sorted(self.answer) == list(labels)
        else:
            raise ValueError(f"{self.id}: kind must be 'choice' or 'order', got {self.kind!r}")
        if not ok:
            raise ValueError(f"{self.id}: answer {self.answer!r} does not fit options {labels}")

    @property
    def chapter(self) -> int:
        return int(self.id[1:].split(".")[0])

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(string.ascii_lowercase[: len(self.options)])

    @property
    def answer_literal(self):
        """The answer as it is written in ANSWERS: "b" or ["c", "a", "b"]."""
        return self.answer if self.kind == "choice" else list(self.answer)

    def grade(self, given) -> tuple[str, str]:
        """(status, message) for the value found in ANSWERS: passed / failed / not attempted."""
        if given is None:
            return "not attempted", f'answer it in ANSWERS["{self.id}"]'
        normalised = normalise_answer(given, self.kind)
        if normalised is None:
            if self.kind == "choice":
                form = f'one letter among {", ".join(self.labels)}, e.g. "{self.labels[0]}"'
            else:
                form = (f"the {len(self.options)} letters in order, e.g. "
                        f"{list(reversed(self.labels))}")
            return "failed", f"could not read the answer {given!r}: write {form}"
        if normalised == self.answer:
            return "passed", ""
        if self.kind == "order" and sorted(normalised) != sorted(self.answer):
            return "failed", (f"use each of the letters {', '.join(self.labels)} exactly once; "
                              f"got {list(normalised)}")
        return "failed", "not the right answer"


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
                "Its vocabulary contains every word of the training corpus, and rare words are "
                "spelled out letter by letter.",
                "Unknown characters become an <|unk|> token, which remembers the original "
                "character for decoding.",
                "Its 256 base tokens are the byte values: any string is a sequence of UTF-8 "
                "bytes, merges only join tokens, and decoding concatenates their bytes.",
                "It is trained on every Unicode character before it is trained on the corpus.",
            ),
            answer="c",
            explanation="Every string is a sequence of UTF-8 bytes, and every byte is a token, so "
                        "nothing is ever out of vocabulary. A merge replaces two tokens by one "
                        "whose bytes are their concatenation, so decoding (joining the bytes of "
                        "each token) undoes any sequence of merges. Unseen text just costs more "
                        "tokens: it is encoded with fewer merges, down to single bytes.",
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
            answer=("b", "d", "c", "a"),
            explanation="Training starts from bytes; each step counts adjacent pairs "
                        "(get_pair_counts), picks the most frequent, records the merge "
                        "(pair -> new id) and applies it everywhere (merge). The ordered list of "
                        "merges is the tokenizer: encoding replays them, earliest first.",
        ),
        Question(
            id="q1.3", kind="choice",
            text="A user types the text '<|end|>' in their prompt. Why does this not end the "
                 "user's turn in the chat template?",
            options=(
                "encode() treats special-token strings as ordinary text: the user's '<|end|>' "
                "becomes byte/merge tokens, never the special <|end|> id, which only the template "
                "code inserts.",
                "The tokenizer deletes angle brackets before encoding.",
                "The model was trained to ignore <|end|> inside a user turn.",
                "Special tokens are longer than the context window.",
            ),
            answer="a",
            explanation="Special tokens have ids of their own after the merges, and encode() never "
                        "produces them from text. The template code adds them around the turns, "
                        "so the structure of a conversation cannot be forged by typing; a "
                        "tokenizer that turned typed '<|end|>' into the special id would let a "
                        "user inject fake assistant turns (a prompt injection).",
        ),
    ],
    2: [
        Question(
            id="q2.1", kind="choice",
            text="Why does a GPT use a causal mask when it trains on whole sequences?",
            options=(
                "To save memory: half of the attention matrix need not be stored.",
                "So that the prediction made at position t cannot see the token t + 1 it is "
                "trained to predict: all T next-token predictions are trained at once without "
                "cheating, and each one sees what generation will see.",
                "To stop tokens from attending to padding.",
                "Because attention is not defined for keys after the query.",
            ),
            answer="b",
            explanation="Training scores every position in one pass: the logits at t predict "
                        "token t + 1. Without the mask, position t could read token t + 1 and copy "
                        "it, the training loss would be near zero, and the model would be useless "
                        "at generation time, when the future does not exist yet. Padding needs a "
                        "separate mask.",
        ),
        Question(
            id="q2.2", kind="choice",
            text="What does the KV cache save during generation?",
            options=(
                "The logits of earlier steps, so that a token can be resampled.",
                "The attention probabilities, which are the same at every step.",
                "The keys and values of the earlier tokens in every layer, so that each step runs "
                "the model on the new token only instead of on the whole prefix again.",
                "A compressed copy of the weights that runs faster.",
            ),
            answer="c",
            explanation="Under the causal mask the keys and values of earlier tokens never change, "
                        "so they can be stored once. Each new step then computes q, k, v for one "
                        "token and attends over the cached keys: Tq = 1 < Tk. The output is the "
                        "same as recomputing everything; only the work per step shrinks from the "
                        "whole prefix to one token.",
        ),
        Question(
            id="q2.3", kind="choice",
            text="Sampling divides the logits by a temperature T before the softmax. What does "
                 "T do?",
            options=(
                "T < 1 sharpens the distribution towards the most likely token, T > 1 flattens it "
                "towards uniform; as T -> 0 sampling becomes greedy (argmax).",
                "T > 1 makes the model more confident in its top token.",
                "T changes which token is the most likely one.",
                "T only matters when top-k is used.",
            ),
            answer="a",
            explanation="softmax(z / T): dividing by a small T stretches the gaps between logits, "
                        "so the top token takes almost all the probability; a large T shrinks the "
                        "gaps towards a uniform distribution. The order of the tokens, hence the "
                        "argmax, never changes.",
        ),
        Question(
            id="q2.4", kind="choice",
            text="Asked 'what is 7 plus 5?', the pretrained model often writes another question "
                 "instead of an answer. Why?",
            options=(
                "The model is too small to know arithmetic.",
                "It was trained only to continue web text, where a question is often followed by "
                "more questions (worksheets, forum threads); nothing yet taught it to answer as "
                "an assistant. Supervised fine-tuning does that.",
                "The sampling temperature is too high.",
                "The causal mask hides the question from the model.",
            ),
            answer="b",
            explanation="Pretraining maximises the likelihood of the corpus, so the model writes "
                        "what usually follows the text it is given. On the web a question is as "
                        "often followed by another question as by its answer. SFT on "
                        "demonstrations (chapter 3) teaches the assistant's format; preference "
                        "learning then teaches which answers people prefer.",
        ),
    ],
}


def questions_for(chapter: int) -> list[Question]:
    return list(QUESTIONS.get(chapter, []))


def all_questions() -> list[Question]:
    return [q for ch in sorted(QUESTIONS) for q in QUESTIONS[ch]]
