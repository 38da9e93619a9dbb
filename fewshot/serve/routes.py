"""The ``/v1`` endpoints. Each answers with the CLI's ``--json`` object for the same command."""
from __future__ import annotations

import asyncio
import io
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Literal

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from fewshot.errors import InputError
from fewshot.serve.engine import IndexEngine
from fewshot.serve.errors import NotFound, TooLarge
from fewshot.serve.inputs import Decoded, InputModel, decode_image, decode_many, strokes_array

IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
               ".bmp": "image/bmp", ".webp": "image/webp", ".tif": "image/tiff", ".tiff": "image/tiff"}


class ExampleModel(InputModel):
    label: str = Field(..., description="The class this example teaches.")


class AddRequest(BaseModel):
    examples: list[ExampleModel] = Field(..., description="Labelled examples, added in one atomic write.")


class ClassifyRequest(BaseModel):
    inputs: list[InputModel]
    top_k: int = Field(5, ge=1)
    threshold: float | Literal["auto"] | None = Field(
        None, description='Below this score the label is null (unknown); "auto": the index\'s own threshold.')


def _threshold(value: str | None) -> float | str | None:
    """A form field's threshold: a number, "auto", or none (the JSON body is checked by its model)."""
    if value is None or value.strip() == "":
        return None
    if value.strip() == "auto":
        return "auto"
    try:
        return float(value)
    except ValueError:
        raise InputError(f'threshold must be a number or "auto", not {value!r}') from None


class SearchRequest(BaseModel):
    inputs: list[InputModel]
    k: int = Field(5, ge=1)
    labels: list[str] | None = Field(None, description="Only look among these labels.")
    ef_search: int | None = Field(None, ge=1, description="HNSW search breadth for this call.")
    nprobe: int | None = Field(None, ge=1, description="IVF lists probed for this call.")


class DuplicatesRequest(BaseModel):
    sha256: list[str] = Field(..., max_length=100_000, description="SHA-256 digests (hex) of files to add.")


class EmbedRequest(BaseModel):
    inputs: list[InputModel]


def _decode_upload(data: bytes, name: str, input_kind: str) -> Any:
    """An uploaded file -> an item whose stored copy is the file as sent (as a local add stores it)."""
    from fewshot.input_kinds import UploadedItem

    value = _decode_upload_value(data, name, input_kind)
    suffix = Path(name).suffix.lower()
    return UploadedItem(value, name, data=data, suffix=suffix if re.fullmatch(r"\.[a-z0-9]{1,9}", suffix) else "")


def _decode_upload_value(data: bytes, name: str, input_kind: str) -> Any:
    """An uploaded file -> image; for a sequence index a stroke ``.txt`` / ``.npy`` array; for a text index a text."""
    if input_kind == "text":
        from fewshot.text_inputs import decode_text, text_item

        if not name.lower().endswith(".txt"):
            raise InputError(f"{name}: upload a .txt file (one example) to a text index, or send JSON with text")
        return text_item(decode_text(data, name), name).value
    if input_kind != "sequence":
        return decode_image(data, name)
    import numpy as np

    from fewshot.sequences import check_array, parse_strokes

    low = name.lower()
    if low.endswith(".npy"):
        if not data.startswith(b"\x93NUMPY"):
            raise InputError(f"{name}: not a valid .npy file (no NUMPY header)")
        try:
            arr = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError):
            raise InputError(f"{name}: not a valid .npy file (object arrays are refused)") from None
        return check_array(arr, name)
    if not low.endswith(".txt"):
        raise InputError(f"{name}: upload an Omniglot stroke file (.txt) or a .npy array to a sequence index")
    strokes = parse_strokes(data.decode("utf-8-sig", errors="replace"), name)
    return strokes_array([s.tolist() for s in strokes], name)


async def _decode(items: list[InputModel], input_kind: str, max_batch: int) -> list[Decoded]:
    """Decode on a helper thread: a large image must not stall the event loop (and every other request)."""
    return await asyncio.to_thread(decode_many, items, input_kind, max_batch)


async def _upload_decoder(files: list[UploadFile], input_kind: str, max_batch: int) -> Callable[[], list[Decoded]]:
    """Read the uploads (the event loop's part); the returned function decodes them (a worker's part)."""
    if not files:
        raise InputError("no files uploaded")
    if len(files) > max_batch:
        raise TooLarge(f"{len(files)} files in one request; at most {max_batch}")
    raw = [(f.filename or f"#{i}", await f.read()) for i, f in enumerate(files)]
    return lambda: [Decoded(n, _decode_upload(data, n, input_kind)) for n, data in raw]


async def _read_uploads(files: list[UploadFile], input_kind: str, max_batch: int) -> list[Decoded]:
    return await asyncio.to_thread(await _upload_decoder(files, input_kind, max_batch))


