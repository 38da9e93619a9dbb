"""``fewshot serve INDEX_DIR [INDEX_DIR ...]``: the HTTP service and the page, with encoders kept warm.

    fewshot serve my_index                        # http://127.0.0.1:8000/ (page), /docs (API)
    FEWSHOT_TOKEN=s3cret fewshot serve my_index --host 0.0.0.0

Binds 127.0.0.1 unless told otherwise; any other address needs a token
(``--token-file`` or ``FEWSHOT_TOKEN``), which every ``/v1`` request must send as
``Authorization: Bearer TOKEN``. FastAPI, uvicorn and torch are imported only
when the command runs, so ``fewshot --help`` stays instant. uvicorn handles
SIGTERM/SIGINT: it stops accepting, lets in-flight requests finish, then the
indexes are closed (no partial write: each write is one atomic commit).
"""
from __future__ import annotations

import json
import os
import socket

import click

from fewshot.serve.client import add_server_option

__all__ = ["command", "add_server_option"]

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _token(token_file: str | None) -> str | None:
    """The token from ``--token-file`` (first line) or ``FEWSHOT_TOKEN``; empty counts as none."""
    if token_file is not None:
        try:
            with open(token_file, encoding="utf-8") as fh:
                tok = fh.readline().strip()
        except OSError as exc:
            raise click.ClickException(f"cannot read token file {token_file}: {exc.strerror or exc}") from None
        if not tok:
            raise click.ClickException(f"token file {token_file} is empty")
        return tok
    return os.environ.get("FEWSHOT_TOKEN", "").strip() or None


def _bind(host: str, port: int) -> socket.socket:
    """Bind before the app loads, so a busy port fails fast and ``--port 0`` reports the port it got."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only then (without it
    # Nagle and delayed ACKs add ~40 ms to every keep-alive response)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)  # connections queue from now on: a client told the URL is never refused
    except OSError as exc:
        sock.close()
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


@click.command("serve")
@click.argument("index_dirs", nargs=-1, required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback needs a token.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Port (0: any free port, printed on start).")
@click.option("--token-file", type=click.Path(dir_okay=False), default=None,
              help="File whose first line is the bearer token (else env FEWSHOT_TOKEN).")
@click.option("--lock-timeout", type=click.FloatRange(min=0), default=10.0, show_default=True,
              envvar="FEWSHOT_LOCK_TIMEOUT", help="How long a write waits for another process's lock.")
@click.option("--max-body", type=click.IntRange(min=1024), default=16 * 1024 * 1024, show_default=True,
              help="Largest request body in bytes (413 above).")
@click.option("--max-batch", type=click.IntRange(min=1), default=64, show_default=True,
              help="Most inputs in one request and in one micro-batch (413 above).")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True, envvar="FEWSHOT_THREADS",
              help="Torch CPU threads per index (0: torch's default, all cores; 1 on a shared machine).")
@click.option("--json", "as_json", is_flag=True, help="Print the address and indexes as one JSON line on start.")
def command(index_dirs: tuple[str, ...], host: str, port: int, token_file: str | None, lock_timeout: float,
            max_body: int, max_batch: int, threads: int, as_json: bool) -> None:
    """Serve indexes over HTTP (JSON API under /v1, the drawing page at /, OpenAPI at /docs)."""
    token = _token(token_file)
    if host not in LOOPBACK and token is None:
        raise click.UsageError(f"--host {host} exposes the indexes beyond this machine: "
                               "give a token with --token-file or FEWSHOT_TOKEN")
    sock = _bind(host, port)
    try:
        import uvicorn

        from fewshot.serve import create_app

        app = create_app(list(index_dirs), token=token, lock_timeout=lock_timeout, max_body=max_body,
                         max_batch=max_batch, threads=threads)
        bound = sock.getsockname()[1]
        url = f"http://{'[' + host + ']' if ':' in host else host}:{bound}"
        names = list(app.state.engines)
        click.echo(json.dumps({"url": url, "indexes": names, "token": token is not None}) if as_json
                   else f"serving {', '.join(names)} at {url}/ (API docs {url}/docs); Ctrl-C to stop", err=not as_json)
        # no access log (a line per request costs more than a classify's HTTP handling); uvicorn picks
        # httptools and uvloop when installed (pip install uvicorn[standard]), else h11 and asyncio
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                               timeout_graceful_shutdown=30))
        server.run(sockets=[sock])
    finally:
        sock.close()
