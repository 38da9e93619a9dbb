"""`fewshot serve`: every endpoint through FastAPI's TestClient, the error mapping, the token, micro-batching.

Real data: Korean Omniglot images (held out from the shipped CNN) for the image index, Greek pen
strokes (held out from the stroke encoder) for the stroke index.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")
pytest.importorskip("httpx", reason="the serve extra is not installed: pip install -e '.[serve]'")

from fastapi.testclient import TestClient  # noqa: E402

from fewshot.fewshot_index import FewShotIndex  # noqa: E402
from fewshot.serve import create_app  # noqa: E402

TOKEN = "test-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _tree(root: Path) -> dict[str, str]:
    """Every file of an index with its hash: 'byte-identical' is equality of two of these."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.suffix != ".lock"}


@pytest.fixture(scope="module")
def chars(omniglot_alphabet) -> list[list[Path]]:
    """Six Korean characters, each a sorted list of its drawings."""
    return [sorted((omniglot_alphabet / f"character{i:02d}").glob("*.png")) for i in range(1, 7)]


@pytest.fixture(scope="module")
def image_index(tmp_path_factory, chars) -> Path:
    path = tmp_path_factory.mktemp("serve") / "korean"
    with FewShotIndex.create(path) as idx:
        idx.add_many([(f"k{i}", [c[0]]) for i, c in enumerate(chars[:4])])
    return path


@pytest.fixture(scope="module")
def greek(strokes_zip):
    from fewshot.data.strokes import load_omniglot_strokes

    return load_omniglot_strokes(strokes_zip, alphabets=["Greek"])


@pytest.fixture(scope="module")
def stroke_index(tmp_path_factory) -> Path:
    from fewshot.encoders.sequence_builtin import DEFAULT_SEQUENCE_ENCODER

    path = tmp_path_factory.mktemp("serve") / "greek"
    FewShotIndex.create(path, encoder=DEFAULT_SEQUENCE_ENCODER).close()
    return path


@pytest.fixture(scope="module")
def client(image_index, stroke_index):
    app = create_app([image_index, stroke_index], token=TOKEN, max_body=2_000_000, max_batch=8)
    with TestClient(app, headers=AUTH, raise_server_exceptions=False) as c:
        yield c


def _strokes_json(raw: np.ndarray) -> list[list[list[float]]]:
    """A ``[T, 3]`` (x, y, end) array as the API's strokes, with made-up times."""
    from fewshot.sequences import array_to_strokes

    return [[[float(x), float(y), float(10 * i)] for i, (x, y) in enumerate(s)] for s in array_to_strokes(raw)]


# --- health, auth, info -------------------------------------------------------------------------
def test_health_is_open_and_v1_needs_the_token(client):
    assert client.get("/healthz", headers={"Authorization": ""}).json()["status"] == "ok"
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        r = client.get("/v1/indexes", headers=headers)
        assert r.status_code == 401 and "token" in r.json()["error"]
    r = client.post("/v1/indexes/korean/examples", headers={"Authorization": "Bearer x"},
                    json={"examples": [{"label": "z", "array": [[0, 1], [1, 0]]}]})
    assert r.status_code == 401
    assert client.get("/v1/indexes").status_code == 200


def test_list_and_info_match_the_library(client, image_index):
    listed = {ix["name"]: ix for ix in client.get("/v1/indexes").json()}
    assert listed["korean"]["input_kind"] == "image" and listed["greek"]["input_kind"] == "sequence"
    with FewShotIndex.open(image_index, readonly=True) as idx:
        want = idx.info()
    assert client.get("/v1/indexes/korean").json() == json.loads(json.dumps(want))
    assert client.get("/v1/indexes/korean/labels").json() == want["labels"]
    assert client.get("/v1/indexes/nope").status_code == 404


def test_page_and_openapi_are_served(client):
    r = client.get("/", headers={"Authorization": ""})
    assert r.status_code == 200 and "<canvas" in r.text
    assert client.get("/static/app.js").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert "/v1/indexes/{name}/classify" in paths and "/v1/indexes/{name}/examples/files" in paths
    assert client.get("/docs").status_code == 200


