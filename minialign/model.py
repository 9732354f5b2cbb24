"""A GPT in the GPT-2 architecture, small enough to train on a laptop CPU in minutes.

Radford et al. 2019 ("Language Models are Unsupervised Multitask Learners"): pre-LayerNorm
transformer blocks, GELU (tanh approximation) MLP, learned position embeddings, and an output
layer tied to the token embedding. Parameter names follow nanoGPT, so that a state dict in
Hugging Face's `GPT2LMHeadModel` layout maps onto it one tensor at a time
(`GPT.from_hf_state_dict`).

What is here:
  * `causal_self_attention`  attention written out by hand (the fused kernel gives the same numbers)
  * `GPT`                    forward, generate (with a KV cache), from_hf_state_dict, checkpoints
  * `filter_logits`          top-k / top-p filtering for sampling
  * `gather_logprobs`, `sequence_logprobs`   the log-prob helpers every alignment stage uses;
                             `logprobs_of_responses` runs the model and applies them to a batch
  * `ScalarHeadGPT`          the same trunk with a scalar head: the reward model

Padding: batches of prompts of different lengths are *left*-padded for generation. A boolean
`padding_mask` (True = real token) then removes pad keys from attention, and the position of
each real token is its index among the real tokens, so a left-padded prompt gets exactly the
logits it would get alone (without these position ids, the training forward of a left-padded
prompt would differ from the one used in generation, and PPO's first ratio would not be 1).
Right padding needs no mask at all: under a causal mask, a token never sees what comes after it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    vocab_size: int = 1024  # tokens in the vocabulary (BPE merges + 256 bytes + specials)
    block_size: int = 128  # longest sequence the model can see (learned positions)
    n_layer: int = 4  # transformer blocks
    n_head: int = 4  # attention heads per block
    n_embd: int = 128  # channels C; head size is n_embd // n_head
    dropout: float = 0.0  # 0 for RL: dropout changes log-probs between passes
    bias: bool = True  # biases in Linear and LayerNorm, as GPT-2
    # GPT-2 uses GELU's tanh approximation ("gelu_tanh"). The exact GELU ("gelu") differs from it
    # by under 1e-3 and its CPU kernel is about twice as fast, so our own models use it;
    # `from_hf_state_dict` sets gelu_tanh to reproduce GPT-2 exactly.
    activation: str = "gelu"
    fused_attention: bool = True  # F.scaled_dot_product_attention; same numbers as by hand

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"GPTConfig.{name} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"GPTConfig: n_embd={self.n_embd} is not divisible by "
                             f"n_head={self.n_head}; pick n_head dividing n_embd")
        if self.activation not in ("gelu", "gelu_tanh"):
            raise ValueError(f"GPTConfig.activation must be 'gelu' or 'gelu_tanh', "
                             f"got {self.activation!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout}")


# ==============================================================================================
# attention


def causal_self_attention(q, k, v, key_padding_mask=None):
    """Scaled dot-product attention where each query sees only keys at or before its position.

    q: (B, H, Tq, hs); k, v: (B, H, Tk, hs) with Tq <= Tk. The queries are the *last* Tq
    positions of the sequence: query i sits at position Tk - Tq + i. (Tq == Tk in training;
    Tq < Tk when a KV cache holds the keys of earlier tokens.)
    key_padding_mask: optional (B, Tk) bool, True for real tokens, False for padding keys,
    which no query may attend to. A query still attends to itself, so that a row made only of
    padding is not all -inf (its output is meaningless and is ignored by the caller).
    Returns y: (B, H, Tq, hs), differentiable with respect to q, k and v.

    The idea: each query scores every key it may see (the dot product of the two, scaled so
    that the scores do not grow with the head size hs), a softmax over those keys turns the
    scores into weights that sum to 1, and the output is the weighted mean of their values.
    Keys it may not see (the future, padding) get weight exactly 0. The notebook's section 2
    gives the formula.
    """
    # >>> exercise: chapter=2 difficulty=2 minutes=20
    # hint: the scores of every query against every key are one matrix product,
    #       q @ k.transpose(-2, -1): (B, H, Tq, Tk); heads and batch ride along
    # hint: query i sits at position Tk - Tq + i and may see key j when j <= Tk - Tq + i: build
    #       that (Tq, Tk) bool matrix from two torch.arange; with a key_padding_mask, view it as
    #       (B, 1, 1, Tk) and AND it in, keeping each query's own position allowed
    # hint: y = softmax(q kᵀ / sqrt(hs), -inf where not allowed (masked_fill), dim=-1) @ v
    Tq, Tk, hs = q.size(-2), k.size(-2), q.size(-1)
    att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)  # (B, H, Tq, Tk)
    q_pos = torch.arange(Tk - Tq, Tk, device=q.device).view(Tq, 1)  # (Tq, 1) absolute positions
    k_pos = torch.arange(Tk, device=q.device).view(1, Tk)  # (1, Tk)
    allowed = k_pos <= q_pos  # (Tq, Tk) causal
    if key_padding_mask is not None:
        real_key = key_padding_mask.view(-1, 1, 1, Tk)  # (B, 1, 1, Tk)
        allowed = allowed & (real_key | (k_pos == q_pos))  # (B, 1, Tq, Tk)
    att = att.masked_fill(~allowed, float("-inf"))
    att = F.softmax(att, dim=-1)
    return att @ v  # (B, H, Tq, Tk) @ (B, H, Tk, hs) -> (B, H, Tq, hs)
    # <<< exercise


# Set by `minialign.course.use` when a learner's causal_self_attention disagrees with the fused
# kernel: every model then runs the hand-written path, so the learner's bug shows in training.
FORCE_HAND_WRITTEN_ATTENTION = False


def _attention_mask(Tq, Tk, key_padding_mask, device):
    """The boolean mask of `causal_self_attention`, for the fused kernel: (B, 1, Tq, Tk)."""
    q_pos = torch.arange(Tk - Tq, Tk, device=device).view(Tq, 1)
    k_pos = torch.arange(Tk, device=device).view(1, Tk)
    allowed = k_pos <= q_pos
    if key_padding_mask is not None:
        allowed = allowed & (key_padding_mask.view(-1, 1, 1, Tk) | (k_pos == q_pos))
    return allowed


class KVCache:
    """Keys and values of every layer for the tokens seen so far, preallocated to `max_len`.

    Generation then feeds one new token per step instead of the whole sequence: attention of
    the new token needs the keys/values of the old ones, which do not change.
    """

    def __init__(self, config: GPTConfig, batch_size: int, max_len: int, device, dtype):
        hs = config.n_embd // config.n_head
        shape = (config.n_layer, batch_size, config.n_head, max_len, hs)  # (L, B, H, Tmax, hs)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0  # tokens stored so far
        self.max_len = max_len

    def append(self, layer: int, k, v):
        """Store k, v: (B, H, T, hs) after the cached tokens; return all keys/values (B, H, Tk, hs)."""
        start, end = self.length, self.length + k.size(2)
        if end > self.max_len:
            raise ValueError(f"KV cache holds at most {self.max_len} tokens, asked for {end}")
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, n: int):
        self.length += n

    def keep_rows(self, rows):
        """Keep only the batch rows `rows` (a (B,) bool or an index tensor): generation drops
        the rows that have ended, so that each step computes on the live ones alone."""
        self.k, self.v = self.k[:, rows], self.v[:, rows]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.fused = config.fused_attention

    def forward(self, x, key_padding_mask=None, cache: KVCache | None = None, layer: int = 0):
        B, T, C = x.size()
        hs = C // self.n_head
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, H, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, H, T, hs)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, H, T, hs)
        if cache is not None:
            k, v = cache.append(layer, k, v)  # (B, H, Tk, hs): cached tokens + these T
        dropout = self.attn_dropout if self.training else 0.0
        if q.dtype == torch.bfloat16 and q.device.type == "cpu":
            # under bf16 autocast on a CPU: the bf16 attention kernel's backward is ~6x slower
            # than fp32 there, so attention alone runs in fp32 (the matmuls around it stay bf16)
            with torch.autocast("cpu", enabled=False):
                y = self._attend(q.float(), k.float(), v.float(), key_padding_mask, dropout)
            y = y.to(torch.bfloat16)
        else:
            y = self._attend(q, k, v, key_padding_mask, dropout)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, H, hs) -> (B, T, C)
        return self.resid_dropout(self.c_proj(y))

    def _attend(self, q, k, v, key_padding_mask, dropout):
        """(B, H, T, hs) queries, (B, H, Tk, hs) keys and values -> (B, H, T, hs)."""
        T, Tk = q.size(2), k.size(2)
        if self.fused and not FORCE_HAND_WRITTEN_ATTENTION:
            if key_padding_mask is None and T == Tk:
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
            elif key_padding_mask is None and T == 1:
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)  # sees everything
            else:
                mask = _attention_mask(T, Tk, key_padding_mask, q.device)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        else:
            if dropout > 0:
                raise ValueError("the hand-written attention path has no dropout; use fused")
            y = causal_self_attention(q, k, v, key_padding_mask)
        return y


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh" if config.activation == "gelu_tanh" else "none")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, key_padding_mask=None, cache=None, layer=0):
        x = x + self.attn(self.ln_1(x), key_padding_mask, cache, layer)
        return x + self.mlp(self.ln_2(x))


# ==============================================================================================
# the model


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),  # token embedding (V, C)
            wpe=nn.Embedding(config.block_size, config.n_embd),  # position embedding (T, C)
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied: one (V, C) matrix in and out
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: residual projections scaled by depth
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    # ------------------------------------------------------------------------------------------

    def hidden_states(self, idx, padding_mask=None, cache: KVCache | None = None):
        """idx: (B, T) token ids -> final hidden states (B, T, C) after the last LayerNorm.

        padding_mask: optional (B, T_past + T) bool over every token so far (cached + new),
        True for real tokens. cache: a KVCache holding T_past earlier tokens, or None.
        """
        T_past = cache.length if cache is not None else 0
        self._check_input(idx, T_past, padding_mask)
        B, T = idx.size()
        if padding_mask is None:
            pos = torch.arange(T_past, T_past + T, device=idx.device).unsqueeze(0)  # (1, T)
        else:
            # a token's position is its index among the real tokens: left padding shifts nothing
            pos = (padding_mask.long().cumsum(1) - 1).clamp(min=0)[:, T_past:]  # (B, T)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B,T,C)
        for i, block in enumerate(self.transformer.h):
            x = block(x, padding_mask, cache, i)
        if cache is not None:
            cache.advance(T)
        return self.transformer.ln_f(x)  # (B, T, C)

    def forward(self, idx, targets=None, padding_mask=None, cache: KVCache | None = None):
        """idx: (B, T) -> logits (B, T, V), and the mean cross-entropy if targets are given.

        targets: (B, T) with targets[:, t] the token that should follow idx[:, :t+1]
        (usually idx shifted left by one); -100 marks positions left out of the loss.
        """
        x = self.hidden_states(idx, padding_mask, cache)
        logits = self.lm_head(x)  # (B, T, V)
        loss = None
        if targets is not None:
            if targets.shape != idx.shape:
                raise ValueError(f"targets {tuple(targets.shape)} must have the shape of idx "
                                 f"{tuple(idx.shape)}")
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1),
                                   ignore_index=-100)
        return logits, loss

    def _check_input(self, idx, T_past, padding_mask):
        if idx.dim() != 2:
            raise ValueError(f"idx must be (B, T) token ids, got shape {tuple(idx.shape)}")
        if idx.dtype not in (torch.long, torch.int, torch.int32, torch.int64):
            raise ValueError(f"idx must hold integer token ids, got dtype {idx.dtype}")
        T = T_past + idx.size(1)
        if T > self.config.block_size:
            raise ValueError(f"sequence of {T} tokens is longer than the context "
                             f"(block_size={self.config.block_size}): shorten the prompt or "
                             f"max_new_tokens")
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.config.vocab_size):
            raise ValueError(f"token ids must be in [0, {self.config.vocab_size}), got "
                             f"min={int(idx.min())} max={int(idx.max())}: was the text "
                             f"encoded with this model's tokenizer?")
        if padding_mask is not None and padding_mask.shape != (idx.size(0), T):
            raise ValueError(f"padding_mask must be (B, T_past + T) = {(idx.size(0), T)}, "
                             f"got {tuple(padding_mask.shape)}")

    # ------------------------------------------------------------------------------------------
    # generation

    @torch.no_grad()
    def generate(self, idx, max_new_tokens: int, temperature: float = 1.0, top_k=None,
                 top_p=None, eos_id=None, use_cache: bool = True, generator=None,
                 padding_mask=None):
        """Sample `max_new_tokens` after idx: (B, T) and return (B, T + new) token ids.

        temperature 0 means greedy. Sampling draws from `generator` (a torch.Generator), so the
        same generator state gives the same tokens with or without the KV cache. Once a row has
        produced `eos_id` it keeps receiving `eos_id`; generation stops early when every row
        has ended. padding_mask: (B, T) bool for left-padded prompts (True = real token).

        With the cache, the rows that have ended are dropped from the computation (once a
        quarter of those still computed have ended): half of a batch's rows typically end long
        before its longest, and rows never interact, so the tokens are the same, only sooner.
        Every step still draws one random number per row of the batch, as without the cache.
        """
        B, T = idx.shape
        if T + max_new_tokens > self.config.block_size:
            raise ValueError(f"prompt of {T} tokens + max_new_tokens={max_new_tokens} exceeds "
                             f"the context (block_size={self.config.block_size})")
        was_training = self.training
        self.eval()
        cache = None
        if use_cache:
            param = self.lm_head.weight
            cache = KVCache(self.config, B, T + max_new_tokens, idx.device, param.dtype)
        finished = torch.zeros(B, dtype=torch.bool, device=idx.device)
        live = torch.arange(B, device=idx.device)  # the rows computed on (cache: not ended)
        out = idx
        mask = padding_mask  # (live rows, tokens so far)
        step_input = idx
        for _ in range(max_new_tokens):
            if use_cache:
                logits, _ = self(step_input, padding_mask=mask, cache=cache)  # live rows only
            else:
                logits, _ = self(out, padding_mask=mask)
            next_logits = logits[:, -1, :]  # (b, V), b = len(live)
            u = draw_uniforms(B, temperature, generator, idx.device)  # one per row, ended or not
            next_token = torch.full((B,), eos_id or 0, dtype=torch.long, device=idx.device)
            next_token[live] = sample_next_token(next_logits, temperature, top_k, top_p,
                                                 generator, u=None if u is None else u[live])
            if eos_id is not None:
                next_token = torch.where(finished, torch.full_like(next_token, eos_id), next_token)
                finished |= next_token == eos_id
            out = torch.cat([out, next_token.unsqueeze(1)], dim=1)  # (B, T + 1)
            step_input = next_token[live].unsqueeze(1)  # (b, 1): all the cache path needs
            if mask is not None:
                mask = torch.cat([mask, mask.new_ones(len(mask), 1)], 1)
            if eos_id is not None and bool(finished.all()):
                break
            if use_cache and finished[live].float().mean() >= 0.25:  # drop the ended rows
                keep = ~finished[live]
                live, step_input = live[keep], step_input[keep]
                mask = mask[keep] if mask is not None else None
                cache.keep_rows(keep)
        self.train(was_training)
        return out

    # ------------------------------------------------------------------------------------------
    # loading

    @classmethod
    def from_hf_state_dict(cls, state_dict: dict, n_head: int | None = None,
                           block_size: int | None = None) -> "GPT":
        """Build a GPT from a state dict in Hugging Face's `GPT2LMHeadModel` (or `GPT2Model`) layout.

        The shapes give vocab_size, block_size, n_layer and n_embd. The number of heads is not in
        any shape: pass `n_head`, or GPT-2's convention of 64 channels per head is assumed.
        Hugging Face stores its projections as Conv1D with weights (in, out); ours are
        nn.Linear with (out, in), hence the transposes.
        """
        sd = {k[len("transformer."):] if k.startswith("transformer.") else k: v
              for k, v in state_dict.items()}
        if "wte.weight" not in sd:
            raise ValueError("not a GPT-2 state dict: no 'transformer.wte.weight' or 'wte.weight'")
        vocab_size, n_embd = sd["wte.weight"].shape
        n_layer = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("h."))
        if n_head is None:
            if n_embd % 64 != 0:
                raise ValueError(f"n_embd={n_embd} is not a multiple of 64: pass n_head")
            n_head = n_embd // 64
        config = GPTConfig(vocab_size=vocab_size, block_size=block_size or sd["wpe.weight"].shape[0],
                           n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                           bias="ln_f.bias" in sd, activation="gelu_tanh")
        model = cls(config)
        ours = model.state_dict()
        transposed = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight",
                      "mlp.c_proj.weight")
        with torch.no_grad():
            for key, value in sd.items():
                if key.endswith((".attn.bias", ".attn.masked_bias")) or key == "lm_head.weight":
                    continue  # causal-mask buffers of old versions; lm_head is tied to wte
                target = "transformer." + key
                if target not in ours:
                    raise ValueError(f"unexpected key in GPT-2 state dict: {key}")
                if key.endswith(transposed):
                    value = value.t()
                if ours[target].shape != value.shape:
                    raise ValueError(f"{key}: shape {tuple(value.shape)} does not fit "
                                     f"{tuple(ours[target].shape)}")
                ours[target].copy_(value)
        return model

    def checkpoint(self, **extra) -> dict:
        """A dict for `utils.save_checkpoint`: the config, the weights, and anything extra."""
        return {"config": asdict(self.config), "model": self.state_dict(), **extra}

    @classmethod
    def from_checkpoint(cls, ckpt: dict, expect: GPTConfig | None = None) -> "GPT":
        model = cls(GPTConfig(**ckpt["config"]))
        if expect is not None:
            check_same_config(expect, model.config)
        model.load_state_dict(ckpt["model"])
        return model


def check_same_config(expected: GPTConfig, found: GPTConfig) -> None:
    """Raise a readable error when a checkpoint was trained with another architecture."""
    a, b = asdict(expected), asdict(found)
    diff = {k: (a[k], b[k]) for k in a if k != "fused_attention" and a[k] != b.get(k)}
    if diff:
        lines = ", ".join(f"{k}: expected {x}, checkpoint has {y}" for k, (x, y) in diff.items())
        raise ValueError(f"checkpoint was trained with another model config ({lines}); retrain "
                         f"it or use a matching config")


# ==============================================================================================
# sampling


def filter_logits(logits, top_k=None, top_p=None):
    """Keep the top-k tokens and/or the smallest set whose probability reaches top_p.

    logits: (B, V), each row filtered on its own. Returns (B, V): the kept logits unchanged,
    the removed ones set to -inf. top_k=None or top_p=None turn that filter off.
    top-k keeps the tokens whose logit is at least the k-th largest of the row (a top_k at
    least V keeps everything). top-p keeps a token if the probability (softmax of the row) of
    the tokens ranked strictly above it is below top_p, so the most likely token always
    survives. With both, top-k filters first and top-p then works on the softmax of what top-k
    kept.
    """
    # >>> exercise: chapter=2 difficulty=2 minutes=15
    # hint: torch.topk(logits, k, dim=-1).values[:, -1:] is the k-th largest logit of each row,
    #       (B, 1): mask everything below it with masked_fill
    # hint: for top-p, sort each row in descending order (torch.sort also returns the order);
    #       the probability ranked strictly above a token is the cumulative sum of the sorted
    #       probabilities minus its own
    # hint: remove_sorted = (cumsum(probs) - probs) >= top_p in sorted order; put it back in
    #       vocabulary order with remove_sorted.scatter(-1, order, remove_sorted), then
    #       masked_fill(remove, -inf)
    if top_k is not None:
        k = min(int(top_k), logits.size(-1))
        kth = torch.topk(logits, k, dim=-1).values[:, -1:]  # (B, 1) the k-th largest logit
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
        probs = F.softmax(sorted_logits, dim=-1)
        mass_above = torch.cumsum(probs, dim=-1) - probs  # probability ranked strictly above
        remove_sorted = mass_above >= top_p
        remove = remove_sorted.scatter(-1, order, remove_sorted)  # back to vocabulary order
        logits = logits.masked_fill(remove, float("-inf"))
    return logits
    # <<< exercise


def sample_next_token(logits, temperature=1.0, top_k=None, top_p=None, generator=None, u=None):
    """logits: (B, V) -> (B,) sampled token ids. temperature 0 is greedy (argmax).

    u: the (B, 1) uniforms to sample with (`draw_uniforms`); None draws them here."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits / temperature, top_k, top_p)
    probs = F.softmax(logits, dim=-1)  # (B, V)
    if u is None:
        u = draw_uniforms(probs.size(0), temperature, generator, probs.device)  # (B, 1)
    return inverse_cdf_sample(probs, u)


