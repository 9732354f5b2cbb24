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
                "Its vocabulary contains every word of the training corpus, and rare words are "
                "spelled out letter by letter.",
                "Unknown characters become an <|unk|> token, which remembers the original "
                "character for decoding.",
                "Its 256 base tokens are the byte values: any string is a sequence of UTF-8 "
                "bytes, merges only join tokens, and decoding concatenates their bytes.",
                "It is trained on every Unicode character before it is trained on the corpus.",
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
                "encode() treats special-token strings as ordinary text: the user's '<|end|>' "
                "becomes byte/merge tokens, never the special <|end|> id, which only the template "
                "code inserts.",
                "The tokenizer deletes angle brackets before encoding.",
                "The model was trained to ignore <|end|> inside a user turn.",
                "Special tokens are longer than the context window.",
            ),
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
            text="The annotators are noisy, slightly prefer longer answers, and do not always "
                 "agree with each other. What does the reward model trained on their "
                 "comparisons learn?",
            options=(
                "Their preferences, bias included: longer answers get higher scores for their "
                "length alone.",
                "The true quality of each response: with enough comparisons the noise, the "
                "disagreements and the length bias all average out.",
                "Nothing useful: when annotators disagree about a pair, the Bradley-Terry loss "
                "has no minimum, and training diverges unless those pairs are removed.",
                "Only the length preference, because it is the one signal shared by all "
                "annotators.",
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
