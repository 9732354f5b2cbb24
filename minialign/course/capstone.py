"""Capstones: your whole PPO (chapter 5) and your whole DPO (chapter 6) train a small policy,
and the grader measures the policy they trained.

The checks of a chapter grade its functions one at a time. A capstone grades them together:
the library's training loop runs with every function of the chapter that you wrote in place of
the library's (`policy_loss`, `compute_gae`, ..., `ppo_update` for PPO; `sequence_logprobs`,
`dpo_loss`, `dpo_step` for DPO), the way `--impl` trains with your code, for a short run from a
small starting policy. Then the grader takes the trained parameters back, samples answers to
the world's held-out prompts and scores them with the gold reward: your run passes when the
trained policy beats the starting one by the margin its capstone states (`CAPSTONES`).

The starting policy is made here, the same way for everyone, from a seed (nothing is
downloaded or shipped): a BPE tokenizer learned from the world's contractor demonstrations, and
a GPT of two layers and 64 channels fine-tuned on 3,000 of them for 200 steps (about ten
CPU-seconds, once per grading process). Contractors often pad their answers with filler ("great
question!") and rude remarks, and the policy imitates them: its gold reward is about -0.5, with
room to grow that a working PPO or DPO finds in a short run (drop the filler and the rudeness,
end cleanly).

The margins come from measurement (the library's functions, training seeds 0 to 5, the same
held-out evaluation): PPO gained +0.53 to +0.68 and DPO +0.35 to +0.46, while a policy loss with
its sign flipped lost 0.85 to 1.6 and a DPO loss with chosen and rejected swapped lost about 1.0
(seeds 0 to 2). The capstones ask for +0.30 and +0.20.

Who runs what (see `checks_capstones.py` for the grading):
    the grader      builds the starting policy (`starting_policy`, once per process), sends its
                    parameters to the sandbox, and evaluates what comes back (`gold_of`)
    the sandbox     `train_ppo` / `train_dpo`: binds your functions into the library
                    (`bind_student`), trains, and returns the trained parameters (`state_of`)
Numbers that student code returns are never believed: only the parameters are, once measured.
"""

from __future__ import annotations

import importlib
import os
import random
import sys
import threading
from dataclasses import asdict, dataclass

import torch

from .. import world as world_lib
from ..model import GPT, GPTConfig
from .fixtures import GLOBAL_RANDOM_STATE

START_SEED = 0  # the starting policy's seed: the same policy for every student
EVAL_SEED = 1234  # the sampling seed of the gold evaluation (the same for both policies)
EVAL_SAMPLES = 2  # answers per held-out prompt (270 prompts)
MAX_NEW_TOKENS = 48  # the longest answer sampled (the longest good ones use about 45 tokens)


@dataclass(frozen=True)
class Capstone:
    """A graded run of a chapter's functions together. `margin`: how much the trained policy's
    mean gold reward must beat the starting policy's; `run`: the function of this module that
    trains in the sandbox."""

    id: str
    chapter: int
    title: str
    margin: float
    run: str
    description: str


CAPSTONES = [
    Capstone(
        "ch05.ppo_capstone", 5, "your PPO trains a policy", 0.30, "train_ppo",
        "Your PPO: the library's loop (`ppo.ppo_loop`) with every chapter-5 function you wrote "
        "trains the course's starting policy for 20 iterations of 32 rollouts against the "
        "world's gold reward. Passes when the trained policy's mean gold reward on the 270 "
        "held-out prompts (2 answers each) beats the starting policy's by at least 0.30 "
        "(a working PPO gains about 0.6)."),
    Capstone(
        "ch06.dpo_capstone", 6, "your DPO trains a policy", 0.20, "train_dpo",
        "Your DPO: the library's loop (`dpo.fit`) with every chapter-6 function you wrote "
        "trains the course's starting policy on 960 preference pairs (two contractor answers "
        "to a prompt, the one with the higher gold reward chosen), one pass of 60 steps. "
        "Passes when the trained policy's mean gold reward on the 270 held-out prompts "
        "(2 answers each) beats the starting policy's by at least 0.20 "
        "(a working DPO gains about 0.4)."),
]


def capstones_for(chapter: int) -> list[Capstone]:
    return [c for c in CAPSTONES if c.chapter == chapter]


# ==============================================================================================
# the starting policy (built by the grader, once per process)


@dataclass(frozen=True)
class StartRecipe:
    seed: int = START_SEED
    n_demos: int = 3000  # contractor demonstrations fine-tuned on
    tokenizer_demos: int = 1500  # ... of which the tokenizer learns its merges from
    vocab_size: int = 768
    block_size: int = 96  # demonstrations longer than this are left out
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 64
    steps: int = 200
    batch_size: int = 32
    lr: float = 3e-3