def draw_uniforms(n: int, temperature: float, generator=None, device=None):
    """The (n, 1) uniforms that sampling n tokens uses, or None when greedy (temperature 0:
    nothing random is drawn)."""
    if temperature == 0:
        return None
    return torch.rand(n, 1, generator=generator, device=device)


def inverse_cdf_sample(probs, u):
    """Token ids drawn from probs: (B, V) with uniforms u: (B, 1) in [0, 1) -> (B,).

    Inverse-transform sampling: the token is the first one whose cumulative probability exceeds
    u times the row's total. Exact, and one random number per row, where torch.multinomial
    draws one per vocabulary entry (on a CPU that made it 25x slower, a sixth of every
    generation step). A token of probability zero is never drawn: its cumulative probability
    equals its predecessor's, so a predecessor is always found first.
    """
    cdf = probs.cumsum(dim=-1)  # (B, V)
    total = cdf[:, -1:]  # (B, 1): 1 up to rounding
    # u * total can round up to total itself; keep it just below, so the search always lands
    # on a real token and never one past the end
    u = torch.minimum(u.to(cdf.dtype) * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, u, right=True).squeeze(1)  # (B,)


# ==============================================================================================
# log-probabilities: the quantity every alignment method is built from


def gather_logprobs(logits, tokens):
    """Log-probability of each token under the logits at the same index.

    logits: (B, T, V) with logits[:, t] the prediction for tokens[:, t]; tokens: (B, T).
    Returns (B, T) log p(tokens[:, t] | ...).

    Alignment: a GPT's logits at position t predict the token at t + 1, so callers pass
    `logits[:, :-1]` with `idx[:, 1:]`.
    """
    # >>> exercise: chapter=2 difficulty=1 minutes=10
    logps = F.log_softmax(logits.float(), dim=-1)  # (B, T, V); float for stable sums
    return torch.gather(logps, dim=-1, index=tokens.unsqueeze(-1)).squeeze(-1)  # (B, T)
    # <<< exercise


