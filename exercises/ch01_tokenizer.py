"""Chapter 1 · Tokenization: byte-level BPE — exercises.

Version 3 of the minialign exercise set.

Write the body of each function below that raises NotImplementedError (keep its
signature), then answer the concept questions in ANSWERS at the end of the file.

    ch01.get_pair_counts  difficulty ★☆☆  about 10 min
    ch01.merge            difficulty ★☆☆  about 15 min

Check your work:
    python -m minialign.grade --impl exercises --chapter 1
or, in a notebook:  from minialign.course import check; check(1)

Then train with your own code (what you have not written yet comes from the library):
    python -m minialign pretrain --impl exercises

Library code: minialign/tokenizer.py.
The answers: the library holds the complete code of every exercise, right under its docstring,
and so does solutions/. Try first; read them after, to compare.

Generated from the library by `python -m minialign.course build`. This file is yours: edit it.
"""

from __future__ import annotations


def get_pair_counts(ids, counts=None, weight=1):
    """Count adjacent pairs in a list of token ids.

    ids: list[int]. Returns a dict {(a, b): count}; when `counts` is given, adds into it (with
    each pair counted `weight` times, the number of times this chunk occurs in the corpus).
    Example: [1, 2, 1, 2] -> {(1, 2): 2, (2, 1): 1}.
    """
    # exercise ch01.get_pair_counts · difficulty ★☆☆ · about 10 minutes
    raise NotImplementedError("exercise ch01.get_pair_counts: write this body")


def merge(ids, pair, new_id):
    """Replace every occurrence of `pair` in ids (left to right, non-overlapping) by new_id.

    ids: list[int]; pair: (a, b); returns a new list.
    Example: merge([1, 1, 1, 2], (1, 1), 9) -> [9, 1, 2]  (not [9, 9, 2]: occurrences overlap).
    """
    # exercise ch01.merge · difficulty ★☆☆ · about 15 minutes
    raise NotImplementedError("exercise ch01.merge: write this body")


# ==============================================================================================
# Concept questions
#
# Answer in ANSWERS below: one letter for a choice question ("b"), the letters in order
# for an ordering question (["c", "a", "b"]). Grading says whether each answer is right:
# a right one is explained; a wrong one is told why the option chosen is wrong.
#
# q1.1  Why can a byte-level BPE tokenizer encode any string and decode it back exactly, even
#       text it never saw in training (an emoji, Chinese, a typo)?
#         a) Its vocabulary contains every word of the training corpus, and rare words are
#            spelled out letter by letter.
#         b) Unknown characters become an <|unk|> token, which remembers the original character
#            for decoding.
#         c) Its 256 base tokens are the byte values: any string is a sequence of UTF-8 bytes,
#            merges only join tokens, and decoding concatenates their bytes.
#         d) It is trained on every Unicode character before it is trained on the corpus.
#
# q1.2  Put one step of BPE training in order (the step is then repeated until the vocabulary
#       has the size asked for).
#         a) Replace every occurrence of that pair, left to right, by the new token.
#         b) Split the text into chunks and encode each chunk as UTF-8 bytes (done once).
#         c) Pick the most frequent pair and give it the next free token id.
#         d) Count how often each adjacent pair of tokens occurs (weighted by how often each
#            chunk occurs).
#
# q1.3  A user types the text '<|end|>' in their prompt. Why does this not end the user's turn
#       in the chat template?
#         a) encode() treats special-token strings as ordinary text: the user's '<|end|>'
#            becomes byte/merge tokens, never the special <|end|> id, which only the template
#            code inserts.
#         b) The tokenizer deletes angle brackets before encoding.
#         c) The model was trained to ignore <|end|> inside a user turn.
#         d) Special tokens are longer than the context window.

ANSWERS = {
    "q1.1": None,  # one letter: a, b, c or d
    "q1.2": None,  # the letters a-d in order, as a list
    "q1.3": None,  # one letter: a, b, c or d
}
