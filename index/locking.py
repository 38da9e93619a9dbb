"""Exclusive writer lock for an index directory.

Writers from several processes serialise on ``fcntl.flock`` of ``<dir>/.lock``.
flock locks belong to an open file description, so two store objects in one
process also exclude each other (this is what the tests rely on to simulate two
processes). The lock is released by the kernel when a process dies, so a
SIGKILLed writer never leaves the index locked.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

from .errors import LockTimeoutError
from .validation import validate_timeout
from .layout import LOCK_NAME


class DirLock:
    """Context manager holding the exclusive lock of one index directory.

    ``timeout`` is how long to wait for another writer, in seconds (0 = try once).
    """

    def __init__(self, directory: Path, timeout: float = 10.0) -> None:
        self.directory = Path(directory)
        self.timeout = validate_timeout(timeout)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Wait up to ``timeout`` seconds for the lock; raise LockTimeoutError after."""
        if self._fd is not None:
            raise RuntimeError("DirLock is not re-entrant")
        fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout
        delay = 0.005
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise LockTimeoutError(
                            f"index {self.directory} is locked by another writer; "
                            "try again or raise --lock-timeout"
                        ) from None
                    time.sleep(min(delay, remaining))
                    delay = min(delay * 2, 0.1)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        """Release the lock (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def __enter__(self) -> "DirLock":
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