def sequence_logprobs(logits, tokens, mask):
    """Sum of the log-probabilities of the tokens where mask is 1: log p(response | prompt).

    logits: (B, T, V) aligned with tokens (B, T) as in `gather_logprobs`; mask: (B, T), 1 on
    the tokens to score (the response, end-of-turn included), 0 on prompt and padding.
    Returns (B,). A sum, not a mean: the log-probability of a sequence is the sum over its
    tokens, and a mean would make a long answer as cheap as a short one.
    """
    # >>> exercise: chapter=6 difficulty=1 minutes=10
    logps = gather_logprobs(logits, tokens)  # (B, T)
    return (logps * mask.to(logps.dtype)).sum(dim=-1)  # (B,)
    # <<< exercise


def logprobs_of_responses(model, ids, padding_mask, response_mask, temperature: float):
    """log p(response | prompt) of each sequence of a batch under `model`: the one path through
    which whole responses are scored (DPO's pairs, the KL to a reference, best-of-N's
    probabilities). PPO and GRPO need the per-token log-probs instead (ppo.score_responses).

    ids, padding_mask, response_mask: (B, T), response_mask True on the response tokens
    (<|end|> included). temperature divides the logits: the temperature the responses were
    sampled at, to score the distribution they came from (1: the model's own distribution).
    Returns (B,).
    """
    logits, _ = model(ids, padding_mask=padding_mask)  # (B, T, V)
    # the logits at t predict the token at t + 1
    return sequence_logprobs(logits[:, :-1] / temperature, ids[:, 1:], response_mask[:, 1:])


