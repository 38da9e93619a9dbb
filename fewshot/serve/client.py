"""``fewshot classify/search/add/info --server URL``: the same commands answered by a running server.

Torch-free and FastAPI-free (stdlib HTTP, numpy/PIL only to expand folders), so a call costs a
process start and one round trip instead of an encoder load. The command's own code runs unchanged:
for the length of the call, the CLI's index opener is replaced by :class:`RemoteIndex`, which answers
``classify``/``search``/``add``/``info`` from the server with objects of the same shape, so the text
and ``--json`` output are the command's own. The index is named on the server by the directory's
name (as ``fewshot serve`` names it).
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any, Callable

import click

CHUNK = 64  # inputs per request (the server's default --max-batch)


class _Answer:
    """An answer object with the attributes the CLI reads and the server's dict as ``to_dict()``."""

    def __init__(self, d: dict, **children: Any) -> None:
        self._d = d
        self.__dict__.update({k: v for k, v in d.items() if k not in children}, **children)

    def to_dict(self) -> dict:
        return self._d


class _NoLocalCopies:
    """The stored copies are on the server: a local duplicate check finds none (``root`` holds nothing)."""

    root = Path(os.devnull)


class RemoteIndex:
    """The part of ``FewShotIndex`` the CLI commands use, answered over HTTP."""

    def __init__(self, server: str, index_dir: str, token: str | None = None, timeout: float = 120.0) -> None:
        import urllib.parse  # here, not at the top: `fewshot --help` imports this module

        self.base = server.rstrip("/") + "/v1/indexes/" + urllib.parse.quote(Path(index_dir).resolve().name, safe="")
        self.token = token if token is not None else (os.environ.get("FEWSHOT_TOKEN", "").strip() or None)
        self.timeout = timeout
        self.store = self  # the commands call idx.store.count()
        self.blobs = _NoLocalCopies()

    def __enter__(self) -> "RemoteIndex":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def _call(self, method: str, path: str, body: bytes | None = None, ctype: str | None = None) -> Any:
        import urllib.error
        import urllib.request

        req = urllib.request.Request(self.base + path, data=body, method=method)
        if ctype:
            req.add_header("Content-Type", ctype)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            try:
                msg = json.loads(exc.read()).get("error") or exc.reason
            except (ValueError, AttributeError):
                msg = f"{exc.code} {exc.reason}"
            raise click.ClickException(f"server: {msg}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise click.ClickException(f"cannot reach the server at {self.base}: {getattr(exc, 'reason', exc)}") from None

    def _files(self, inputs: Any) -> list[Path]:
        """The files the local command would read (folders expanded the same way), for this index's kind."""
        paths = [Path(p) for p in inputs]
        if all(p.is_file() for p in paths):  # the common case, without numpy's import (a third of the call)
            return paths
        from fewshot.inputs import IMAGE_SUFFIXES, SEQUENCE_SUFFIXES, expand_inputs

        kind = self._call("GET", "")["input_kind"]
        items = expand_inputs(list(inputs), SEQUENCE_SUFFIXES if kind == "sequence" else IMAGE_SUFFIXES)
        return [it.path for it in items if it.path is not None]

    def _post_files(self, path: str, files: list[Path], fields: dict[str, Any]) -> list[Any]:
        """Multipart uploads, ``CHUNK`` files a request; each file named as the command was given it."""
        import uuid

        out: list[Any] = []
        for i in range(0, len(files), CHUNK):
            boundary = uuid.uuid4().hex
            parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                     for k, v in fields.items() if v is not None]
            for f in files[i:i + CHUNK]:
                name = str(f).replace('"', "%22")
                head = (f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
                        "Content-Type: application/octet-stream\r\n\r\n")
                parts.append(head.encode() + f.read_bytes() + b"\r\n")
            body = b"".join(parts) + f"--{boundary}--\r\n".encode()
            ans = self._call("POST", path, body, f"multipart/form-data; boundary={boundary}")
            out += ans if isinstance(ans, list) else [ans]
        return out

    def classify(self, inputs: Any, top_k: int = 5, threshold: float | None = None, **_: Any) -> list[_Answer]:
        preds = self._post_files("/classify/files", self._files(inputs), {"top_k": top_k, "threshold": threshold})
        return [_Answer(p, candidates=[_Answer(c) for c in p["candidates"]]) for p in preds]

    def search(self, inputs: Any, k: int = 5, labels: Any = None, **params: Any) -> list[_Answer]:
        if labels or {v for k_, v in params.items() if k_ != "progress" and v is not None}:
            raise click.ClickException("--label, --ef-search and --nprobe are not supported with --server")
        res = self._post_files("/search/files", self._files(inputs), {"k": k})
        return [_Answer(r, neighbors=[_Answer(n) for n in r["neighbors"]]) for r in res]

    def add(self, label: str, inputs: Any, **_: Any) -> list[int]:
        files = self._files(inputs)
        if len(files) > CHUNK:
            raise click.ClickException(f"at most {CHUNK} files per add with --server (one atomic write)")
        return self._post_files("/examples/files", files, {"label": label})[0]["ids"]

    def stored_label(self, label: str, must_exist: bool = True, stored: Any = None) -> str:
        return label  # the server checks and normalises labels

    def _items(self, inputs: Any) -> list[Any]:
        from fewshot.inputs import InputItem

        return [InputItem(p, str(p)) for p in self._files(inputs)]

    def add_folder_report(self, root: Any, **_: Any) -> dict:
        raise click.ClickException("--from-folder is not supported with --server; add each class with --label")

    def info(self) -> dict:
        return self._call("GET", "")

    @functools.cached_property
    def encoder(self) -> Any:
        """The server index's encoder as the commands ask about it before reading inputs: name and kind."""
        from types import SimpleNamespace

        info = self.info()
        return SimpleNamespace(name=info.get("encoder"), input_kind=info.get("input_kind", "image"))

    def count(self) -> int:
        return int(self._call("GET", "")["count"])


def _remote(callback: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a command's callback: with ``--server``, the CLI's index opener yields a RemoteIndex."""

    @functools.wraps(callback)
    def run(*args: Any, server: str | None = None, **kwargs: Any) -> Any:
        if not server:
            return callback(*args, **kwargs)
        names = callback.__globals__  # the CLI module's namespace (``__main__`` under ``python -m``)
        opener = names["_open"]
        names["_open"] = lambda index_dir, *a, **kw: RemoteIndex(server, index_dir)
        try:
            return callback(*args, **kwargs)
        finally:
            names["_open"] = opener

    return run


def add_server_option(group: click.Group, names: tuple[str, ...] = ("classify", "search", "add", "info")) -> None:
    """Give these commands ``--server URL`` (env ``FEWSHOT_SERVER``)."""
    for name in names:
        cmd = group.commands[name]
        cmd.params.append(click.Option(
            ["--server"], envvar="FEWSHOT_SERVER", default=None, metavar="URL",
            help="Send the command to a running `fewshot serve` (env FEWSHOT_SERVER; token from FEWSHOT_TOKEN)."))
        cmd.callback = _remote(cmd.callback)
