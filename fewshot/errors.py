"""fewshot's error types. The CLI prints any of them as one ``error:`` line, exit 1."""
from __future__ import annotations


class FewShotError(Exception):
    """Base class: a problem the user can fix; the message says how."""


class InputError(FewShotError, ValueError):
    """An input (file, array, label) cannot be used."""


class EncoderError(FewShotError):
    """An encoder cannot be found, loaded, or does not match an index."""
