"""Content-addressed copies of example source files inside an index directory.

Keeping a copy of each example (image, audio clip, ...) next to its vector lets
the index be re-encoded after an encoder change even when the originals moved.
Files are named by their SHA-256, so identical content is stored once and a
key can be trusted to name exactly that content.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import stat
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from .atomic import fsync_dir, temp_path_for
from .errors import ValidationError
from .layout import TMP_SUFFIX

BLOB_DIR = "examples"
_KEY_RE = re.compile(r"^examples/([0-9a-f]{2})/([0-9a-f]{64})(\.[a-z0-9]{1,9})?$")
_SUFFIX_RE = re.compile(r"^(\.[a-z0-9]{1,9})?$")
#: The names the blob store itself writes: the only ones ``sweep`` may delete.
_DIR_NAME_RE = re.compile(r"^[0-9a-f]{2}$")
_BLOB_NAME_RE = re.compile(r"^([0-9a-f]{64})(\.[a-z0-9]{1,9})?$")
#: ``temp_path_for`` names: ``.incoming.<12 hex>.tmp`` (and ``.<blob name>.<12 hex>.tmp`` of older writers).
_TEMP_NAME_RE = re.compile(r"^\.(incoming|[0-9a-f]{64}(\.[a-z0-9]{1,9})?)\.[0-9a-f]{12}\.tmp$")
#: The metadata key under which fewshot records an example's blob key.
BLOB_KEY = "blob"
_CHUNK = 1 << 20


def _normalise_suffix(suffix: str) -> str:
    """Lower-case ``suffix``; '' or '.' + 1-9 of [a-z0-9] (10 characters at most)."""
    if not isinstance(suffix, str):
        raise ValidationError(f"suffix must be a str like '.jpg'; got {type(suffix).__name__}")
    suffix = suffix.lower()
    if suffix and not suffix.startswith("."):
        suffix = "." + suffix
    if not _SUFFIX_RE.fullmatch(suffix):
        raise ValidationError(
            f"suffix {suffix!r} is not allowed; use '' or a short extension of letters/digits like '.jpg'"
        )
    return suffix


class BlobStore:
    """Blob files under ``<index_dir>/examples/<2 hex>/<sha256><suffix>``.

    Keys are relative paths (``examples/ab/ab12...ef.jpg``) so they stay valid
    when the index directory is moved or copied.
    """

    def __init__(self, index_dir: str | Path) -> None:
        self.index_dir = Path(index_dir)
        self.root = self.index_dir / BLOB_DIR

    def put_bytes(self, data: bytes, suffix: str = "") -> str:
        """Store ``data``; returns its key. Storing the same bytes again is a no-op."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ValidationError(f"data must be bytes; got {type(data).__name__}")
        suffix = _normalise_suffix(suffix)
        digest = hashlib.sha256(data).hexdigest()
        key = f"{BLOB_DIR}/{digest[:2]}/{digest}{suffix}"
        target = self.path(key)
        if self._reuse(target):
            return key
        target.parent.mkdir(parents=True, exist_ok=True)
        with self._temp_file() as (fh, tmp):
            fh.write(data)
            _durable(fh)
            os.replace(tmp, target)  # before closing, so the lock covers the rename
        fsync_dir(target.parent)
        return key

    def put_file(self, path: str | Path) -> str:
        """Copy a file in (streamed, hashed on the way); returns its key.

        The suffix is the lower-cased original extension when it is short and
        plain (``.JPG`` -> ``.jpg``); otherwise the blob gets no suffix.
        """
        src = Path(path)
        if not src.is_file():
            raise ValidationError(f"{src} is not a readable file; check the path")
        try:
            suffix = _normalise_suffix(src.suffix)
        except ValidationError:
            suffix = ""
        self.root.mkdir(parents=True, exist_ok=True)
        hasher = hashlib.sha256()
        with open(src, "rb") as fin, self._temp_file() as (fout, tmp):
            while chunk := fin.read(_CHUNK):
                hasher.update(chunk)
                fout.write(chunk)
            _durable(fout)
            digest = hasher.hexdigest()
            key = f"{BLOB_DIR}/{digest[:2]}/{digest}{suffix}"
            target = self.path(key)
            if self._reuse(target):
                tmp.unlink()
                return key
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)  # before closing, so the lock covers the rename
        fsync_dir(target.parent)
        return key

    @contextlib.contextmanager
    def _temp_file(self) -> Iterator[tuple[BinaryIO, Path]]:
        """A new temp file, held under an exclusive flock while open; removed if the block fails.

        The lock marks it as in use, so that :meth:`sweep_temps` of another
        process never deletes a copy being written or renamed into place.
        """
        tmp = self._temp_path()
        try:
            with open(tmp, "xb") as fh:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
                yield fh, tmp
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def path(self, key: str) -> Path:
        """Absolute path of ``key``; ValidationError for anything but a well-formed blob key.

        Only the exact key shape is accepted, so a key read from metadata can
        never point outside the blob directory (``../``, absolute paths, links).
        """
        if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
            raise ValidationError(
                f"invalid blob key {key!r}; expected 'examples/<2 hex>/<sha256><suffix>' as returned by put_file"
            )
        match = _KEY_RE.fullmatch(key)
        assert match is not None
        if match.group(1) != match.group(2)[:2]:
            raise ValidationError(f"invalid blob key {key!r}: directory does not match the hash")
        return self.index_dir / key

    def exists(self, key: str) -> bool:
        """True if the blob for ``key`` is stored."""
        return self.path(key).is_file()

    def verified_path(self, key: str) -> Path:
        """Path of ``key`` after checking it is a regular file whose content hashes to its name.

        What re-embedding must check first: a copy swapped for other content,
        or replaced by a link to a file outside the index, would otherwise be
        embedded under the record's label. Raises ValidationError saying which.
        """
        path = self.path(key)
        self.refuse_linked_root()
        for part in (path.parent, path):
            try:
                mode = part.lstat().st_mode
            except FileNotFoundError:
                raise ValidationError(f"stored copy {key} is missing") from None
            if stat.S_ISLNK(mode):
                raise ValidationError(f"stored copy {key} is a symbolic link, not a file the index wrote")
        if not stat.S_ISREG(path.lstat().st_mode):
            raise ValidationError(f"stored copy {key} is not a regular file")
        hasher = hashlib.sha256()
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                hasher.update(chunk)
        if hasher.hexdigest() != path.name.split(".")[0]:
            raise ValidationError(f"stored copy {key} is damaged: its content no longer matches its SHA-256 name")
        return path

    def refuse_linked_root(self) -> None:
        """Raise ValidationError when ``examples/`` is a symbolic link.

        The index owns the files under ``examples/``; a linked folder would make
        it read (and sweep or delete) files elsewhere on the machine.
        """
        if self.root.is_symlink():
            raise ValidationError(
                f"{self.root} is a symbolic link; the index only works on its own examples folder "
                "(replace the link with the folder it points to)"
            )

    def missing(self, keys: Iterable[str]) -> list[str]:
        """The keys among ``keys`` whose blob is not stored (as a regular file)."""
        return [key for key in dict.fromkeys(keys) if not self.path(key).is_file()]

    def delete(self, keys: Iterable[str]) -> int:
        """Delete the blobs of ``keys`` (absent ones are skipped); returns how many went.

        Only for blobs that no committed record references any more, by a
        writer holding the index lock (so no add can commit a reference
        meanwhile). A failure is a warning: the records are already committed,
        and ``fewshot check --repair`` deletes the leftover later.
        """
        removed, dirs = 0, set()
        if self.root.is_symlink():
            return 0
        for key in dict.fromkeys(keys):
            try:
                path = self.path(key)
                path.unlink()
                removed += 1
                dirs.add(path.parent)
            except (FileNotFoundError, ValidationError):  # gone, or a malformed key: not a file of ours
                continue
            except OSError as exc:
                warnings.warn(f"could not delete stored copy {key} ({exc}); `fewshot check --repair` "
                              "deletes it later", RuntimeWarning, stacklevel=2)
        for directory in dirs:
            fsync_dir(directory)
        return removed

    def _temp_path(self) -> Path:
        """Staging name for a new blob: always directly under ``examples/``.

        Keeping every temp file in one directory lets :meth:`sweep_temps` find
        a crashed writer's leftovers with one directory listing.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        return temp_path_for(self.root / "incoming")

    def sweep_temps(self, *, min_age_s: float = 1.0) -> int:
        """Delete temp files of writers that died (SIGKILL, power loss); returns how many.

        A writer holds an exclusive ``flock`` on its temp file from creation
        until the file is renamed into place, and the kernel drops that lock
        when the process dies. So a temp file whose lock can be taken belongs
        to nobody and can go, even while other writers are busy; ``min_age_s``
        only covers the instant between a writer creating its file and locking
        it. Cheap (one listing of ``examples/``), so writers call it on open.
        """
        try:
            entries = list(os.scandir(self.root))
        except (FileNotFoundError, NotADirectoryError):
            return 0
        cutoff = time.time() - min_age_s
        removed = 0
        for entry in entries:
            if not entry.name.endswith(TMP_SUFFIX) or not entry.is_file(follow_symlinks=False):
                continue
            try:
                if entry.stat(follow_symlinks=False).st_mtime > cutoff:
                    continue
                fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue  # a live writer is still on it
            try:
                os.unlink(entry.path)
                removed += 1
            except FileNotFoundError:
                pass
            finally:
                os.close(fd)  # closing releases the lock
        if removed:
            fsync_dir(self.root)
        return removed

    def leftovers(self, referenced_keys: set[str]) -> list[tuple[Path, bool]]:
        """(path, is_temp) of unreferenced blobs and temp files, by the blob store's own names only.

        Only what this class writes is listed: ``<2 hex>/<sha256><suffix>``
        files in the folder matching their hash, and temp files named by
        ``temp_path_for``. Any other file (a user's document
        dropped there), any link, and anything under a linked folder is not
        the index's to delete. A linked ``examples/`` raises ValidationError.
        """
        self.refuse_linked_root()
        out: list[tuple[Path, bool]] = []
        try:
            entries = list(os.scandir(self.root))
        except (FileNotFoundError, NotADirectoryError):
            return out
        for entry in entries:
            if _TEMP_NAME_RE.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                out.append((Path(entry.path), True))
            elif _DIR_NAME_RE.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
                for sub in os.scandir(entry.path):
                    match = _BLOB_NAME_RE.fullmatch(sub.name)
                    if not sub.is_file(follow_symlinks=False):
                        continue
                    if _TEMP_NAME_RE.fullmatch(sub.name):
                        out.append((Path(sub.path), True))
                    elif (match and match.group(1)[:2] == entry.name
                          and f"{BLOB_DIR}/{entry.name}/{sub.name}" not in referenced_keys):
                        out.append((Path(sub.path), False))
        return out

    def sweep(self, referenced_keys: set[str], *, min_age_s: float = 300.0) -> int:
        """Delete the :meth:`leftovers` older than ``min_age_s``; returns how many.

        For writers only. Younger files are kept, because another process may
        have just stored a blob whose record it has not committed yet
        (re-storing an existing blob refreshes its age). Pass ``min_age_s=0``
        when no other writer can be active. Emptied hash folders are removed.
        """
        cutoff = time.time() - min_age_s
        removed = 0
        dirs: set[Path] = set()
        for file, _is_temp in self.leftovers(set(referenced_keys)):
            try:
                if file.lstat().st_mtime > cutoff:
                    continue
                file.unlink()
                removed += 1
                dirs.add(file.parent)
            except FileNotFoundError:
                continue
        for directory in dirs - {self.root}:
            try:
                directory.rmdir()  # only succeeds when empty
            except OSError:
                pass
        if removed:
            fsync_dir(self.root)
        return removed

    @staticmethod
    def _reuse(target: Path) -> bool:
        """True if ``target`` already exists; refreshes its mtime to protect it from sweep."""
        try:
            os.utime(target)
            return True
        except FileNotFoundError:
            return False


def blob_keys(metadata: Iterable[Any]) -> list[str]:
    """The blob keys named by metadata dicts (under ``"blob"``), in order, without repeats."""
    keys = [m.get(BLOB_KEY) for m in metadata if isinstance(m, Mapping)]
    return list(dict.fromkeys(k for k in keys if isinstance(k, str)))


def require_blobs(index_dir: str | Path, metadata: Iterable[Any]) -> None:
    """Raise MissingBlobError when a blob named by ``metadata`` is not stored (call under the lock).

    An add copies its examples before taking the lock; a remove committed in
    between may have deleted a copy it shared with the removed records. The
    add must then store it again rather than commit a record without its copy.
    """
    from .errors import MissingBlobError

    keys = blob_keys(metadata)
    gone = BlobStore(index_dir).missing(keys) if keys else []
    if gone:
        raise MissingBlobError(
            f"{len(gone)} stored example copy(ies) this add refers to are gone (e.g. {gone[0]}), deleted by a "
            "concurrent remove; store them again and retry", field=BLOB_KEY, expected=gone[0])


def _durable(fh: BinaryIO) -> None:
    """Flush and fsync an open file, so that a rename of it never exposes a partly written copy."""
    fh.flush()
    os.fsync(fh.fileno())
