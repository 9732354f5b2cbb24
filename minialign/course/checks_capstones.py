"""Grading the capstones (see capstone.py): train with the student's functions in the sandbox,
measure the trained policy here, and say in words what went wrong.

    check_capstone(session, capstone, written)   -> the success message, or CheckFailed

The sandbox gets the starting policy's parameters and the names of the student's functions, and
runs `capstone.train_ppo` / `train_dpo` there (a `build` request, as the step checks build their
models); what comes back must be the policy's parameters, with the starting policy's names,
shapes and dtypes. Nothing else the student's code reports is used: the grader loads the
parameters into a model of its own, samples answers to the held-out prompts and scores them with
the world's gold reward, with the same random draws as for the starting policy. A run that
returns made-up numbers, or the parameters it was given, gains nothing.

The module's name keeps it out of the library copy the sandbox sees (`stublib.LEFT_OUT`).
"""

from __future__ import annotations

import copy
import math
import re
import threading

import torch

from . import capstone as cap
from .checks import CheckFailed, describe_type
from .fixtures import GLOBAL_RANDOM_STATE, one_thread
from .runner import NotAttempted, StudentProblem, StudentTimeout, Student
from .wire import Build

_START = {}  # the starting policy, its message for the sandbox and its gold evaluation
_START_LOCK = threading.Lock()


def start():
    """(model, tokenizer, message for the sandbox, gold evaluation): built once per process."""
    with _START_LOCK:
        if not _START:
            with one_thread(), GLOBAL_RANDOM_STATE:  # its initialisation draws from torch's
                model, tokenizer = cap.starting_policy()
            with one_thread():
                _START.update(model=model, tokenizer=tokenizer,
                              message=cap.start_message(model, tokenizer),
                              gold=cap.gold_of(model, tokenizer))
    return _START["model"], _START["tokenizer"], _START["message"], _START["gold"]


# ==============================================================================================
# the check


def check_capstone(session, capstone: cap.Capstone, written) -> str:
    """Train with the student's functions (`written`: the chapter's Exercises whose bodies are
    not the untouched stub) and measure. Returns a message with the numbers when the trained
    policy beats the starting one by the capstone's margin; raises CheckFailed otherwise, and
    lets a StudentProblem (an exception, a timeout) through, reworded for a training run."""
    model, tokenizer, message, start_eval = start()
    names = [[e.module, e.qualname] for e in written]
    run = Build(f"minialign.course.capstone:{capstone.run}", session.module_name, names,
                message, seed=0)
    try:
        state = Student(session).build(run, keep=False)
    except StudentTimeout as e:
        e.message = (f"your training did not finish within the time limit: {e.message}. "
                     f"With the library's functions this run takes about 15 s here; look for "
                     f"a Python loop over tokens or rows, or a loop that never ends")
        raise
    except NotAttempted as e:
        raise NotAttempted(_not_written(e.message, capstone)) from None
    except StudentProblem as e:
        e.message = f"while training with your functions: {e.message}"
        raise
    with one_thread():
        trained = _load(model, state)
        trained_eval = cap.gold_of(trained, tokenizer)
        before, after = start_eval["gold_reward_mean"], trained_eval["gold_reward_mean"]
        gain = after - before
        numbers = (f"mean gold reward on the held-out prompts: {before:.2f} for the starting "
                   f"policy, {after:.2f} for yours after training: {gain:+.2f}, where the "
                   f"capstone asks for at least {capstone.margin:+.2f}")
        if gain >= capstone.margin:
            return numbers
        diagnose = DIAGNOSES[capstone.run]
        raise CheckFailed(numbers, diagnose(model, trained, tokenizer, trained_eval, gain))


def _not_written(message: str, capstone: cap.Capstone) -> str:
    """The message of a training run that reached a function still to write."""
    found = re.search(r"minialign\.(\w+)\.([\w.]+) is the library's own version", message)
    what = f"`{found.group(2)}`" if found else "one of your functions"
    return (f"the training loop called {what}, which still raises NotImplementedError: the "
            f"capstone trains with every function of chapter {capstone.chapter}; write it first")


