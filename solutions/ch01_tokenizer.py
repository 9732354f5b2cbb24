"""Chapter 1 · Tokenization: byte-level BPE — solutions.

Version 3 of the minialign exercise set.

The complete code of every exercise of the chapter and the answers to its questions.

    ch01.get_pair_counts  difficulty ★☆☆  about 10 min
    ch01.merge            difficulty ★☆☆  about 15 min

Check your work:
    python -m minialign.grade --impl solutions --chapter 1

Library code: minialign/tokenizer.py.

Generated from the library by `python -m minialign.course build`.
"""

from __future__ import annotations


def get_pair_counts(ids, counts=None, weight=1):
    """Count adjacent pairs in a list of token ids.

    ids: list[int]. Returns a dict {(a, b): count}; when `counts` is given, adds into it (with
    each pair counted `weight` times, the number of times this chunk occurs in the corpus).
    Example: [1, 2, 1, 2] -> {(1, 2): 2, (2, 1): 1}.
    """
    # exercise ch01.get_pair_counts · difficulty ★☆☆ · about 10 minutes
    counts = {} if counts is None else counts
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + weight
    return counts


def merge(ids, pair, new_id):
    """Replace every occurrence of `pair` in ids (left to right, non-overlapping) by new_id.

    ids: list[int]; pair: (a, b); returns a new list.
    Example: merge([1, 1, 1, 2], (1, 1), 9) -> [9, 1, 2]  (not [9, 9, 2]: occurrences overlap).
    """
    # exercise ch01.merge · difficulty ★☆☆ · about 15 minutes
    out = []
    i = 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


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
    "q1.1": "c",  # one letter: a, b, c or d
    "q1.2": ["b", "d", "c", "a"],  # the letters a-d in order, as a list
    "q1.3": "a",  # one letter: a, b, c or d
}