_START_LOCK = threading.Lock()  # the grader checks chapters in threads: build the policy once
_START_CACHE: dict = {}


def starting_policy(recipe: StartRecipe = StartRecipe()):
    """(model, tokenizer): the capstones' starting policy, trained from scratch by supervised
    fine-tuning on the world's contractor demonstrations; deterministic for a recipe (on one
    machine), cached in this process. Torch's global random state is left as it was."""
    with _START_LOCK:
        if recipe not in _START_CACHE:
            _START_CACHE[recipe] = _train_start(recipe)
        model, tokenizer = _START_CACHE[recipe]
    return model, tokenizer


def _train_start(recipe: StartRecipe):
    from ..sft import build_example, collate, sft_step
    from ..tokenizer import Tokenizer
    from ..utils import cosine_lr, make_optimizer

    demos = world_lib.default_world().demonstrations(recipe.n_demos, seed=recipe.seed)
    tokenizer = Tokenizer.train([f"{p}\n{r}" for p, r in demos[: recipe.tokenizer_demos]],
                                recipe.vocab_size)
    examples = [ex for ex in (build_example(tokenizer, p, r) for p, r in demos)
                if len(ex[0]) <= recipe.block_size]
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=recipe.block_size,
                       n_layer=recipe.n_layer, n_head=recipe.n_head, n_embd=recipe.n_embd)
    rng = random.Random(recipe.seed)
    # torch's global generator is shared with the checks of other chapters graded in parallel
    # threads: hold its lock (fixtures.GLOBAL_RANDOM_STATE) while this run seeds and draws
    with GLOBAL_RANDOM_STATE, torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        model = GPT(config)
        optimizer = make_optimizer(model, recipe.lr, 0.1)
        for step in range(recipe.steps):
            ids, labels = collate(rng.sample(examples, recipe.batch_size), tokenizer.pad_id)
            sft_step(model, optimizer, ids, labels,
                     cosine_lr(step, recipe.steps, recipe.lr, recipe.steps // 15), 1.0)
    return model.eval().requires_grad_(False), tokenizer


def start_message(model: GPT, tokenizer) -> dict:
    """What the sandbox is sent to rebuild the starting policy: plain values and tensors."""
    return {"config": asdict(model.config), "merges": [list(p) for p in tokenizer.merges],
            "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}


def rebuild(start: dict):
    """(model, tokenizer) from `start_message`'s values (in the sandbox)."""
    from ..tokenizer import Tokenizer

    tokenizer = Tokenizer([tuple(p) for p in start["merges"]])
    model = GPT(GPTConfig(**start["config"]))
    model.load_state_dict(start["state"])
    return model.eval(), tokenizer


# ==============================================================================================
# the data: prompts and preference pairs of the world


def sample_prompts(tokenizer, world):
    """PPO's `sample_prompts(n, rng)`: n training prompts, drawn as every stage draws them."""
    return lambda n, rng: [tokenizer.encode_prompt(t.prompt) for t in world.sample_tasks(n, rng)]


def gold_reward_fn(tokenizer, world):
    """PPO's `reward_fn(rollout)`: the gold reward of each response (B,), the prompt read back
    from the rollout's tokens."""
    skip = {tokenizer.user_id, tokenizer.assistant_id, tokenizer.pad_id}

    def reward_fn(ro):
        scores = []
        for b in range(ro.ids.size(0)):
            prompt = tokenizer.decode([i for i in ro.ids[b, : ro.prompt_len].tolist()
                                       if i not in skip])
            text, ended = tokenizer.decode_response(
                ro.response[b, : int(ro.mask[b].sum())].tolist())
            scores.append(world.gold_reward(prompt, text, ended))
        return torch.tensor(scores)

    return reward_fn


def preference_pairs(tokenizer, n: int, seed: int, split: str = "train", block_size: int = 96):
    """n preference pairs (preferences.Pair): two contractor answers to a prompt of `split`, the
    one with the higher gold reward chosen (pairs whose rewards differ by less than 0.1, or that
    do not fit in `block_size` tokens, are skipped)."""
    from ..preferences import Pair

    world = world_lib.default_world()
    rng = random.Random(seed)
    pairs = []
    while len(pairs) < n:
        task = world.sample_tasks(1, rng, split)[0]
        a, b = world.response(task, rng), world.response(task, rng)
        gold_a, gold_b = world.gold_reward(task.prompt, a), world.gold_reward(task.prompt, b)
        if abs(gold_a - gold_b) < 0.1:
            continue
        chosen, rejected = (a, b) if gold_a > gold_b else (b, a)
        longest = max(len(tokenizer.encode(chosen)), len(tokenizer.encode(rejected)))
        if len(tokenizer.encode_prompt(task.prompt)) + longest + 1 <= block_size:
            pairs.append(Pair(task.prompt, chosen, rejected))
    return pairs


# ==============================================================================================
# in the sandbox: your functions in the library's loops


def bind_student(module_name: str, exercises) -> list[str]:
    """Make the library call the student's functions: for each (library module, qualname) of
    `exercises`, the student's function of that name (in the loaded module `module_name`)
    replaces the library's wherever a module of the library holds it (for a method: on the
    library's class). Returns the qualnames bound; a name the student's module lacks is left
    alone (its library version, a stub while the chapter is graded, says so if it is called)."""
    student = sys.modules[module_name]
    bound = []
    for module, qualname in exercises:
        library = importlib.import_module(f"minialign.{module}")
        theirs = _lookup(student, qualname)
        if not callable(theirs):
            continue
        if "." in qualname:  # a method (AdaptiveKLController.update): on the library's class
            owner, name = qualname.rsplit(".", 1)
            setattr(_lookup(library, owner), name, theirs)
        else:
            ours = getattr(library, qualname)
            for name, holder in list(sys.modules.items()):
                if name.startswith("minialign.") and not name.startswith("minialign.course"):
                    for attr, value in list(vars(holder).items()):
                        if value is ours:
                            setattr(holder, attr, theirs)
        bound.append(qualname)
    return bound


def _lookup(obj, qualname: str):
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return obj


def _prepare(module_name: str, exercises, start: dict, seed: int):
    """The common start of a capstone run in the sandbox: the loops' modules imported, the
    student's functions bound into them, no progress bars, torch seeded, the policy rebuilt."""
    from .. import dpo, ppo  # noqa: F401  (imported before binding: they hold the names)

    os.environ["MINIALIGN_NO_PROGRESS"] = "1"
    if module_name is not None:  # None: the library's own functions (the course's tests)
        bind_student(module_name, exercises)
    torch.manual_seed(seed)
    return rebuild(start)


def train_ppo(module_name: str, exercises, start: dict, seed: int = 0) -> dict:
    """PPO (the library's loop, the student's functions) from the starting policy against the
    gold reward; returns the trained policy's parameters {name: tensor}."""
    from .. import ppo

    model, tokenizer = _prepare(module_name, exercises, start, seed)
    world = world_lib.default_world()
    ref = rebuild(start)[0].requires_grad_(False)
    policy = ppo.PolicyWithValueHead(model)
    cfg = ppo.PPOConfig(iterations=20, batch_size=32, minibatch_size=16, ppo_epochs=2, lr=3e-4,
                        kl_coef=0.05, missing_eos_penalty=0.0, max_new_tokens=MAX_NEW_TOKENS,
                        seed=seed)
    ppo.ppo_loop(policy, ref, gold_reward_fn(tokenizer, world), sample_prompts(tokenizer, world),
                 cfg, tokenizer.pad_id, tokenizer.end_id, desc="capstone")
    return state_of(policy.gpt)


def train_dpo(module_name: str, exercises, start: dict, seed: int = 0) -> dict:
    """DPO (the library's loop, the student's functions) from the starting policy on preference
    pairs of the world; returns the trained policy's parameters {name: tensor}."""
    from .. import dpo

    policy, tokenizer = _prepare(module_name, exercises, start, seed)
    ref = rebuild(start)[0].requires_grad_(False)
    cfg = dpo.DPOConfig(beta=0.3, batch_size=16, lr=2e-4, seed=seed)
    pairs = preference_pairs(tokenizer, 60 * cfg.batch_size, seed=seed,
                             block_size=policy.config.block_size)
    device = torch.device("cpu")
    ref_chosen, ref_rejected = dpo.reference_logps(ref, tokenizer, pairs, 64, device,
                                                   cfg.logprob_temperature)
    dpo.fit(policy, tokenizer, pairs, ref_chosen, ref_rejected, cfg, device, "capstone")
    return state_of(policy)


def state_of(model: torch.nn.Module) -> dict:
    """{name: tensor}: detached copies of the model's parameters and buffers."""
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


# ==============================================================================================
# the grader's measurement


@torch.no_grad()
def gold_of(model: GPT, tokenizer) -> dict:
    """The gold evaluation of a policy on the world's held-out prompts (evaluate.evaluate_policy,
    EVAL_SAMPLES answers each, sampled with EVAL_SEED: the same draws for every policy)."""
    from .. import evaluate

    tasks = world_lib.default_world().tasks("eval")
    return evaluate.evaluate_policy(model, tokenizer, tasks, EVAL_SAMPLES, MAX_NEW_TOKENS,
                                    seed=EVAL_SEED)
