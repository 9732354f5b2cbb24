"""Byte-level BPE, trained from scratch on the world's corpus, plus the chat template's tokens.

Byte-pair encoding (Sennrich et al. 2016) as GPT-2 uses it: text -> UTF-8 bytes (256 base
tokens, so every string can be encoded and decoded back exactly), then the most frequent
adjacent pair of tokens is merged into a new token, again and again, until the vocabulary has
the size asked for. Like GPT-2, text is first split into word-like chunks (a space stays with
the word after it) and merges never cross a chunk, so " cat" can become one token but "t. t"
cannot.

Special tokens mark the structure of a chat and are never produced by encoding ordinary text
(so a user cannot type an end-of-turn):
    <|endoftext|>  separates documents in the pretraining corpus
    <|user|>       starts the user's turn
    <|assistant|>  starts the assistant's turn
    <|end|>        ends a turn: the assistant learns to emit it, generation stops on it
    <|pad|>        fills batches; distinct from <|end|> so that masking padding never masks the
                   end of a response (a model that never sees its end label
                   never learns to stop)

    python -m minialign pretrain   trains the tokenizer first and saves DIR/tokenizer.json
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

SPECIAL_TOKENS = ["<|endoftext|>", "<|user|>", "<|assistant|>", "<|end|>", "<|pad|>"]

# Chunks: an optional space plus letters, or digits, or other symbols; runs of white space.
# (GPT-2 uses Unicode letter classes; the world is lowercase ASCII, and anything else still
# round-trips through the byte fallback.)
CHUNK_PATTERN = re.compile(r" ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+")
# GPT-2's own split (Radford et al. 2019, its encoder.py), with Python's `re`: contractions, then
# letters ([^\W\d_]: any Unicode letter), digits, other symbols, white space.
GPT2_CHUNK_PATTERN = re.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+""")


def get_pair_counts(ids, counts=None, weight=1):
    """Count adjacent pairs in a list of token ids.

    ids: list[int]. Returns a dict {(a, b): count}; when `counts` is given, adds into it (with
    each pair counted `weight` times, the number of times this chunk occurs in the corpus).
    Example: [1, 2, 1, 2] -> {(1, 2): 2, (2, 1): 1}.
    """
    # >>> exercise: chapter=1 difficulty=1 minutes=10
    counts = {} if counts is None else counts
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + weight
    return counts
    # <<< exercise


def merge(ids, pair, new_id):
    """Replace every occurrence of `pair` in ids (left to right, non-overlapping) by new_id.

    ids: list[int]; pair: (a, b); returns a new list.
    Example: merge([1, 1, 1, 2], (1, 1), 9) -> [9, 1, 2]  (not [9, 9, 2]: occurrences overlap).
    """
    # >>> exercise: chapter=1 difficulty=1 minutes=15
    out = []
    i = 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out
    # <<< exercise


