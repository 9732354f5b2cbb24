"""Pretraining: next-token prediction on the world's "web" corpus.

The objective of GPT (Radford et al. 2018/2019): maximise log p(x_t | x_<t) over every token
of the corpus, i.e. minimise the mean cross-entropy of the next token. The model learns the
world's language and facts, and nothing about being an assistant: asked a question, it writes
what tends to follow a question on its web, which is often another question.

Recipe (nanoGPT's, shrunk): documents joined by <|endoftext|> into one token stream, random
windows of block_size + 1 tokens, AdamW with weight decay on matrices, linear warmup then
cosine decay, gradient clipping at 1, periodic validation on held-out documents, atomic
checkpoints and resume. One optimisation step is `pretrain_step` (an exercise of chapter 2);
`train` is the loop around it.

    python -m minialign pretrain [--fast] [--out runs/default] [--seed 0]
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch

from . import dist, tracking
from . import world as world_lib
from .model import GPT, GPTConfig, check_same_config
from .tokenizer import Tokenizer
from .utils import (autocast, check_precision, cosine_lr, load_checkpoint, make_optimizer,
                    pick_device, progress, save_checkpoint, set_seed, time_as, timed, timer,
                    use_bf16, write_json)


# `--size`: the model's shape. "default" is the CPU size (PretrainConfig's own fields).
# "gpt2" is GPT-2 small's shape (Radford et al. 2019: 12 layers, 12 heads, 768 channels,
# 1024 positions), for a GPU: 85M parameters with minialign's 1024-token vocabulary, 124M with
# GPT-2's own 50,257 tokens. Its learning rate is GPT-2's (small models take larger ones), the
# corpus is 5x larger, and each forward pass takes 8 windows (gradient accumulation).
SIZES = {
    "default": {},
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, lr=6e-4, n_docs=200_000,
                 micro_batch_size=8),
}


@dataclass
class PretrainConfig:
    n_docs: int = 40_000  # corpus documents (about 2M tokens); generated in about a second
    vocab_size: int = 1024  # BPE vocabulary, special tokens included
    n_layer: int = 3  # 4: no better model, 29% more FLOPs per token
    n_head: int = 6
    n_embd: int = 192
    block_size: int = 128  # context length; chats are well under it
    batch_size: int = 32  # windows per step
    max_steps: int = 640  # 640 x 32 x 128 = 2.6M tokens, most of one pass over the corpus
    lr: float = 2e-3  # peak learning rate (small models like large ones)
    warmup_steps: int = 50
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_interval: int = 100  # steps between validation passes (and checkpoints)
    eval_batches: int = 8  # batches per validation pass
    val_fraction: float = 0.05  # documents held out for validation
    precision: str = "auto"  # "fp32", "bf16" (mixed) or "auto": bf16 where it is native (utils)
    micro_batch_size: int = 0  # windows per forward pass (gradient accumulation); 0: the batch
    seed: int = 0

    def __post_init__(self):
        if self.max_steps <= 0 or self.batch_size <= 0 or self.n_docs <= 0:
            raise ValueError("max_steps, batch_size and n_docs must be positive")
        if not 0 < self.val_fraction < 1:
            raise ValueError("val_fraction must be in (0, 1)")
        check_precision(self.precision)

    @classmethod
    def fast(cls, **overrides) -> "PretrainConfig":
        """A quick configuration for demos and CI: seconds, not minutes."""
        base = dict(n_docs=4000, vocab_size=512, n_layer=2, n_head=2, n_embd=64, block_size=128,
                    batch_size=16, max_steps=60, warmup_steps=10, eval_interval=30,
                    eval_batches=2)
        base.update(overrides)
        return cls(**base)

    def model_config(self, vocab_size: int) -> GPTConfig:
        return GPTConfig(vocab_size=vocab_size, block_size=self.block_size, n_layer=self.n_layer,
                         n_head=self.n_head, n_embd=self.n_embd)


# ----------------------------------------------------------------------------------------------
# data


def build_token_stream(docs: list[str], tokenizer: Tokenizer) -> torch.Tensor:
    """Documents -> one long (N,) stream of ids, each document followed by <|endoftext|>."""
    ids = []
    for doc in docs:
        ids.extend(tokenizer.encode(doc))
        ids.append(tokenizer.eot_id)
    return torch.tensor(ids, dtype=torch.long)


def get_batch(stream: torch.Tensor, batch_size: int, block_size: int, generator):
    """Random windows: x (B, T) and y (B, T) = x shifted left by one token."""
    if len(stream) <= block_size + 1:
        raise ValueError(f"token stream of {len(stream)} tokens is too short for windows of "
                         f"{block_size + 1}: generate more documents")
    starts = torch.randint(len(stream) - block_size - 1, (batch_size,), generator=generator)
    offsets = torch.arange(block_size + 1)
    windows = stream[starts.unsqueeze(1) + offsets]  # (B, T + 1)
    return windows[:, :-1], windows[:, 1:]


def prepare_data(cfg: PretrainConfig, out_dir: Path, train_tokenizer: bool = True):
    """Generate the corpus, train (or, when resuming, load) the tokenizer; return
    (tokenizer, train stream, validation stream). Validation documents are held out of both
    the tokenizer and the model's training."""
    docs = world_lib.sample_corpus(cfg.n_docs, seed=cfg.seed)
    n_val = max(1, int(len(docs) * cfg.val_fraction))
    tok_path = out_dir / "tokenizer.json"
    if train_tokenizer:
        tokenizer = Tokenizer.train(docs[n_val:], cfg.vocab_size)
        if dist.is_main():  # under torchrun every rank trains the same tokenizer; one writes it
            tokenizer.save(tok_path)
    else:
        tokenizer = Tokenizer.load(tok_path)
    train = build_token_stream(docs[n_val:], tokenizer)
    val = build_token_stream(docs[:n_val], tokenizer)
    return tokenizer, train, val


