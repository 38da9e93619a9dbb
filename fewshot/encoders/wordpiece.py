"""BERT's WordPiece tokeniser in plain Python: text -> sub-word ids of a fixed vocabulary.

``text-gru`` version 2 reads MiniLM's own 30,522-token uncased vocabulary, so its
token vectors can start from MiniLM's (:mod:`fewshot.train.static_vectors`). The
vocabulary travels in the encoder file's config; tokenising needs neither the
``text`` extra nor the ``tokenizers`` library. The steps are BERT's (uncased):

1. clean: drop NUL, U+FFFD and control characters; every whitespace becomes a space;
2. put spaces around CJK ideographs (each is its own word);
3. lowercase, decompose (NFD) and drop combining accents;
4. split off each punctuation character (ASCII symbols and Unicode ``P*``);
5. WordPiece: each word becomes the longest vocabulary prefix, then the longest
   ``##``-prefixed piece of what remains, and so on; a word that cannot be covered
   (or longer than 100 characters) becomes ``[UNK]``.

The tests check it against the ``tokenizers`` implementation on CLINC150 and odd input.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

import torch

MAX_WORD_CHARS = 100


def _is_control(ch: str) -> bool:
    return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def basic_words(text: str, lowercase: bool = True) -> list[str]:
    """Steps 1-4: the words WordPiece sees."""
    chars = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or _is_control(ch):
            continue
        if _is_whitespace(ch):
            chars.append(" ")
        elif _is_cjk(cp):
            chars.append(f" {ch} ")
        else:
            chars.append(ch)
    words = []
    for word in "".join(chars).split():
        if lowercase:
            word = "".join(c for c in unicodedata.normalize("NFD", word.lower()) if unicodedata.category(c) != "Mn")
        start = 0
        for i, ch in enumerate(word):
            if _is_punctuation(ch):
                if i > start:
                    words.append(word[start:i])
                words.append(ch)
                start = i + 1
        if start < len(word):
            words.append(word[start:])
    return words


@dataclass
class WordPieceTokenizer:
    """Texts -> ``(ids [B, T] zero-padded, lengths [B])`` over ``vocab`` (BERT uncased rules, above)."""

    vocab: list[str]
    lowercase: bool = True
    max_tokens: int = 128  # longer texts keep their first pieces
    unk: str = "[UNK]"
    _ids: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)
    _cache: dict[str, list[int]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.vocab = list(self.vocab)
        self._ids = {t: i for i, t in enumerate(self.vocab)}
        if self.unk not in self._ids:
            raise ValueError(f"the vocabulary has no {self.unk!r} token")
        if self.vocab[0] != "[PAD]":
            raise ValueError("token 0 of the vocabulary must be [PAD] (it pads batches)")

    def to_dict(self) -> dict:
        return {"tokenizer": "wordpiece", "vocab": self.vocab, "lowercase": self.lowercase,
                "max_tokens": self.max_tokens, "unk": self.unk}

    @classmethod
    def from_dict(cls, d: dict) -> "WordPieceTokenizer":
        return cls(**{k: v for k, v in d.items() if k != "tokenizer"})

    @classmethod
    def from_vocab_file(cls, path, **kwargs) -> "WordPieceTokenizer":
        """A BERT ``vocab.txt`` (one token a line, line number = id)."""
        from pathlib import Path

        return cls(Path(path).read_text(encoding="utf-8").splitlines(), **kwargs)

    def word_ids(self, word: str) -> list[int]:
        """Step 5 for one word (cached)."""
        hit = self._cache.get(word)
        if hit is not None:
            return hit
        ids: list[int] = []
        start = 0
        while start < len(word) <= MAX_WORD_CHARS:
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self._ids:
                    ids.append(self._ids[piece])
                    start = end
                    break
            else:  # no piece fits here: the whole word is unknown
                break
        if start < len(word) or not ids:
            ids = [self._ids[self.unk]]
        if len(self._cache) < 200_000:
            self._cache[word] = ids
        return ids

    def token_ids(self, text: str) -> list[int]:
        """One text's ids (``[UNK]`` alone for a text with no word)."""
        ids = [i for w in basic_words(text, self.lowercase) for i in self.word_ids(w)]
        return ids[: self.max_tokens] or [self._ids[self.unk]]

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [self.token_ids(t) for t in texts]
        ids = torch.zeros(len(rows), max(len(r) for r in rows), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r)
        return ids, torch.tensor([len(r) for r in rows])
