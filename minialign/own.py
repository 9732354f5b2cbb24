"""Your own model and data: a GPT-2 checkpoint and its tokenizer, your demonstrations and your
preference pairs, through minialign's SFT and DPO (docs/own_model_and_data.md).

    from minialign import dpo, own, sft
    model, tokenizer = own.load_gpt2("gpt2/model.safetensors or a state dict",
                                     "gpt2/vocab.json", "gpt2/merges.txt")
    own.start_run("runs/mine", model, tokenizer)          # DIR/pretrain + DIR/tokenizer.json
    sft.train(sft.SFTConfig(data="demos.jsonl"), "runs/mine")
    dpo.train(dpo.DPOConfig(data="prefs.jsonl"), "runs/mine")

The files, one JSON object per line:
    demonstrations   {"prompt": "...", "response": "..."}
    preferences      {"prompt": "...", "chosen": "...", "rejected": "..."}        (a pair), or
                     {"prompt": "...", "responses": ["best", "next", ...]}        (a ranking)
The preferences file has the format of the preferences stage's own (minialign/preferences.py,
which reads it); a ranking of K responses gives its C(K, 2) pairs. Nothing here downloads
anything: the files are yours.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from .model import GPT
from .tokenizer import Tokenizer
from .utils import read_jsonl, save_checkpoint


def load_gpt2(state_dict, vocab_json, merges_txt, n_head: int | None = None,
              block_size: int | None = None):
    """A GPT-2 checkpoint (a state dict in Hugging Face's GPT2LMHeadModel layout, or the path
    of one saved with torch.save) and its BPE files -> (GPT, Tokenizer), the embedding grown
    to hold the chat tokens."""
    if not isinstance(state_dict, dict):
        state_dict = torch.load(state_dict, map_location="cpu", weights_only=True)
    model = GPT.from_hf_state_dict(state_dict, n_head=n_head, block_size=block_size)
    tokenizer = Tokenizer.from_gpt2_files(vocab_json, merges_txt)
    return resize_vocab(model, tokenizer.vocab_size), tokenizer


def resize_vocab(model: GPT, vocab_size: int) -> GPT:
    """A copy of `model` whose token embedding (tied to the output layer) has vocab_size rows.

    New rows (the chat tokens a GPT-2 checkpoint never saw) start at the mean of the existing
    embeddings, a common choice: their logits then start near the average token's, instead of
    a random direction that could dominate the first samples."""
    old = model.transformer.wte.weight.data  # (V_old, C)
    if vocab_size < old.size(0):
        raise ValueError(f"vocab_size {vocab_size} is smaller than the model's {old.size(0)}")
    from dataclasses import replace

    new_model = GPT(replace(model.config, vocab_size=vocab_size))
    state = model.state_dict()
    wte = old.mean(0, keepdim=True).repeat(vocab_size, 1)  # (V, C)
    wte[: old.size(0)] = old
    state["transformer.wte.weight"] = wte
    state.pop("lm_head.weight", None)  # tied to wte
    new_model.load_state_dict(state, strict=False)
    return new_model


def start_run(out_dir, model: GPT, tokenizer: Tokenizer) -> Path:
    """Make `model` and `tokenizer` the pretrained model of the run folder DIR (what the sft
    stage reads: DIR/pretrain/model.pt and DIR/tokenizer.json)."""
    out_dir = Path(out_dir)
    if model.config.vocab_size < tokenizer.vocab_size:
        raise ValueError(f"the model has {model.config.vocab_size} token embeddings and the "
                         f"tokenizer {tokenizer.vocab_size} tokens: use own.resize_vocab")
    tokenizer.save(out_dir / "tokenizer.json")
    save_checkpoint(model.checkpoint(done=True, train_config={"source": "own model"}),
                    out_dir / "pretrain" / "model.pt")
    return out_dir


# ----------------------------------------------------------------------------------------------
# data files


def read_demonstrations(path) -> list[tuple[str, str]]:
    """A JSONL of {"prompt", "response"} -> [(prompt, response)], what SFT trains on."""
    out = []
    for n, row in enumerate(read_jsonl(path), 1):
        if not isinstance(row.get("prompt"), str) or not isinstance(row.get("response"), str):
            raise ValueError(f"{path}, example {n}: needs string fields 'prompt' and 'response'")
        out.append((row["prompt"], row["response"]))
    return out


def split(items: list, val_fraction: float = 0.1, seed: int = 0) -> tuple[list, list]:
    """(train, val): a seeded shuffle, then at least one item held out for validation."""
    items = list(items)
    random.Random(seed).shuffle(items)
    n_val = max(1, int(len(items) * val_fraction)) if len(items) > 1 else 0
    return items[n_val:], items[:n_val]
