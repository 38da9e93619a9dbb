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


class ConflictError(StoreError):
    """The index changed between the moment a caller prepared a write and its commit.

    Raised under the writer lock, before anything is written, so the caller can
    redo the work against the new state (e.g. re-embed with the index's new
    encoder) and retry. ``field``, ``expected`` and ``found`` say what changed.
    """

    def __init__(self, message: str, *, field: str | None = None, expected: object = None,
                 found: object = None) -> None:
        super().__init__(message)
        self.field, self.expected, self.found = field, expected, found


class RecordsChangedError(ConflictError, ValidationError):
    """``rewrite_vectors`` was given another set of ids than the records now stored.

    A write committed since the caller listed the records (an add or a remove
    during a reindex): list them again and retry. Also a ``ValidationError``,
    as it always was.
    """


class MissingBlobError(ConflictError):
    """A stored example copy that an ``add`` refers to is gone (removed concurrently).

    Store the copies again and retry the add.
    """


class RecordNotFoundError(StoreError, KeyError):
    """A requested record id does not exist (``except KeyError`` also catches it)."""

    def __str__(self) -> str:
        # KeyError.__str__ would repr() the message and add quotes.
        return str(self.args[0]) if self.args else ""