# --- classify, search, embed: the library's objects -----------------------------------------------
def test_classify_and_search_equal_the_library(client, image_index, chars):
    queries = [chars[0][3], chars[2][5], chars[5][1]]
    body = {"inputs": [{"name": p.name, "image_base64": _b64(p)} for p in queries], "top_k": 3, "threshold": 0.8}
    got = client.post("/v1/indexes/korean/classify", json=body).json()
    with FewShotIndex.open(image_index, readonly=True) as idx:
        want = [dict(p.to_dict(), input=q.name) for q, p in zip(queries, idx.classify(queries, top_k=3, threshold=0.8))]
        want_search = [dict(r.to_dict(), input=q.name) for q, r in zip(queries, idx.search(queries, k=2))]
        want_vecs = idx.embed(queries)
    assert got == json.loads(json.dumps(want))
    assert got[0]["label"] == "k0" and got[2]["label"] is None  # an unseen character is unknown at 0.8
    files = [("files", (p.name, p.read_bytes(), "image/png")) for p in queries]
    assert client.post("/v1/indexes/korean/classify/files", files=files,
                       data={"top_k": "3", "threshold": "0.8"}).json() == got
    del body["top_k"], body["threshold"]
    got_search = client.post("/v1/indexes/korean/search", json=dict(body, k=2)).json()
    assert got_search == json.loads(json.dumps(want_search))
    assert client.post("/v1/indexes/korean/search/files", files=files, data={"k": "2"}).json() == got_search
    emb = client.post("/v1/indexes/korean/embed", json=body).json()
    assert emb["dim"] == want_vecs.shape[1] and [e["input"] for e in emb["embeddings"]] == [q.name for q in queries]
    np.testing.assert_allclose([e["embedding"] for e in emb["embeddings"]], want_vecs, atol=1e-6)


