"""Trusted objects for the checks of training-step exercises, built alike in both processes.

A step exercise (`pretrain_step`, `sft_step`, ...) changes what it is given: a model and its
optimizer. Its check cannot send those across the sandbox boundary (only plain values and
tensors cross, see `wire.py`), so both sides build them from the same recipe: the child with
the sandbox's `build` request (`Student.build(wire.Build("minialign.course.fixtures:tiny_gpt",
seed=0))` keeps the model there and answers with a handle), the trusted parent by calling the
same function itself. The same arguments give the same objects, bit for bit.

    tiny_gpt(seed, ...)        a small GPT, float32 on the CPU, its weights drawn from `seed`
    adamw(model, lr, ...)      the library's AdamW (`utils.make_optimizer`) over that model
    token_batch(seed, ...)     (x, y) windows of random tokens, y = x shifted by one
    chat_batch(seed, ...)      (input_ids, labels) as `sft.collate` makes them
    pair_batch(seed, ...)      (ids, padding_mask, response_mask) as `dpo.encode_pairs` makes them
    reseed(seed)               torch's global generator (dropout draws from it) set to `seed`
    state_of(model)            {name: tensor}: copies of the model's parameters and buffers
    optimizer_steps(optimizer) how many steps the optimizer has taken
    tiny_policy(seed, ...)     a tiny_gpt with PPO's value head (`ppo.PolicyWithValueHead`)
    tiny_rollout(seed, ...)    a `ppo.Rollout` of random prompts and responses, padded
    generator(seed)            a torch.Generator set to `seed` (PPO shuffles its minibatches)
    tiny_reward_model(seed, ...) a tiny reward model: a ScalarHeadGPT read at each row's last token
    reward_adamw(rm, lr, head_lr) the reward stage's AdamW (`reward.make_reward_optimizer`)
    ranking_batch(seed, ...)   (ids, padding_mask, slots) as `preferences.batch_rankings` makes them

Only the parent decides what is built: a `Build` names a function of the minialign package and
its arguments, and what comes back from the child (a handle, or `state_of`'s tensors) is data
the parent compares, never code it runs. `checks_steps.py` runs a step exercise on these.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import torch

from ..model import GPT, GPTConfig
from ..utils import make_optimizer

IGNORE = -100  # sft.IGNORE, the label F.cross_entropy skips (sft itself imports a whole stage)

# Torch's global generator (model initialisation and dropout draw from it) is one per process,
# and the grader checks chapters in parallel threads. Every use of it on the trusted side holds
# this lock: the fixtures below, and the step checks' local runs (checks_steps), which seed it
# and draw dropout masks that must match the child's. Without it, a fixture built by another
# thread's check restores, on leaving fork_rng, a generator state saved before those draws, and
# a mask comes out different (a mistake then goes unrecognised). Re-entrant: a local run builds
# fixtures while it holds the lock.
GLOBAL_RANDOM_STATE = threading.RLock()

_THREADS = {"users": 0, "saved": None}  # see one_thread
_THREADS_LOCK = threading.Lock()


@contextmanager
def one_thread():
    """Torch on one thread while the trusted side computes what a sandbox child computes on one
    (the child always runs on one). A sum split over two threads adds in another order, and a
    few optimizer steps can turn that last-bit difference into one beyond the checks' tolerance
    (Adam divides a near-zero gradient by its own size). It also keeps a capstone's measurement
    fast on a busy machine, where two threads of a small model wait on each other. Counted,
    since chapters are graded in parallel threads: the setting in force before is restored when
    the last user is done."""
    with _THREADS_LOCK:
        if _THREADS["users"] == 0:
            _THREADS["saved"] = torch.get_num_threads()
            torch.set_num_threads(1)
        _THREADS["users"] += 1
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _THREADS["users"] -= 1
            if _THREADS["users"] == 0:
                torch.set_num_threads(_THREADS["saved"])


def tiny_gpt(seed: int = 0, vocab_size: int = 32, block_size: int = 16, n_layer: int = 1,
             n_head: int = 2, n_embd: int = 16, dropout: float = 0.0,
             train: bool = True) -> GPT:
    """A GPT small enough to step in milliseconds; `train` sets its mode (False: eval, as a
    validation pass leaves it). Torch's global generator is left as it was."""
    config = GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=n_layer,
                       n_head=n_head, n_embd=n_embd, dropout=dropout)
    with GLOBAL_RANDOM_STATE, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT(config)
    return model.train(train)


def adamw(model: torch.nn.Module, lr: float = 1e-2, weight_decay: float = 0.1):
    """The optimizer the library trains with: AdamW, weight decay on matrices only (two
    parameter groups)."""
    return make_optimizer(model, lr, weight_decay)