class Tokenizer:
    """A trained byte-level BPE: `merges` in the order they were learned, and special tokens.

    Token ids: 0..255 are bytes, 256.. are merges in order, then the special tokens.
    (`from_gpt2_files` loads GPT-2's BPE, whose 256 byte tokens come in another order: then
    byte_ids[b] is the id of byte b, and GPT-2's chunk pattern splits the text.)
    """

    def __init__(self, merges: list[tuple[int, int]], special_tokens=SPECIAL_TOKENS,
                 byte_ids: list[int] | None = None, pattern: str = "minialign"):
        self.byte_ids = list(range(256)) if byte_ids is None else list(byte_ids)  # byte -> id
        self.pattern = pattern  # "minialign" (CHUNK_PATTERN) or "gpt2" (GPT2_CHUNK_PATTERN)
        self._chunk_re = GPT2_CHUNK_PATTERN if pattern == "gpt2" else CHUNK_PATTERN
        self.merges = {tuple(p): 256 + i for i, p in enumerate(merges)}  # pair -> new id
        self.vocab = {i: bytes([b]) for b, i in enumerate(self.byte_ids)}  # id -> bytes
        for (a, b), idx in self.merges.items():
            self.vocab[idx] = self.vocab[a] + self.vocab[b]
        first_special = 256 + len(merges)
        self.special = {s: first_special + i for i, s in enumerate(special_tokens)}
        self.special_by_id = {i: s for s, i in self.special.items()}
        self._cache: dict[str, list[int]] = {}  # chunk -> ids; the world repeats its words a lot

    # the ids a chat needs
    @property
    def eot_id(self):  # end of document
        return self.special["<|endoftext|>"]

    @property
    def user_id(self):
        return self.special["<|user|>"]

    @property
    def assistant_id(self):
        return self.special["<|assistant|>"]

    @property
    def end_id(self):  # end of turn
        return self.special["<|end|>"]

    @property
    def pad_id(self):
        return self.special["<|pad|>"]

    @property
    def vocab_size(self) -> int:
        return 256 + len(self.merges) + len(self.special)

    # ------------------------------------------------------------------------------------------

    @classmethod
    def train(cls, text: str | list[str], vocab_size: int = 1024, verbose: bool = False):
        """Learn merges from text until the vocabulary (bytes + merges + specials) has vocab_size."""
        n_merges = vocab_size - 256 - len(SPECIAL_TOKENS)
        if n_merges < 0:
            raise ValueError(f"vocab_size must be at least {256 + len(SPECIAL_TOKENS)}")
        texts = [text] if isinstance(text, str) else text
        if not any(texts):
            raise ValueError("cannot train a tokenizer on empty text")
        # count each distinct chunk once: merging works on (chunk, frequency), not the whole text
        chunk_counts = Counter()
        for t in texts:
            chunk_counts.update(CHUNK_PATTERN.findall(t))
        words = [list(c.encode("utf-8")) for c in chunk_counts]
        freqs = list(chunk_counts.values())
        pair_counts: dict = {}
        for w, f in zip(words, freqs):
            get_pair_counts(w, pair_counts, f)
        merges = []
        for i in range(n_merges):
            if not pair_counts:
                break  # nothing left to merge: every chunk is a single token
            best = max(pair_counts, key=lambda p: (pair_counts[p], -p[0], -p[1]))  # ties: stable
            new_id = 256 + i
            merges.append(best)
            # update only the chunks that contain the pair: subtract their old pairs, add new
            for j, w in enumerate(words):
                if len(w) < 2 or not _contains(w, best):
                    continue
                for pair in zip(w, w[1:]):
                    pair_counts[pair] -= freqs[j]
                    if pair_counts[pair] == 0:
                        del pair_counts[pair]
                words[j] = merge(w, best, new_id)
                get_pair_counts(words[j], pair_counts, freqs[j])
            if verbose and i % 100 == 0:
                print(f"merge {i}: {best} -> {new_id}")
        return cls(merges)

    def encode(self, text: str) -> list[int]:
        """Text -> token ids. Special-token strings in the text are encoded as plain text."""
        ids = []
        for chunk in self._chunk_re.findall(text):
            cached = self._cache.get(chunk)
            if cached is None:
                cached = self._encode_chunk(chunk.encode("utf-8"))
                if len(self._cache) < 100_000:
                    self._cache[chunk] = cached
            ids.extend(cached)
        return ids

    def _encode_chunk(self, data: bytes) -> list[int]:
        ids = [self.byte_ids[b] for b in data]
        while len(ids) >= 2:
            # apply the earliest-learned merge present, as in training
            pairs = set(zip(ids, ids[1:]))
            pair = min(pairs, key=lambda p: self.merges.get(p, float("inf")))
            if pair not in self.merges:
                break
            ids = merge(ids, pair, self.merges[pair])
        return ids

    def decode(self, ids) -> str:
        """Token ids -> text. Special tokens decode to their names; invalid UTF-8 is replaced."""
        out = bytearray()
        for i in ids:
            i = int(i)
            if i in self.special_by_id:
                out.extend(self.special_by_id[i].encode("utf-8"))
            elif i in self.vocab:
                out.extend(self.vocab[i])
            else:
                raise ValueError(f"token id {i} is not in this tokenizer (vocab_size "
                                 f"{self.vocab_size})")
        return out.decode("utf-8", errors="replace")

    def token_strings(self, ids) -> list[str]:
        """One readable string per token (for figures): specials by name, bytes as text."""
        return [self.special_by_id.get(int(i)) or self.vocab[int(i)].decode("utf-8", "replace")
                for i in ids]

    # ------------------------------------------------------------------------------------------
    # the chat template: <|user|> prompt <|assistant|> response <|end|>

    def encode_prompt(self, prompt: str) -> list[int]:
        """The tokens the model is given before it answers: <|user|> prompt <|assistant|>."""
        return [self.user_id] + self.encode(prompt) + [self.assistant_id]

    def encode_response(self, response: str) -> list[int]:
        """The tokens the assistant should produce: response <|end|>."""
        return self.encode(response) + [self.end_id]

    def decode_response(self, ids) -> tuple[str, bool]:
        """Generated ids after the prompt -> (text before <|end|>, whether <|end|> was produced)."""
        ids = [int(i) for i in ids]
        ended = self.end_id in ids
        if ended:
            ids = ids[: ids.index(self.end_id)]
        ids = [i for i in ids if i != self.pad_id]
        return self.decode(ids), ended

    # ------------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        from .utils import write_json

        data = {"type": "minialign-bpe", "merges": [list(p) for p in self.merges],
                "special_tokens": list(self.special)}
        if self.pattern != "minialign":  # a loaded GPT-2 BPE: its byte order and its split
            data.update(byte_ids=self.byte_ids, pattern=self.pattern)
        write_json(data, path)

    @classmethod
    def load(cls, path: str | Path) -> "Tokenizer":
        with open(path) as f:
            data = json.load(f)
        if data.get("type") != "minialign-bpe":
            raise ValueError(f"{path} is not a minialign tokenizer file")
        return cls([tuple(p) for p in data["merges"]], data["special_tokens"],
                   data.get("byte_ids"), data.get("pattern", "minialign"))

    @classmethod
    def from_gpt2_files(cls, vocab_json: str | Path, merges_txt: str | Path,
                        chat_tokens=SPECIAL_TOKENS[1:]) -> "Tokenizer":
        """GPT-2's byte-level BPE (its `vocab.json` and `merges.txt`) as a minialign tokenizer.

        GPT-2 writes each byte as a printable character (`bytes_to_unicode`: " " is "Ġ") and
        lists its merges in the order they were learned; token i of vocab.json is byte or merge
        i, so GPT-2's ids are kept and a GPT-2 checkpoint's embedding rows still fit. The chat
        tokens (<|user|>, <|assistant|>, <|end|>, <|pad|>) are new: they get the ids after
        GPT-2's <|endoftext|> (50257.. for GPT-2 itself), and the model's embedding must grow
        to match (`GPT.from_hf_state_dict` then `own.resize_vocab`).
        """
        with open(vocab_json, encoding="utf-8") as f:
            vocab = json.load(f)  # token string -> id
        char_to_byte = {c: b for b, c in bytes_to_unicode().items()}

        def to_bytes(token: str) -> bytes:
            return bytes(char_to_byte[c] for c in token)

        id_of = {to_bytes(t): i for t, i in vocab.items() if t != "<|endoftext|>"}
        byte_ids = [id_of[bytes([b])] for b in range(256)]
        lines = Path(merges_txt).read_text(encoding="utf-8").splitlines()
        merges = []
        for line in lines:
            if not line.strip() or line.startswith("#version"):
                continue
            a, b = line.split(" ")
            merges.append((id_of[to_bytes(a)], id_of[to_bytes(b)]))
            expected = 256 + len(merges) - 1
            if id_of.get(to_bytes(a) + to_bytes(b)) != expected:
                raise ValueError(f"{merges_txt}: merge {line!r} should make token {expected} of "
                                 f"{vocab_json}; are these the files of one tokenizer?")
        if sorted(byte_ids) != list(range(256)):
            raise ValueError(f"{vocab_json}: the first 256 ids must be the 256 bytes")
        return cls(merges, ["<|endoftext|>", *chat_tokens], byte_ids, pattern="gpt2")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from the 256 bytes to printable characters (so that vocab.json and
    merges.txt are text): printable Latin-1 bytes map to themselves, the others to 256 + n."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def _contains(ids, pair) -> bool:
    a, b = pair
    return any(x == a and y == b for x, y in zip(ids, ids[1:]))
