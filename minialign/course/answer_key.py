"""The answer key of the concept questions: the right answer to each, why it is right, and
why each wrong option is wrong.

The key is kept apart from the questions (`questions.py`) so that a handout graded for credit
can leave it out. Without it, a student's own grading reads the answers but cannot mark them;
the instructor grades with `python -m minialign.grade --answer-key key.json`, a file written
from this module by `python -m minialign.course answer-key key.json` (see docs/instructors.md).

What a student sees:
  * `explanation` after a right answer (after any answer once the instructor passes
    `--release-explanations`);
  * `why_not[letter]` after a wrong answer, for the option chosen. It says why that option is
    wrong and never names the right one. For an ordering question it is shown for the first
    item placed where it does not belong, and says what that step depends on.

To add a question: write it in `questions.py`, its key here (a `why_not` entry for every wrong
option, or for every item of an ordering), and its points in `rubric.json`.
"""

from __future__ import annotations

from .questions import Key

KEY: dict[str, Key] = {
    "q1.1": Key(
        answer="c",
        explanation=("Every string is a sequence of UTF-8 bytes, and every byte is a token, so "
                     "nothing is ever out of vocabulary. A merge replaces two tokens by one whose "
                     "bytes are their concatenation, so decoding (joining the bytes of each "
                     "token) undoes any sequence of merges. Unseen text just costs more tokens: "
                     "it is encoded with fewer merges, down to single bytes."),
        why_not={
            "a": ("A BPE vocabulary holds merged byte sequences, not a list of words, and "
                  "spelling a word out letter by letter would still need every letter of every "
                  "script in the vocabulary. Ask what every string is made of, whatever its "
                  "characters."),
            "b": ("A tokenizer with an unknown-token id cannot decode exactly: many different "
                  "characters would become the same id, and one id cannot remember which one it "
                  "was."),
            "d": ("Unicode has over a million code points: no training pass sees them all, and "
                  "the vocabulary has a few thousand tokens. Ask what every string is made of, "
                  "whatever its characters."),
        },
    ),
    "q1.2": Key(
        answer=("b", "d", "c", "a"),
        explanation=("Training starts from bytes; each step counts adjacent pairs "
                     "(get_pair_counts), picks the most frequent, records the merge (pair -> new "
                     "id) and applies it everywhere (merge). The ordered list of merges is the "
                     "tokenizer: encoding replays them, earliest first."),
        why_not={
            "a": "Replacing needs a pair to replace: which pair is decided by an earlier step.",
            "b": "Nothing can be counted or merged before the text is a sequence of tokens.",
            "c": "Choosing the most frequent pair needs to know how often each pair occurs.",
            "d": ("Counting pairs looks at the current tokens, which must exist first; and the "
                  "counts are what the next choice is based on."),
        },
    ),
    "q1.3": Key(
        answer="a",
        explanation=("Special tokens have ids of their own after the merges, and encode() never "
                     "produces them from text. The template code adds them around the turns, so "
                     "the structure of a conversation cannot be forged by typing; a tokenizer "
                     "that turned typed '<|end|>' into the special id would let a user inject "
                     "fake assistant turns (a prompt injection)."),
        why_not={
            "b": ("The tokenizer keeps every byte, or decoding would not give the user's text "
                  "back; the brackets are still there after encoding."),
            "c": ("The model has no say: what matters is which token ids the text becomes, and "
                  "that is decided before the model runs."),
            "d": ("A special token is one id at one position: its length has nothing to do with "
                  "the context window."),
        },
    ),
    "q2.1": Key(
        answer="b",
        explanation=("Training scores every position in one pass: the logits at t predict token t "
                     "+ 1. Without the mask, position t could read token t + 1 and copy it, the "
                     "training loss would be near zero, and the model would be useless at "
                     "generation time, when the future does not exist yet. Padding needs a "
                     "separate mask."),
        why_not={
            "a": ("The masked scores are still computed (and set to -inf): the mask saves no "
                  "memory. Ask what a position could do if it saw the token it must predict."),
            "c": ("Padding is hidden by a separate padding mask; the causal mask hides later "
                  "tokens whether or not they are padding."),
            "d": ("Attention is defined between any two positions (BERT-style encoders attend "
                  "both ways): the mask is a choice, made for what the model is trained to do."),
        },
    ),
    "q2.2": Key(
        answer="c",
        explanation=("Under the causal mask the keys and values of earlier tokens never change, "
                     "so they can be stored once. Each new step then computes q, k, v for one "
                     "token and attends over the cached keys: Tq = 1 < Tk. The output is the same "
                     "as recomputing everything; only the work per step shrinks from the whole "
                     "prefix to one token."),
        why_not={
            "a": "Once a token is sampled, the logits that produced it are never needed again.",
            "b": ("Each step brings a new query, so the attention weights change at every step: "
                  "they cannot be reused."),
            "d": ("The weights stay as they are: what is cached is computed from the tokens seen "
                  "so far."),
        },
    ),
    "q2.3": Key(
        answer="a",
        explanation=("softmax(z / T): dividing by a small T stretches the gaps between logits, so "
                     "the top token takes almost all the probability; a large T shrinks the gaps "
                     "towards a uniform distribution. The order of the tokens, hence the argmax, "
                     "never changes."),
        why_not={
            "b": ("Dividing the logits by T > 1 shrinks the gaps between them: the distribution "
                  "gets flatter, not more confident."),
            "c": ("Dividing every logit by the same positive number keeps their order, so the "
                  "most likely token stays the same."),
            "d": ("The temperature rescales the logits before any filtering: it changes the "
                  "distribution with or without top-k."),
        },
    ),
    "q2.4": Key(
        answer="b",
        explanation=("Pretraining maximises the likelihood of the corpus, so the model writes "
                     "what usually follows the text it is given. On the web a question is as "
                     "often followed by another question as by its answer. SFT on demonstrations "
                     "(chapter 3) teaches the assistant's format; preference learning then "
                     "teaches which answers people prefer."),
        why_not={
            "a": ("The model writes another question, not a wrong sum: what is missing is not "
                  "arithmetic but what it was trained to do with a question."),
            "c": ("Even greedy decoding (no randomness at all) continues with a question when "
                  "that is the likeliest continuation of the text."),
            "d": ("The causal mask hides only the tokens after a position: the question comes "
                  "before the answer, so every position of the answer sees it."),
        },
    ),
    "q3.1": Key(
        answer="c",
        explanation=("Demonstrations say what to write: SFT imitates them with the next-token "
                     "loss and teaches the assistant's format. Rankings say which of several "
                     "answers is better, something demonstrations cannot express: they train a "
                     "reward model (Bradley-Terry), a stand-in for the people, which RL then "
                     "optimises (or DPO uses the pairs directly). Imitating the top-ranked "
                     "response would throw away what the ranking says about the others."),
        why_not={
            "a": ("A reward model learns from comparisons, and one ideal answer per prompt "
                  "compares nothing; imitating only the top-ranked response would drop what the "
                  "ranking says about the others."),
            "b": ("The lower-ranked responses are examples of what NOT to write: imitating them "
                  "would teach the model worse answers."),
            "d": ("Pretraining uses raw text without labels; prompts paired with ideal answers "
                  "are examples of the assistant's behaviour, and a ranking is not a text to "
                  "imitate."),
        },
    ),
    "q3.2": Key(
        answer=("b", "d", "a", "c"),
        explanation=("Pretraining gives the language; SFT turns the text continuer into an "
                     "assistant that answers and stops; the reward model is trained on rankings "
                     "of the SFT model's own responses (so it must come after SFT); RL then "
                     "optimises the SFT model against it, with a KL penalty to the SFT model as "
                     "the reference."),
        why_not={
            "a": ("The reward model is trained on rankings of a fine-tuned model's own responses: "
                  "that model must exist first."),
            "b": "Every other stage starts from a model that already knows the language.",
            "c": "RL needs a policy worth improving and a reward model to score its samples.",
            "d": "Fine-tuning on demonstrations starts from a model that can already write text.",
        },
    ),
    "q3.3": Key(
        answer="a",
        explanation=("The loss is computed where the model will have to generate: the response. "
                     "Training on the prompt would teach the model to write users' questions (and "
                     "spend capacity on it). <|end|> is the last thing the assistant produces: if "
                     "its label were masked, nothing would teach the model to stop, and it would "
                     "ramble on at generation time. Logits are still computed for every position; "
                     "the mask only decides which ones count."),
        why_not={
            "b": ("The causal mask alone decides what each position sees; labels only decide "
                  "which predictions are scored. Padding is told apart by the padding mask."),
            "c": ("Logits are still computed for every position (-100 only leaves them out of the "
                  "loss), and the next user turn is written by the user, not the model."),
            "d": ("The loss is a mean over the scored tokens, however many they are, and nothing "
                  "needs the lengths to be equal."),
        },
    ),
    "q4.1": Key(
        answer="d",
        explanation=("People cannot score every response RL samples. A reward model fitted to "
                     "their comparisons (Bradley-Terry: P(a > b) = sigmoid(r(a) - r(b))) "
                     "generalises their judgement to new responses, and RL optimises against it. "
                     "It is only a proxy: it is as good as the comparisons it saw, near the "
                     "responses it saw."),
        why_not={
            "a": ("Imitating the preferred response drops the comparison, which is all a "
                  "preference says; and the preferred response can still be a poor one."),
            "b": ("Comparisons are expensive to collect: RLHF trains on them (only a held-out "
                  "slice is kept for evaluation). Which stage needs to know what people prefer?"),
            "c": ("A temperature only sharpens or flattens what the model already does: it cannot "
                  "make it prefer what people prefer."),
        },
    ),
    "q4.2": Key(
        answer="a",
        explanation=("Maximum likelihood fits the labels it is given. Noise and disagreement "
                     "average out into less confident scores (and an accuracy ceiling), but a "
                     "systematic bias such as a taste for length does not average out: it is part "
                     "of what the annotators prefer, so the reward model learns it, and a policy "
                     "optimised against the reward model writes longer answers whether or not "
                     "they are better."),
        why_not={
            "b": ("Averaging cancels errors that point in random directions; a bias that the "
                  "annotators share points the same way every time, so more comparisons only "
                  "confirm it."),
            "c": ("A pair that annotators disagree on only pulls its predicted probability "
                  "towards 0.5: the loss still has a minimum, and training converges."),
            "d": ("Maximum likelihood fits everything the comparisons say, not only what all "
                  "annotators share."),
        },
    ),
    "q4.3": Key(
        answer="c",
        explanation=("Each label is a coin flip with probability p = sigmoid(difference of "
                     "utilities / tau). The best prediction is the likelier label, right with "
                     "probability max(p, 1 - p); averaged over pairs this is the ceiling any "
                     "model can reach (InstructGPT's labelers agreed with each other only about "
                     "73-77% of the time). Compare the reward model's accuracy with that ceiling, "
                     "not with 100%."),
        why_not={
            "a": ("This model KNOWS the exact preference probabilities: it cannot overfit, and "
                  "more data cannot raise its accuracy."),
            "b": "Ties are rare between real-valued scores; they cannot explain 30% of errors.",
            "d": ("Through causal attention the last token sees the whole response; and a model "
                  "that knows the probabilities reads nothing at all."),
        },
    ),
    "q5.1": Key(
        answer="b",
        explanation=("The reward model was fitted to samples of the SFT model; on text unlike "
                     "those samples its scores are extrapolations, and an optimiser finds their "
                     "errors. The KL term charges the policy for every nat it moves away from the "
                     "reference, which keeps it where the reward model is reliable and its "
                     "language fluent. The clip limits one update; the KL limits the whole drift."),
        why_not={
            "a": ("The clip bounds the ratio within one update; the KL term is part of the reward "
                  "and acts over the whole run."),
            "c": ("The penalty is subtracted from the reward: moving away from the reference "
                  "costs reward, it does not earn any."),
            "d": ("A per-token penalty changes the rewards; the advantages still need a baseline, "
                  "which is what the value function gives."),
        },
    ),
    "q5.2": Key(
        answer="d",
        explanation=("The reward model is the environment RL optimises, and it is wrong in "
                     "places. Early on, proxy and gold improve together; past some KL from the "
                     "reference, the cheapest way to raise the proxy is to exploit its errors, so "
                     "gold falls (Gao et al. 2022). A stronger KL penalty, early stopping on "
                     "held-out gold, or a better reward model are the remedies; a too-strong "
                     "penalty would keep both curves flat."),
        why_not={
            "a": ("A diverged critic makes training noisy or unstable; it does not make the proxy "
                  "rise steadily while the true quality falls."),
            "b": ("A steady fall over many iterations is a trend, not noise, and nothing in the "
                  "setup makes it reverse."),
            "c": ("A penalty that is too strong holds BOTH rewards back, the proxy included; here "
                  "the proxy keeps rising."),
        },
    ),
    "q5.3": Key(
        answer="b",
        explanation=("pi_old is the policy that sampled the rollout, and no gradient step has "
                     "been taken yet, so the log-probs recomputed for training must equal the "
                     "stored ones. A ratio other than 1 there is a bug: dropout left on, a "
                     "different temperature in the two forward passes, left padding without "
                     "matching position ids, or an off-by-one in the log-prob shift."),
        why_not={
            "a": ("The clip range bounds how far the ratio may move during training; it says "
                  "nothing about where it starts."),
            "c": ("The ratio compares the current policy with pi_old, the policy that sampled "
                  "this rollout, not with the reference."),
            "d": ("The advantages have not been used yet at that point: nothing has changed the "
                  "policy since it sampled the rollout."),
        },
    ),
    "q6.1": Key(
        answer="d",
        explanation=("DPO's loss is the Bradley-Terry likelihood with the implicit reward beta * "
                     "log(pi / pi_ref) in place of a reward model, so it trains on the fixed "
                     "pairs like a classifier: no reward-model stage, no rollouts, only the "
                     "policy and a frozen reference (whose log-probs can even be computed once). "
                     "PPO holds the policy, the reference, the reward model and the value model, "
                     "and samples at every iteration."),
        why_not={
            "a": ("DPO has no reward-model stage: its loss uses the policy's own log-ratio to the "
                  "reference as the reward."),
            "b": "DPO trains on a fixed dataset of pairs; nothing is sampled during training.",
            "c": ("DPO's reference is frozen and its loss needs no old copy of the policy: count "
                  "the models each method holds."),
        },
    ),
    "q6.2": Key(
        answer="b",
        explanation=("loss = -log sigmoid(beta * (chosen log-ratio - rejected log-ratio)) pushes "
                     "only the difference. Probability mass that leaves both responses (towards "
                     "other answers) lowers both log-ratios; the loss still falls if the rejected "
                     "one falls more. It is common and not a bug, though a large drop of both can "
                     "mean the policy drifts; the margin and the held-out accuracy are the "
                     "metrics to watch."),
        why_not={
            "a": ("The gradient raises the chosen log-ratio RELATIVE to the rejected one, not in "
                  "absolute terms: both can fall while the margin widens."),
            "c": ("A falling chosen reward alone says nothing about the reference; look at what "
                  "the loss depends on."),
            "d": "It happens often, not always, and a positive beta is not its cause.",
        },
    ),
    "q6.3": Key(
        answer="a",
        explanation=("DPO solves the same objective as RLHF, max E[r] - beta * KL(pi || pi_ref), "
                     "in closed form: the implicit reward is beta * log(pi / pi_ref). A small "
                     "beta means a given preference margin is reached with a larger log-ratio, so "
                     "the policy moves further from the reference; a large beta keeps it close. "
                     "Nothing is sampled during DPO training."),
        why_not={
            "b": ("beta is not a step size: the optimiser's learning rate is set separately, and "
                  "beta appears inside the loss."),
            "c": ("Both responses enter the same difference h; beta scales the whole difference, "
                  "not one side of it."),
            "d": ("Nothing is sampled during DPO training, so there is no sampling temperature to "
                  "set."),
        },
    ),
    "q7.1": Key(
        answer="c",
        explanation=("Best-of-N aligns at inference time: no gradient, only N samples and N "
                     "reward-model calls per prompt. Its distribution moves away from the base "
                     "policy only logarithmically in N (at most log N - (N - 1)/N nats), which "
                     "makes it the natural baseline for RLHF at equal KL. It still "
                     "over-optimises: with a large N it picks the responses whose proxy score is "
                     "most wrong, and the gold reward falls (Gao et al. 2022)."),
        why_not={
            "a": ("The weights stay fixed, but the SELECTION can exploit the reward model's "
                  "errors: among many samples, the highest proxy score is often the most "
                  "overrated one."),
            "b": ("Best-of-N moves away from the base policy only slowly as N grows, which is why "
                  "N in the hundreds is used."),
            "d": "Best-of-N changes no weights: it samples and picks, at inference time.",
        },
    ),
    "q7.2": Key(
        answer="b",
        explanation=("An AI judge labels thousands of pairs for the price of a few human ones, "
                     "and labels the same pair the same way every time. But it is a model with "
                     "failure modes: in this course's world it cannot check arithmetic, misses "
                     "stereotypes in jokes and likes apologetic answers. Whatever the labeler "
                     "gets wrong, the reward model learns and the policy exploits, exactly as "
                     "with human biases; only the biases differ."),
        why_not={
            "a": ("An AI judge is a model, with errors and preferences of its own; its reward "
                  "model is a proxy, as one trained on human labels is."),
            "c": ("An AI judge can be asked which of two answers is better: that is a comparison, "
                  "and its labels train a reward model as human ones do."),
            "d": ("An AI judge labels the same pair the same way every time: its weakness is "
                  "systematic error, not noise."),
        },
    ),
    "q8.1": Key(
        answer="b",
        explanation=("A baseline only has to estimate how good a response to this prompt is "
                     "expected to be. PPO learns that estimate (the value model); GRPO samples G "
                     "responses to the same prompt and uses their mean reward instead. With an "
                     "outcome reward given once at the end, every token of a response then gets "
                     "that response's advantage: no critic to train, no second network in "
                     "memory."),
        why_not={
            "a": ("The KL penalty keeps the policy near the reference; it does not say how good "
                  "a response to this prompt is expected to be, which is what a baseline "
                  "estimates."),
            "c": ("The clip limits how far one update moves the policy; it does nothing to the "
                  "variance of the reward signal. REINFORCE with raw rewards is still "
                  "high-variance, however small the steps."),
            "d": ("GRPO's reward is one number per response (a reward model's score or a "
                  "verifier's 0/1), not one per token."),
        },
    ),
    "q8.2": Key(
        answer="d",
        explanation=("RL improves what its reward can see. The verifier checks outcomes a rule "
                     "can check (the sum, the French phrase, a refusal of a harmful request); it "
                     "scores a funny and a flat joke alike (it cannot judge humour at all) and a "
                     "polite and a rude right answer alike. Within a group, such differences "
                     "change no reward, so no advantage pushes towards them: what the verifier "
                     "cannot see, RL against it will not improve."),
        why_not={
            "a": ("A 0/1 reward has no gradient itself, but the policy gradient does not "
                  "differentiate the reward: it weights the log-probs by the advantages, and a "
                  "group with some right and some wrong answers has non-zero advantages."),
            "b": ("The overlong penalty only bites on answers that run into the token budget. "
                  "Ask what the verifier's score of a short joke, funny or flat, or of a rude "
                  "but right answer would be."),
            "c": ("Training longer cannot help a family whose answers all get the same reward: "
                  "the signal, not the step size, is missing."),
        },
    ),
    "q8.3": Key(
        answer="a",
        explanation=("An outcome reward model (or a verifier) judges only the end result; a "
                     "process reward model is trained on step labels and scores every step of "
                     "the reasoning. Lightman et al. (2023) found that for best-of-N selection on "
                     "MATH a process reward model picked right answers more often than an "
                     "outcome one (78.2% against 72.4%); Uesato et al. (2022) found similar "
                     "final-answer error on GSM8K but fewer wrong reasoning steps with process "
                     "supervision."),
        why_not={
            "b": ("Who labels the data does not make the difference: both kinds can be learned "
                  "from people or computed, and any learned reward can be exploited."),
            "c": ("The KL penalty keeps the policy near the reference; it says nothing about "
                  "whether a reasoning step is right."),
            "d": ("On MATH, selecting with a process reward model beat selecting with an outcome "
                  "one; the two do not make the same choices."),
        },
    ),
    "q8.4": Key(
        answer="c",
        explanation=("The advantage compares each answer with its group. When all rewards are "
                     "equal, each one equals the group mean, so every advantage is 0 and the "
                     "policy-gradient term vanishes: the group costs eight samples and teaches "
                     "nothing (the KL term aside). DAPO's dynamic sampling drops such groups "
                     "(all right or all wrong) and logs the fraction dropped."),
        why_not={
            "a": ("GRPO rewards an answer for being better than the others of its group, not "
                  "for its reward alone: here no answer is better than any other."),
            "b": ("Raising every answer's probability needs positive advantages; compare each "
                  "reward with the group's mean."),
            "d": ("The numerator is 0 too: 0 / eps is 0, and an all-equal group is set to exactly "
                  "0 anyway."),
        },
    ),
    "q8.5": Key(
        answer="b",
        explanation=("The mean is 0.5, so r - mean is [0.5, -0.5, -0.5, 0.5]. The squared "
                     "deviations sum to 1; torch.std divides by n - 1 = 3, so std = sqrt(1/3) = "
                     "0.577, and 0.5 / 0.577 = 0.866."),
        why_not={
            "a": ("That is the population std (dividing by n = 4 gives std 0.5): torch.std "
                  "divides the sum of squared deviations by n - 1."),
            "c": ("That is r - mean alone (Dr. GRPO's advantage): GRPO also divides by the "
                  "group's std."),
            "d": ("That is RLOO's advantage, r minus the mean of the other three rewards: GRPO "
                  "compares with the mean of the whole group and divides by its std."),
        },
    ),
}
