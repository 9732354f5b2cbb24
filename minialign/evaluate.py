"""Evaluation against the truth: gold reward, task success, win rates and KL to a reference.

Because the world's gold reward is known, every policy can be scored the way a real lab only
wishes it could: sample responses to held-out prompts, score each with the gold reward, and
report
    gold_reward_mean   mean gold reward (at most 1)
    task_success_rate  right answer / right behaviour (see world.gold_breakdown "success")
    end_rate           fraction of responses that emitted <|end|>
    per_family         the same per task family
    win_rate           P(gold of A's response > gold of B's on the same prompt), ties half
                       (win_rate_se, standard_error: the standard errors of these means)
    kl_to_ref          KL(policy || reference) in nats per response, estimated from samples

Responses are sampled from the policy's own distribution at temperature TEMPERATURE (0.6)
everywhere: in evaluation, in the reward model's candidates, in PPO's rollouts (whose log-probs
use the same temperature) and in best-of-N. A model of 1.5 million parameters spreads a little
probability over wrong tokens at every step; at temperature 1 those slips add up over a
response, at 0.6 they mostly vanish. KLs are measured between the tempered distributions.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections import OrderedDict

import torch

from . import world as world_lib
from .model import GPT, logprobs_of_responses
from .tokenizer import Tokenizer
from .utils import left_pad

TEMPERATURE = 0.6  # the sampling temperature of every policy, in every stage
FAST_EVAL_PROMPTS = 64  # held-out prompts the fast configs evaluate on (eval_tasks)


# ==============================================================================================
# sampling responses in batches


@torch.no_grad()
def sample_responses(model: GPT, tokenizer: Tokenizer, prompts: list[str], max_new_tokens=48,
                     temperature=TEMPERATURE, generator=None, batch_size=64, top_k=None,
                     top_p=None):
    """Sample one response per prompt. Returns a list of dicts: text, ended, response_ids."""
    device = model.lm_head.weight.device
    out = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start: start + batch_size]
        ids, mask = left_pad([tokenizer.encode_prompt(p) for p in chunk], tokenizer.pad_id)
        new = min(max_new_tokens, model.config.block_size - ids.size(1))
        seqs = model.generate(ids.to(device), new, temperature=temperature, top_k=top_k,
                              top_p=top_p, eos_id=tokenizer.end_id, generator=generator,
                              padding_mask=mask.to(device))
        for row in seqs[:, ids.size(1):].tolist():
            if tokenizer.end_id in row:
                row = row[: row.index(tokenizer.end_id) + 1]  # keep <|end|>, drop the filler
            text, ended = tokenizer.decode_response(row)
            out.append({"text": text, "ended": ended, "response_ids": row})
    return out


@torch.no_grad()
def sample_continuations(model: GPT, tokenizer: Tokenizer, texts: list[str], max_new_tokens=48,
                         temperature=TEMPERATURE, generator=None) -> list[str]:
    """Sample one continuation of each plain text, no chat template: how the pretrained model
    goes on with a web document. A continuation stops at the end of its document
    (<|endoftext|>, not included). Returns the continuations' texts, in the order of `texts`."""
    device = model.lm_head.weight.device
    ids, mask = left_pad([tokenizer.encode(t) for t in texts], tokenizer.pad_id)  # (B, T) each
    new = min(max_new_tokens, model.config.block_size - ids.size(1))
    seqs = model.generate(ids.to(device), new, temperature=temperature, generator=generator,
                          eos_id=tokenizer.eot_id, padding_mask=mask.to(device))  # (B, T + new)
    out = []
    for row in seqs[:, ids.size(1):].tolist():
        if tokenizer.eot_id in row:
            row = row[: row.index(tokenizer.eot_id)]  # the document ends there
        out.append(tokenizer.decode(row))
    return out


# ==============================================================================================
# gold evaluation


def gold_breakdowns(tasks, responses) -> list[dict]:
    """Gold breakdown (world.gold_breakdown) of each (task, response dict) pair."""
    return [world_lib.gold_breakdown(t, r["text"], r["ended"]) for t, r in zip(tasks, responses)]


def summarize(tasks, scores) -> dict:
    """Means overall and per family from per-response gold breakdowns."""
    def mean(xs):
        return sum(xs) / len(xs) if xs else float("nan")

    per_family = {}
    for family in world_lib.FAMILIES:
        fam = [s for t, s in zip(tasks, scores) if t.family == family]
        if fam:
            per_family[family] = {"gold": mean([s["total"] for s in fam]),
                                  "success": mean([float(s["success"]) for s in fam]),
                                  "n": len(fam)}
    return {"gold_reward_mean": mean([s["total"] for s in scores]),
            "task_success_rate": mean([float(s["success"]) for s in scores]),
            "end_rate": mean([float(s["ended"]) for s in scores]),
            "per_family": per_family}


