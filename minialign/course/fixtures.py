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
    reseed(seed)               torch's global generator (dropout draws from it) set to `seed`
    state_of(model)            {name: tensor}: copies of the model's parameters and buffers
    optimizer_steps(optimizer) how many steps the optimizer has taken

Only the parent decides what is built: a `Build` names a function of the minialign package and
its arguments, and what comes back from the child (a handle, or `state_of`'s tensors) is data
the parent compares, never code it runs. `checks_steps.py` runs a step exercise on these.
"""

from __future__ import annotations

import torch

from ..model import GPT, GPTConfig
from ..utils import make_optimizer

IGNORE = -100  # sft.IGNORE, the label F.cross_entropy skips (sft itself imports a whole stage)


def tiny_gpt(seed: int = 0, vocab_size: int = 32, block_size: int = 16, n_layer: int = 1,
             n_head: int = 2, n_embd: int = 16, dropout: float = 0.0,
             train: bool = True) -> GPT:
    """A GPT small enough to step in milliseconds; `train` sets its mode (False: eval, as a
    validation pass leaves it). Torch's global generator is left as it was."""
    config = GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=n_layer,
                       n_head=n_head, n_embd=n_embd, dropout=dropout)
    with torch.random.fork_rng(devices=[]):
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
