"""Exception hierarchy of the vector-store layer.

Callers (CLI, training code) catch ``StoreError`` to report any index problem
in one place; the subclasses let them react to the specific cases (e.g. offer
``fewshot init`` for ``NotAnIndexError``). Every message is meant to be shown
to a user as-is, so it says what went wrong and what to do about it.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base class of every error raised by the ``index`` package."""


class ValidationError(StoreError, ValueError):
    """Bad input from the caller (vectors, labels, metadata, k, ids)."""


class NotAnIndexError(StoreError):
    """The path does not hold a fewshot index."""


class FormatVersionError(StoreError):
    """The index was written by a newer fewshot with an unknown on-disk format."""


class CorruptIndexError(StoreError):
    """The source of truth (meta.sqlite) is damaged and cannot be read safely."""


class LockTimeoutError(StoreError):
    """Another writer held the index lock for longer than the allowed wait."""


class RecordNotFoundError(StoreError, KeyError):
    """A requested record id does not exist (``except KeyError`` also catches it)."""

    def __str__(self) -> str:
        # KeyError.__str__ would repr() the message and add quotes.
        return str(self.args[0]) if self.args else ""
