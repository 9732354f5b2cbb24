"""Graded checks of chapter 1: counting pairs and merging them, the two steps of BPE training.

Each `_wrong_*` function is a mistake students make, computed here so that a wrong answer can be
recognised and named.
"""

from __future__ import annotations

from minialign import tokenizer as ref
from minialign.course.checks import exercise

# ==============================================================================================
# get_pair_counts


def _wrong_counts_once(ids, counts=None, weight=1):
    """Each distinct pair counted once (a set of pairs)."""
    out = dict(counts or {})
    for pair in set(zip(ids, ids[1:])):
        out[pair] = out.get(pair, 0) + weight
    return out


def _wrong_counts_step_two(ids, counts=None, weight=1):
    """Stepping two tokens at a time: only the pairs that start at even positions."""
    out = dict(counts or {})
    for i in range(0, len(ids) - 1, 2):
        pair = (ids[i], ids[i + 1])
        out[pair] = out.get(pair, 0) + weight
    return out


def _wrong_counts_last_missing(ids, counts=None, weight=1):
    """The loop stops one pair early."""
    return ref.get_pair_counts(ids[:-1], dict(counts or {}), weight)


def _count_mistakes(ids, counts=None, weight=1):
    mistakes = {
        "each distinct pair is counted once: add `weight` every time the pair occurs":
            lambda: _wrong_counts_once(ids, counts, weight),
        "every position starts a pair: step through ids one token at a time (pairs overlap: "
        "[5, 5, 5] holds (5, 5) twice)": lambda: _wrong_counts_step_two(ids, counts, weight),
        "the last pair is missing: the pairs are zip(ids, ids[1:]), up to the last token":
            lambda: _wrong_counts_last_missing(ids, counts, weight),
    }
    if weight != 1:
        mistakes["`weight` is ignored: each occurrence adds `weight`, not 1"] = \
            lambda: ref.get_pair_counts(ids, dict(counts or {}))
    if counts:
        mistakes["the counts passed in are lost: add into `counts` instead of a new dict"] = \
            lambda: ref.get_pair_counts(ids, None, weight)
    return mistakes


@exercise("ch01.get_pair_counts")
def check_get_pair_counts(t):
    for name, ids in [("the docstring's example [1, 2, 1, 2]", [1, 2, 1, 2]),
                      ("a run of one token: [5, 5, 5] holds (5, 5) twice", [5, 5, 5]),
                      ("forty random ids", t.randint(5, (40,)).tolist())]:
        with t.case(name):
            t.expect_equal(t.call(ids), ref.get_pair_counts(ids), mistakes=_count_mistakes(ids))
    with t.case("too short for a pair: [] and [7]"):
        t.expect_equal(t.call([]), {})
        t.expect_equal(t.call([7]), {})
    with t.case("adding into a given dict with weight=4, as Tokenizer.train does"):
        ids, counts = [1, 2, 3, 1, 2], {(1, 2): 3, (8, 8): 1}
        result = t.fn.run((ids, dict(counts)), {"weight": 4}, return_args=True)
        expected = ref.get_pair_counts(ids, dict(counts), 4)
        t.expect_equal(result.value, expected, mistakes=_count_mistakes(ids, counts, 4))
        t.expect_equal(result.args[1], expected, what="the dict passed as `counts`, after the call,",
                       hint="update `counts` itself and return it: Tokenizer.train passes one "
                            "dict for the whole corpus and does not use the return value")
    with t.case("an EMPTY dict passed as `counts` is filled in (Tokenizer.train starts from {})"):
        ids = [3, 1, 3, 1]
        result = t.fn.run((ids, {}), return_args=True)
        expected = ref.get_pair_counts(ids, {})
        t.expect_equal(result.value, expected, mistakes=_count_mistakes(ids, {}))
        t.expect_equal(result.args[1], expected, what="the empty dict passed as `counts`, after "
                       "the call,",
                       hint="an empty dict is falsy, so `counts = counts or {}` replaces the "
                            "caller's dict by a new one: test `if counts is None`, so that the "
                            "dict passed in is the one filled")


# ==============================================================================================
# merge


def _wrong_merge_no_skip(ids, pair, new_id):
    """After a match, the second token of the pair is looked at again."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == tuple(pair):
            out.append(new_id)
        else:
            out.append(ids[i])
        i += 1
    return out


def _wrong_merge_last_dropped(ids, pair, new_id):
    """The loop runs over pairs only, so an unmatched last token is lost."""
    out, i = [], 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == tuple(pair):
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _wrong_merge_first_only(ids, pair, new_id):
    for i in range(len(ids) - 1):
        if (ids[i], ids[i + 1]) == tuple(pair):
            return ids[:i] + [new_id] + ids[i + 2:]
    return list(ids)


def _merge_mistakes(ids, pair, new_id):
    return {
        "after replacing a pair, skip both of its tokens (i += 2): occurrences must not "
        "overlap, so [1, 1, 1, 2] with (1, 1) gives [9, 1, 2]":
            lambda: _wrong_merge_no_skip(ids, pair, new_id),
        "the last token is lost: when no pair starts at the last position, that token must "
        "still be copied": lambda: _wrong_merge_last_dropped(ids, pair, new_id),
        "only the first occurrence was replaced: replace every occurrence, left to right":
            lambda: _wrong_merge_first_only(ids, pair, new_id),
    }


@exercise("ch01.merge")
def check_merge(t):
    cases = [
        ("the docstring's example: merge([1, 1, 1, 2], (1, 1), 9)", [1, 1, 1, 2], (1, 1), 9),
        ("two separate occurrences", [1, 2, 3, 1, 2], (1, 2), 7),
        ("the pair at the very end", [3, 3, 1, 2], (1, 2), 7),
        ("a pair that does not occur: a copy of ids", [1, 3, 2, 1], (1, 2), 7),
        ("a run of four: [4, 4, 4, 4] with (4, 4)", [4, 4, 4, 4], (4, 4), 5),
        ("an empty list", [], (1, 2), 7),
        ("thirty random ids", t.randint(3, (30,)).tolist(), (0, 1), 99),
    ]
    for name, ids, pair, new_id in cases:
        with t.case(name):
            result = t.fn.run((list(ids), pair, new_id), return_args=True)
            t.expect_equal(result.value, ref.merge(ids, pair, new_id),
                           mistakes=_merge_mistakes(ids, pair, new_id))
            t.expect_equal(result.args[0], ids, what="`ids` after the call",
                           hint="merge returns a new list and leaves `ids` as it was (the "
                                "tokenizer still reads the old list)")