# ----------------------------------------------------------------------------------------------
# training


def pretrain_step(model, optimizer, x, y, lr, grad_clip, forward_context=nullcontext) -> float:
    """One optimisation step of next-token prediction on one batch; returns the batch's loss.

    model: a GPT; `model(x, y)` returns (logits, loss), the loss being the mean cross-entropy
    of the next token over the B * T positions. optimizer: an AdamW over the model's
    parameters, in two parameter groups (matrices with weight decay, the rest without).
    x, y: (B, T) token ids; y[:, t] is the token that follows x[:, t].
    lr: this step's learning rate, from the schedule (`cosine_lr`); the optimizer was built
    with another one, and every parameter group must use this one for this step.
    grad_clip: the largest norm allowed for the gradient of all the parameters together; a
    larger gradient is scaled down to that norm before the update
    (`torch.nn.utils.clip_grad_norm_`).
    forward_context: returns the context the forward pass runs in (`with forward_context():`);
    the loop passes bf16 mixed precision when it is on. Backward runs outside it.
    Returns the batch's loss before the update, as a Python float.

    The idea: the gradient of this batch's loss, and of nothing else, moves the parameters one
    AdamW step downhill. Edge cases: `.grad` still holds the previous step's gradients when
    the step starts (backward adds to whatever is there); the model may arrive in eval mode
    (a validation pass sets it), but it trains in training mode (dropout on); the optimizer
    steps exactly once.
    """
    # >>> exercise: chapter=2 difficulty=2 minutes=25
    model.train()  # dropout on: a validation pass may have left the model in eval mode
    for group in optimizer.param_groups:  # both groups: with and without weight decay
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)  # backward adds to .grad: drop the last step's
    with forward_context():
        _, loss = model(x, y)  # mean next-token cross-entropy over the batch
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)  # before the step it limits
    optimizer.step()
    return loss.item()
    # <<< exercise


@torch.no_grad()
def estimate_loss(model, stream, cfg: PretrainConfig, device) -> float:
    """Mean loss over a fixed set of validation windows (the same ones at every evaluation)."""
    g = torch.Generator().manual_seed(12345)
    model.eval()
    losses = []
    for _ in range(cfg.eval_batches):
        x, y = get_batch(stream, cfg.batch_size, cfg.block_size, g)
        _, loss = model(x.to(device), y.to(device))
        losses.append(loss.item())
    model.train()
    return sum(losses) / len(losses)