def token_batch(seed: int, batch_size: int = 4, block_size: int = 16, vocab_size: int = 32):
    """x, y: (B, T) random token ids, y = x shifted left by one (as `pretrain.get_batch`)."""
    g = torch.Generator().manual_seed(seed)
    windows = torch.randint(vocab_size, (batch_size, block_size + 1), generator=g)  # (B, T+1)
    return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()


def chat_batch(seed: int, lengths=((3, 4), (5, 2), (2, 7)), vocab_size: int = 32,
               pad_id: int = 0):
    """input_ids, labels: (B, T) right-padded chats, one per (prompt length, response length);
    labels are -100 on the prompt and on padding, the token id on the response (as
    `sft.build_example` and `sft.collate` make them). T is the longest chat."""
    g = torch.Generator().manual_seed(seed)
    T = max(p + r for p, r in lengths)
    input_ids = torch.full((len(lengths), T), pad_id, dtype=torch.long)
    labels = torch.full((len(lengths), T), IGNORE, dtype=torch.long)
    for i, (prompt_len, response_len) in enumerate(lengths):
        ids = torch.randint(1, vocab_size, (prompt_len + response_len,), generator=g)
        input_ids[i, : len(ids)] = ids
        labels[i, prompt_len: len(ids)] = ids[prompt_len:]
    return input_ids, labels