# The same weights, prompts and seed give the same answers, so an evaluation is kept and handed
# back (as a copy) when asked for again in this process: PPO, GRPO and DPO each evaluate the SFT
# model on the held-out prompts with the same seed, and the sweep retrains PPO from it many
# times, evaluating each run several times in between. course.impl.use() forgets them, since a
# learner's functions may sample differently.
KEEP_EVALUATIONS = 8  # the most recently used evaluations kept (a few hundred kB each)
_kept: OrderedDict = OrderedDict()


def forget_evaluations() -> None:
    """Drop the kept evaluations (after the functions the model calls have been swapped)."""
    _kept.clear()


def _vocabulary(tokenizer: Tokenizer) -> tuple:
    """What decides how ids become text: the tokens' bytes and the special tokens."""
    return tuple(tokenizer.vocab.values()), tuple(tokenizer.special.items())


def weights_digest(model: torch.nn.Module) -> str:
    """A fingerprint of a model's weights and buffers (every tensor's bytes): a copy or a reload
    of the same weights has the same one; one training step changes it."""
    h = hashlib.blake2b(digest_size=16)
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def evaluate_policy(model: GPT, tokenizer: Tokenizer, tasks, n_samples=1, max_new_tokens=48,
                    seed=0, temperature=TEMPERATURE, top_k=None, top_p=None) -> dict:
    """Sample n_samples responses per task and score them with the gold reward.

    Returns the summary (gold_reward_mean, task_success_rate, end_rate, per_family) plus the
    per-response lists `tasks`, `responses`, `gold` (in the same order, for win rates). The same
    weights asked again with the same arguments get a copy of the kept evaluation (above).
    """
    if not tasks:
        raise ValueError("no tasks to evaluate on")
    key = (weights_digest(model), str(model.lm_head.weight.device), tuple(tasks), n_samples,
           max_new_tokens, seed, temperature, top_k, top_p, _vocabulary(tokenizer))
    if key in _kept:  # these weights were evaluated so already: the same answers again
        _kept.move_to_end(key)  # (now the most recently used)
        return copy.deepcopy(_kept[key])
    g = torch.Generator().manual_seed(seed)
    flat = [t for t in tasks for _ in range(n_samples)]
    responses = sample_responses(model, tokenizer, [t.prompt for t in flat], max_new_tokens,
                                 temperature, g, top_k=top_k, top_p=top_p)
    scores = gold_breakdowns(flat, responses)
    result = summarize(flat, scores)
    result.update(tasks=flat, responses=responses, gold=[s["total"] for s in scores],
                  breakdown=scores)
    _kept[key] = copy.deepcopy(result)  # (a copy: callers add to their result)
    while len(_kept) > KEEP_EVALUATIONS:
        _kept.popitem(last=False)  # the least recently used goes
    return result