def entropy_from_logits(logits):
    """Entropy of the categorical distribution at every position: (B, T, V) -> (B, T)."""
    logps = F.log_softmax(logits.float(), dim=-1)
    return -(logps.exp() * logps).sum(-1)


# ==============================================================================================
# the same trunk with a scalar head: the reward model


class ScalarHeadGPT(nn.Module):
    """A GPT trunk with a Linear(C, 1) head: one scalar per position.

    The reward model reads it at the last real token of a response. (PPO's value function is
    a head on the policy's own trunk instead: ppo.PolicyWithValueHead.) The head starts at
    zero, so an untrained reward model scores every response 0 (Bradley-Terry loss ln 2,
    accuracy 0 with a strict >).
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.gpt = GPT(config)
        self.head = nn.Linear(config.n_embd, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @classmethod
    def from_gpt(cls, gpt: GPT) -> "ScalarHeadGPT":
        """Initialise the trunk from a trained GPT (SFT), the head at zero."""
        model = cls(gpt.config)
        model.gpt.load_state_dict(gpt.state_dict())
        return model

    def forward(self, idx, padding_mask=None):
        """idx: (B, T) -> (B, T) one scalar per position."""
        return self.head(self.gpt.hidden_states(idx, padding_mask)).squeeze(-1)  # (B, T)

    def checkpoint(self, **extra) -> dict:
        return {"config": asdict(self.config), "model": self.state_dict(), **extra}

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> "ScalarHeadGPT":
        model = cls(GPTConfig(**ckpt["config"]))
        model.load_state_dict(ckpt["model"])
        return model