def pair_batch(seed: int, lengths=((3, 4, 2), (5, 2, 6), (2, 7, 7)), vocab_size: int = 32,
               pad_id: int = 0):
    """ids, padding_mask, response_mask: (2B, T) preference pairs as `dpo.encode_pairs` makes
    them, one pair per (prompt length, chosen length, rejected length): the B chosen rows
    first, then the B rejected ones, each pair's two rows sharing its prompt; right-padded
    (padding_mask False on the pads), response_mask True on the response tokens only. T is the
    longest row."""
    g = torch.Generator().manual_seed(seed)
    rows = []  # (prompt + response ids, prompt length)
    prompts = [torch.randint(1, vocab_size, (p,), generator=g) for p, _, _ in lengths]
    for side in (1, 2):  # chosen, then rejected
        for prompt, spec in zip(prompts, lengths):
            response = torch.randint(1, vocab_size, (spec[side],), generator=g)
            rows.append((torch.cat([prompt, response]), len(prompt)))
    T = max(len(r) for r, _ in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    padding_mask = torch.zeros(len(rows), T, dtype=torch.bool)
    response_mask = torch.zeros(len(rows), T, dtype=torch.bool)
    for i, (row, prompt_len) in enumerate(rows):
        ids[i, : len(row)] = row
        padding_mask[i, : len(row)] = True
        response_mask[i, prompt_len: len(row)] = True
    return ids, padding_mask, response_mask


def tiny_policy(seed: int = 0, value_std: float = 0.0, **gpt):
    """tiny_gpt(seed, **gpt) with PPO's value head (`ppo.PolicyWithValueHead`), in the mode
    tiny_gpt's `train` says. The head starts at zero, as in the library; value_std > 0 draws its
    weights from N(0, value_std^2) instead (seeded), so that the values differ from 0.
    Torch's global generator is left as it was."""
    from ..ppo import PolicyWithValueHead

    trunk = tiny_gpt(seed, **gpt)
    # the head's nn.Linear draws its initial weights from the global generator before the
    # library zeroes them: under the lock, or those draws land inside another thread's seeded
    # run (a reference step's model built from other numbers: seen in a class graded in
    # parallel, where every student then failed against that wrong reference)
    with GLOBAL_RANDOM_STATE, torch.random.fork_rng(devices=[]):
        policy = PolicyWithValueHead(trunk)
    if value_std:
        g = torch.Generator().manual_seed(seed + 1)
        weight = policy.value_head.weight
        with torch.no_grad():
            weight.copy_(torch.randn(weight.shape, generator=g) * value_std)
    return policy.train(gpt.get("train", True))


def tiny_rollout(seed: int, prompt_lengths=(3, 1, 2, 3), response_lengths=(4, 2, 5, 1),
                 vocab_size: int = 32, pad_id: int = 0):
    """A `ppo.Rollout` as `ppo.rollout` lays it out: [left pad][prompt][response][right pad],
    one row per (prompt length, response length), random tokens (never pad_id). P and R are
    the longest prompt and response; a response shorter than R ended (<|end|>), one of R
    tokens did not."""
    from ..ppo import Rollout

    g = torch.Generator().manual_seed(seed)
    B, P, R = len(prompt_lengths), max(prompt_lengths), max(response_lengths)
    ids = torch.full((B, P + R), pad_id, dtype=torch.long)
    attention = torch.zeros(B, P + R, dtype=torch.bool)
    for i, (p, r) in enumerate(zip(prompt_lengths, response_lengths)):
        ids[i, P - p: P + r] = torch.randint(1, vocab_size, (p + r,), generator=g)
        attention[i, P - p: P + r] = True
    lengths = torch.tensor(response_lengths)
    mask = (torch.arange(R) < lengths.unsqueeze(1)).float()  # (B, R)
    return Rollout(ids, attention, ids[:, P:].clone(), mask, P, lengths < R)


def generator(seed: int) -> torch.Generator:
    """A torch.Generator set to `seed` (PPO's minibatches are shuffled with one)."""
    return torch.Generator().manual_seed(seed)


def reseed(seed: int) -> None:
    """Set torch's global generator, which dropout draws from, so that both sides draw alike."""
    torch.manual_seed(seed)


def state_of(model: torch.nn.Module) -> dict:
    """{name: tensor}: detached copies of every parameter and buffer (the state_dict)."""
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def optimizer_steps(optimizer: torch.optim.Optimizer) -> int:
    """The number of steps taken: the largest per-parameter step count of Adam(W)'s state (0
    before the first step)."""
    counts = [int(state["step"]) for state in optimizer.state.values() if "step" in state]
    return max(counts, default=0)


class TinyRewardModel(torch.nn.Module):
    """`reward.RewardModel`'s forward on right-padded rows: a ScalarHeadGPT read at each row's
    last real token, (N, T) -> (N,). (The library's reads with `last_token_scores`, an exercise
    of chapter 4, stubbed in the child while that chapter is graded; here the rows are right
    padded, so the last real token is at padding_mask.sum(1) - 1.)"""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net  # the trunk and its scalar head (`net.head`), as in RewardModel

    def forward(self, idx, padding_mask):
        values = self.net(idx, padding_mask)  # (N, T)
        last = padding_mask.long().sum(1) - 1  # (N,) right padding only
        return values.gather(1, last.unsqueeze(1)).squeeze(1)  # (N,)


def tiny_reward_model(seed: int = 0, head_std: float = 0.5, **gpt) -> TinyRewardModel:
    """A reward model on tiny_gpt(seed, **gpt)'s trunk (in the mode tiny_gpt's `train` says).
    Its head is drawn from N(0, head_std^2) (seeded), so that every parameter has a gradient
    from the first step; head_std=0 keeps the library's zero head (every answer scores 0).
    Torch's global generator is left as it was."""
    from ..model import ScalarHeadGPT

    trunk = tiny_gpt(seed, **gpt)
    with GLOBAL_RANDOM_STATE, torch.random.fork_rng(devices=[]):
        net = ScalarHeadGPT.from_gpt(trunk)  # (builds a fresh GPT first: random draws)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for param in net.head.parameters():
            param.copy_(torch.randn(param.shape, generator=g) * head_std)
    return TinyRewardModel(net).train(trunk.training)


def reward_adamw(rm: torch.nn.Module, lr: float = 0.05, head_lr: float = 0.5,
                 eps: float = 1e-3):
    """The reward stage's optimizer (`reward.make_reward_optimizer`): AdamW in two groups, the
    trunk at `lr`, the scalar head at `head_lr`; but with Adam's eps at 1e-3, not 1e-8.

    Some parameters have a gradient of 0 in exact arithmetic: the head's bias and the final
    LayerNorm's add the same number to every score, and the ranking loss depends on differences
    of scores only; the attention keys' bias adds the same number to a row of attention logits,
    which the softmax ignores. Rounding leaves a gradient of about 1e-9 there, different for
    each way of writing the same sums, and Adam's g / (|g| + eps) would blow it up into updates
    of the size of the learning rate with eps = 1e-8; a larger eps keeps them negligible."""
    from ..reward import RewardConfig, make_reward_optimizer

    optimizer = make_reward_optimizer(rm, RewardConfig(lr=lr, head_lr=head_lr))
    for group in optimizer.param_groups:
        group["eps"] = eps
    return optimizer


def ranking_batch(seed: int, answers=((5, 3, 7), (4, 6), (2, 8, 3)), vocab_size: int = 32,
                  pad_id: int = 0):
    """ids, padding_mask: (B*K, T) and slots: (B, K) bool, as `preferences.batch_rankings` makes
    them, for B rankings of random tokens (never pad_id): answers[b] holds the lengths (prompt
    and answer together) of ranking b's answers, best first; K is the most answers of any. Row
    b*K + j holds answer j of ranking b, right-padded (padding_mask False on the pads); where
    ranking b has no answer j, the row is a one-token placeholder and slots[b, j] is False."""
    g = torch.Generator().manual_seed(seed)
    K = max(len(lengths) for lengths in answers)
    slots = torch.zeros(len(answers), K, dtype=torch.bool)
    rows = []
    for b, lengths in enumerate(answers):
        for j in range(K):
            if j < len(lengths):
                rows.append(torch.randint(1, vocab_size, (lengths[j],), generator=g))
                slots[b, j] = True
            else:
                rows.append(torch.tensor([pad_id]))  # placeholder, masked out of the loss
    T = max(len(row) for row in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    padding_mask = torch.zeros(len(rows), T, dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        padding_mask[i, : len(row)] = True
    return ids, padding_mask, slots