def _add(engine: IndexEngine, examples: list[tuple[str, Any]]) -> dict:
    """Worker thread: one atomic ``add_many``; the answer of ``add --json``."""
    groups: dict[str, list[Any]] = defaultdict(list)
    for label, value in examples:  # the library checks the labels before anything is written
        groups[label].append(value)
    idx = engine.index
    ids = idx.add_many(list(groups.items()))
    stored = idx.labels()
    per_label: dict[str, int] = {}
    for lab, vals in groups.items():  # keyed as stored (NFC, or the equal class it joined), as `add --json`
        key = idx.stored_label(lab, stored=stored)
        per_label[key] = per_label.get(key, 0) + len(vals)
    return {"added": len(ids), "labels": per_label, "ids": ids, "count": idx.store.count(),
            "skipped": [], "warnings": []}


def _existing(engine: IndexEngine, label: str) -> str:
    """The stored form of ``label``; 400 for an invalid label, 404 for a class the index does not hold."""
    key = engine.index.stored_label(label, must_exist=False)
    if key not in engine.index.labels():
        raise NotFound(f"no class named {label!r} in index {engine.name}")
    return key


def _search(engine: IndexEngine, decoded: list[Decoded], k: int, labels: list[str] | None,
            ef_search: int | None = None, nprobe: int | None = None) -> list[dict]:
    params = {k_: v for k_, v in (("ef_search", ef_search), ("nprobe", nprobe)) if v is not None}
    results = engine.index.search([d.value for d in decoded], k=k, labels=labels or None, **params)
    return [dict(r.to_dict(), input=d.name) for r, d in zip(results, decoded)]


def _duplicates(engine: IndexEngine, digests: list[str]) -> list[str]:
    """The digests a stored example has (the stored copy's name): ``add``'s duplicate check, for a client."""
    import re

    from fewshot.folder_add import stored_digests

    bad = next((d for d in digests if not re.fullmatch(r"[0-9a-f]{64}", d)), None)
    if bad is not None:
        raise InputError(f"not a SHA-256 hex digest: {bad[:80]!r}")
    return sorted(stored_digests(engine.index, set(digests)))


def _embed(engine: IndexEngine, decoded: list[Decoded]) -> dict:
    enc = engine.index.encoder
    vecs = engine.index.embed([d.value for d in decoded])
    return {"encoder": enc.name, "fingerprint": enc.fingerprint, "dim": int(enc.dim), "output": None,
            "embeddings": [{"input": d.name, "embedding": [round(float(v), 7) for v in row]}
                           for d, row in zip(decoded, vecs)]}


def _remove(engine: IndexEngine, label: str) -> dict:
    n = engine.index.remove(_existing(engine, label))
    return {"removed": n, "label": label, "count": engine.index.store.count()}


def _example(engine: IndexEngine, label: str, fmt: str) -> Response:
    """Worker thread: the first stored example of ``label``, as its image or its strokes."""
    from fewshot.inputs import InputItem

    idx = engine.index
    rec = next(idx.store.records(_existing(engine, label)), None)
    key = rec.metadata.get("blob") if rec is not None else None
    if not key or not idx.blobs.exists(key):
        raise NotFound(f"the stored example of {label!r} is missing; run `fewshot check --repair`")
    path = idx.blobs.path(key)  # a key the index made, never a name from the request
    if engine.input_kind != "sequence":
        return Response(path.read_bytes(), media_type=IMAGE_TYPES.get(path.suffix.lower(), "application/octet-stream"))
    from fewshot.sequences import array_to_strokes, load_sequence, render_strokes

    arr = load_sequence(InputItem(path, label))
    if fmt == "png":
        buf = io.BytesIO()
        render_strokes(arr).save(buf, format="PNG")
        return Response(buf.getvalue(), media_type="image/png")
    return JSONResponse({"label": label, "strokes": [s.tolist() for s in array_to_strokes(arr)]})


def _summary(engine: IndexEngine) -> dict:
    labels = engine.index.labels()
    return {"name": engine.name, "input_kind": engine.input_kind, "encoder": engine.index.encoder.name,
            "count": sum(labels.values()), "n_labels": len(labels), "classify_batches": dict(engine.stats)}


def build_router(engines: dict[str, IndexEngine], max_batch: int) -> APIRouter:
    """All ``/v1`` routes over ``engines`` (the app adds the token check to each)."""
    router = APIRouter()

    def get(name: str) -> IndexEngine:
        if name not in engines:
            raise NotFound(f"no index named {name!r}; see GET /v1/indexes")
        return engines[name]

    @router.get("/indexes", tags=["indexes"])
    async def list_indexes() -> list[dict]:
        """The served indexes, with their kind and size."""
        return [await e.call(_summary, e) for e in engines.values()]

    @router.get("/indexes/{name}", tags=["indexes"])
    async def info(name: str) -> dict:
        """The fields of ``fewshot info --json``."""
        e = get(name)
        return await e.call(e.index.info)

    @router.get("/indexes/{name}/labels", tags=["indexes"])
    async def labels(name: str) -> dict:
        """Each class with its number of examples."""
        e = get(name)
        return await e.call(e.index.labels)

    @router.get("/indexes/{name}/example", tags=["indexes"])
    async def example(name: str, label: str = Query(..., description="The class (any string: a query "
                                                    "parameter, so '/' and '..' are just characters)."),
                      format: str = Query("raw", pattern="^(raw|png)$")) -> Response:
        """A stored example of ``label``: its image, or its strokes (JSON, or ``format=png`` rendered)."""
        e = get(name)
        return await e.call(_example, e, label, format)

    _write_routes(router, get, max_batch)
    _read_routes(router, get, max_batch)
    return router


