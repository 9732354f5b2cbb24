"""Plumbing shared by every stage: device, seeding, atomic checkpoints, JSON, timing, memory.

Nothing here is about alignment; it is kept in one place so that the algorithm files stay
short. Every stage calls `pick_device`, `set_seed`, `save_checkpoint`/`load_checkpoint` and
`write_json` from here.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch

# ----------------------------------------------------------------------------------------------
# device and seed


def pick_device(name: str | torch.device | None = None) -> torch.device:
    """'cpu' (the default), 'cuda', 'mps', or 'auto' (the best accelerator present, else cpu)."""
    if isinstance(name, torch.device):
        return name
    if name is None or name == "cpu":
        return torch.device("cpu")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device is visible to torch; use --device cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("--device mps: MPS is not available on this machine; use --device cpu")
    return torch.device(name)


PRECISIONS = ("fp32", "bf16", "auto")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be 'fp32', 'bf16' or 'auto', got {precision!r}")


def use_bf16(device: torch.device, precision: str) -> bool:
    """Whether to train in bf16 mixed precision: precision is 'fp32', 'bf16' or 'auto'.

    'auto' picks bf16 where the hardware multiplies bf16 matrices natively: a CUDA GPU that
    supports it, or a CPU with native bf16 instructions (native_bf16_cpu): there a training step
    of the default model ran 1.5x (AMX) and 1.6x (AVX-512 BF16) faster than in fp32. Elsewhere
    (most laptops) bf16 is emulated and slower, so 'auto' keeps fp32.
    """
    check_precision(precision)
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return native_bf16_cpu() is not None
    return False


def native_bf16_cpu() -> str | None:
    """The CPU's native bf16 instructions: "AMX" (Intel Xeons from Sapphire Rapids on),
    "AVX-512 BF16" (AMD Zen 4 and later, Intel Cooper Lake), or None (most laptops)."""
    for name, probe in (("AMX", "_is_amx_tile_supported"),
                        ("AVX-512 BF16", "_is_avx512_bf16_supported")):
        supported = getattr(torch.cpu, probe, None)  # (private probes: absent on old PyTorch)
        if supported is not None and supported():
            return name
    return None


def autocast(device: torch.device, enabled: bool):
    """bf16 mixed precision for a forward pass when enabled: matmuls in bf16, weights, optimizer
    state and gradients stay fp32 (Micikevicius et al. 2018). A no-op when not enabled."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def set_seed(seed: int) -> torch.Generator:
    """Seed torch's global generator and return a separate CPU generator for sampling.

    Sampling uses an explicit `torch.Generator` so that drawing samples does not shift the
    random stream of anything else (dropout, data order) and the same seed gives the same run.
    """
    torch.manual_seed(seed)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


# One seed per stage, several random streams: each stream draws from `seed + its offset`, so
# that drawing more from one stream never shifts another, and no two streams share numbers.
EVAL_SEED_OFFSET = 1  # answers sampled on held-out prompts: a trained policy's evaluation, and
#                       the best-of-N stage's candidates
LABEL_SEED_OFFSET = 1  # the simulated labellers' noise, offset from the seed of the candidates
#                        they rank (their draws never reuse the sampling's numbers)
HELD_OUT_SEED_OFFSET = 7  # the held-out preference data: its candidates (and, + LABEL_SEED_OFFSET,
#                           their labels), apart from the training prompts' streams
FOOLING_SEED_OFFSET = 2  # compare: fresh answers of the weak-KL PPO policy, searched for the
#                          ones that fool the reward model (not its evaluation answers again)
PRESSURE_SEED_OFFSET = 11  # compare: the SFT samples best-of-N picks from under growing N (not
#                            the bon stage's candidates again)


def fast_mode() -> bool:
    """True when MINIALIGN_FAST=1: notebooks and tests shrink their training to seconds."""
    return os.environ.get("MINIALIGN_FAST", "0") not in ("", "0", "false", "False")