def eval_tasks(n_prompts: int = 0, world=None) -> list:
    """The held-out tasks every stage evaluates on: all 270 (n_prompts 0), or about n_prompts of
    them, each family keeping its share (at least one task), taken evenly spread over the
    family's list. The fast configs use a subset: their models are too small for the numbers
    to mean anything, and sampling 270 answers dominated their run time."""
    world = world or world_lib.default_world()
    tasks = world.tasks("eval")
    if n_prompts < 0:
        raise ValueError(f"n_prompts must be >= 0 (0: all), got {n_prompts}")
    if not n_prompts or n_prompts >= len(tasks):
        return tasks
    out = []
    for family in world_lib.FAMILIES:
        fam = [t for t in tasks if t.family == family]
        k = max(1, round(n_prompts * len(fam) / len(tasks)))
        out += [fam[i * len(fam) // k] for i in range(k)]
    return out


# ==============================================================================================
# stereotype jokes: the harm the web teaches


def stereotype_jokes(tasks, texts) -> list[bool]:
    """For each humor task and a text written for it, whether the gold reward counts it as a
    stereotype joke: world.gold_breakdown's `harmless` is -1, which for humor means that the
    text matches world.STEREOTYPE_PATTERN ("all chefs are ...", "pirates are always ...")
    anywhere, whichever subject it is about."""
    tasks, texts = list(tasks), list(texts)
    if len(tasks) != len(texts):
        raise ValueError(f"{len(tasks)} tasks for {len(texts)} texts")
    if any(t.family != "humor" for t in tasks):
        raise ValueError("stereotype_jokes reads answers to humor prompts only")
    return [world_lib.gold_breakdown(t, text)["harmless"] < 0 for t, text in zip(tasks, texts)]


def stereotype_rate(tasks, texts) -> float:
    """The fraction of the texts (one per humor task) that are stereotype jokes by the gold
    reward's check (stereotype_jokes)."""
    flags = stereotype_jokes(tasks, texts)
    if not flags:
        raise ValueError("no texts to check")
    return sum(flags) / len(flags)


def sampled_stereotype_rate(model: GPT, tokenizer: Tokenizer, tasks, opening: str | None = None,
                            temperature=TEMPERATURE, seed=0, max_new_tokens=48) -> float:
    """The fraction of stereotype jokes among one sample per humor task. opening None: the
    model answers the task's prompt in the chat template (sample_responses); otherwise it
    continues the web-style text opening.format(subject=task.key), such as
    "here is a story about a {subject}." (sample_continuations)."""
    g = torch.Generator().manual_seed(seed)
    if opening is None:
        texts = [r["text"] for r in sample_responses(model, tokenizer, [t.prompt for t in tasks],
                                                     max_new_tokens, temperature, g)]
    else:
        openings = [opening.format(subject=t.key) for t in tasks]
        texts = sample_continuations(model, tokenizer, openings, max_new_tokens, temperature, g)
    return stereotype_rate(tasks, texts)


def web_stereotype_rate(docs: list[str], tasks, opening: str) -> tuple[float, int]:
    """How often the web itself tells the stereotype: among the documents that begin with
    opening.format(subject=...) for the subject of one of the humor tasks, the fraction that
    are stereotype jokes, and how many such documents there are (0 documents: rate nan)."""
    by_start = {opening.format(subject=t.key): t for t in tasks}
    found = [(by_start[start], d) for d in docs for start in by_start if d.startswith(start)]
    if not found:
        return float("nan"), 0
    return stereotype_rate([t for t, _ in found], [d for _, d in found]), len(found)


def win_rate(gold_a, gold_b) -> float:
    """Fraction of paired responses where A's gold reward beats B's; ties count half."""
    if len(gold_a) != len(gold_b) or not gold_a:
        raise ValueError(f"win_rate needs two equally long, non-empty lists "
                         f"({len(gold_a)} vs {len(gold_b)})")
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(gold_a, gold_b))
    return wins / len(gold_a)


def standard_error(values) -> float:
    """Standard error of the mean of `values`: sample std (n - 1) / sqrt(n); 0 for n < 2."""
    values = list(values)
    n = len(values)
    if n < 2:
        return 0.0
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def win_rate_se(gold_a, gold_b) -> float:
    """Standard error of `win_rate(gold_a, gold_b)`: that of the mean of the per-prompt
    outcomes 1 (win), 0.5 (tie), 0 (loss)."""
    return standard_error(win_outcomes(gold_a, gold_b))


def win_outcomes(gold_a, gold_b) -> list[float]:
    """1 where A's gold reward beats B's, 0.5 on a tie, 0 where it loses: win_rate is their mean."""
    win_rate(gold_a, gold_b)  # the same checks
    return [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(gold_a, gold_b)]


def per_prompt_means(values, tasks) -> list[float]:
    """The mean of `values` (one per response) over the responses to each prompt: the units
    whose spread gives the standard error (two answers to one prompt are not independent)."""
    groups = {}
    for v, t in zip(values, tasks):
        groups.setdefault(t.prompt, []).append(float(v))
    return [sum(g) / len(g) for g in groups.values()]


def error_bars(ev: dict, versus: dict | None = None, versus_name: str = "sft") -> dict:
    """The standard errors (keys ending in _se) of the means of an evaluation (evaluate_policy's
    result), over prompts: gold_reward_mean_se, task_success_rate_se, kl_to_ref_se where ev
    holds "kl_per_response", and, given `versus` (another policy's evaluation on the same
    prompts, in the same order), win_rate_vs_{versus_name}_se. A mean m with standard error s
    is reported as m ± s: about two times in three the truth lies within one s."""
    def se(values):
        return standard_error(per_prompt_means(values, ev["tasks"]))

    out = {"gold_reward_mean_se": se(ev["gold"]),
           "task_success_rate_se": se([float(b["success"]) for b in ev["breakdown"]])}
    if "kl_per_response" in ev:
        out["kl_to_ref_se"] = se(ev["kl_per_response"])
    if versus is not None:
        out[f"win_rate_vs_{versus_name}_se"] = se(win_outcomes(ev["gold"], versus["gold"]))
    return out


def side_by_side(tasks, evals: dict, per_family: int = 2) -> list[dict]:
    """A few prompts per family with each policy's first sampled response (for tables)."""
    first = {}
    for name, ev in evals.items():
        for t, r, s in zip(ev["tasks"], ev["responses"], ev["gold"]):
            first.setdefault((name, t.prompt), (r, s))
    rows = []
    for family in world_lib.FAMILIES:
        for t in [t for t in tasks if t.family == family][:per_family]:
            row = {"family": family, "prompt": t.prompt}
            for name in evals:
                r, s = first[(name, t.prompt)]
                row[name] = r["text"] + ("" if r["ended"] else " …[no end]")
                row[f"{name}_gold"] = round(s, 3)
            rows.append(row)
    return rows


# ==============================================================================================
# KL to a reference policy


@torch.no_grad()
def response_logprobs(model: GPT, tokenizer: Tokenizer, prompts: list[str],
                      response_ids: list[list[int]], temperature: float, batch_size=64):
    """Sum of log p(response tokens | prompt) under `model`, one float per response, in
    batches (`model.logprobs_of_responses`).

    temperature: the one the responses were sampled at (the logits are divided by it).
    Each distinct (prompt, response) is scored once, in batches of similar lengths: sixteen
    samples of one prompt repeat themselves (best-of-N), and a ranking of K answers makes
    K(K - 1)/2 pairs out of K answers (DPO), so most rows would otherwise be computed again.
    """
    device = model.lm_head.weight.device
    rows = {}  # (prompt, response) -> its row among the distinct ones
    which = [rows.setdefault((p, tuple(r)), len(rows)) for p, r in zip(prompts, response_ids)]
    seqs, lengths = [], []  # the distinct ones: prompt + response ids, response length
    for p, r in rows:
        seqs.append(tokenizer.encode_prompt(p) + list(r))
        lengths.append(len(r))
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))  # little padding per batch
    totals = [0.0] * len(seqs)
    for start in range(0, len(order), batch_size):
        idx = order[start: start + batch_size]
        ids, mask = left_pad([seqs[i] for i in idx], tokenizer.pad_id)  # (b, T) each
        resp_mask = torch.zeros_like(mask)
        for row, i in enumerate(idx):
            if lengths[i]:
                resp_mask[row, ids.size(1) - lengths[i]:] = True  # the last tokens: the response
        logps = logprobs_of_responses(model, ids.to(device), mask.to(device),
                                      resp_mask.to(device), temperature).tolist()  # (b,)
        for i, lp in zip(idx, logps):
            totals[i] = lp
    return [totals[j] for j in which]


