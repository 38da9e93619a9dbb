"""Fixtures of the encoder tests."""
from __future__ import annotations

import pytest


@pytest.fixture
def no_download(monkeypatch):
    """Tests of the text extra never download: the hub fetch is replaced by a function that fails."""
    from fewshot.encoders import text as text_enc

    def refuse(repo):
        raise AssertionError(f"tests must not download ({repo})")
    monkeypatch.setattr(text_enc, "hub_dir", refuse)
