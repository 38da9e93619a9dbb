"""Every error the service can answer with, mapped to an HTTP status in ONE place.

A request never gets a 500 with a traceback: library errors are a problem the
caller can fix (4xx with the library's own one-line message); anything else is
logged here and answered with a one-line 500.
"""
from __future__ import annotations

import logging

log = logging.getLogger("fewshot.serve")


class ServeError(Exception):
    """An error raised by the service itself, with its HTTP status."""

    status = 400


class NotFound(ServeError):
    status = 404


class TooLarge(ServeError):
    status = 413


class Unauthorized(ServeError):
    status = 401


class Busy(ServeError):
    """The request waited longer than the per-request timeout."""

    status = 503


def one_line(msg: object) -> str:
    return " ".join(str(msg).split()) or "unknown error"


def status_of(exc: BaseException) -> int:
    """The HTTP status of an exception: the single mapping every handler uses."""
    from fewshot.errors import FewShotError
    from index.errors import LockTimeoutError, NotAnIndexError, RecordNotFoundError, StoreError, ValidationError

    if isinstance(exc, ServeError):
        return exc.status
    if isinstance(exc, (RecordNotFoundError, NotAnIndexError)):
        return 404
    if isinstance(exc, LockTimeoutError):
        return 409  # another process holds the index's write lock: retry later
    if isinstance(exc, (FewShotError, ValidationError)):
        return 400
    if isinstance(exc, StoreError):
        return 409  # the index's state (format, corruption) refuses the request
    if isinstance(exc, ValueError):
        return 400  # as the CLI: a ValueError from the library describes a bad argument
    return 500


def error_body(exc: BaseException) -> tuple[int, dict]:
    """(status, ``{"error": ...}``) for any exception; 500s are logged with their traceback."""
    status = status_of(exc)
    if status == 500:
        log.error("unexpected error", exc_info=exc)
        return 500, {"error": one_line(f"unexpected {type(exc).__name__}; see the server log")}
    return status, {"error": one_line(exc)}
