"""Crash-safe file replacement.

A reader (or a process restarted after SIGKILL / power loss) must see either the
old or the new content of a file, never a torn mix. The recipe: write a temp
file in the same directory, flush and fsync it, ``os.replace`` it over the
target (atomic on POSIX), then fsync the directory so the rename itself is
durable.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from .layout import TMP_SUFFIX


def fsync_dir(directory: Path) -> None:
    """Make renames/unlinks inside ``directory`` durable (no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_path_for(target: Path) -> Path:
    """A unique temp name next to ``target`` (same filesystem, so rename is atomic).

    The name ends in ``.tmp`` so writers can recognise and remove orphans left
    by a crashed process.
    """
    return target.with_name(f".{target.name}.{secrets.token_hex(6)}{TMP_SUFFIX}")


def atomic_write_bytes(target: Path, data: bytes | bytearray | memoryview, *, sync_dir: bool = True) -> None:
    """Replace ``target`` with ``data`` atomically and durably.

    ``sync_dir=False`` lets a caller that writes several files fsync the
    directory once at the end.
    """
    target = Path(target)
    tmp = temp_path_for(target)
    try:
        with open(tmp, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise
    if sync_dir:
        fsync_dir(target.parent)


def atomic_write_text(target: Path, text: str, *, sync_dir: bool = True) -> None:
    """UTF-8 text variant of :func:`atomic_write_bytes`."""
    atomic_write_bytes(target, text.encode("utf-8"), sync_dir=sync_dir)