def test_concurrent_classify_is_micro_batched_and_equals_the_library(client, image_index, chars):
    """32 requests at once, with different top_k and thresholds: fewer batches, the same answers."""
    import httpx

    app = client.app
    queries = [chars[i % 6][1 + i // 6] for i in range(32)]
    with FewShotIndex.open(image_index, readonly=True) as idx:
        base = [p.to_dict() for p in idx.classify(queries, top_k=4)]

    async def run() -> list[list[dict]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=AUTH) as ac:
            reqs = [ac.post("/v1/indexes/korean/classify", json={
                "inputs": [{"name": f"q{i}", "image_base64": _b64(q)}], "top_k": 1 + i % 4,
                "threshold": None if i % 2 else 0.85}) for i, q in enumerate(queries)]
            return [r.json() for r in await asyncio.gather(*reqs)]

    engine = app.state.engines["korean"]
    before = dict(engine.stats)
    answers = asyncio.run(run())
    for i, (ans, b) in enumerate(zip(answers, base)):
        k, thr = 1 + i % 4, (None if i % 2 else 0.85)
        want = dict(b, input=f"q{i}", candidates=b["candidates"][:k])
        if thr is not None and want["score"] < thr:
            want["label"], want["unknown"] = None, True
        assert ans == [json.loads(json.dumps(want))], i
    batches = engine.stats["batches"] - before["batches"]
    assert engine.stats["requests"] - before["requests"] == 32 and batches < 32


# --- writes -----------------------------------------------------------------------------------------
def test_add_json_and_files_then_remove(client, chars):
    r = client.post("/v1/indexes/korean/examples", json={"examples": [
        {"label": "new-a", "image_base64": _b64(chars[4][0])}, {"label": "new-a", "image_base64": _b64(chars[4][1])}]})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["added"] == 2 and out["labels"] == {"new-a": 2} and len(out["ids"]) == 2
    files = [("files", (chars[5][0].name, chars[5][0].read_bytes(), "image/png"))]
    r = client.post("/v1/indexes/korean/examples/files", files=files, data={"label": "Greek/new b"})
    assert r.json()["labels"] == {"Greek/new b": 1}
    q = {"inputs": [{"image_base64": _b64(chars[5][2])}], "top_k": 1}
    assert client.post("/v1/indexes/korean/classify", json=q).json()[0]["label"] == "Greek/new b"
    ex = client.get("/v1/indexes/korean/example", params={"label": "Greek/new b"})
    assert ex.status_code == 200 and ex.headers["content-type"] == "image/png"
    from PIL import Image

    stored, sent = Image.open(io.BytesIO(ex.content)).convert("L"), Image.open(chars[5][0]).convert("L")
    assert np.array_equal(np.asarray(stored), np.asarray(sent))  # the library's copy: the same pixels
    for label, n in (("new-a", 2), ("Greek/new b", 1)):
        r = client.delete("/v1/indexes/korean/labels", params={"label": label})
        assert r.json() == {"removed": n, "label": label, "count": r.json()["count"]}
    assert "new-a" not in client.get("/v1/indexes/korean/labels").json()


def test_a_write_by_another_process_is_visible_in_the_next_answer(client, image_index, chars):
    q = {"inputs": [{"image_base64": _b64(chars[5][3])}], "top_k": 1}
    assert client.post("/v1/indexes/korean/classify", json=q).json()[0]["label"] != "outside"
    with FewShotIndex.open(image_index) as other:  # another writer, as `fewshot add` would be
        other.add("outside", chars[5][4])
    try:
        assert client.post("/v1/indexes/korean/classify", json=q).json()[0]["label"] == "outside"
    finally:
        with FewShotIndex.open(image_index) as other:
            other.remove("outside")
    assert client.post("/v1/indexes/korean/classify", json=q).json()[0]["label"] != "outside"


def test_strokes_teach_and_recognise_on_a_stroke_index(client, greek):
    char = greek.labels[0]
    drawings = [s for s, lab in zip(greek.items, greek.labels) if lab == char]
    others = {lab: s for s, lab in zip(greek.items, greek.labels) if lab != char}
    teach = [{"label": char, "strokes": _strokes_json(drawings[0])}]
    teach += [{"label": lab, "strokes": _strokes_json(s)} for lab, s in list(others.items())[:4]]
    r = client.post("/v1/indexes/greek/examples", json={"examples": teach})
    assert r.status_code == 200, r.text
    q = {"inputs": [{"name": "again", "strokes": _strokes_json(drawings[1])}], "top_k": 3}
    ans = client.post("/v1/indexes/greek/classify", json=q).json()
    assert ans[0]["input"] == "again" and ans[0]["label"] == char
    ex = client.get("/v1/indexes/greek/example", params={"label": char}).json()
    assert ex["label"] == char
    np.testing.assert_allclose(np.concatenate(ex["strokes"]), drawings[0][:, :2], atol=1e-5)
    png = client.get("/v1/indexes/greek/example", params={"label": char, "format": "png"})
    assert png.headers["content-type"] == "image/png" and png.content.startswith(b"\x89PNG")
    upload = "START\n" + "".join("".join(f"{x},{y},{t}\n" for x, y, t in s) + "BREAK\n"
                                 for s in _strokes_json(drawings[2]))
    files = [("files", ("d.txt", upload.encode(), "text/plain"))]
    assert client.post("/v1/indexes/greek/classify/files", files=files).json()[0]["label"] == char
    # strokes sent to an image index are rendered as Omniglot draws its PNGs
    r = client.post("/v1/indexes/korean/classify", json={"inputs": [{"strokes": _strokes_json(drawings[1])}]})
    assert r.status_code == 200 and r.json()[0]["label"] is not None


# --- bad input: a 4xx JSON error, nothing written ------------------------------------------------------
BAD_REQUESTS = [
    ("post", "/v1/indexes/korean/examples", {"json": {"examples": [{"label": "x", "image_base64": "aGVsbG8="}]}},
     400, "not an image"),
    ("post", "/v1/indexes/korean/examples", {"json": {"examples": [{"label": "x", "image_base64": "@@@"}]}},
     400, "base64"),
    ("post", "/v1/indexes/korean/examples", {"json": {"examples": [{"label": "  ", "strokes": [[[1, 2, 0]]]}]}},
     400, "label"),
    ("post", "/v1/indexes/korean/examples", {"json": {"examples": [{"label": "", "strokes": [[[1, 2, 0]]]}]}},
     400, "label"),
    ("post", "/v1/indexes/korean/examples", {"json": {"examples": [{"label": "x"}]}}, 400, "exactly one"),
    ("post", "/v1/indexes/korean/examples", {"json": {"examples": []}}, 400, "no inputs"),
    ("post", "/v1/indexes/korean/examples", {"json": {"examples": [{"label": "x", "array": [[1, 2], [3]]}]}},
     400, "rectangular"),
    ("post", "/v1/indexes/korean/examples", {"json": {"examples": [{"label": "x", "image_base64": "aGk="}] * 9}},
     413, "at most 8"),
    ("post", "/v1/indexes/korean/examples", {"json": {"examples": "nope"}}, 422, "examples"),
    ("post", "/v1/indexes/korean/examples", {"content": b"{not json", "headers": {"content-type": "application/json"}},
     422, "JSON"),
    ("post", "/v1/indexes/korean/examples", {"content": b"x" * 2_000_001,
                                             "headers": {"content-type": "application/json"}}, 413, "bytes"),
    ("post", "/v1/indexes/korean/examples/files", {"files": [("files", ("a.png", b"GIF89a-broken", "image/png"))],
                                                   "data": {"label": "x"}}, 400, "a.png"),
    ("post", "/v1/indexes/korean/examples/files", {"files": [("files", ("a.png", b"", "image/png"))],
                                                   "data": {"label": "x"}}, 400, "empty"),
    ("post", "/v1/indexes/greek/examples", {"json": {"examples": [{"label": "x", "strokes": [[]]}]}}, 400, "stroke 0"),
    ("post", "/v1/indexes/greek/examples", {"json": {"examples": [{"label": "x", "strokes": [[[1]]]}]}},
     400, "[x, y, t]"),
    ("post", "/v1/indexes/greek/examples", {"json": {"examples": [{"label": "x", "strokes": []}]}}, 400, "no strokes"),
    ("post", "/v1/indexes/greek/examples/files", {"files": [("files", ("s.txt", b"hello", "text/plain"))],
                                                  "data": {"label": "x"}}, 400, "START"),
    ("post", "/v1/indexes/greek/examples/files", {"files": [("files", ("s.npy", b"\x93NUMPYjunk", "x"))],
                                                  "data": {"label": "x"}}, 400, ".npy"),
    ("post", "/v1/indexes/korean/classify", {"json": {"inputs": [{"image_base64": "aGVsbG8="}]}}, 400, "image"),
    ("post", "/v1/indexes/korean/classify", {"json": {"inputs": [{"array": [1, 2]}], "top_k": 0}}, 422, "top_k"),
    ("post", "/v1/indexes/korean/search", {"json": {"inputs": [{"array": [[1, 2], [3, 4]]}], "labels": ["a\x00"]}},
     400, ""),
    ("delete", "/v1/indexes/korean/labels?label=no-such-label", {}, 404, "no-such-label"),
    ("delete", "/v1/indexes/korean/labels", {}, 422, "label"),
    ("get", "/v1/indexes/korean/example?label=no-such-label", {}, 404, "no-such-label"),
    ("get", "/v1/indexes/korean/example?label=k0&format=svg", {}, 422, "format"),
    ("get", "/v1/indexes/nope/labels", {}, 404, "nope"),
]


@pytest.mark.parametrize("method,url,kwargs,status,words", BAD_REQUESTS,
                         ids=[f"{i}-{b[1].rsplit('/', 1)[-1]}-{b[3]}" for i, b in enumerate(BAD_REQUESTS)])
def test_bad_input_is_a_4xx_json_error_and_writes_nothing(client, image_index, stroke_index, method, url, kwargs,
                                                          status, words):
    before = (_tree(image_index), _tree(stroke_index))
    r = getattr(client, method)(url, **kwargs) if method != "delete" else client.delete(url)
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and "\n" not in body["error"] and "Traceback" not in body["error"]
    assert words.lower() in body["error"].lower()
    assert (_tree(image_index), _tree(stroke_index)) == before


def test_a_chunked_body_over_the_limit_is_refused(client):
    def chunks():
        for _ in range(30):
            yield b"x" * 100_000

    r = client.post("/v1/indexes/korean/examples", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "bytes" in r.json()["error"]


def test_lock_timeout_is_a_409(tmp_path, chars):
    from index.locking import DirLock

    path = tmp_path / "locked"
    FewShotIndex.create(path).close()
    app = create_app([path], lock_timeout=0.2)
    with TestClient(app, raise_server_exceptions=False) as c, DirLock(path, 1.0):
        r = c.post("/v1/indexes/locked/examples", json={"examples": [{"label": "a", "image_base64": _b64(chars[0][0])}]})
    assert r.status_code == 409 and "lock" in r.json()["error"].lower()


# --- the command ------------------------------------------------------------------------------------------
def test_serve_refuses_a_public_address_without_a_token(image_index, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from fewshot.cli import cli

    monkeypatch.delenv("FEWSHOT_TOKEN", raising=False)
    r = CliRunner().invoke(cli, ["serve", str(image_index), "--host", "0.0.0.0"])
    assert r.exit_code == 2 and "token" in r.output
    empty = tmp_path / "tok"
    empty.write_text("\n")
    r = CliRunner().invoke(cli, ["serve", str(image_index), "--token-file", str(empty)])
    assert r.exit_code == 1 and "empty" in r.output


def test_help_imports_no_torch_nor_fastapi():
    import subprocess
    import sys

    code = "import sys, fewshot.cli; print('torch' in sys.modules, 'fastapi' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "False"], out.stderr


# --- the CLI's bad-input matrix (tests/test_bad_inputs.py), sent over HTTP ----------------------------------
def _png(im) -> bytes:
    from PIL import Image  # noqa: F401 - im is a PIL image

    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _half_png() -> bytes:
    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = _png(Image.fromarray(noise))
    return data[: len(data) // 2]


def _bomb() -> bytes:
    from PIL import Image

    return _png(Image.new("1", (9000, 9000), 1))  # 81 Mpixels in a small file


def _pickle_npy() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    return buf.getvalue()


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


UPLOADS = [  # (index, file name, bytes (or a function making them), words in the error)
    ("korean", "truncated.png", lambda chars: _half_png(), "cannot decode image"),
    ("korean", "notes.png", b"this is not an image\n", "not an image file"),
    ("korean", "empty.png", b"", "empty"),
    ("korean", "bomb.png", lambda chars: _bomb(), "decompression bomb"),
    ("greek", "bad_row.txt", b"START\n10,10,0\n20,abc,1\nBREAK\n", "line 3"),
    ("greek", "short_row.txt", b"START\n10,10,0\n20,15\nBREAK\n", "line 3"),
    ("greek", "nan_row.txt", b"START\n10,10,0\nnan,15,1\nBREAK\n", "line 3"),
    ("greek", "no_start.txt", b"10,10,0\n20,15,1\nBREAK\n", "START"),
    ("greek", "only_breaks.txt", b"START\nBREAK\nBREAK\n", "no points"),
    ("greek", "empty.txt", b"", "empty"),
    ("greek", "binary.txt", b"\xff\xfe\x00garbage", "binary.txt"),
    ("greek", "ragged.csv", b"x,y,p\n1,2,0\n3,4\n", ".csv"),
    ("greek", "evil.npy", lambda chars: _pickle_npy(), "object arrays are refused"),
    ("greek", "cube.npy", lambda chars: _npy(np.zeros((4, 4, 4), np.float32)), "shape"),
    ("greek", "junk.npy", b"\x93NUMPY garbage", ".npy"),
]


@pytest.mark.parametrize("index,name,content,words", UPLOADS, ids=[f"{u[0]}-{u[1]}" for u in UPLOADS])
def test_the_cli_bad_file_matrix_over_http(client, image_index, stroke_index, chars, index, name, content, words):
    data = content(chars) if callable(content) else content
    before = (_tree(image_index), _tree(stroke_index))
    for url, form in ((f"/v1/indexes/{index}/examples/files", {"label": "x"}),
                      (f"/v1/indexes/{index}/classify/files", {})):
        r = client.post(url, files=[("files", (name, data, "application/octet-stream"))], data=form)
        assert 400 <= r.status_code < 500 and set(r.json()) == {"error"}, r.text
        assert words.lower() in r.json()["error"].lower() and "\n" not in r.json()["error"]
    assert (_tree(image_index), _tree(stroke_index)) == before


@pytest.mark.parametrize("label,words", [("x" * 10_000, "at most 200 characters"), ("a\nb", "control characters"),
                                         ("tab\there", "control characters"), ("\t\n", "empty")])
def test_bad_labels_over_http(client, image_index, chars, label, words):
    before = _tree(image_index)
    r = client.post("/v1/indexes/korean/examples", json={"examples": [{"label": label, "image_base64": _b64(chars[0][1])}]})
    assert r.status_code == 400 and words in r.json()["error"]
    assert _tree(image_index) == before


def test_path_like_labels_are_data(client, image_index, chars):
    outside = image_index.parent / "x"
    for label in ("../x", "/etc/passwd", "日本語/クラス"):
        r = client.post("/v1/indexes/korean/examples", json={"examples": [{"label": label, "image_base64": _b64(chars[5][6])}]})
        assert r.status_code == 200 and r.json()["labels"] == {label: 1}
        assert client.get("/v1/indexes/korean/example", params={"label": label}).status_code == 200
        assert client.delete("/v1/indexes/korean/labels", params={"label": label}).json()["removed"] == 1
    assert not outside.exists()


def test_a_request_over_the_per_request_timeout_is_a_503(image_index, chars):
    app = create_app([image_index], timeout_s=1e-6)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.post("/v1/indexes/korean/classify", json={"inputs": [{"image_base64": _b64(chars[0][2])}]})
        assert r.status_code == 503 and "within" in r.json()["error"]
        assert c.get("/v1/indexes/korean/labels").status_code in (200, 503)


def test_threshold_auto_is_passed_to_the_library(client, chars, tmp_path):
    """'auto' is the index's calibrated threshold: a 400 naming `fewshot calibrate` until it has one,
    then the answers of ``FewShotIndex.classify(threshold="auto")``, "unknown" included."""
    body = {"inputs": [{"image_base64": _b64(chars[1][2])}], "threshold": "auto"}
    r = client.post("/v1/indexes/korean/classify", json=body)
    assert r.status_code == 400 and "fewshot calibrate" in r.json()["error"]
    path = tmp_path / "calibrated"
    with FewShotIndex.create(path) as idx:
        idx.add_many([(f"k{i}", c[:2]) for i, c in enumerate(chars[:4])])
        idx.calibrate()
        queries = [chars[1][2], chars[5][2]]
        want = [p.to_dict() for p in idx.classify(queries, threshold="auto")]
    app = create_app([path], token=TOKEN, max_body=2_000_000, max_batch=8)
    with TestClient(app, headers=AUTH, raise_server_exceptions=False) as c:
        for q, w in zip(queries, want):
            got = c.post("/v1/indexes/calibrated/classify", json={"inputs": [{"image_base64": _b64(q)}],
                                                                   "threshold": "auto"}).json()[0]
            assert (got["label"], got["unknown"]) == (w["label"], w["unknown"])
            assert got["score"] == pytest.approx(w["score"], abs=1e-5)
        r = c.post("/v1/indexes/calibrated/classify/files", data={"threshold": "auto"},
                   files=[("files", ("q.png", queries[0].read_bytes(), "image/png"))])
        assert r.status_code == 200 and r.json()[0]["label"] == want[0]["label"]
    r = client.post("/v1/indexes/korean/classify/files", data={"threshold": "high"},
                    files=[("files", ("q.png", chars[1][2].read_bytes(), "image/png"))])
    assert r.status_code == 400 and r.json()["error"].startswith("threshold must be a number or \"auto\"")
    r = client.post("/v1/indexes/korean/classify", json=dict(body, threshold="high"))
    assert r.status_code == 422 and "threshold" in r.json()["error"]