def train(cfg: PretrainConfig, out_dir: str | Path, device: str = "cpu", resume: bool = True,
          log=print) -> dict:
    """Pretrain a GPT on the world's corpus; write DIR/pretrain/{model.pt, metrics.json, *.png}.

    With resume=True a run interrupted after a checkpoint continues from it.
    """
    out_dir = Path(out_dir)
    stage_dir = out_dir / "pretrain"
    stage_dir.mkdir(parents=True, exist_ok=True)
    dev = pick_device(device)
    g = set_seed(cfg.seed)

    with timer() as elapsed:
        ckpt_path = stage_dir / "model.pt"
        ckpt = None
        if resume and ckpt_path.exists():
            ckpt = load_checkpoint(ckpt_path)
            if ckpt.get("done"):
                ckpt = None  # a finished run: start a new one
            elif ckpt.get("train_config") != asdict(cfg):
                raise ValueError(f"{ckpt_path} is an unfinished run of another pretraining "
                                 f"config; use another --out, or delete {stage_dir} to start over")
        tokenizer, train_stream, val_stream = prepare_data(cfg, out_dir,
                                                           train_tokenizer=ckpt is None)
        data_seconds = elapsed()
        model = GPT(cfg.model_config(tokenizer.vocab_size)).to(dev)
        ddp_model = dist.wrap(model)  # plumbing: DDP under torchrun, the model itself otherwise
        optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay)
        history = {"step": [], "train_loss": [], "val_step": [], "val_loss": [], "lr": []}
        start_step = 0
        if ckpt is not None:  # resume after a crash or an interruption
            check_same_config(model.config, GPTConfig(**ckpt["config"]))
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            history = ckpt["history"]
            start_step = ckpt["step"]
            g.set_state(ckpt["generator"])
            log(f"pretrain: resuming from step {start_step}")

        tokens_per_step = cfg.batch_size * cfg.block_size
        bf16 = use_bf16(dev, cfg.precision)
        forward_context = partial(autocast, dev, bf16)  # bf16 mixed precision, or nothing
        model.train()
        train_seconds = 0.0
        time_as("training")  # (the stage's time split, utils.TimeSplit)
        bar = progress(range(start_step, cfg.max_steps), desc="pretrain", initial=start_step,
                       total=cfg.max_steps)
        for step in bar:
            with timer() as step_time:
                lr = cosine_lr(step, cfg.max_steps, cfg.lr, cfg.warmup_steps)
                x, y = get_batch(train_stream, cfg.batch_size, cfg.block_size, g)  # (B, T) each
                if dist.is_distributed() or cfg.micro_batch_size:
                    # plumbing: pretrain_step's update, its batch shared out between processes
                    # (this rank's windows) and cut into micro-batches (written out here, so
                    # that the library holds no other callable copy of the exercise)
                    def window_loss(rows):  # mean next-token loss of some windows of the batch
                        with forward_context():
                            _, loss = ddp_model(x[rows].to(dev), y[rows].to(dev))
                        return loss, {}

                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    optimizer.zero_grad(set_to_none=True)
                    rows = dist.shard(torch.arange(cfg.batch_size))
                    loss_value = dist.forward_backward(
                        ddp_model, rows, window_loss, micro_batch_size=cfg.micro_batch_size)["loss"]
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    optimizer.step()
                else:
                    loss_value = pretrain_step(model, optimizer, x.to(dev), y.to(dev), lr,
                                               cfg.grad_clip, forward_context)
            train_seconds += step_time()
            history["step"].append(step)
            history["train_loss"].append(loss_value)
            history["lr"].append(lr)
            tracking.log({"train/loss": loss_value, "train/learning_rate": lr}, step)
            bar.set_postfix(loss=f"{loss_value:.3f}")
            last = step == cfg.max_steps - 1
            if ((step + 1) % cfg.eval_interval == 0 or last) and dist.is_main():
                with timed("evaluation"):
                    val_loss = estimate_loss(model, val_stream, cfg, dev)
                history["val_step"].append(step + 1)
                history["val_loss"].append(val_loss)
                tracking.log({"eval/loss": val_loss}, step + 1)
                bar.set_postfix(loss=f"{loss_value:.3f}", val=f"{val_loss:.3f}")
                if not last:
                    save_checkpoint(model.checkpoint(
                        train_config=asdict(cfg), optimizer=optimizer.state_dict(),
                        history=history, step=step + 1, generator=g.get_state(), done=False),
                        ckpt_path)
        bar.close()
        time_as("other")
        total_seconds = elapsed()
    if not dist.is_main():  # plumbing: rank 0 evaluates and writes; the others are done
        return {"world_size": dist.world_size()}

    steps_run = cfg.max_steps - start_step
    with timed("evaluation"):
        samples = sample_continuations(model, tokenizer, dev, seed=cfg.seed)
    metrics = {
        "val_loss": history["val_loss"][-1],
        "train_loss": sum(history["train_loss"][-20:]) / len(history["train_loss"][-20:]),
        "initial_loss_expected": float(torch.log(torch.tensor(float(tokenizer.vocab_size)))),
        "tokens_per_second": steps_run * tokens_per_step / max(train_seconds, 1e-9),
        "precision": "bf16" if bf16 else "fp32",
        "world_size": dist.world_size(),  # processes that trained it (torchrun); 1 otherwise
        "tokens_seen": cfg.max_steps * tokens_per_step,
        "corpus_tokens": len(train_stream),
        "n_params": model.num_params(),
        "seconds": total_seconds,
        "data_seconds": data_seconds,
        "samples": samples,
        "config": asdict(cfg),
        "history": history,
    }
    save_checkpoint(model.checkpoint(train_config=asdict(cfg), metrics=metrics, done=True),
                    ckpt_path)
    write_json(metrics, stage_dir / "metrics.json")
    from . import plots

    plots.loss_curve(history, stage_dir / "loss.png", title="pretraining")
    log(f"pretrain: val loss {metrics['val_loss']:.3f} (uniform would be "
        f"{metrics['initial_loss_expected']:.2f}), {metrics['tokens_per_second']:,.0f} tokens/s "
        f"({metrics['precision']}), {total_seconds:.0f} s")
    return metrics


