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
    """The stored copies are on the server (asked by :meth:`RemoteIndex.stored_digests`), none here."""

    root = Path(os.devnull)


class RemoteIndex:
    """The part of ``FewShotIndex`` the CLI commands use, answered over HTTP."""

    def __init__(self, server: str, index_dir: str, token: str | None = None, timeout: float = 120.0) -> None:
        import urllib.parse  # here, not at the top: `fewshot --help` imports this module

        self.base = server.rstrip("/") + "/v1/indexes/" + urllib.parse.quote(Path(index_dir).resolve().name, safe="")
        self.token = token if token is not None else (os.environ.get("FEWSHOT_TOKEN", "").strip() or None)
        self.timeout = timeout
        self.store = self  # the commands call idx.store.count() and idx.store.labels()
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

    def _kind(self) -> str:
        return self.encoder.input_kind

    def _items(self, inputs: Any) -> list[Any]:
        """The items the local command would read (folders expanded the same way), for this index's kind."""
        if isinstance(inputs, (list, tuple)) and inputs and self._kind() != "text" \
                and all(isinstance(p, (str, os.PathLike)) and Path(p).is_file() for p in inputs):
            from types import SimpleNamespace  # the common case, without numpy's import (a third of the call)

            return [SimpleNamespace(value=Path(p), path=Path(p), name=str(p)) for p in inputs]
        from fewshot.errors import InputError
        from fewshot.input_kinds import input_kind

        try:
            items = input_kind(self._kind()).read(inputs)
        except InputError as exc:
            raise click.ClickException(str(exc)) from None
        if not items:
            raise click.ClickException("no inputs given")
        return items

    def _send(self, path: str, items: list[Any], fields: dict[str, Any], chunk: int | None = CHUNK) -> list[Any]:
        """``items`` to ``path``: files as multipart uploads, texts as JSON; ``chunk`` items a request."""
        out: list[Any] = []
        step = chunk or max(1, len(items))
        for i in range(0, len(items), step):
            part = items[i:i + step]
            if all(getattr(it, "path", None) is not None for it in part):
                ans = self._post_files(path + "/files", part, fields)
            else:
                ans = self._post_json(path, part, fields)
            out += ans if isinstance(ans, list) else [ans]
        return out

    def _post_json(self, path: str, items: list[Any], fields: dict[str, Any]) -> Any:
        """In-memory texts (``--text``, ``--from-file``) and ``.txt`` files of a text index, as JSON."""
        from fewshot.text_inputs import read_item_text

        inputs = [{"name": it.name, "text": read_item_text(it)} for it in items]
        if path.endswith("/examples"):  # an add: ``labels`` holds one label per item
            body = {"examples": [dict(x, label=lab) for x, lab in zip(inputs, fields["labels"])]}
        else:
            body = dict({k: v for k, v in fields.items() if v is not None}, inputs=inputs)
        return self._call("POST", path, json.dumps(body).encode(), "application/json")

    def _post_files(self, path: str, items: list[Any], fields: dict[str, Any]) -> Any:
        """A multipart upload; each file named as the command was given it; list fields repeat."""
        import uuid

        boundary = uuid.uuid4().hex
        parts = []
        for k, v in fields.items():
            for one in (v if isinstance(v, (list, tuple)) else [v]):
                if one is not None:
                    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{one}\r\n'.encode())
        if path.startswith("/examples"):  # the stored example's source: the resolved path, as a local add records
            from fewshot.inputs import display_path

            names = [display_path(Path(it.path).resolve()) for it in items]
        else:
            names = [it.name for it in items]
        for it, shown in zip(items, names):
            name = str(shown).replace('"', "%22")
            head = (f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
                    "Content-Type: application/octet-stream\r\n\r\n")
            parts.append(head.encode() + Path(it.path).read_bytes() + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return self._call("POST", path, body, f"multipart/form-data; boundary={boundary}")

    def classify(self, inputs: Any, top_k: int = 5, threshold: Any = None, **_: Any) -> list[_Answer]:
        preds = self._send("/classify", self._items(inputs), {"top_k": top_k, "threshold": threshold})
        return [_Answer(p, candidates=[_Answer(c) for c in p["candidates"]]) for p in preds]

    def search(self, inputs: Any, k: int = 5, labels: Any = None, ef_search: int | None = None,
               nprobe: int | None = None, **_: Any) -> list[_Answer]:
        fields = {"k": k, "labels": list(labels) if labels else None, "ef_search": ef_search, "nprobe": nprobe}
        res = self._send("/search", self._items(inputs), fields)
        return [_Answer(r, neighbors=[_Answer(n) for n in r["neighbors"]]) for r in res]

    def add(self, label: str, inputs: Any, **_: Any) -> list[int]:
        return self.add_many([(label, inputs)])

    def add_many(self, pairs: Any, **_: Any) -> list[int]:
        """One atomic write on the server: every example in one request (its size limits apply)."""
        items, labels = [], []
        for label, inputs in pairs:
            its = self._items(inputs)
            items += its
            labels += [label] * len(its)
        try:
            return self._send("/examples", items, {"labels": labels}, chunk=None)[0]["ids"]
        except click.ClickException as exc:
            if "at most" in exc.message or "request body over" in exc.message:  # over the server's --max-batch / --max-body: say what to do
                exc.message += ("; with --server an add is one request (one atomic write): add in smaller parts, "
                                "or start the server with a larger --max-batch / --max-body")
            raise

    def labels(self) -> dict[str, int]:
        return self._call("GET", "/labels")

    def stored_label(self, label: str, must_exist: bool = True, stored: Any = None) -> str:
        """As the library's: validated, NFC, or the stored class it equals (labels from the server)."""
        from index.errors import ValidationError
        from index.validation import label_for_display, normalize_label, resolve_label

        try:
            found = resolve_label(label, self.labels() if stored is None else stored)
            if found is None and not must_exist:
                return normalize_label(label)
        except ValidationError as exc:
            raise click.ClickException(str(exc)) from None
        if found is None:
            raise click.ClickException(f"no class named '{label_for_display(label)}' on the server's index")
        return found

    def stored_digests(self, digests: set[str]) -> set[str]:
        """Which of these SHA-256 digests a stored example on the server has (the duplicate check)."""
        if not digests:
            return set()
        return set(self._call("POST", "/duplicates", json.dumps({"sha256": sorted(digests)}).encode(),
                              "application/json"))

    def add_folder_report(self, root: Any, progress: bool = False, skip_duplicates: bool = False) -> Any:
        """``add --from-folder``: the library's own folder scan and report, the write on the server."""
        from fewshot.folder_add import add_folder_report

        return add_folder_report(self, root, progress=progress, skip_duplicates=skip_duplicates)

    def info(self) -> dict:
        return self._call("GET", "")

    @functools.cached_property
    def encoder(self) -> Any:
        """The server index's encoder as the commands ask about it before reading inputs: name and kind (cached)."""
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
        openers = {k: names[k] for k in ("_open", "_open_info")}  # with an encoder / without (info)
        for k in openers:
            names[k] = lambda index_dir, *a, **kw: RemoteIndex(server, index_dir)
        try:
            return callback(*args, **kwargs)
        finally:
            names.update(openers)

    return run


def add_server_option(group: click.Group, names: tuple[str, ...] = ("classify", "search", "add", "info")) -> None:
    """Give these commands ``--server URL`` (env ``FEWSHOT_SERVER``)."""
    for name in names:
        cmd = group.commands[name]
        cmd.params.append(click.Option(
            ["--server"], envvar="FEWSHOT_SERVER", default=None, metavar="URL",
            help="Send the command to a running `fewshot serve` (env FEWSHOT_SERVER; token from FEWSHOT_TOKEN)."))
        cmd.callback = _remote(cmd.callback)
