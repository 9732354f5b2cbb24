"""Byte-level BPE: exact round trips, merges as specified, special tokens apart from text."""

import pytest

from minialign import world as W
from minialign.tokenizer import SPECIAL_TOKENS, Tokenizer, get_pair_counts, merge


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(W.sample_corpus(600, seed=0), vocab_size=400)


def test_merge_and_pair_counts_by_hand():
    assert get_pair_counts([1, 2, 1, 2]) == {(1, 2): 2, (2, 1): 1}
    assert get_pair_counts([5]) == {}
    counts = get_pair_counts([1, 2], {(1, 2): 3}, weight=2)
    assert counts == {(1, 2): 5}
    assert merge([1, 1, 1, 2], (1, 1), 9) == [9, 1, 2]
    assert merge([1, 2, 3, 1, 2], (1, 2), 7) == [7, 3, 7]
    assert merge([], (1, 2), 7) == []


def test_training_on_tiny_text_learns_the_most_frequent_pair_first():
    t = Tokenizer.train("aaab aaab aaab", vocab_size=256 + len(SPECIAL_TOKENS) + 2)
    first = next(iter(t.merges))
    assert first == (ord("a"), ord("a"))


@pytest.mark.parametrize("text", ["the capital of peru is lima.", "", "le garçon rouge",
                                  "emoji 🤖 and 中文 and \x00 nul", "   spaces\n\n\ttabs ",
                                  "<|end|> typed by a user"])
def test_round_trip_any_unicode(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_special_tokens_cannot_be_typed(tok):
    ids = tok.encode("<|end|>")
    assert tok.end_id not in ids and len(ids) > 1
    assert len({tok.eot_id, tok.user_id, tok.assistant_id, tok.end_id, tok.pad_id}) == 5
    assert tok.pad_id != tok.end_id


def test_vocab_size_and_compression(tok):
    assert tok.vocab_size == 400
    text = " ".join(W.sample_corpus(20, seed=1))
    assert len(tok.encode(text)) < len(text.encode()) / 2  # the world's words become tokens


def test_chat_template(tok):
    prompt = tok.encode_prompt("what is 7 plus 2?")
    assert prompt[0] == tok.user_id and prompt[-1] == tok.assistant_id
    response = tok.encode_response("9.")
    assert response[-1] == tok.end_id
    assert tok.decode_response(response + [tok.pad_id, tok.pad_id]) == ("9.", True)
    assert tok.decode_response(tok.encode("9 and on")) == ("9 and on", False)


def test_save_load(tok, tmp_path):
    path = tmp_path / "tok.json"
    tok.save(path)
    again = Tokenizer.load(path)
    text = "translate to french: the red cat"
    assert again.encode(text) == tok.encode(text) and again.vocab_size == tok.vocab_size


def test_errors(tok, tmp_path):
    with pytest.raises(ValueError):
        Tokenizer.train("", vocab_size=300)
    with pytest.raises(ValueError):
        Tokenizer.train("abc", vocab_size=100)
    with pytest.raises(ValueError, match="not in this tokenizer"):
        tok.decode([10**6])
    bad = tmp_path / "bad.json"
    bad.write_text('{"type": "other"}')
    with pytest.raises(ValueError):
        Tokenizer.load(bad)
