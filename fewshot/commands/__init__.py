"""CLI commands that live in their own modules; each exposes a click command named ``command``."""
from __future__ import annotations

import os


def progress_enabled() -> bool:
    """Progress bars on stderr, unless ``FEWSHOT_NO_PROGRESS`` is set (tests, scripts)."""
    return not os.environ.get("FEWSHOT_NO_PROGRESS")
