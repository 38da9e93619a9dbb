"""fewshot: a few-shot similarity search engine.

Teach a new class from one example: an encoder embeds examples into a vector
index (:mod:`index`), queries are classified by the nearest class prototype, and
stored examples can be looked up by similarity.

Heavy modules (torch) load on first use, so ``import fewshot`` and the CLI's
``--help`` stay instant.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "FewShotIndex": "fewshot.fewshot_index",
    "Prediction": "fewshot.fewshot_index",
    "SearchResult": "fewshot.fewshot_index",
    "PrototypeClassifier": "fewshot.classifier",
    "FewShotError": "fewshot.errors",
    "InputError": "fewshot.errors",
    "EncoderError": "fewshot.errors",
    "encoders": "fewshot.encoders",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        mod = importlib.import_module(_LAZY[name])
        return mod if name == "encoders" else getattr(mod, name)
    raise AttributeError(f"module 'fewshot' has no attribute {name!r}")
