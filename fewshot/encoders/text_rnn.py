"""``text-gru``: a bidirectional GRU over text, trained here; two released architectures.

Version 2 (``static-text-rnn``, :class:`StaticTextRNN`): MiniLM's WordPiece
vocabulary (:mod:`fewshot.encoders.wordpiece`), each token a vector that starts
as MiniLM's embedding of the token (:mod:`fewshot.train.static_vectors`); the
embedding is the mean of the token vectors plus a bidirectional GRU's reading of
them, the GRU's output layer starting at zero (so training starts from the mean).

Version 1 (``text-rnn``, :class:`TextRNN`): hashed words and character n-grams. No vocabulary file can go stale and nothing is downloaded: a word becomes the
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
from fewshot.encoders.wordpiece import WordPieceTokenizer
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


class StaticTextRNN(nn.Module):
    """Token ids -> token vectors -> their mean + a biGRU branch (attention pooling, zero-started output).

    The mean alone is a static sentence embedding (the table starts from MiniLM's token
    vectors, SIF-weighted); the GRU adds what word order and context change. Its output
    layer starts at zero, so an untrained branch leaves the mean as it is.

    The table is most of the weights (30,522 rows), so a file stores it as int8 with one
    float scale per row (:meth:`packed_state_dict`; loading unpacks it). Packing first
    rounds the module's own table to those values, so a saved encoder and the one loaded
    back compute the same thing and share a fingerprint.
    """

    def __init__(self, vocab_size: int, dim: int = 128, hidden: int = 128, pooling: str = "attention"):
        super().__init__()
        self.emb = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.rnn = SequenceRNN(dim, hidden=hidden, layers=1, cell="gru", bidirectional=True, pooling=pooling,
                               dim=dim)
        nn.init.zeros_(self.rnn.proj_out.weight)
        nn.init.zeros_(self.rnn.proj_out.bias)
        self.out_dim = dim
        self.register_load_state_dict_pre_hook(_unpack_table)

    def static(self, ids: torch.Tensor) -> torch.Tensor:
        """The mean token vector of each text (padding, id 0, left out)."""
        mask = (ids > 0).unsqueeze(-1).to(self.emb.weight.dtype)
        return (self.emb(ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def forward(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        ids, lengths = batch
        return self.static(ids) + self.rnn((self.emb(ids), lengths))

    @torch.no_grad()
    def packed_state_dict(self) -> dict[str, torch.Tensor]:
        """The state dict with the table as ``emb.weight`` int8 and ``emb.scale`` (one float per row)."""
        w = self.emb.weight
        scale = (w.abs().amax(1, keepdim=True) / 127.0).clamp(min=1e-12)
        q = torch.round(w / scale).clamp(-127, 127).to(torch.int8)
        w.copy_(q.float() * scale)  # exactly what loading computes (through int8: no -0.0 left)
        sd = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        sd["emb.weight"], sd["emb.scale"] = q, scale.squeeze(1)
        return sd


def _unpack_table(module: nn.Module, state: dict, prefix: str, *_: Any) -> None:
    """Load hook of :class:`StaticTextRNN`: an int8 table and its row scales back to floats."""
    key = prefix + "emb.weight"
    scale = state.pop(prefix + "emb.scale", None)
    if scale is not None and key in state:
        state[key] = state[key].float() * scale.float()[:, None]


ARCHS = {"text-rnn": TextRNN, "static-text-rnn": StaticTextRNN}


def build_text_arch(arch: str, **kwargs: Any) -> tuple[nn.Module, int]:
    """The text architectures by name: ``text-rnn`` (v1) and ``static-text-rnn`` (v2)."""
    if arch not in ARCHS:
        raise EncoderError(f"unknown text architecture {arch!r}; known: {', '.join(ARCHS)}")
    m = ARCHS[arch](**kwargs)
    return m, m.out_dim


class TextTokenizers:
    """The tokeniser an encoder file names: ``hash-ngrams`` (v1, the default) or ``wordpiece`` (v2)."""

    @staticmethod
    def from_dict(d: dict) -> HashTokenizer | WordPieceTokenizer:
        kind = d.get("tokenizer", "hash-ngrams")
        if kind == "wordpiece":
            return WordPieceTokenizer.from_dict(d)
        if kind == "hash-ngrams":
            return HashTokenizer.from_dict(d)
        raise EncoderError(f"unknown text tokenizer {kind!r}; known: hash-ngrams, wordpiece")


class TorchTextEncoder(TextEncoder):
    """A text encoder trained here: a tokeniser -> a text architecture above; saved as an encoder file."""

    preprocess_type = TextTokenizers
    build_module = staticmethod(build_text_arch)
    default_arch = "text-rnn"

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.preprocess(texts)

    @torch.inference_mode()
    def forward(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return self.module(batch).float()

    def sidecar(self, cfg: dict) -> dict:
        """The config, with a vocabulary list (30,522 pieces for v2) summarised: it lives in the encoder file."""
        pre = cfg.get("preprocess", {})
        if isinstance(pre.get("vocab"), list):
            vocab = pre["vocab"]
            digest = hashlib.sha256("\n".join(vocab).encode()).hexdigest()
            cfg = {**cfg, "preprocess": {**pre, "vocab": f"{len(vocab)} pieces in the encoder file, sha256 {digest}"}}
        return cfg

    def state_dict_to_save(self) -> dict[str, torch.Tensor]:
        """The weights; an architecture that packs its own (``packed_state_dict``) is asked to, and
        the fingerprint recomputed, since packing rounds the module's weights to what is stored."""
        pack = getattr(self.module, "packed_state_dict", None)
        if pack is None:
            return super().state_dict_to_save()
        sd = pack()
        self.invalidate()
        return sd


def new_text_encoder(name: str = "text-gru", tokenizer: HashTokenizer | WordPieceTokenizer | None = None,
                     table: torch.Tensor | None = None, **arch_kwargs: Any) -> TorchTextEncoder:
    """A randomly initialised text GRU (to train, or to test with): v1's architecture with a
    :class:`HashTokenizer`, v2's with a :class:`WordPieceTokenizer` (``table``: its starting token vectors)."""
    tok = tokenizer or HashTokenizer()
    if isinstance(tok, WordPieceTokenizer):
        arch = "static-text-rnn"
        kw = {"vocab_size": len(tok.vocab), **({"dim": int(table.shape[1])} if table is not None else {}),
              **arch_kwargs}
    else:
        arch, kw = "text-rnn", {"buckets": tok.buckets, **arch_kwargs}
    module, dim = build_text_arch(arch, **kw)
    if table is not None:
        with torch.no_grad():
            module.emb.weight.copy_(torch.as_tensor(table))
    return TorchTextEncoder(name, module, dim, tok, arch, kw, weights_source="random init")