def _write_routes(router: APIRouter, get: Callable[[str], IndexEngine], max_batch: int) -> None:
    @router.post("/indexes/{name}/examples", tags=["write"])
    async def add(name: str, body: AddRequest) -> dict:
        """Add labelled examples (base64 images, strokes, arrays) in one atomic write: ``add --json``."""
        e = get(name)
        decoded = await _decode(body.examples, e.input_kind, max_batch)
        return await e.call(_add, e, [(ex.label, d.value) for ex, d in zip(body.examples, decoded)])

    @router.post("/indexes/{name}/examples/files", tags=["write"])
    async def add_files(name: str, files: list[UploadFile] = File(...), label: str | None = Form(None),
                        labels: list[str] | None = Form(None, description="One label per file, instead of label "
                                                        "(several classes in one atomic write).")) -> dict:
        """Add uploaded files (images; stroke ``.txt``/``.npy``; ``.txt`` texts) under ``label``, or per-file ``labels``."""
        e = get(name)
        if (label is None) == (labels is None):
            raise InputError("give either label or one labels field per file")
        per_file = labels if labels is not None else [label] * len(files)
        if len(per_file) != len(files):
            raise InputError(f"{len(per_file)} labels for {len(files)} files: give one per file")
        decoded = await _read_uploads(files, e.input_kind, max_batch)
        return await e.call(_add, e, [(lab, d.value) for lab, d in zip(per_file, decoded)])

    @router.delete("/indexes/{name}/labels", tags=["write"])
    async def remove(name: str, label: str = Query(..., description="The class to remove.")) -> dict:
        """Remove a class and all its examples: ``remove --json``."""
        e = get(name)
        return await e.call(_remove, e, label)


def _read_routes(router: APIRouter, get: Callable[[str], IndexEngine], max_batch: int) -> None:
    # The classify answers are JSON-encoded directly (JSONResponse): FastAPI's response validation
    # of a list of dicts costs more than the encoding itself, on every request.
    @router.post("/indexes/{name}/classify", tags=["read"], response_model=list[dict])
    async def classify(name: str, body: ClassifyRequest) -> JSONResponse:
        """``classify --json``: per input, the label (null when under the threshold) and top-k candidates."""
        e = get(name)
        items, kind = body.inputs, e.input_kind
        return JSONResponse(await e.classify(lambda: decode_many(items, kind, max_batch), len(items), body.top_k,
                                             body.threshold))

    @router.post("/indexes/{name}/classify/files", tags=["read"], response_model=list[dict])
    async def classify_files(name: str, files: list[UploadFile] = File(...), top_k: int = Form(5, ge=1),
                             threshold: str | None = Form(None, description='A score, or "auto".')) -> JSONResponse:
        """``classify --json`` of uploaded files."""
        e = get(name)
        thr = _threshold(threshold)
        decode = await _upload_decoder(files, e.input_kind, max_batch)
        return JSONResponse(await e.classify(decode, len(files), top_k, thr))

    @router.post("/indexes/{name}/search", tags=["read"])
    async def search(name: str, body: SearchRequest) -> list[dict]:
        """``search --json``: the k nearest stored examples of each input."""
        e = get(name)
        decoded = await _decode(body.inputs, e.input_kind, max_batch)
        return await e.call(_search, e, decoded, body.k, body.labels, body.ef_search, body.nprobe)

    @router.post("/indexes/{name}/search/files", tags=["read"])
    async def search_files(name: str, files: list[UploadFile] = File(...), k: int = Form(5, ge=1),
                           labels: list[str] | None = Form(None, description="Only among these (repeat the field)."),
                           ef_search: int | None = Form(None, ge=1), nprobe: int | None = Form(None, ge=1)) -> list[dict]:
        """``search --json`` of uploaded files."""
        e = get(name)
        decoded = await _read_uploads(files, e.input_kind, max_batch)
        return await e.call(_search, e, decoded, k, labels, ef_search, nprobe)

    @router.post("/indexes/{name}/duplicates", tags=["read"])
    async def duplicates(name: str, body: DuplicatesRequest) -> list[str]:
        """Which of these file digests a stored example already has (``add`` reports such duplicates)."""
        e = get(name)
        return await e.call(_duplicates, e, body.sha256)

    @router.post("/indexes/{name}/embed", tags=["read"])
    async def embed(name: str, body: EmbedRequest) -> dict:
        """``embed --json`` with this index's encoder."""
        e = get(name)
        return await e.call(_embed, e, await _decode(body.inputs, e.input_kind, max_batch))
