"""Deliberately broken variants of the solutions: every one must be caught by the grader.

A `Mutant` is a realistic mistake in one exercise: an exact snippet of the generated solution
file (`solutions/chNN_<topic>.py`), what replaces it, and optionally a piece of the hint the
grader should give. `tests/test_grader_mutants.py` applies each mutant to a copy of the
solutions, grades it, and requires that exercise to fail (with that hint, when given). A
snippet that is not found exactly once fails the test: update the mutant when the library
changes. Add at least two mutants per exercise; copy the snippet from the solutions file.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    exercise: str  # "ch01.merge"
    description: str  # the mistake, as a student would make it
    find: str  # exact text of solutions/chNN_<topic>.py (occurs exactly once)
    replace: str
    hint: str = ""  # a piece of the expected hint ("" accepts any failure)


MUTANTS = [
    # ---- chapter 1 --------------------------------------------------------------------------
    Mutant("ch01.get_pair_counts", "counts each distinct pair once (a set)",
           "    for pair in zip(ids, ids[1:]):",
           "    for pair in set(zip(ids, ids[1:])):",
           hint="counted once"),
    Mutant("ch01.get_pair_counts", "adds 1 instead of weight",
           "counts[pair] = counts.get(pair, 0) + weight",
           "counts[pair] = counts.get(pair, 0) + 1",
           hint="`weight` is ignored"),
    Mutant("ch01.get_pair_counts", "always starts a new dict",
           "    counts = {} if counts is None else counts",
           "    counts = {}",
           hint="counts passed in are lost"),
    Mutant("ch01.get_pair_counts", "the loop stops one pair early",
           "    for pair in zip(ids, ids[1:]):",
           "    for pair in zip(ids[:-1], ids[1:-1]):",
           hint="last pair is missing"),
    Mutant("ch01.merge", "does not skip the second token of a merged pair",
           "            i += 2",
           "            i += 1",
           hint="skip both of its tokens"),
    Mutant("ch01.merge", "the loop runs over pairs only and loses the last token",
           "    while i < len(ids):",
           "    while i < len(ids) - 1:",
           hint="last token is lost"),
    # ---- chapter 2 --------------------------------------------------------------------------
    Mutant("ch02.causal_self_attention", "no causal mask",
           '    att = att.masked_fill(~allowed, float("-inf"))\n',
           "",
           hint="causal mask is missing"),
    Mutant("ch02.causal_self_attention", "queries placed at the first Tq positions (KV cache)",
           "q_pos = torch.arange(Tk - Tq, Tk, device=q.device).view(Tq, 1)",
           "q_pos = torch.arange(Tq, device=q.device).view(Tq, 1)",
           hint="LAST Tq positions"),
    Mutant("ch02.causal_self_attention", "scores not scaled by sqrt(hs)",
           "(q @ k.transpose(-2, -1)) / math.sqrt(hs)",
           "(q @ k.transpose(-2, -1))",
           hint="not scaled"),
    Mutant("ch02.causal_self_attention", "key_padding_mask read the wrong way round",
           "real_key = key_padding_mask.view(-1, 1, 1, Tk)",
           "real_key = ~key_padding_mask.view(-1, 1, 1, Tk)",
           hint="masks the real tokens"),
    Mutant("ch02.causal_self_attention", "padding queries attend to nothing (nan)",
           "allowed = allowed & (real_key | (k_pos == q_pos))",
           "allowed = allowed & real_key",
           hint="attend to itself"),
    Mutant("ch02.filter_logits", "top-p removes the token that crosses top_p",
           "remove_sorted = mass_above >= top_p",
           "remove_sorted = torch.cumsum(probs, dim=-1) >= top_p",
           hint="crosses top_p"),
    Mutant("ch02.filter_logits", "top-p mask not scattered back to vocabulary order",
           "remove = remove_sorted.scatter(-1, order, remove_sorted)",
           "remove = remove_sorted",
           hint="sorted order"),
    Mutant("ch02.filter_logits", "top-k removes the k-th largest too",
           "logits.masked_fill(logits < kth,",
           "logits.masked_fill(logits <= kth,",
           hint="one token too few"),
    Mutant("ch02.filter_logits", "top-k filters the caller's logits in place",
           "logits = logits.masked_fill(logits < kth,",
           "logits = logits.masked_fill_(logits < kth,",
           hint="in place"),
    Mutant("ch02.gather_logprobs", "probabilities instead of log-probabilities",
           "logps = F.log_softmax(logits.float(), dim=-1)",
           "logps = F.softmax(logits.float(), dim=-1)",
           hint="probabilities, not log-probabilities"),
    Mutant("ch02.gather_logprobs", "log of softmax (underflows)",
           "logps = F.log_softmax(logits.float(), dim=-1)",
           "logps = torch.log(F.softmax(logits.float(), dim=-1))",
           hint="underflows"),
    Mutant("ch02.gather_logprobs", "forgot to squeeze the gathered dimension",
           "index=tokens.unsqueeze(-1)).squeeze(-1)",
           "index=tokens.unsqueeze(-1))",
           hint="squeeze the last dimension"),
    # ---- chapter 6 --------------------------------------------------------------------------
    Mutant("ch06.sequence_logprobs", "mean over the padded length instead of a sum",
           "return (logps * mask.to(logps.dtype)).sum(dim=-1)",
           "return (logps * mask.to(logps.dtype)).mean(dim=-1)",
           hint="padded length"),
    Mutant("ch06.sequence_logprobs", "mean over the response tokens instead of a sum",
           "return (logps * mask.to(logps.dtype)).sum(dim=-1)",
           "return (logps * mask.to(logps.dtype)).sum(dim=-1) / mask.sum(dim=-1).clamp(min=1)",
           hint="mean instead of a sum"),
    Mutant("ch06.sequence_logprobs", "mask ignored",
           "return (logps * mask.to(logps.dtype)).sum(dim=-1)",
           "return logps.sum(dim=-1)",
           hint="mask is ignored"),
    Mutant("ch06.sequence_logprobs", "shifted again although the caller aligned the tokens",
           "    logps = gather_logprobs(logits, tokens)  # (B, T)\n"
           "    return (logps * mask.to(logps.dtype)).sum(dim=-1)",
           "    logps = gather_logprobs(logits[:, :-1], tokens[:, 1:])  # (B, T - 1)\n"
           "    return (logps * mask[:, 1:].to(logps.dtype)).sum(dim=-1)",
           hint="off-by-one"),
]
