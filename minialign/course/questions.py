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
            answer="c",
            explanation="Demonstrations say what to write: SFT imitates them with the "
                        "next-token loss and teaches the assistant's format. Rankings say which "
                        "of several answers is better, something demonstrations cannot express: "
                        "they train a reward model (Bradley-Terry), a stand-in for the people, "
                        "which RL then optimises (or DPO uses the pairs directly). Imitating the "
                        "top-ranked response would throw away what the ranking says about the "
                        "others.",
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
            answer=("b", "d", "a", "c"),
            explanation="Pretraining gives the language; SFT turns the text continuer into an "
                        "assistant that answers and stops; the reward model is trained on "
                        "rankings of the SFT model's own responses (so it must come after SFT); "
                        "RL then optimises the SFT model against it, with a KL penalty to the SFT "
                        "model as the reference.",
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
            answer="a",
            explanation="The loss is computed where the model will have to generate: the "
                        "response. Training on the prompt would teach the model to write "
                        "users' questions (and spend capacity on it). <|end|> is the last thing "
                        "the assistant produces: if its label were masked, nothing would teach "
                        "the model to stop, and it would ramble on at generation time. Logits "
                        "are still computed for every position; the mask only decides which "
                        "ones count.",
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
            answer="d",
            explanation="People cannot score every response RL samples. A reward model fitted "
                        "to their comparisons (Bradley-Terry: P(a > b) = sigmoid(r(a) - r(b))) "
                        "generalises their judgement to new responses, and RL optimises against "
                        "it. It is only a proxy: it is as good as the comparisons it saw, near "
                        "the responses it saw.",
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
            answer="a",
            explanation="Maximum likelihood fits the labels it is given. Noise and disagreement "
                        "average out into less confident scores (and an accuracy ceiling), but "
                        "a systematic bias such as a taste for length does not average out: it "
                        "is part of what the annotators prefer, so the reward model learns it, "
                        "and a policy optimised against the reward model writes longer answers "
                        "whether or not they are better.",
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
            answer="c",
            explanation="Each label is a coin flip with probability p = sigmoid(difference of "
                        "utilities / tau). The best prediction is the likelier label, right with "
                        "probability max(p, 1 - p); averaged over pairs this is the ceiling any "
                        "model can reach (InstructGPT's labelers agreed with each other only "
                        "about 73-77% of the time). Compare the reward model's accuracy with "
                        "that ceiling, not with 100%.",
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
            answer="b",
            explanation="The reward model was fitted to samples of the SFT model; on text unlike "
                        "those samples its scores are extrapolations, and an optimiser finds "
                        "their errors. The KL term charges the policy for every nat it moves away "
                        "from the reference, which keeps it where the reward model is reliable "
                        "and its language fluent. The clip limits one update; the KL limits the "
                        "whole drift.",
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
            answer="d",
            explanation="The reward model is the environment RL optimises, and it is wrong in "
                        "places. Early on, proxy and gold improve together; past some KL from "
                        "the reference, the cheapest way to raise the proxy is to exploit its "
                        "errors, so gold falls (Gao et al. 2022). A stronger KL penalty, early "
                        "stopping on held-out gold, or a better reward model are the remedies; a "
                        "too-strong penalty would keep both curves flat.",
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
            answer="b",
            explanation="pi_old is the policy that sampled the rollout, and no gradient step "
                        "has been taken yet, so the log-probs recomputed for training must equal "
                        "the stored ones. A ratio other than 1 there is a bug: dropout left on, "
                        "a different temperature in the two forward passes, left padding without "
                        "matching position ids, or an off-by-one in the log-prob shift.",
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
            answer="d",
            explanation="DPO's loss is the Bradley-Terry likelihood with the implicit reward "
                        "beta * log(pi / pi_ref) in place of a reward model, so it trains on the "
                        "fixed pairs like a classifier: no reward-model stage, no rollouts, only "
                        "the policy and a frozen reference (whose log-probs can even be computed "
                        "once). PPO holds the policy, the reference, the reward model and the "
                        "value model, and samples at every iteration.",
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
            answer="b",
            explanation="loss = -log sigmoid(beta * (chosen log-ratio - rejected log-ratio)) "
                        "pushes only the difference. Probability mass that leaves both responses "
                        "(towards other answers) lowers both log-ratios; the loss still falls if "
                        "the rejected one falls more. It is common and not a bug, though a "
                        "large drop of both can mean the policy drifts; the margin and the "
                        "held-out accuracy are the metrics to watch.",
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
            answer="a",
            explanation="DPO solves the same objective as RLHF, max E[r] - beta * KL(pi || "
                        "pi_ref), in closed form: the implicit reward is beta * log(pi / "
                        "pi_ref). A small beta means a given preference margin is reached with a "
                        "larger log-ratio, so the policy moves further from the reference; a "
                        "large beta keeps it close. Nothing is sampled during DPO training.",
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
            answer="c",
            explanation="Best-of-N aligns at inference time: no gradient, only N samples and N "
                        "reward-model calls per prompt. Its distribution moves away from the base "
                        "policy only logarithmically in N (at most log N - (N - 1)/N nats), which "
                        "makes it the natural baseline for RLHF at equal KL. It still "
                        "over-optimises: with a large N it picks the responses whose proxy score "
                        "is most wrong, and the gold reward falls (Gao et al. 2022).",
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
            answer="b",
            explanation="An AI judge labels thousands of pairs for the price of a few human "
                        "ones, and labels the same pair the same way every time. But it is a "
                        "model with failure modes: in this course's world it cannot check "
                        "arithmetic, misses stereotypes in jokes and likes apologetic answers. "
                        "Whatever the labeler gets wrong, the reward model learns and the policy "
                        "exploits, exactly as with human biases; only the biases differ.",
        ),
    ],
}


def questions_for(chapter: int) -> list[Question]:
    return list(QUESTIONS.get(chapter, []))


def all_questions() -> list[Question]:
    return [q for ch in sorted(QUESTIONS) for q in QUESTIONS[ch]]
