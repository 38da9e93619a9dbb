"""``text-gru``: a bidirectional GRU over hashed words and character n-grams, trained here.

No vocabulary file can go stale and nothing is downloaded: a word becomes the
bag of its own hash and the hashes of its character n-grams (``<wo``, ``wor``,
``ord``, ``rd>``, fastText style), each taken modulo ``buckets``; so typos and
unseen words still share most of their n-grams with known ones. The hashing
spec (buckets, n-gram sizes, lowercasing, the hash itself: the first 8 bytes of
blake2b) is the "vocabulary" and travels in the encoder file's config beside
the weights. Word vectors (the mean of their bag) go through the stroke
encoder's :class:`~fewshot.encoders.sequence.SequenceRNN` (packed-equivalent
bidirectional GRU, attention pooling), so variable lengths cost nothing.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from fewshot.encoders.sequence import SequenceRNN
from fewshot.encoders.text import TextEncoder
from fewshot.errors import EncoderError

_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)


@dataclass
class HashTokenizer:
    """Words and their character n-grams -> bucket ids (see the module docstring)."""

    buckets: int = 1 << 14
    ngrams: tuple[int, ...] = (3, 4)
    lowercase: bool = True
    max_words: int = 128  # longer texts keep their first words

    def __post_init__(self) -> None:
        self.ngrams = tuple(int(n) for n in self.ngrams)
        self._cache: dict[str, list[int]] = {}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ngrams"] = list(self.ngrams)
        return {"tokenizer": "hash-ngrams", **d}

    @classmethod
    def from_dict(cls, d: dict) -> "HashTokenizer":
        d = {k: v for k, v in d.items() if k != "tokenizer"}
        return cls(**d)

    def _h(self, s: str) -> int:
        return 1 + int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little") % (self.buckets - 1)

    def word_ids(self, word: str) -> list[int]:
        """The word's own bucket, then one per character n-gram of ``<word>`` (0 is padding)."""
        if word not in self._cache:
            w = f"<{word}>"
            grams = [w[i:i + n] for n in self.ngrams for i in range(len(w) - n + 1)]
            self._cache[word] = [self._h("w:" + word)] + [self._h(g) for g in grams if g != w]
        return self._cache[word]

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids [B, T, G] zero-padded, word counts [B]): G n-gram slots per word."""
        words = [(_WORD.findall(t.lower() if self.lowercase else t) or ["<empty>"])[: self.max_words] for t in texts]
        bags = [[self.word_ids(w) for w in ws] for ws in words]
        t_max = max(len(b) for b in bags)
        g_max = max(len(g) for b in bags for g in b)
        ids = torch.zeros(len(texts), t_max, g_max, dtype=torch.long)
        for i, b in enumerate(bags):
            for j, g in enumerate(b):
                ids[i, j, :len(g)] = torch.tensor(g)
        return ids, torch.tensor([len(b) for b in bags])


class TextRNN(nn.Module):
    """Hashed n-gram bags -> word vectors (masked mean) -> SequenceRNN (biGRU, attention pooling)."""

    def __init__(self, buckets: int = 1 << 14, word_dim: int = 96, hidden: int = 128, layers: int = 1,
                 dim: int = 128, pooling: str = "attention", dropout: float = 0.0):
        super().__init__()
        self.emb = nn.Embedding(buckets, word_dim, padding_idx=0)
        self.rnn = SequenceRNN(word_dim, hidden=hidden, layers=layers, cell="gru", bidirectional=True,
                               pooling=pooling, dim=dim, dropout=dropout)
        self.out_dim = self.rnn.out_dim

    def forward(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        ids, lengths = batch
        mask = (ids > 0).unsqueeze(-1).float()
        words = (self.emb(ids) * mask).sum(2) / mask.sum(2).clamp(min=1.0)
        return self.rnn((words, lengths))


def build_text_arch(arch: str, **kwargs: Any) -> tuple[nn.Module, int]:
    """The text architectures by name: ``text-rnn`` (above)."""
    if arch != "text-rnn":
        raise EncoderError(f"unknown text architecture {arch!r}; known: text-rnn")
    m = TextRNN(**kwargs)
    return m, m.out_dim


class TorchTextEncoder(TextEncoder):
    """A text encoder trained here: :class:`HashTokenizer` -> :class:`TextRNN`; saved as an encoder file."""

    preprocess_type = HashTokenizer
    build_module = staticmethod(build_text_arch)
    default_arch = "text-rnn"

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.preprocess(texts)

    @torch.inference_mode()
    def forward(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return self.module(batch).float()


def new_text_encoder(name: str = "text-gru", tokenizer: HashTokenizer | None = None,
                     **arch_kwargs: Any) -> TorchTextEncoder:
    """A randomly initialised text GRU (to train, or to test with)."""
    tok = tokenizer or HashTokenizer()
    kw = {"buckets": tok.buckets, **arch_kwargs}
    module, dim = build_text_arch("text-rnn", **kw)
    return TorchTextEncoder(name, module, dim, tok, "text-rnn", kw, weights_source="random init")
