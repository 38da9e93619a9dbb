"""Static token vectors distilled from a sentence transformer: the starting table of ``text-gru`` v2.

Each token of the teacher's vocabulary is run through the teacher alone
(``[CLS] token [SEP]``, mean pooled, as the teacher embeds a sentence): one vector
per token, no corpus needed (the idea of Model2Vec). Tokens that occur in a corpus
also get the mean of the teacher's outputs for them in context (unit length, as the
token-alone vectors are), and the two are blended: ``(n * in_context + k * alone) / (n + k)``
for a token seen ``n`` times (:func:`blend`). Then, so that a plain mean of a
sentence's token vectors already behaves like a sentence embedding:

* PCA (fitted on all the token vectors, centred), keeping ``dim`` components after
  dropping the ``drop`` largest: those mostly say "this is a token" and are shared by
  every vector, so they drown the differences a mean of tokens should keep (the
  "all-but-the-top" post-processing of Mu and Viswanath, 2018);
* SIF weighting (Arora et al. 2017): each vector times ``a / (a + p(token))``, with
  ``p`` the token's frequency in a corpus (add-one smoothed), so frequent pieces
  ("the", "?", "##s") count for less than rare, meaningful ones;
* ``[PAD]`` (id 0) is the zero vector.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

#: SIF's ``a``, the principal components dropped and the blend's ``k``: chosen on CLINC150's
#: banking + credit_cards domains, not on the domains the model card reports (TEXT_MODEL_CARD.md).
SIF_A = 3e-3
DROP = 16
BLEND_K = 5.0


@torch.no_grad()
def teacher_token_vectors(teacher: Any, vocab_size: int, cls_id: int, sep_id: int, batch: int = 1024,
                          progress: Callable[[int], None] | None = None) -> np.ndarray:
    """``[vocab_size, teacher_dim]``: the teacher's embedding of each token id on its own.

    ``teacher`` is a :class:`~fewshot.encoders.text.SentenceTransformerEncoder`; its
    modules take BERT features (ids, mask, segment ids) and return ``sentence_embedding``."""
    out = []
    for start in range(0, vocab_size, batch):
        ids = torch.arange(start, min(start + batch, vocab_size))
        input_ids = torch.stack([torch.full_like(ids, cls_id), ids, torch.full_like(ids, sep_id)], 1)
        feats = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
                 "token_type_ids": torch.zeros_like(input_ids)}
        out.append(teacher.forward(feats).numpy())
        if progress:
            progress(len(ids))
    return np.concatenate(out).astype(np.float32)


@torch.no_grad()
def teacher_context_vectors(teacher: Any, texts: list[str], vocab_size: int, batch: int = 64,
                            progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(mean unit-length output vector of each token id over its occurrences in ``texts``
    ``[vocab_size, teacher_dim]``, occurrence counts ``[vocab_size]``); special tokens included."""
    sums, counts = None, torch.zeros(vocab_size, dtype=torch.float64)
    for start in range(0, len(texts), batch):
        feats = teacher.tokenize(texts[start:start + batch])
        out = teacher.module(feats)["token_embeddings"]
        mask = feats["attention_mask"].bool()
        ids, vecs = feats["input_ids"][mask], F.normalize(out[mask], dim=-1).double()
        if sums is None:
            sums = torch.zeros(vocab_size, vecs.shape[1], dtype=torch.float64)
        sums.index_add_(0, ids, vecs)
        counts.index_add_(0, ids, torch.ones(len(ids), dtype=torch.float64))
        if progress:
            progress(min(batch, len(texts) - start))
    return (sums / counts.clamp(min=1)[:, None]).float().numpy(), counts.numpy()


def blend(alone: np.ndarray, in_context: np.ndarray, counts: np.ndarray, k: float = BLEND_K) -> np.ndarray:
    """Per token, ``(n * in_context + k * alone) / (n + k)`` with ``alone`` made unit length."""
    alone = alone / np.maximum(np.linalg.norm(alone, axis=1, keepdims=True), 1e-12)
    n = counts[:, None]
    return ((n * in_context + k * alone) / (n + k)).astype(np.float32)


def token_frequencies(tokenizer: Any, texts: list[str], vocab_size: int) -> np.ndarray:
    """Add-one smoothed relative frequency of each token id in ``texts``."""
    counts = Counter(i for t in texts for i in tokenizer.token_ids(t))
    freq = np.ones(vocab_size, dtype=np.float64)
    for i, c in counts.items():
        freq[i] += c
    return freq / freq.sum()


def pca(vectors: np.ndarray, dim: int, drop: int = 0) -> np.ndarray:
    """The centred vectors projected on principal axes ``drop`` to ``drop + dim`` (largest first)."""
    centred = vectors - vectors.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return np.ascontiguousarray(centred @ vt[drop:drop + dim].T, dtype=np.float32)


def static_table(token_vectors: np.ndarray, freq: np.ndarray, dim: int, a: float = SIF_A,
                 drop: int = DROP) -> np.ndarray:
    """PCA (``drop`` top axes dropped, ``dim`` kept), SIF-weighted by ``freq``, row 0 (``[PAD]``) zero:
    the table ``text-gru`` v2 starts from."""
    table = pca(token_vectors, dim, drop) * (a / (a + freq))[:, None].astype(np.float32)
    table[0] = 0.0
    return table
