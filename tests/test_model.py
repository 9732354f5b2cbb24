"""The GPT: attention against a hand computation, Hugging Face GPT-2 logits, padding, the KV
cache, sampling filters, log-prob helpers and clear errors."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from minialign.model import (GPT, GPTConfig, KVCache, ScalarHeadGPT, causal_self_attention,
                             check_same_config, filter_logits, gather_logprobs,
                             inverse_cdf_sample, sample_next_token, sequence_logprobs)

FIXTURE = Path(__file__).parent / "fixtures" / "gpt2_tiny.pt"


def tiny(**kw):
    torch.manual_seed(0)
    cfg = dict(vocab_size=50, block_size=32, n_layer=2, n_head=2, n_embd=16)
    cfg.update(kw)
    return GPT(GPTConfig(**cfg)).eval()


def test_config_validates_itself():
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=10, n_head=3)
    with pytest.raises(ValueError, match="positive"):
        GPTConfig(n_layer=0)
    with pytest.raises(ValueError, match="dropout"):
        GPTConfig(dropout=1.0)


def test_attention_matches_a_loop_over_positions():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 1, 5, 4).unbind(0)  # (B=1, H=2, T=5, hs=4) each
    y = causal_self_attention(q, k, v)
    for t in range(5):  # query t mixes the values of positions 0..t
        w = torch.softmax(q[..., t : t + 1, :] @ k[..., : t + 1, :].transpose(-1, -2) / 2.0, dim=-1)
        assert torch.allclose(y[..., t : t + 1, :], w @ v[..., : t + 1, :], atol=1e-6)


def test_attention_with_a_cache_equals_the_last_rows_of_full_attention():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 3, 7, 8).unbind(0)
    full = causal_self_attention(q, k, v)
    assert torch.allclose(causal_self_attention(q[:, :, -2:], k, v), full[:, :, -2:], atol=1e-6)


def test_fused_and_hand_written_attention_give_the_same_logits():
    m = tiny()
    idx = torch.randint(0, 50, (3, 12))
    mask = torch.ones(3, 12, dtype=torch.bool)
    mask[0, :4] = False
    fused, _ = m(idx, padding_mask=mask)
    for block in m.transformer.h:
        block.attn.fused = False
    manual, _ = m(idx, padding_mask=mask)
    assert torch.allclose(fused, manual, atol=1e-5)


def test_loads_hugging_face_gpt2_and_reproduces_its_logits():
    data = torch.load(FIXTURE, weights_only=True)
    model = GPT.from_hf_state_dict(data["state_dict"], n_head=data["n_head"]).eval()
    assert model.config.n_layer == 2 and model.config.n_embd == 64 and model.config.vocab_size == 97
    logits, _ = model(data["idx"])
    assert torch.allclose(logits, data["logits"], atol=1e-4), (logits - data["logits"]).abs().max()
    # the default head count is GPT-2's 64 channels per head: 1 head here, so wrong logits
    wrong = GPT.from_hf_state_dict(data["state_dict"]).eval()
    assert not torch.allclose(wrong(data["idx"])[0], data["logits"], atol=1e-3)


def test_left_padding_with_a_mask_changes_nothing():
    m = tiny()
    prompt = torch.randint(0, 50, (1, 6))
    padded = torch.cat([torch.zeros(1, 4, dtype=torch.long), prompt], 1)
    mask = torch.cat([torch.zeros(1, 4, dtype=torch.bool), torch.ones(1, 6, dtype=torch.bool)], 1)
    alone, _ = m(prompt)
    in_batch, _ = m(padded, padding_mask=mask)
    assert torch.allclose(alone, in_batch[:, 4:], atol=1e-5)
    # without the mask the pads leak in: this is the bug the mask prevents
    leaky, _ = m(padded)
    assert not torch.allclose(alone, leaky[:, 4:], atol=1e-3)


@pytest.mark.parametrize("kw", [dict(), dict(top_k=5), dict(top_p=0.8), dict(temperature=0.7),
                                dict(temperature=0)])
def test_kv_cache_generates_exactly_the_same_tokens(kw):
    m = tiny()
    idx = torch.randint(0, 50, (4, 5))
    for seed in range(3):
        a = m.generate(idx, 20, generator=torch.Generator().manual_seed(seed), **kw)
        b = m.generate(idx, 20, generator=torch.Generator().manual_seed(seed), use_cache=False, **kw)
        assert torch.equal(a, b)


def test_kv_cache_with_left_padding_and_eos():
    m = tiny()
    idx = torch.randint(1, 50, (3, 6))
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[1, :3] = False
    idx[1, :3] = 0
    a = m.generate(idx, 15, eos_id=7, padding_mask=mask, generator=torch.Generator().manual_seed(1))
    b = m.generate(idx, 15, eos_id=7, padding_mask=mask, use_cache=False,
                   generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    for row in a[:, 6:].tolist():  # after eos, only eos
        if 7 in row:
            assert set(row[row.index(7):]) == {7}


def test_rows_that_end_leave_the_cached_computation_and_no_token_changes(monkeypatch):
    """With the cache, generation drops the rows that have ended from the batch it computes
    on (KVCache.keep_rows); the tokens must stay exactly those of the path without the cache,
    which computes every row to the end."""
    m = tiny()
    idx = torch.randint(1, 50, (32, 6))
    mask = torch.ones(32, 6, dtype=torch.bool)
    mask[::3, :2] = False  # some left-padded prompts too
    idx[::3, :2] = 0
    eos = int(m(idx)[0][:, -1].argmax(-1).mode().values)  # a token the model often picks
    drops = []
    keep_rows = KVCache.keep_rows
    monkeypatch.setattr(KVCache, "keep_rows",
                        lambda self, rows: drops.append(int(rows.sum())) or keep_rows(self, rows))
    for seed in range(3):
        kw = dict(eos_id=eos, padding_mask=mask, temperature=1.5)
        a = m.generate(idx, 24, generator=torch.Generator().manual_seed(seed), **kw)
        b = m.generate(idx, 24, use_cache=False, generator=torch.Generator().manual_seed(seed),
                       **kw)
        assert torch.equal(a, b)
    assert drops and min(drops) < 32  # rows were dropped, and the generation went on


def test_inverse_cdf_sample_by_hand():
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.5]] * 4)
    u = torch.tensor([[0.0], [0.49], [0.5], [0.9999999]])
    # cdf = [0, .5, .5, 1]: the first token whose cdf exceeds u; zero-probability tokens never
    assert inverse_cdf_sample(probs, u).tolist() == [1, 1, 3, 3]
    # a row summing to slightly less than 1 (rounding) still never runs off the end
    short = torch.tensor([[0.3, 0.3, 0.3, 0.0]])
    assert inverse_cdf_sample(short, torch.tensor([[0.99999994]])).tolist() == [2]


def test_sampling_follows_the_distribution():
    probs = torch.tensor([0.1, 0.0, 0.6, 0.3])
    logits = probs.log().expand(20000, 4)  # (B, V); log 0 = -inf
    draws = sample_next_token(logits, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=4).float() / draws.numel()
    assert freq[1] == 0
    assert torch.allclose(freq, probs, atol=0.015)  # 3 standard errors at n = 20000


def test_bf16_autocast_matches_fp32_and_keeps_attention_in_fp32():
    m = tiny()
    idx = torch.randint(0, 50, (3, 12))
    logits, loss = m(idx, idx)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits16, loss16 = m(idx, idx)
    assert logits16.dtype == torch.bfloat16
    assert torch.allclose(logits16.float(), logits, atol=0.05)  # bf16 keeps ~3 digits
    assert abs(loss16.item() - loss.item()) < 0.01
    loss16.backward()  # gradients reach the fp32 weights
    assert m.transformer.h[0].attn.c_attn.weight.grad.dtype == torch.float32


def test_use_bf16_choices():
    from minialign.utils import use_bf16
    cpu = torch.device("cpu")
    assert use_bf16(cpu, "fp32") is False and use_bf16(cpu, "bf16") is True
    with pytest.raises(ValueError, match="precision"):
        use_bf16(cpu, "half")


@pytest.mark.parametrize("amx, avx512_bf16, expected", [
    (True, False, "AMX"), (False, True, "AVX-512 BF16"), (True, True, "AMX"),
    (False, False, None)])
def test_auto_precision_is_bf16_exactly_where_the_cpu_has_native_bf16(monkeypatch, amx,
                                                                      avx512_bf16, expected):
    from minialign.utils import native_bf16_cpu, use_bf16
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16,
                        raising=False)
    assert native_bf16_cpu() == expected
    assert use_bf16(torch.device("cpu"), "auto") is (expected is not None)
    assert use_bf16(torch.device("cpu"), "fp32") is False


def test_clear_errors():
    m = tiny()
    with pytest.raises(ValueError, match="longer than the context"):
        m(torch.zeros(1, 33, dtype=torch.long))
    with pytest.raises(ValueError, match="token ids must be in"):
        m(torch.tensor([[0, 50]]))
    with pytest.raises(ValueError, match="exceeds the context"):
        m.generate(torch.zeros(1, 30, dtype=torch.long), 5)
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        m(torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="another model config"):
        check_same_config(m.config, GPTConfig(vocab_size=50, block_size=32, n_layer=3, n_head=2, n_embd=16))
    other = tiny(n_layer=3)
    with pytest.raises(ValueError, match="n_layer"):
        GPT.from_checkpoint(other.checkpoint(), expect=m.config)


def test_filter_logits():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    assert torch.equal(filter_logits(logits, top_k=1).isfinite(), torch.tensor([[False, True, False, False]]))
    assert filter_logits(logits, top_k=2).isfinite().sum() == 2
    probs = torch.softmax(logits, -1)  # 0.087, 0.644, 0.237, 0.032
    kept = filter_logits(logits, top_p=0.7).isfinite()
    assert kept.tolist() == [[False, True, True, False]]  # 0.644 < 0.7, so the next one is needed
    assert filter_logits(logits, top_p=1e-9).isfinite().sum() == 1  # the top token always stays
    assert torch.equal(filter_logits(logits), logits)
    assert probs.sum().item() == pytest.approx(1.0)


def test_gather_and_sequence_logprobs_by_hand():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]]))  # (1, 2, 3)
    tokens = torch.tensor([[0, 1]])
    lp = gather_logprobs(logits, tokens)
    assert torch.allclose(lp, torch.log(torch.tensor([[0.5, 0.8]])))
    mask = torch.tensor([[0, 1]])
    assert torch.allclose(sequence_logprobs(logits, tokens, mask), torch.log(torch.tensor([0.8])))
    # sum, not mean: two tokens count twice
    assert torch.allclose(sequence_logprobs(logits, tokens, torch.ones(1, 2)), torch.log(torch.tensor([0.4])))


def test_forward_loss_is_cross_entropy_with_ignore_index():
    m = tiny()
    idx = torch.randint(0, 50, (2, 8))
    targets = idx.roll(-1, 1)
    targets[:, -1] = -100
    logits, loss = m(idx, targets)
    ref = F.cross_entropy(logits[:, :-1].reshape(-1, 50), targets[:, :-1].reshape(-1))
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    assert math.log(50) - 0.5 < loss.item() < math.log(50) + 0.5  # untrained: near uniform


def test_scalar_head_starts_at_zero_and_shares_the_trunk():
    m = tiny()
    rm = ScalarHeadGPT.from_gpt(m)
    idx = torch.randint(0, 50, (2, 5))
    assert torch.equal(rm(idx), torch.zeros(2, 5))
    assert torch.equal(rm.gpt.transformer.wte.weight, m.transformer.wte.weight)
    again = ScalarHeadGPT.from_checkpoint(rm.checkpoint())
    assert torch.equal(again(idx), rm(idx))