# ----------------------------------------------------------------------------------------------
# files: written atomically, so a crash never leaves a half-written checkpoint or report


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows: readers see old or new, never half
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_checkpoint(obj: dict, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, then rename it into place."""
    _atomic_write(Path(path), lambda f: torch.save(obj, f))


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint written by `save_checkpoint` (tensors and plain Python values only)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}: run the stage that writes it first")
    return torch.load(path, map_location=map_location, weights_only=True)


def load_stage_model(out_dir: str | Path, stage: str, device="cpu"):
    """The GPT that a stage saved at DIR/STAGE/model.pt (sft, ppo, dpo, ...), on `device`."""
    from .model import GPT  # here: the model file does not need the plumbing, only this does

    dev = pick_device(device)
    ckpt = load_checkpoint(Path(out_dir) / stage / "model.pt", map_location=dev)
    return GPT.from_checkpoint(ckpt).to(dev)


def display_path(path: str | Path) -> str:
    """A path as a reader should see it: relative to the repository (or the working folder)
    when it lies inside it, so that logs and notebook outputs hold no machine's home folder."""
    path = Path(os.path.abspath(path))  # (symlinks kept: runs/default may point elsewhere)
    for base in (Path(os.path.abspath(Path(__file__).parent.parent)), Path(os.getcwd())):
        if path == base or base in path.parents:
            return path.relative_to(base).as_posix() or "."
    return str(path)


def write_json(obj, path: str | Path) -> None:
    data = (json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n").encode()
    _atomic_write(Path(path), lambda f: f.write(data))


def read_json(path: str | Path):
    with open(path) as f:
        return json.load(f)


def write_text(text: str, path: str | Path) -> None:
    _atomic_write(Path(path), lambda f: f.write(text.encode()))


def write_jsonl(rows: list[dict], path: str | Path) -> None:
    """One JSON object per line (JSON Lines): a file a person can read, grep and extend."""
    write_text("".join(json.dumps(row) + "\n" for row in rows), path)


def read_jsonl(path: str | Path) -> list[dict]:
    """The objects of a JSON Lines file (blank lines skipped). A line that is not JSON raises a
    ValueError naming the file and the line; an empty file, one saying it holds nothing."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}, line {n}: not JSON ({e.msg})") from None
    if not rows:
        raise ValueError(f"{path} holds no examples")
    return rows


def _json_default(x):
    if isinstance(x, torch.Tensor):
        return x.tolist()
    if hasattr(x, "item"):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"cannot write {type(x).__name__} to JSON")


# ----------------------------------------------------------------------------------------------
# time and memory


@contextmanager
def timer():
    """`with timer() as t: ...` then `t()` gives the elapsed seconds (also while running)."""
    start = time.perf_counter()
    end = None

    def elapsed():
        return (end or time.perf_counter()) - start

    try:
        yield elapsed
    finally:
        end = time.perf_counter()


class TimeSplit:
    """Where a stage's seconds go: "sampling" (generating responses to learn from: PPO's and
    GRPO's rollouts, the preference candidates, best-of-N's candidates), "training" (forward,
    backward and optimizer steps, the scoring passes of the RL loops included), "evaluation"
    (sampling on held-out prompts, gold and proxy scoring, validation losses) and "other"
    (loading, data, checkpoints, figures: whatever no category claimed).

        with TimeSplit() as split:        # (the pipeline opens one around each stage)
            ...                           # the stage's code: time_as / timed, at any depth
        split.seconds                     # {"sampling": s, "training": s, "evaluation": s, "other": s}

    A lap timer with one lane running at a time: `time_as("training")` sends the time from
    there on to training, `with timed("evaluation"):` sends a block's time to evaluation and
    then goes back to the lane that ran before (so PPO's evaluations, run from inside its
    training loop, count as evaluation only). With no TimeSplit open both do nothing.
    """

    CATEGORIES = ("sampling", "training", "evaluation", "other")
    _open: list["TimeSplit"] = []  # the splits opened and not yet closed (the last one counts)

    def __init__(self, clock=time.perf_counter):
        self.clock = clock
        self.seconds = {c: 0.0 for c in self.CATEGORIES}
        self.lane, self.since = "other", None

    def switch(self, category: str) -> str:
        """Charge the time since the last switch to the running lane, run `category` from now;
        returns the lane that was running."""
        if category not in self.seconds:
            raise ValueError(f"category must be one of {self.CATEGORIES}, got {category!r}")
        now = self.clock()
        self.seconds[self.lane] += now - self.since
        previous, self.lane, self.since = self.lane, category, now
        return previous

    def __enter__(self) -> "TimeSplit":
        self.since = self.clock()
        TimeSplit._open.append(self)
        return self

    def __exit__(self, *exc):
        self.switch("other")
        TimeSplit._open.remove(self)


def time_as(category: str) -> None:
    """From here on, the open TimeSplit's time counts as `category` (until the next switch)."""
    if TimeSplit._open:
        TimeSplit._open[-1].switch(category)


@contextmanager
def timed(category: str):
    """The block's time counts as `category` in the open TimeSplit, then the lane that ran
    before it runs again."""
    if not TimeSplit._open:
        yield
        return
    split = TimeSplit._open[-1]
    previous = split.switch(category)
    try:
        yield
    finally:
        split.switch(previous)


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, in MB (ru_maxrss is KB on Linux, B on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024**2 if sys.platform == "darwin" else rss / 1024


def progress(iterable=None, **kwargs):
    """A tqdm progress bar that stays quiet when output is not a terminal or a notebook log."""
    from tqdm.auto import tqdm

    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("leave", False)
    from . import dist

    # one bar per job: under torchrun only rank 0 shows it
    kwargs.setdefault("disable", os.environ.get("MINIALIGN_NO_PROGRESS", "0") == "1"
                      or not dist.is_main())
    return tqdm(iterable, **kwargs)


# ----------------------------------------------------------------------------------------------
# batches of token ids of different lengths


def pad_sequences(seqs: list[list[int]], pad_id: int, side: str):
    """Lists of ids -> (ids (B, T), padding_mask (B, T)), padded on the "left" or the "right".

    Generation pads on the left, so that every prompt ends in the last column and the next
    token of every row is predicted at the same position; scoring whole sequences pads on the
    right, so that position t means the same token in every row."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    if not seqs:
        raise ValueError("no sequences to pad")
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.bool)
    for i, s in enumerate(seqs):
        where = slice(T - len(s), T) if side == "left" else slice(0, len(s))
        ids[i, where] = torch.tensor(s, dtype=torch.long)
        mask[i, where] = True
    return ids, mask


def left_pad(seqs: list[list[int]], pad_id: int):
    return pad_sequences(seqs, pad_id, "left")


def right_pad(seqs: list[list[int]], pad_id: int):
    return pad_sequences(seqs, pad_id, "right")


# ----------------------------------------------------------------------------------------------
# optimiser shared by every training stage


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float = 0.0,
                   betas=(0.9, 0.95)) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on biases, LayerNorm gains or positions' 1-D)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    # the fused/foreach kernels are the fast path on CPU too; foreach is the portable default
    return torch.optim.AdamW(groups, lr=lr, betas=betas, foreach=True)


def cosine_lr(step: int, max_steps: int, lr: float, warmup: int, min_lr_ratio: float = 0.1) -> float:
    """Linear warmup for `warmup` steps, then cosine decay to `min_lr_ratio * lr` at `max_steps`."""
    import math

    if step < warmup:
        return lr * (step + 1) / warmup
    progress_ = min(1.0, (step - warmup) / max(1, max_steps - warmup))
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress_)))


def length_grouped_batches(lengths: list[int], batch_size: int, rng, group: int = 16):
    """Shuffled batches of indices whose sequences have similar lengths.

    Batches are padded to their longest sequence; with random batches about half of the
    tokens computed on would be padding here. Shuffle, cut into groups of `group` batches, sort
    each group by length, cut it into batches, shuffle the batches: nearly no padding, and
    the order is still random from one epoch to the next.
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches = []
    for start in range(0, len(order), batch_size * group):
        chunk = sorted(order[start: start + batch_size * group], key=lambda i: lengths[i])
        batches += [chunk[i: i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches
