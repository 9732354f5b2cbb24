"""Data-parallel training under torchrun: torch.distributed set-up and the few helpers the
training loops need. Plumbing only: nothing here changes what a stage computes.

    torchrun --standalone --nproc_per_node=2 -m minialign sft --fast

Data parallelism (DDP, Li et al. 2020): every process ("rank") holds a full copy of the model
and takes its share of each global batch; after backward, the gradients are averaged across
ranks (an all-reduce), so every copy takes the same optimizer step. The communication is
torch.distributed's (gloo on a CPU, NCCL on CUDA GPUs); nothing is home-made.

What the loops do with it:
  * every rank builds the same global batch (same seed) and keeps rows `rank, rank + N, ...`
    (`shard`), so the global batch, and the run, do not depend on the number of processes;
  * gradient accumulation: a rank's rows may be split into micro-batches (`micro_batches`);
    DDP's `no_sync` skips the all-reduce on every micro-step but the last (`sync_gradients`);
  * a loss that is a mean over items or tokens is re-weighted by the rank's share of the global
    count (`loss_share`: counts all-reduced), so that the averaged gradient equals the gradient
    of the global mean, even when ranks hold different numbers of tokens;
  * rank 0 alone logs, evaluates and writes files (`is_main`); the others wait (`barrier`).

Run as a single process (plain `python -m minialign`), every helper is the identity: world size
1, rank 0, the same numbers, bit for bit, as without this module.
"""

from __future__ import annotations

import os
from contextlib import nullcontext

import torch
import torch.distributed as torch_dist


def init(device: str = "cpu") -> torch.device | None:
    """Join the process group when started by torchrun (WORLD_SIZE > 1); no-op otherwise.

    Backend: NCCL for CUDA, gloo for CPU. On CUDA each rank takes the GPU LOCAL_RANK and
    returns it as its device; returns None when there is nothing to change."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or torch_dist.is_initialized():
        return None
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if str(device).startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        torch.cuda.set_device(local_rank)
        torch_dist.init_process_group("nccl")
        return torch.device("cuda", local_rank)
    torch_dist.init_process_group("gloo")
    return None


def close() -> None:
    """Leave the process group (at the end of a torchrun job)."""
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def is_distributed() -> bool:
    return torch_dist.is_initialized() and torch_dist.get_world_size() > 1


def world_size() -> int:
    return torch_dist.get_world_size() if torch_dist.is_initialized() else 1


def rank() -> int:
    return torch_dist.get_rank() if torch_dist.is_initialized() else 0


def is_main() -> bool:
    """True on rank 0 (and in a single process): the rank that logs, evaluates and writes."""
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        torch_dist.barrier()


# ----------------------------------------------------------------------------------------------
# data


def shard(items):
    """This rank's share of a global batch: items rank, rank + N, rank + 2N, ... (all of them
    in a single process). Works on lists and on tensors (along dim 0)."""
    n = world_size()
    return items if n == 1 else items[rank()::n]


def micro_batches(items, micro_batch_size: int = 0):
    """Split this rank's rows into micro-batches for gradient accumulation: a list of
    (chunk, is_last). micro_batch_size 0 means one micro-batch (no accumulation)."""
    size = micro_batch_size if micro_batch_size > 0 else max(len(items), 1)
    chunks = [items[s: s + size] for s in range(0, len(items), size)]
    return [(c, i == len(chunks) - 1) for i, c in enumerate(chunks)]


# ----------------------------------------------------------------------------------------------
# the model and its gradients


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model wrapped in DistributedDataParallel under torchrun; the model itself otherwise.

    Keep the unwrapped model for checkpoints and evaluation; train through the wrapper."""
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    device = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                   else None)


def sync_gradients(model: torch.nn.Module, last: bool):
    """Context for one micro-step's backward: DDP's `no_sync()` (gradients accumulate locally,
    no communication) on every micro-step but the last, whose backward all-reduces them."""
    if last or not hasattr(model, "no_sync"):
        return nullcontext()
    return model.no_sync()


def all_reduce_sum(value: float | torch.Tensor) -> float | torch.Tensor:
    """The sum over ranks of a number or a tensor (returned, not in place); the value itself in
    a single process."""
    if not is_distributed():
        return value
    t = torch.as_tensor(value, dtype=torch.float64 if not torch.is_tensor(value) else None)
    t = t.clone().to(_comm_device())
    torch_dist.all_reduce(t)
    return t.item() if not torch.is_tensor(value) else t.to(value.device)


def all_reduce_mean(value: float | torch.Tensor):
    """The mean over ranks (for logged statistics)."""
    return value if not is_distributed() else all_reduce_sum(value) / world_size()


def loss_share(local_count, global_count):
    """The factor that turns this micro-batch's mean loss into its share of the global mean.

    With a loss averaged over the `local_count` items (or tokens) of a micro-batch, and
    `global_count` of them in the global batch (all ranks, all micro-batches), the gradient of
    the global mean is the sum over micro-batches of (local / global) * grad(local mean); DDP
    then *averages* over ranks, hence the extra factor world_size. Returns None when there is
    nothing to rescale (one process, one micro-batch): the loss is then used exactly as it is.
    """
    local_count, global_count = float(local_count), float(global_count)
    if world_size() == 1 and local_count == global_count:
        return None
    return local_count * world_size() / max(global_count, 1.0)


def _comm_device() -> torch.device:
    """NCCL communicates CUDA tensors; gloo CPU tensors."""
    if torch_dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ----------------------------------------------------------------------------------------------
# one optimizer step's forward and backward passes


def forward_backward(model, rows, loss_fn, count=len, micro_batch_size: int = 0) -> dict:
    """Forward and backward over this rank's `rows` of a global batch, in micro-batches.

    loss_fn(chunk) -> (loss, stats): the mean loss over the items (or tokens) of a chunk of
    rows, and a dict of floats to log, each a mean over the same items. count(chunk) says how
    many items or tokens the chunk's mean is over (default: its number of rows). Each
    micro-batch's loss is scaled by its share of the global count (`loss_share`) and DDP's
    all-reduce runs only in the last backward (`sync_gradients`), so the gradients left in
    the model are those of the global mean loss on every rank, whatever the number of
    processes and micro-batches.

    Returns {"loss": global mean loss, **stats as global means}: what a single process would
    log for the whole batch. With one process and one micro-batch this is exactly
    `loss.backward()` and `loss.item()`: the same numbers, bit for bit.
    """
    chunks = micro_batches(rows, micro_batch_size)
    counts = [float(count(chunk)) for chunk, _ in chunks]
    total = all_reduce_sum(sum(counts))
    logged: dict = {}
    for (chunk, last), n in zip(chunks, counts):
        with sync_gradients(model, last):
            loss, stats = loss_fn(chunk)
            share = loss_share(n, total)
            (loss if share is None else loss * share).backward()
        for key, value in {"loss": loss.item(), **stats}.items():
            # this chunk's part of the global mean (summed over ranks below)
            part = value if share is None else value * share / world_size()
            logged[key] = logged.get(key, 0.0) + part
    return {key: all_reduce_sum(value) for key, value in logged.items()}

