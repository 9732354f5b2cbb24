"""Supervised fine-tuning: from a text continuer to an assistant.

Instruction alignment (Ouyang et al. 2022, step 1; also "SFT" in every RLHF recipe): train the
pretrained model on (prompt, response) demonstrations written by people, with the ordinary
next-token loss, but only on the response tokens. The model learns the *format* of an
assistant: read the user's turn, answer it, emit <|end|>, stop. It learns nothing about which
of two answers is better: it imitates the demonstrations, flaws included (the simulated
contractors are sometimes wrong, rude or long-winded), which is what preference learning later
improves on.

    input_ids:  <|user|> what is 7 plus 5 ? <|assistant|> 12 . <|end|>
    labels:      -100   -100 -100 ... -100     -100      12 .  <|end|>

The loss at position t predicts labels[t + 1] from input_ids[: t + 1] (the shift), and the
end-of-turn token is scored so that the model learns to stop. Padding (<|pad|>, distinct from
<|end|>) gets -100. One optimisation step is `sft_step`: pretraining's step with this loss.

    python -m minialign sft [--fast] [--out runs/default]
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from . import dist, tracking
from . import world as world_lib
from .evaluate import FAST_EVAL_PROMPTS, TEMPERATURE
from .model import GPT
from .tokenizer import Tokenizer
from .utils import (cosine_lr, length_grouped_batches, load_stage_model,
                    make_optimizer, pick_device, progress, save_checkpoint, set_seed, time_as,
                    timed, timer, write_json)

IGNORE = -100  # label value that F.cross_entropy skips


@dataclass
class SFTConfig:
    n_demos: int = 4000  # contractor demonstrations (prompt, response)
    epochs: int = 4  # passes over the demonstrations (3 leave held-out translation near 50%)
    batch_size: int = 32
    lr: float = 1e-3  # peak learning rate
    warmup_steps: int = 20
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    val_fraction: float = 0.05  # demonstrations held out for the validation loss
    eval_samples: int = 2  # sampled responses per held-out prompt for the gold evaluation
    eval_prompts: int = 0  # held-out prompts evaluated on (evaluate.eval_tasks; 0: all 270)
    max_new_tokens: int = 64  # response budget when sampling (the longest good answers use ~45)
    temperature: float = TEMPERATURE  # sampling temperature of the evaluation
    micro_batch_size: int = 0  # chats per forward pass (gradient accumulation); 0: the batch
    data: str = ""  # your own demonstrations: a JSONL of {"prompt", "response"} (own.py)
    seed: int = 0

    def __post_init__(self):
        if self.n_demos < 2 or self.epochs <= 0 or self.batch_size <= 0:
            raise ValueError("n_demos >= 2, epochs > 0 and batch_size > 0 are required")

    @classmethod
    def fast(cls, **overrides) -> "SFTConfig":
        base = dict(n_demos=600, epochs=1, batch_size=16, eval_samples=1, max_new_tokens=32,
                    eval_prompts=FAST_EVAL_PROMPTS)
        base.update(overrides)
        return cls(**base)


# ==============================================================================================
# the algorithm: masked labels, the masked loss, one training step


def build_example(tokenizer: Tokenizer, prompt: str, response: str):
    """One chat as (input_ids, labels), both (T,) LongTensors of the same length.

    input_ids = <|user|> prompt <|assistant|> response <|end|>
    labels    = -100 on every token of the prompt part (the user turn and <|assistant|>),
                the token id on every response token, <|end|> included.
    Use `tokenizer.encode_prompt(prompt)` and `tokenizer.encode_response(response)`.
    """
    # >>> exercise: chapter=3 difficulty=1 minutes=10
    prompt_ids = tokenizer.encode_prompt(prompt)  # <|user|> ... <|assistant|>
    response_ids = tokenizer.encode_response(response)  # ... <|end|>
    input_ids = torch.tensor(prompt_ids + response_ids, dtype=torch.long)  # (T,)
    labels = torch.tensor([IGNORE] * len(prompt_ids) + response_ids, dtype=torch.long)  # (T,)
    return input_ids, labels
    # <<< exercise


def sft_loss(logits, labels):
    """Mean next-token cross-entropy over the tokens whose label is not -100.

    logits: (B, T, V) from input_ids; labels: (B, T) aligned with input_ids (as built by
    `build_example`, -100 on prompt and padding). Returns a 0-dim tensor in the graph (the
    loss is differentiated).

    The idea: pretraining's loss, restricted to the response. A causal model's logits at
    position t are its prediction of the *next* token, so they are scored against the label
    one position later, and the last position predicts nothing in the chat. Every scored token
    counts once in one mean over the batch (not a mean per chat, then over chats); a label of
    -100 counts nowhere, neither in the sum nor in the count.
    """
    # >>> exercise: chapter=3 difficulty=2 minutes=15
    # hint: shift by one: the predictions are logits[:, :-1], their targets labels[:, 1:]
    # hint: F.cross_entropy takes (N, V) logits and (N,) targets: flatten both with reshape;
    #       its ignore_index=-100 leaves those targets out of the sum and of the count
    # hint: F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1),
    #       ignore_index=-100)
    pred = logits[:, :-1, :]  # (B, T-1, V): the prediction made at each position
    target = labels[:, 1:]  # (B, T-1): the token that follows it
    return F.cross_entropy(pred.reshape(-1, pred.size(-1)), target.reshape(-1),
                           ignore_index=IGNORE)
    # <<< exercise


def sft_step(model, optimizer, input_ids, labels, lr, grad_clip) -> float:
    """One optimisation step of supervised fine-tuning on a batch of chats; returns its loss.

    model: a GPT; `model(input_ids)` returns (logits, None), logits (B, T, V). optimizer: an
    AdamW over the model's parameters (two parameter groups). input_ids, labels: (B, T) as
    `collate` makes them: right-padded chats, labels -100 on the prompt part and on padding.
    lr: this step's learning rate (from the schedule), for every parameter group; grad_clip:
    the largest gradient norm allowed before the update.
    Returns the batch's loss before the update, as a Python float: the `sft_loss` of the batch,
    a mean over its response tokens only.

    The idea: pretraining's step (chapter 2) with the prompt-masked loss, so that the model
    learns to write the answers and not the questions. The same edge cases: `.grad` still holds
    the previous step's gradients, the model may arrive in eval mode, the optimizer steps once.
    """
    # >>> exercise: chapter=3 difficulty=2 minutes=20
    model.train()  # dropout on: a validation pass leaves the model in eval mode
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)  # backward adds to .grad: drop the last step's
    logits, _ = model(input_ids)  # (B, T, V)
    loss = sft_loss(logits, labels)  # the response tokens only: the labels say which
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.item()
    # <<< exercise


def collate(examples, pad_id: int):
    """Right-pad a list of (input_ids, labels) into (B, T) tensors.

    Padding needs no attention mask on the right: under the causal mask no real token attends
    to a later pad. Pads get label -100, so they are never trained on.
    """
    if not examples:
        raise ValueError("cannot collate an empty batch")
    T = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), T), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), T), IGNORE, dtype=torch.long)
    for i, (ids, lab) in enumerate(examples):
        input_ids[i, : len(ids)] = ids
        labels[i, : len(lab)] = lab
    return input_ids, labels


# ==============================================================================================
# plumbing: data, loop, checkpoints


def make_examples(tokenizer, pairs, block_size, log=print):
    """Tokenised (input_ids, labels); demonstrations longer than the context are left out."""
    if not pairs:
        raise ValueError("no demonstrations to train on")
    examples = [build_example(tokenizer, prompt, response) for prompt, response in pairs]
    kept = [ex for ex in examples if len(ex[0]) <= block_size]
    if len(kept) < len(examples):
        log(f"sft: left out {len(examples) - len(kept)} demonstrations longer than the "
            f"context ({block_size} tokens)")
    if not kept:
        raise ValueError(f"every demonstration is longer than the context ({block_size})")
    return kept


@torch.no_grad()
def validation_loss(model, examples, pad_id, batch_size, device) -> float:
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(examples), batch_size):
        ids, labels = collate(examples[i: i + batch_size], pad_id)
        logits, _ = model(ids.to(device))
        n = int((labels[:, 1:] != IGNORE).sum())
        total += sft_loss(logits, labels.to(device)).item() * n
        count += n
    model.train()
    return total / max(count, 1)


def train(cfg: SFTConfig, out_dir: str | Path, device: str = "cpu", log=print) -> dict:
    """Fine-tune the pretrained model of DIR on demonstrations; evaluate against the gold reward."""
    from . import evaluate, plots
    from .pretrain import load_model

    out_dir = Path(out_dir)
    stage_dir = out_dir / "sft"
    dev = pick_device(device)
    set_seed(cfg.seed)
    world = world_lib.default_world()

    with timer() as elapsed:
        model, tokenizer = load_model(out_dir, dev)
        if cfg.data:  # your own demonstrations instead of the world's contractors'
            from .own import read_demonstrations

            pairs = read_demonstrations(cfg.data)
        else:
            pairs = world.demonstrations(cfg.n_demos, seed=cfg.seed)
        examples = make_examples(tokenizer, pairs, model.config.block_size, log)
        n_val = max(1, int(len(examples) * cfg.val_fraction))
        val, train_ex = examples[:n_val], examples[n_val:]
        steps_per_epoch = (len(train_ex) + cfg.batch_size - 1) // cfg.batch_size
        max_steps = steps_per_epoch * cfg.epochs
        optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay)
        ddp_model = dist.wrap(model)  # plumbing: DDP under torchrun, the model itself otherwise
        history = {"step": [], "train_loss": [], "val_step": [], "val_loss": []}
        history["val_step"].append(0)
        with timed("evaluation"):
            history["val_loss"].append(validation_loss(model, val, tokenizer.pad_id,
                                                       cfg.batch_size, dev))
        time_as("training")  # (the stage's time split, utils.TimeSplit)
        order_rng = random.Random(cfg.seed)
        model.train()
        step = 0
        bar = progress(total=max_steps, desc="sft")
        lengths = [len(ids) for ids, _ in train_ex]

        def batch_loss(rows):  # the masked loss of some demonstrations: a mean over their tokens
            ids, labels = collate([train_ex[j] for j in rows], tokenizer.pad_id)
            logits, _ = ddp_model(ids.to(dev))
            return sft_loss(logits, labels.to(dev)), {}

        def scored_tokens(rows):  # the tokens that mean is over (labels after the shift)
            return sum(int((train_ex[j][1][1:] != IGNORE).sum()) for j in rows)

        for epoch in range(cfg.epochs):
            for batch_idx in length_grouped_batches(lengths, cfg.batch_size, order_rng):
                lr = cosine_lr(step, max_steps, cfg.lr, cfg.warmup_steps)
                if len(batch_idx) < dist.world_size():
                    continue  # plumbing (torchrun only): a last batch too small to share out
                if dist.is_distributed() or cfg.micro_batch_size:
                    # plumbing: sft_step's update over this rank's chats, in micro-batches
                    # weighted by their tokens (written out here, so that the library holds no
                    # other callable copy of the exercise)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    optimizer.zero_grad(set_to_none=True)
                    loss = dist.forward_backward(ddp_model, dist.shard(batch_idx), batch_loss,
                                                 scored_tokens, cfg.micro_batch_size)["loss"]
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    optimizer.step()
                else:
                    ids, labels = collate([train_ex[j] for j in batch_idx], tokenizer.pad_id)
                    loss = sft_step(model, optimizer, ids.to(dev), labels.to(dev), lr,
                                    cfg.grad_clip)
                history["step"].append(step)
                history["train_loss"].append(loss)
                tracking.log({"train/loss": loss, "train/learning_rate": lr}, step)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}")
                step += 1
            if dist.is_main():  # rank 0 evaluates
                history["val_step"].append(step)
                with timed("evaluation"):
                    history["val_loss"].append(validation_loss(model, val, tokenizer.pad_id,
                                                               cfg.batch_size, dev))
                tracking.log({"eval/loss": history["val_loss"][-1]}, step)
        bar.close()
        time_as("other")
        train_seconds = elapsed()
        if not dist.is_main():  # plumbing: rank 0 evaluates and writes; the others are done
            return {"world_size": dist.world_size()}
        save_checkpoint(model.checkpoint(train_config=asdict(cfg)), stage_dir / "model.pt")

        # evaluation: the SFT model and the pretrained model on the same held-out prompts
        time_as("evaluation")
        tasks = evaluate.eval_tasks(cfg.eval_prompts, world)
        kw = dict(n_samples=cfg.eval_samples, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed,
                  temperature=cfg.temperature)
        sft_eval = evaluate.evaluate_policy(model, tokenizer, tasks, **kw)
        pretrained, _ = load_model(out_dir, dev)
        pre_eval = evaluate.evaluate_policy(pretrained, tokenizer, tasks, **kw)
        win = evaluate.win_rate(sft_eval["gold"], pre_eval["gold"])
        time_as("other")

    metrics = {
        "gold_reward_mean": sft_eval["gold_reward_mean"],
        "task_success_rate": sft_eval["task_success_rate"],
        # gold_reward_mean_se, task_success_rate_se, win_rate_vs_pretrained_se
        **evaluate.error_bars(sft_eval, versus=pre_eval, versus_name="pretrained"),
        "end_rate": sft_eval["end_rate"],
        "per_family": sft_eval["per_family"],
        "pretrained_gold_reward_mean": pre_eval["gold_reward_mean"],
        "pretrained_task_success_rate": pre_eval["task_success_rate"],
        **{f"pretrained_{k}": v for k, v in evaluate.error_bars(pre_eval).items()},
        "pretrained_end_rate": pre_eval["end_rate"],
        "pretrained_per_family": pre_eval["per_family"],
        "win_rate_vs_pretrained": win,
        "val_loss": history["val_loss"][-1],
        "n_demos": cfg.n_demos,
        "world_size": dist.world_size(),  # processes that trained it (torchrun); 1 otherwise
        "train_seconds": train_seconds,
        "seconds": elapsed(),
        "samples": evaluate.side_by_side(tasks, {"pretrained": pre_eval, "sft": sft_eval}),
        "config": asdict(cfg),
        "history": history,
    }
    write_json(metrics, stage_dir / "metrics.json")
    plots.loss_curve(history, stage_dir / "loss.png", title="SFT (response tokens only)")
    plots.family_bars({"pretrained": pre_eval["per_family"], "sft": sft_eval["per_family"]},
                      "success", stage_dir / "success_by_family.png",
                      title="task success on held-out prompts")
    log(f"sft: task success {pre_eval['task_success_rate']:.0%} (pretrained) -> "
        f"{sft_eval['task_success_rate']:.0%}; gold reward {pre_eval['gold_reward_mean']:.2f} -> "
        f"{sft_eval['gold_reward_mean']:.2f}; {metrics['seconds']:.0f} s")
    return metrics


def load_model(out_dir: str | Path, device="cpu") -> tuple[GPT, Tokenizer]:
    """The SFT model and tokenizer of a run folder."""
    return load_stage_model(out_dir, "sft", device), Tokenizer.load(Path(out_dir) / "tokenizer.json")
