"""The ASGI app: versioned JSON endpoints under ``/v1``, ``/healthz``, the page at ``/``, OpenAPI at ``/docs``.

Answers are the CLI's ``--json`` objects (built by the library's ``to_dict``),
errors are ``{"error": "..."}`` with the status chosen by
:func:`fewshot.serve.errors.status_of`, and every ``/v1`` endpoint checks the
bearer token (in constant time) when one is set.
"""
from __future__ import annotations

import contextlib
import hmac
from pathlib import Path
from typing import Any, Sequence

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from fewshot.serve.engine import IndexEngine
from fewshot.serve.errors import Unauthorized, error_body, one_line

STATIC = Path(__file__).resolve().parent / "static"
DEFAULT_MAX_BODY = 16 * 1024 * 1024
DEFAULT_MAX_BATCH = 64


class BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` gets a 413 JSON error before any handler reads it.

    Checks the declared Content-Length and also counts streamed (chunked) bodies,
    which declare none.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await self._refuse(send)
        chunks, size, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] != "http.request":
                return None  # client went away
            size += len(msg.get("body", b""))
            if size > self.max_bytes:
                return await self._refuse(send)
            chunks.append(msg.get("body", b""))
            more = msg.get("more_body", False)
        body, sent = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    async def _refuse(self, send: Any) -> None:
        resp = JSONResponse({"error": f"request body over {self.max_bytes} bytes"}, status_code=413)
        await resp({"type": "http"}, None, send)


def _token_check(token: str | None):
    """A dependency: the bearer token, compared in constant time (none set: open).

    ``async`` on purpose: FastAPI runs a plain ``def`` dependency on a thread pool, a thread hop
    on every request for a comparison of a few bytes.
    """
    expected = token.encode() if token else None

    async def check(request: Request) -> None:
        if expected is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise Unauthorized("missing or wrong bearer token (Authorization: Bearer TOKEN)")

    return check


def _install_error_handlers(app: FastAPI) -> None:
    """The one place where exceptions become ``{"error": ...}`` answers."""

    async def library_error(request: Request, exc: Exception) -> JSONResponse:
        status, body = error_body(exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse(body, status_code=status, headers=headers)

    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        first = errs[0] if errs else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return JSONResponse({"error": one_line(f"{where}: {first.get('msg', 'invalid request')}")},
                            status_code=422)

    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": one_line(exc.detail)}, status_code=exc.status_code)

    from fewshot.errors import FewShotError
    from fewshot.serve.errors import ServeError
    from index.errors import StoreError

    for cls in (FewShotError, StoreError, ServeError, ValueError, Exception):  # Exception: the 500 net
        app.add_exception_handler(cls, library_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)


def _names(index_dirs: Sequence[str | Path]) -> list[str]:
    """Each index is named after its directory; two directories with one name are refused."""
    from fewshot.errors import InputError

    names = [Path(d).resolve().name for d in index_dirs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"two indexes named {dup[0]!r}: serve directories with different names")
    if not names:
        raise InputError("give at least one index directory")
    return names


def create_app(index_dirs: Sequence[str | Path], token: str | None = None, *, lock_timeout: float = 10.0,
               max_body: int = DEFAULT_MAX_BODY, max_batch: int = DEFAULT_MAX_BATCH,
               window_s: float = 0.002, timeout_s: float = 60.0, threads: int = 0,
               batch_inputs: int | None = None) -> FastAPI:
    """The app over ``index_dirs``, each opened once (its encoder loaded) before this returns."""
    from fewshot.serve.routes import build_router

    engines: dict[str, IndexEngine] = {}
    try:
        for name, d in zip(_names(index_dirs), index_dirs):
            engines[name] = IndexEngine(name, d, lock_timeout=lock_timeout, max_batch=max_batch,
                                        window_s=window_s, timeout_s=timeout_s, threads=threads,
                                        **({"batch_inputs": batch_inputs} if batch_inputs else {}))
    except BaseException:
        for eng in engines.values():
            eng.index.close()
        raise

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        for eng in engines.values():  # uvicorn stops taking requests and lets in-flight ones finish first
            await eng.close()

    app = FastAPI(title="fewshot", version="1", lifespan=lifespan,
                  description="Teach a class from one example; classify and search by similarity.")
    app.state.engines = engines
    _install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=max_body)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict:
        """Liveness, without authentication: no index data."""
        return {"status": "ok", "indexes": len(engines)}

    app.include_router(build_router(engines, max_batch), prefix="/v1", dependencies=[Depends(_token_check(token))])

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
