"""Your own model and data (minialign/own.py): GPT-2's BPE files loaded into minialign's
tokenizer, a GPT-2-layout checkpoint, and SFT then DPO on JSONL files. Tiny fixtures written
here; nothing is downloaded."""

import json

import pytest
import torch

from minialign import dpo, own, sft
from minialign.model import GPT, GPTConfig
from minialign.preferences import read_rankings
from minialign.tokenizer import Tokenizer, bytes_to_unicode


def gpt2_byte_order():
    """GPT-2's order of the 256 byte tokens: printable Latin-1 bytes first, then the rest."""
    printable = [b for b in range(256) if bytes_to_unicode()[b] == chr(b)]
    return printable + [b for b in range(256) if b not in printable]


def write_bpe_files(folder, merges=("h e", "Ġ t", "Ġt he")):
    """A tiny vocab.json / merges.txt in GPT-2's format: 256 byte tokens, 3 merges
    ("he" = 256, "Ġt" = 257, "Ġthe" = 258), <|endoftext|> = 259."""
    chars = bytes_to_unicode()
    vocab = {chars[b]: i for i, b in enumerate(gpt2_byte_order())}
    for i, merge in enumerate(merges):
        vocab[merge.replace(" ", "")] = 256 + i
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n",
                                       encoding="utf-8")
    return folder / "vocab.json", folder / "merges.txt"


def hf_state_dict(model: GPT) -> dict:
    """Our GPT's weights in Hugging Face's GPT2LMHeadModel layout (Conv1D: weights (in, out))."""
    transposed = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight",
                  "mlp.c_proj.weight")
    return {k: (v.t() if k.endswith(transposed) else v).clone()
            for k, v in model.state_dict().items()}


def test_gpt2_bpe_files_load_with_gpt2_ids(tmp_path):
    tok = Tokenizer.from_gpt2_files(*write_bpe_files(tmp_path))
    assert tok.encode("!") == [0]  # GPT-2's id 0 is "!", not byte 0
    assert tok.encode(" the") == [258] and tok.encode("he") == [256]
    assert tok.eot_id == 259 and tok.user_id == 260 and tok.pad_id == 263
    assert tok.vocab_size == 264  # 256 bytes + 3 merges + <|endoftext|> + 4 chat tokens
    text = "they're off: the café, ☕ and 42 apples\n"
    assert tok.decode(tok.encode(text)) == text
    assert tok.encode("they're") == tok.encode("they") + tok.encode("'re")  # GPT-2's split
    tok.save(tmp_path / "tokenizer.json")
    again = Tokenizer.load(tmp_path / "tokenizer.json")
    assert again.encode(text) == tok.encode(text) and again.special == tok.special


def test_mismatched_bpe_files_are_refused(tmp_path):
    vocab, merges = write_bpe_files(tmp_path)
    merges.write_text("#version: 0.2\nĠ t\nh e\nĠt he\n", encoding="utf-8")  # wrong order
    with pytest.raises(ValueError, match="one tokenizer"):
        Tokenizer.from_gpt2_files(vocab, merges)


def test_own_checkpoint_sft_and_dpo_on_jsonl(tmp_path):
    tok = Tokenizer.from_gpt2_files(*write_bpe_files(tmp_path))
    torch.manual_seed(0)
    gpt2_like = GPT(GPTConfig(vocab_size=260, block_size=96, n_layer=1, n_head=2, n_embd=16))
    torch.save(hf_state_dict(gpt2_like), tmp_path / "checkpoint.pt")

    model, tokenizer = own.load_gpt2(tmp_path / "checkpoint.pt", tmp_path / "vocab.json",
                                     tmp_path / "merges.txt", n_head=2)
    assert model.config.vocab_size == tokenizer.vocab_size == 264
    ids = torch.tensor([tok.encode(" the he")])
    torch.testing.assert_close(model(ids)[0][..., :260], gpt2_like(ids)[0])  # same old tokens
    new_rows = model.transformer.wte.weight[260:]
    torch.testing.assert_close(new_rows, gpt2_like.transformer.wte.weight.mean(0).expand(4, -1))

    run = own.start_run(tmp_path / "run", model, tokenizer)
    demos = tmp_path / "demos.jsonl"
    demos.write_text("\n".join(json.dumps({"prompt": f"say {w}", "response": f"the {w}"})
                               for w in ["he", "the", "hi", "ok", "yes", "no"]) + "\n")
    prefs = tmp_path / "prefs.jsonl"
    lines = [{"prompt": f"say {w}", "chosen": f"the {w}", "rejected": "no"} for w in "abcde"]
    lines.append({"prompt": "say it", "responses": ["it", "the it", "no"]})  # a ranking of 3
    prefs.write_text("\n".join(json.dumps(x) for x in lines) + "\n")

    quiet = lambda *_: None  # noqa: E731
    m = sft.train(sft.SFTConfig.fast(data=str(demos), batch_size=4, eval_samples=1,
                                     max_new_tokens=2), run, log=quiet)
    assert m["n_demos"] and (run / "sft" / "model.pt").exists()
    m = dpo.train(dpo.DPOConfig.fast(data=str(prefs), batch_size=4, max_new_tokens=2), run,
                  log=quiet)
    # 5 pairs, and the best and worst of the ranking of 3 (min_rank_gap 2: its neighbours are
    # left out); one of the 6 prompts held out
    assert m["n_pairs"] == 5
    assert "rewards/margins" in m["history"] and (run / "dpo" / "model.pt").exists()


def test_bad_jsonl_says_where(tmp_path):
    bad = tmp_path / "prefs.jsonl"
    bad.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a"}\n')
    with pytest.raises(ValueError, match="example 2"):
        read_rankings(bad)
    bad.write_text('{"prompt": "a", "response": "b"}\nnot json\n')
    with pytest.raises(ValueError, match="line 2"):
        own.read_demonstrations(bad)
