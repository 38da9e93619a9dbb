"""``fewshot serve``: an HTTP service over warm indexes, and a page to teach classes by drawing.

Nothing heavy is imported here: :func:`create_app` pulls in FastAPI, torch and
the indexes only when called, so ``fewshot --help`` stays instant.

    from fewshot.serve import create_app
    app = create_app(["my_index"], token="s3cret")   # run with uvicorn
"""
from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def create_app(*args: Any, **kwargs: Any):
    """Build the ASGI app (see :func:`fewshot.serve.app.create_app`)."""
    from fewshot.serve.app import create_app as _create_app

    return _create_app(*args, **kwargs)