def _load(model, state):
    """A copy of the starting policy holding the parameters `state` sent back from the sandbox
    ({name: tensor} with the same names, shapes and dtypes), or CheckFailed."""
    expected = model.state_dict()
    hint = ("train the policy in place (the loop's optimizer updates its parameters); do not "
            "replace its modules or tensors")
    if type(state) is not dict or set(state) != set(expected):
        raise CheckFailed(f"the trained policy's parameters could not be read back (got "
                          f"{describe_type(state)})", hint)
    for name, value in expected.items():
        got = state[name]
        if type(got) is not torch.Tensor or got.shape != value.shape or got.dtype != value.dtype:
            raise CheckFailed(f"the trained policy's `{name}` is {describe_type(got)}, expected "
                              f"a {value.dtype} tensor of shape {tuple(value.shape)}", hint)
        if not torch.isfinite(got).all():
            raise CheckFailed(f"the trained policy's `{name}` holds nan or inf: the training "
                              f"diverged", "look for a log of 0, a division by a zero count, "
                              "or a mean over an empty mask, in your losses or advantages")
    trained = copy.deepcopy(model)  # a copy: no random initialisation drawn
    trained.load_state_dict(state)
    return trained.eval()


# ==============================================================================================
# saying what went wrong


def _unchanged(model, trained) -> bool:
    return all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 trained.state_dict().values()))


UNCHANGED = ("the trained policy is exactly the starting one: no update reached its "
             "parameters. The loss must reach the model through autograd (no .detach(), "
             ".item() or torch.no_grad() on its way), then backward() and optimizer.step()")


def _diagnose_ppo(model, trained, tokenizer, trained_eval, gain) -> str:
    from ..evaluate import TEMPERATURE, kl_to_reference

    if _unchanged(model, trained):
        return UNCHANGED
    prompts = [t.prompt for t in trained_eval["tasks"]]
    responses = [r["response_ids"] for r in trained_eval["responses"]]
    kl, _ = kl_to_reference(trained, model, tokenizer, prompts, responses, TEMPERATURE)
    if gain < -0.05:
        return (f"your PPO made the policy worse (it moved {kl:.1f} nats of KL from the start): "
                f"it made the answers with a low reward more likely. Check the sign of the "
                f"policy loss (it minimises -advantage * ratio, so that a token with a positive "
                f"advantage becomes more likely), of the advantages (reward to come minus the "
                f"value) and of the KL penalty (it subtracts beta * (log pi - log pi_ref))")
    if kl < 0.5:
        return (f"your PPO barely moved the policy ({kl:.2f} nats of KL from the start). Check "
                f"that the advantages are not all zero (compute_gae, whiten), that the policy "
                f"loss weighs the ratio by them, and that each step sets the learning rate it "
                f"is given")
    return (f"your PPO moved the policy ({kl:.1f} nats of KL from the start) but not towards "
            f"a higher reward. Check how the reward reaches each token: the score at the last "
            f"response token, GAE run backwards from there, padding left out of every mean")


@torch.no_grad()
def _diagnose_dpo(model, trained, tokenizer, trained_eval, gain) -> str:
    from .. import dpo
    from ..evaluate import TEMPERATURE
    from ..model import logprobs_of_responses

    if _unchanged(model, trained):
        return UNCHANGED
    pairs = cap.preference_pairs(tokenizer, 128, seed=cap.EVAL_SEED, split="eval",
                                 block_size=model.config.block_size)
    ids, mask, response = dpo.encode_pairs(tokenizer, pairs)
    log_ratio = (logprobs_of_responses(trained, ids, mask, response, TEMPERATURE)
                 - logprobs_of_responses(model, ids, mask, response, TEMPERATURE))  # (2N,)
    n = len(pairs)
    margins = log_ratio[:n] - log_ratio[n:]  # (N,) chosen minus rejected
    right = (margins > 0).float().mean().item()
    if margins.mean().item() < 0:
        return (f"your DPO made the chosen answers less likely than the rejected ones: on "
                f"held-out pairs, relative to the starting policy, the chosen answer gained on "
                f"the rejected one in only {right:.0%} of them. Check the sign: the loss must "
                f"fall as log pi(chosen) - log pi_ref(chosen) rises above the same for the "
                f"rejected answer (and dpo_step takes the first half of the rows as chosen)")
    if gain < -0.05 or not math.isfinite(gain):
        return (f"your DPO prefers the chosen answers on held-out pairs ({right:.0%} of them) "
                f"but its own answers got worse: the policy drifted into text of a low reward. "
                f"Check that the reference's log-probs carry no gradient, that the log-probs "
                f"are sums over the response tokens only, and beta")
    return (f"your DPO barely improved the policy (the chosen answer gained on the rejected one "
            f"in {right:.0%} of held-out pairs). Check that the loss reaches the policy's "
            f"log-probs (sequence_logprobs: a sum over the response tokens), with beta, and "
            f"that each step sets the learning rate it is given")


DIAGNOSES = {"train_ppo": _diagnose_ppo, "train_dpo": _diagnose_dpo}  # by Capstone.run
