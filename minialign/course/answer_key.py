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
            "a": ("A BPE vocabulary holds merged byte sequences, not a list of words; and "
                  "spelling out from the corpus's letters fails on an emoji or a Chinese "
                  "character the corpus never had. Ask what every string is made of, whatever "
                  "its characters."),
            "b": ("The token ids are all that the model and decode() get, and an <|unk|> id is "
                  "the same for every unknown character: whatever is kept beside it is not in "
                  "the sequence. Exact decoding needs the characters' content in the tokens."),
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
            "d": ("encode() has no notion of where in the template a text sits: it turns the "
                  "same text into the same ids wherever it is. Ask which ids the typed text "
                  "becomes."),
        },
    ),
    "q1.4": Key(
        answer="d",
        explanation=("Each pair is counted once per occurrence of its chunk: 'u' + 'n' occurs "
                     "12 + 4 = 16 times, 'p' + 'u' 12 + 2 = 14, 'u' + 'g' 3 + 2 + 1 = 6, "
                     "'h' + 'u' and 'b' + 'u' 4 each, 'g' + 's' 1. So 'un' becomes token 256, the "
                     "first merge, and 'pun' becomes 'p' + 'un'. Counting distinct chunks instead "
                     "would pick 'ug' (three chunks): the frequency is what the `weight` of "
                     "get_pair_counts is for."),
        why_not={
            "a": ("Count every pair, each weighted by its chunk's count: another pair occurs "
                  "more than 14 times."),
            "b": ("Merges go by how often a pair occurs in the text, not by how many different "
                  "chunks contain it: weight each chunk's pairs by how often the chunk occurs."),
            "c": ("BPE merges two tokens at a time: a three-letter chunk needs two merges to "
                  "become one token, and the first merge is a pair."),
        },
    ),
    "q1.5": Key(
        answer="c",
        explanation=("A merge across chunks would spend a vocabulary slot on a span that is "
                     "frequent by accident, a word's last letter with the punctuation and space "
                     "after it ('t. t'), which is of little use anywhere else. Inside chunks, "
                     "merges build words and pieces of words with their leading space (' cat'), "
                     "and one token serves every ' cat' of the text. Training gets cheaper too: "
                     "each distinct chunk is stored once, with its count. Exact decoding does not "
                     "depend on it: merges only ever join bytes."),
        why_not={
            "a": ("Decoding joins the bytes of each token, and a merge only joins bytes: any "
                  "sequence of merges, across chunks or not, decodes back exactly."),
            "b": ("The model predicts one token per step, and a chunk can take several tokens: "
                  "chunking changes which tokens exist, not how generation works."),
            "d": ("encode() never produces a special id from text, chunked or not: that alone "
                  "keeps a typed '<|end|>' harmless. Chunking is about the ordinary merges."),
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
            "a": ("This course's attention computes every score and sets the masked ones to "
                  "-inf; whatever a fused kernel saves by skipping them, saving is not the "
                  "point. Ask what a position could do if it saw the token it must predict."),
            "c": ("Padding is hidden by a separate padding mask; the causal mask hides later "
                  "tokens whether or not they are padding."),
            "d": ("Every position has its embedding from the start, and attention is defined "
                  "between any two positions (BERT-style encoders attend both ways): the mask is "
                  "a choice, made for what the model is trained to do."),
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
            "a": ("Once a token is sampled, the logits that produced it are never needed again, "
                  "and keeping them saves none of the work of computing the next ones."),
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
            "c": ("A high T gives the rare tokens a larger share, but dividing every logit by "
                  "the same positive number keeps their order: the likeliest token stays the "
                  "likeliest."),
            "d": ("The temperature rescales the logits before any filtering: it changes the "
                  "whole distribution, with or without top-k or top-p."),
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
    "q2.5": Key(
        answer="c",
        explanation=("Helpful, honest, harmless: the story is on topic and fluent, but it "
                     "demeans a whole group of people, a harm the model picked up from its "
                     "training text (some of the web's stories contain such lines, and "
                     "pretraining copies what it sees). The gold reward charges it under "
                     "harmless (-1) and gives it no credit for the task, while a harmless joke "
                     "about a programmer scores up to 1. Preference learning is what teaches the "
                     "model to prefer the harmless joke."),
        why_not={
            "a": ("A joke is not a claim the model asserts as true, and honesty here is about "
                  "inventing answers (a made-up capital). Ask whom the joke can hurt."),
            "b": ("Nothing forces a choice between a stereotype and a refusal: a harmless joke "
                  "about a programmer is funny and hurts nobody, and it is the answer the gold "
                  "reward rates best."),
            "d": ("The request is harmless: a joke about a programmer need not demean anyone. "
                  "Refusing it would be over-refusal, which the gold reward penalises too."),
        },
    ),
    "q2.6": Key(
        answer="d",
        explanation=("A freshly initialised GPT has small random weights, so its logits are "
                     "nearly equal and its prediction nearly uniform over the V tokens: each "
                     "token costs about ln V nats. ln 1024 = 6.93, the 6.95 measured; ln 4096 = "
                     "ln 1024 + ln 4 = 6.93 + 1.39 = 8.32. A first loss far above ln V means an "
                     "initialisation that is too large (confident, wrong predictions): checking it "
                     "is the first test of a training run."),
        why_not={
            "a": ("The loss is a logarithm: four times as many tokens adds ln 4 to it, it does "
                  "not multiply it by four."),
            "b": ("log2 4096 = 12 is in bits; the cross-entropy of the training loss uses the "
                  "natural logarithm."),
            "c": ("At step 0 the model has learned nothing about the text yet: its loss is set "
                  "by how many tokens it spreads its probability over."),
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
    "q3.4": Key(
        answer="c",
        explanation=("An assistant is judged by what the person needs, not by how much it knows "
                     "or how well it writes: a child with a high fever needs a doctor, soon. The "
                     "answer says so, briefly, with safe first steps, and the gold reward gives "
                     "it the maximum, 1 (helpful, harmless, concise). The history lesson is true "
                     "but answers nothing (helpful 0, and long: -0.55); 'probably nothing' is "
                     "harmful (harmless -1); another question is what the pretrained model "
                     "writes, continuing a forum thread (0)."),
        why_not={
            "a": ("True and fluent, but does it help? Ask what the parent should do in the next "
                  "hour: knowledge without the behaviour is exactly what pretraining gives."),
            "b": ("Calm is good, but dismissing a high fever in a child can delay care: that is "
                  "a harm, however polite."),
            "d": ("That continues a forum thread and leaves the parent with nothing to do. "
                  "Declining to diagnose is fine; leaving out 'see a doctor' is not."),
        },
    ),
    "q3.5": Key(
        answer="a",
        explanation=("SFT maximises the likelihood of the demonstrations, so it learns everything "
                     "in them: the right answers, the format, and the writers' habits. The "
                     "world's demonstrations are mostly padded with filler ('great question!', "
                     "'i hope this helps!') and often carry a rude remark; the model copies "
                     "both. Fitting them harder or sampling more greedily only reproduces them "
                     "more faithfully. Cleaner demonstrations would help; a signal that says "
                     "which of two answers is better (preference learning, chapters 4-6) helps "
                     "without rewriting them."),
        why_not={
            "b": ("A lower temperature picks the likeliest tokens, and after SFT the likeliest "
                  "opening is the demonstrations' own 'great question!'."),
            "c": ("SFT did replace the web's habits: the model now answers and ends its turn. "
                  "Where would it have learned to open with 'great question!'?"),
            "d": ("Fitting the demonstrations better makes the model copy them more closely, "
                  "their filler included."),
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
        explanation=("Maximum likelihood fits what the labels say. Noise and disagreement "
                     "average out into less confident scores (and an accuracy ceiling), but a "
                     "bias the labelers share does not: it is part of their preference, so the "
                     "reward model learns it. Here it is small next to what gold charges for "
                     "length: 0.01 per word against 0.05 per word past the ideal length and 0.25 "
                     "for filler, so the labels still prefer the shorter of two padded answers, "
                     "only less firmly than gold does, and a reward model fitted to them leans "
                     "the same way. To see it, compare how steeply its scores and gold fall with "
                     "length within one task family: across all families at once, the "
                     "families' different lengths and score levels mix in. A bias larger than "
                     "gold's cost of length would tip it over: a policy optimised against such a "
                     "reward model would pad."),
        why_not={
            "b": ("Add the two up: 0.01 per word against gold's 0.05 per word past the ideal "
                  "length and 0.25 for filler. Which way do the labels lean when one answer is "
                  "longer because of its filler?"),
            "c": ("Averaging cancels errors that point in random directions; a bias that the "
                  "labelers share points the same way on every pair, so more comparisons only "
                  "confirm it."),
            "d": ("A pair that labelers disagree on only pulls its predicted probability "
                  "towards 0.5: the loss still has a minimum, and training converges."),
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
    "q4.4": Key(
        answer="b",
        explanation=("Noise and disagreement are random: over many labels they turn into "
                     "probabilities, which a reward model learns (its accuracy against single "
                     "labels stays below 100%, but its ranking of a pair settles). A bias that "
                     "every labeler shares (longer looks more thorough, a confident tone looks "
                     "right) or an error nobody checks (a wrong sum, stated confidently) is in "
                     "every label the same way: more labels only make the reward model surer of "
                     "it. It takes other information to fix: better instructions, expert or "
                     "tool-assisted checks, or a labeler with other blind spots (the AI judge of "
                     "chapter 7, whose own are systematic too)."),
        why_not={
            "a": ("Noise points both ways: over many labels of such pairs, a is chosen 70% of "
                  "the time, and a reward model learns that a is the better one. More labels "
                  "sharpen that."),
            "c": ("Disagreement averages into a probability: the model learns how often a is "
                  "preferred to b, which is a single answer to learn."),
            "d": ("That is what the reward model is for: it scores RL's samples, and people only "
                  "label the comparisons it is trained on."),
        },
    ),
    "q4.5": Key(
        answer="a",
        explanation=("The reward model's head (ScalarHeadGPT) is initialised to zero, so before "
                     "training every response scores 0. Every pair is then a tie: sigmoid(0) = "
                     "0.5, the loss is -log 0.5 = ln 2 = 0.693, and preference_accuracy uses a "
                     "strict '>', so a tie counts as wrong: 0%. As soon as the scores differ, the "
                     "accuracy jumps to about 50% and then above. A model that guessed at random "
                     "would show about 50%; a confidently wrong one, a loss far above ln 2."),
        why_not={
            "b": ("A confidently wrong prediction costs far more than 0.693, which is the cost "
                  "of a 50/50 one; and random scores would get about half the pairs right, not "
                  "none."),
            "c": ("A model that guesses gets about half of 1,000-odd pairs right by chance, not "
                  "none of them: 0% needs every pair called wrong, or called a tie."),
            "d": ("A model that knows nothing cannot be right in reverse either: an untrained "
                  "model would score about 50% whichever way the pairs are stored."),
        },
    ),
    "q4.6": Key(
        answer="b",
        explanation=("It is an outcome reward model: trained on comparisons of whole answers and "
                     "read at the last non-padding token, it gives one number per answer. RL "
                     "then has a credit-assignment problem: PPO adds the score at the last token "
                     "and learns a value function whose advantages (GAE) spread it back over the "
                     "tokens; GRPO gives every token its answer's advantage against the group. A "
                     "process reward model (chapter 8) scores each step instead, which needs "
                     "labels for steps."),
        why_not={
            "a": ("Only the last position's output is ever trained: the loss reads nothing else, "
                  "so the scores at earlier positions mean nothing. Scores for steps need labels "
                  "for steps."),
            "c": ("A verifier checks a rule (the right sum); this model predicts people's "
                  "preferences and can be fooled, which is why RL against it needs a KL leash."),
            "d": ("PPO and GRPO learn from one score per answer: a value function, or the other "
                  "answers of the group, spreads it over the tokens."),
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
    "q5.4": Key(
        answer="d",
        explanation=("A reward model scores (prompt, response), but nothing forces it to use the "
                     "prompt: answers shaped like a good translation ('that is ... in french.') "
                     "scored well in its training pairs, whatever was asked. An optimiser with "
                     "room to move finds such blind spots: proxy up, gold down (reward hacking, "
                     "or over-optimisation). What helps: a tighter KL leash (the adaptive "
                     "controller's target), stopping on a held-out gold-like evaluation, or "
                     "labels on the policy's own answers so that the blind spot gets data "
                     "(iterated RLHF)."),
        why_not={
            "a": ("A diverged critic makes training noisy or unstable; it does not make the "
                  "policy settle on one answer that the reward model scores highly."),
            "b": ("The proxy is already high and still rising: more of the same optimisation "
                  "pushes further into what the reward model over-rates."),
            "c": ("The answer does not answer the question asked. The gold reward is what we "
                  "want; a proxy score is evidence only where the reward model has seen similar "
                  "answers."),
        },
    ),
    "q5.5": Key(
        answer="b",
        explanation=("Look at what PPO removes: 'of course! i am happy to help with that.', 'i "
                     "hope this helps!', 'ugh, fine.'. SFT answers are long because the "
                     "demonstrations were padded. The labelers add 0.01 per word, but the gold "
                     "reward they judge by charges 0.25 for filler, 0.5 for rudeness and 0.05 "
                     "per word past the ideal length, so their labels prefer the unpadded "
                     "answer, and the reward model learned that preference, on the whole if not "
                     "for every phrase (its scores of SFT samples fall with their length). "
                     "Dropping the padding, the rude remarks first, raises the proxy. The KL "
                     "penalty does not favour short answers as such: it charges a "
                     "token for moving away from the reference, and dropping the filler that "
                     "the SFT model writes is itself such a move."),
        why_not={
            "a": ("The penalty charges each token by how far its log-prob moved from the "
                  "reference's: a token written as the SFT model would write it costs about "
                  "nothing. Dropping the filler the SFT model writes is itself a move away."),
            "c": ("26-token answers are far from the 64-token budget, and the SFT model already "
                  "ends nearly every answer: the missing-end penalty is rarely charged."),
            "d": ("Whitening rescales the advantages of a batch; it does not change which "
                  "answers have higher advantages than others."),
        },
    ),
    "q5.6": Key(
        answer="a",
        explanation=("KL(pi || pi_ref) is never negative, and its estimate from samples, the "
                     "mean of log pi - log pi_ref, is unbiased only when the samples come from "
                     "pi. Top-k or top-p draws from a truncated distribution: the tokens where "
                     "the policy gained probability over the reference, often unlikely ones, are "
                     "cut, and those where it lost some are kept. The estimate turns negative, "
                     "the 'penalty' becomes a bonus for moving away, and the optimiser takes it "
                     "(notebook 05 shows it). Sample with plain temperature during RL."),
        why_not={
            "b": ("A true KL is never negative: a policy equal to the reference has KL 0, not "
                  "less. A negative value is a measurement problem."),
            "c": ("A larger coefficient holds the policy nearer the reference, where the KL is "
                  "about 0; no policy has a KL below 0."),
            "d": ("Noise scatters around the true value, which is at least 0: an estimate that "
                  "keeps falling is a bias, not chance."),
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
    "q6.4": Key(
        answer="c",
        explanation=("h = (log pi(y_w) - log pi(y_l)) - (log pi_ref(y_w) - log pi_ref(y_l)) = "
                     "(-12 + 15) - (-13 + 14) = 3 - 1 = 2, and the loss is -log sigmoid(beta h) = "
                     "-log sigmoid(0.2) = log(1 + e^-0.2) = 0.598, a little below ln 2 = 0.693, "
                     "the loss when the policy equals the reference. The implicit rewards are "
                     "beta times each log-ratio: chosen 0.1 * (-12 + 13) = +0.1, rejected "
                     "0.1 * (-15 + 14) = -0.1; their difference is beta h."),
        why_not={
            "a": ("That is -log sigmoid(h) with h = 2: the margin is scaled by beta before the "
                  "sigmoid."),
            "b": ("That uses the policy's margin alone (3, times beta): DPO subtracts the "
                  "reference's margin, which favoured the chosen response too."),
            "d": ("That is -log sigmoid(-0.2): check the sign. The policy favours the chosen "
                  "response more than the reference does, so the loss is below ln 2."),
        },
    ),
    "q6.5": Key(
        answer="b",
        explanation=("DPO is offline: its data is a fixed set of comparisons between SFT answers. "
                     "That makes it cheap and stable, and it cannot hack a reward model it does "
                     "not have. But it can only learn what the pairs say: an answer better than "
                     "any SFT sample, or a mistake no pair shows, is out of its reach. PPO samples "
                     "its own answers and can find better ones where the reward model is right "
                     "(and worse ones where it is wrong). Online or iterated DPO collects new "
                     "pairs from the current policy to get some of both."),
        why_not={
            "a": ("The DPO loss is a maximum-likelihood fit to a fixed set of comparisons, well "
                  "defined on pairs from any policy: fresh pairs can help, but nothing is biased "
                  "without them."),
            "c": ("The loss depends on the margin between the two log-ratios: its gradient "
                  "raises the chosen log-prob and lowers the rejected one."),
            "d": ("DPO needs only which response was preferred: its implicit reward, beta * "
                  "log(pi / pi_ref), takes the place of a reward model's score."),
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
                     "and this world's judge is less noisy than its people: it samples each "
                     "label at a temperature of 0.25 against their 0.5, so it picks the answer "
                     "it prefers more reliably (the same pair can still come out either way). "
                     "But it is a model with failure modes: here it cannot check arithmetic, "
                     "misses stereotypes in jokes and likes apologetic answers. Whatever the "
                     "labeler gets wrong, the reward model learns and the policy exploits, "
                     "exactly as with human biases; only the biases differ."),
        why_not={
            "a": ("An AI judge is a model, with errors and preferences of its own; its reward "
                  "model is a proxy, as one trained on human labels is."),
            "c": ("An AI judge can be asked which of two answers is better: that is a comparison, "
                  "and its labels train a reward model as human ones do."),
            "d": ("A judge with a lower noise temperature is the more consistent labeler: its "
                  "labels agree with its own preference more often than people's do. Its "
                  "weakness is systematic error: blind spots repeated on every pair of a kind."),
        },
    ),
    "q7.3": Key(
        answer="b",
        explanation=("What matters is whether the weights change. SFT (instruction alignment), "
                     "then RLHF or DPO (preference alignment), train the model: the cost is paid "
                     "once, and each later answer costs one sample. Best-of-N and prompting (a "
                     "system prompt, examples in the context) leave the weights alone and act on "
                     "each query: best-of-N pays N samples and N reward-model calls per answer, a "
                     "prompt its extra tokens. That best-of-N uses a trained reward model does "
                     "not make it training: the policy it draws from is unchanged."),
        why_not={
            "a": ("RLHF changes the policy's weights with gradient steps; that it consults a "
                  "reward model does not make it an inference-time method. And DPO does not "
                  "imitate: it learns from comparisons."),
            "c": ("Best-of-N's reward model is trained, but the policy is not: its weights stay "
                  "those of the SFT model, and the extra work happens at every query."),
            "d": ("SFT is a training stage after pretraining, on demonstrations of the "
                  "assistant's behaviour: it is the first step of alignment (instruction "
                  "alignment), not part of pretraining."),
        },
    ),
    "q7.4": Key(
        answer="d",
        explanation=("DPO fits the policy to the preference pairs with a classifier's loop: no "
                     "reward model, no sampling during training, two models in memory and one "
                     "main knob (beta, checked on held-out prompts). The trained chatbot answers "
                     "with one sample. Best-of-N pays N samples per answer; PPO is the RL loop "
                     "they cannot tune, and a weak KL penalty invites over-optimisation; SFT on "
                     "the chosen answers throws away what the comparisons say."),
        why_not={
            "a": ("Best-of-16 pays 16 samples and 16 reward-model calls for every answer, for "
                  "ever: the serving budget rules it out."),
            "b": ("PPO is the RL loop they cannot afford to tune (four models, a dozen knobs), "
                  "and a weak KL penalty invites the policy to exploit the reward model's blind "
                  "spots."),
            "c": ("Imitating the chosen answers throws away the comparison: a chosen answer is "
                  "only the better of two SFT samples, often flawed too, and nothing pushes the "
                  "policy away from the rejected one."),
        },
    ),
    "q7.5": Key(
        answer="b",
        explanation=("Compare gold differences with the noise: 0.80 - 0.70 = 0.10 is five times "
                     "the 0.02 by which one policy's gold moves from one evaluation to the next, "
                     "so PPO with beta = 0.05 really is ahead of best-of-16 (for 0.3 nats more "
                     "KL). The beta = 0.02 run shows over-optimisation: its gold rose to 0.76 at "
                     "2.5 nats, then fell by 0.12, six times the spread, to 0.64 at 3.1 nats, "
                     "while its proxy kept rising. Distance from SFT is a cost, not a score: the "
                     "gold reward is the score."),
        why_not={
            "a": ("KL from SFT measures how far a policy moved, not whether the move was good: "
                  "compare the gold rewards, and what happened to this run's gold as it moved."),
            "c": ("Work out the gaps: compare 0.80 - 0.70 with the 0.02 by which one policy's "
                  "gold moves between evaluations."),
            "d": ("Equal KL matters when asking which method spends a budget of divergence "
                  "better; the gold rewards themselves are measured on the same prompts, and a "
                  "gap five times the noise is real."),
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
