"""Chapter 1 · Tokenization: byte-level BPE — solutions.

Version 4 of the minialign exercise set.

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
#         a) Its vocabulary holds every word of the training corpus; a word it never saw is
#            spelled out letter by letter, from letters that the corpus contained.
#         b) Characters it does not know become an <|unk|> token, and the tokenizer keeps the
#            original character beside it so that decoding can put it back.
#         c) Every string is a sequence of UTF-8 bytes, each of the 256 byte values is a base
#            token, and decoding joins the tokens' bytes.
#         d) It is first trained on a list of every Unicode character, so that no character can
#            be missing from its vocabulary.
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
#         a) encode() reads the typed '<|end|>' as plain text: it becomes ordinary byte and
#            merge tokens, never the special id, which only the template code inserts.
#         b) The tokenizer strips angle brackets and other markup from the user's text before
#            encoding, so what reaches the model is the plain word 'end'.
#         c) During SFT the model saw user turns that contained '<|end|>', and it learned to
#            ignore the token whenever it appears inside a user turn.
#         d) Special tokens are recognised only where the chat template expects a turn to end,
#            and a user's text never sits at one of those positions.
#
# q1.4  A BPE trainer has split its text into these chunks, with how often each occurs: 'pun' 12
#       times, 'bun' 4, 'hug' 3, 'pug' 2, 'hugs' 1. Which pair does it merge first?
#         a) 'p' + 'u' -> 'pu': 14 occurrences (12 in 'pun', 2 in 'pug').
#         b) 'u' + 'g' -> 'ug': it occurs in three different chunks, more than any other pair
#            does.
#         c) 'pun' as a whole: the most frequent chunk becomes a token first.
#         d) 'u' + 'n' -> 'un': 16 occurrences (12 in 'pun', 4 in 'bun').
#
# q1.5  Before counting pairs, the tokenizer splits the text into word-like chunks (' the', '
#       cat', '.', ...) and never merges across two chunks. What does this buy?
#         a) Exact decoding: without the chunks, merges that cross a word boundary could make
#            decode() return text that differs from what went into encode().
#         b) Faster generation: the model predicts one chunk per step instead of one token, so
#            answers come out in fewer steps.
#         c) Tokens stay within word-like pieces: merges build reusable units like ' cat', never
#            spans like 't. t' across a word's end.
#         d) Safety: a typed '<|end|>' falls into separate chunks ('<|', 'end', '|>'), so it can
#            never become the special token.

ANSWERS = {
    "q1.1": "c",  # one letter: a, b, c or d
    "q1.2": ["b", "d", "c", "a"],  # the letters a-d in order, as a list
    "q1.3": "a",  # one letter: a, b, c or d
    "q1.4": "d",  # one letter: a, b, c or d
    "q1.5": "c",  # one letter: a, b, c or d
}