def load_model(out_dir: str | Path, device="cpu") -> tuple[GPT, Tokenizer]:
    """The pretrained model and tokenizer of a run folder."""
    out_dir = Path(out_dir)
    ckpt = load_checkpoint(out_dir / "pretrain" / "model.pt", map_location=pick_device(device))
    if not ckpt.get("done"):
        raise ValueError(f"{out_dir}/pretrain/model.pt is an unfinished run: run "
                         f"`python -m minialign pretrain --out {out_dir}` to finish it")
    model = GPT.from_checkpoint(ckpt).to(pick_device(device))
    return model, Tokenizer.load(out_dir / "tokenizer.json")


@torch.no_grad()
def sample_continuations(model: GPT, tokenizer: Tokenizer, device, seed: int = 0,
                         n_tokens: int = 40) -> list[dict]:
    """Continue a few web-style openings: fluent world language, no assistant behaviour."""
    openings = ["the capital of peru is", "question: what is 7 plus 5?\nreply:",
                "question: translate to french: the red cat\nreply:",
                "question: my child has a fever of 103 f. what should i do?\nreply:",
                "here is a story about a chef."]
    g = torch.Generator().manual_seed(seed)
    out = []
    for text in openings:
        idx = torch.tensor([tokenizer.encode(text)], device=device)
        n = min(n_tokens, model.config.block_size - idx.size(1))
        ids = model.generate(idx, n, temperature=0.8, generator=g, eos_id=tokenizer.eot_id)
        cont = tokenizer.decode([i for i in ids[0, idx.size(1):].tolist() if i != tokenizer.eot_id])
        out.append({"prompt": text, "continuation": cont})
    return out