def kl_to_reference(policy: GPT, ref: GPT, tokenizer: Tokenizer, prompts: list[str],
                    response_ids: list[list[int]], temperature: float):
    """KL(policy || ref) in nats per response, estimated on responses the policy sampled at
    `temperature` (both models scored at it): returns (the estimate, and for each response its
    log pi(y|x) - log pi_ref(y|x)). The one way every stage measures its distance to SFT."""
    policy_logps = response_logprobs(policy, tokenizer, prompts, response_ids, temperature)
    ref_logps = response_logprobs(ref, tokenizer, prompts, response_ids, temperature)
    per_response = [p - r for p, r in zip(policy_logps, ref_logps)]
    return kl_from_samples(policy_logps, ref_logps), per_response


def kl_from_samples(policy_logps, ref_logps) -> float:
    """KL(policy || ref) per response from samples of the policy: mean of log pi - log pi_ref
    (the unbiased "k1" estimator; it can come out slightly negative by chance)."""
    if len(policy_logps) != len(ref_logps) or not policy_logps:
        raise ValueError("need two equally long, non-empty lists of log-probs")
    return sum(p - r for p, r in zip(policy_logps, ref_logps)) / len(policy_logps)


def kl_best_of_n_bound(n: int) -> float:
    """Upper bound on KL(best-of-n || base): log n - (n - 1) / n (Stiennon et al. 2020)."""
    # >>> exercise: chapter=7 difficulty=1 minutes=5
    if n < 1:
        raise ValueError("n must be at least 1")
    return math.log(n) - (n - 1) / n
    # <<< exercise
