"""Several processes writing one index at once; readers during writes.

* Writers serialise on an exclusive lock of the index directory: a writer
  waits for it, and after ``--lock-timeout`` gives up with one clear line.
* Several processes (real ``fewshot add`` commands and library users) adding
  different classes at once: every addition is present afterwards, ids are
  unique, and the prototypes equal a from-scratch recomputation from the
  example files.
* A reader classifying and searching while they write only ever sees
  committed states: each answer is exactly the answer of one state the
  writers passed through.
* Two deterministic interleavings pin down that ``info`` and ``classify``
  each answer from one snapshot.
"""
from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fewshot.cli import cli
from fewshot.fewshot_index import FewShotIndex
from fewshot.prototypes import class_prototypes, softmax
from helpers import child_env, drawing, fewshot_exe, tree_digest
from index import FaissStore, LockTimeoutError

CLI_WRITERS = 2  # real `fewshot add` processes, one class each
LIB_WRITERS = 2  # library processes, several single-class adds each
LIB_CLASSES = 4
PER_CLASS = 2


def make_index(path: Path, encoder, seed_label: str = "seed") -> FewShotIndex:
    idx = FewShotIndex.create(path, encoder=encoder)
    idx.add(seed_label, [drawing(123456)])
    return idx


# --------------------------------------------------------------------------- the lock


def test_writer_waits_for_the_lock_then_times_out_with_a_clear_error(tmp_path, encoder):
    ix = tmp_path / "idx"
    make_index(ix, encoder).close()
    img = tmp_path / "x.png"
    drawing(1).save(img)
    fd = os.open(ix / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another writer, as far as the index can tell
    try:
        before = tree_digest(ix)
        t0 = time.monotonic()
        r = CliRunner().invoke(cli, ["add", str(ix), "--label", "x", str(img), "--lock-timeout", "0.5"])
        waited = time.monotonic() - t0
        assert r.exit_code == 1, (r.exit_code, r.stderr)
        [line] = r.stderr.strip().splitlines()
        assert line.startswith("error: ") and "locked by another writer" in line and "--lock-timeout" in line
        assert 0.45 < waited < 30
        assert tree_digest(ix) == before
        with pytest.raises(LockTimeoutError, match="locked by another writer"):
            FewShotIndex.open(ix, encoder=encoder, lock_timeout=0.2)
        # readers take no lock
        r = CliRunner().invoke(cli, ["info", str(ix), "--json"])
        assert r.exit_code == 0 and json.loads(r.stdout)["count"] == 1
        # a writer that may wait long enough gets the lock once it is released
        threading.Timer(0.5, fcntl.flock, (fd, fcntl.LOCK_UN)).start()
        r = CliRunner().invoke(cli, ["add", str(ix), "--label", "x", str(img), "--lock-timeout", "60", "--json"])
        assert r.exit_code == 0, r.stderr
        assert json.loads(r.stdout)["count"] == 2
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- many writers, one reader


LIB_CHILD = """
import json, sys
from pathlib import Path
from fewshot.fewshot_index import FewShotIndex
ix, plan = sys.argv[1], json.loads(sys.argv[2])
with FewShotIndex.open(ix, lock_timeout=120) as idx:
    for label, files in plan:
        idx.add(label, files)
        print(label, flush=True)
"""


def test_concurrent_writers_lose_nothing_and_readers_see_only_committed_states(tmp_path, encoder):
    ix = tmp_path / "idx"
    idx = make_index(ix, encoder)
    idx.close()
    files: dict[str, list[Path]] = {"seed": []}
    seed = 0
    for w in range(CLI_WRITERS + LIB_WRITERS):
        n_classes = 1 if w < CLI_WRITERS else LIB_CLASSES
        for c in range(n_classes):
            label = f"w{w}-c{c}" if w % 2 else f"writer {w} · class {c}"
            files[label] = []
            for _ in range(PER_CLASS):
                p = tmp_path / "imgs" / f"{seed}.png"
                p.parent.mkdir(exist_ok=True)
                drawing(seed).save(p)
                files[label].append(p)
                seed += 1
    order = {w: [lab for lab in files if lab.startswith((f"w{w}-", f"writer {w} "))]
             for w in range(CLI_WRITERS + LIB_WRITERS)}
    probes = [drawing(10_000 + i) for i in range(2)] + [files[order[0][0]][0]]

    procs = []
    for w in range(CLI_WRITERS):
        [label] = order[w]
        procs.append(subprocess.Popen([fewshot_exe(), "add", str(ix), "--label", label,
                                       *map(str, files[label]), "--json"],
                                      env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for w in range(CLI_WRITERS, CLI_WRITERS + LIB_WRITERS):
        plan = [(lab, [str(p) for p in files[lab]]) for lab in order[w]]
        procs.append(subprocess.Popen([sys.executable, "-c", textwrap.dedent(LIB_CHILD), str(ix), json.dumps(plan)],
                                      env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))

    # A reader in this process, while they write.
    answers: list[tuple[list, list, dict]] = []
    reader = FewShotIndex.open(ix, encoder=encoder, readonly=True)
    deadline = time.monotonic() + 600
    while any(p.poll() is None for p in procs):
        assert time.monotonic() < deadline, "writers did not finish"
        preds = reader.classify(probes, top_k=1000)
        hits = reader.search(probes[:1], k=3)
        info = reader.info()
        answers.append((preds, hits, info))
        time.sleep(0.1)  # leave the CPU to the writers
    for p in procs:
        out, err = p.communicate()
        assert p.returncode == 0, err
    reader.close()

    # Nothing lost: every class with every example; ids unique; prototypes = a from-scratch recomputation.
    with FewShotIndex.open(ix, encoder=encoder, readonly=True) as idx:
        records = list(idx.store.records())
        assert idx.labels() == {lab: (1 if lab == "seed" else PER_CLASS) for lab in sorted(files)}
        assert len({r.id for r in records}) == len(records) == 1 + PER_CLASS * (len(files) - 1)
        assert idx.store.verify() == []
        by_label = {lab: sorted(r.metadata["source"] for r in records if r.label == lab) for lab in files}
        for lab, fs in files.items():
            if lab != "seed":
                assert by_label[lab] == sorted(str(p.resolve()) for p in fs)
        all_files = [p for lab in files for p in files[lab]]
        labels_of = [lab for lab in files for _ in files[lab]]
        emb = np.concatenate([encoder.embed(all_files), encoder.embed([drawing(123456)])])
        want_labels, want = class_prototypes(emb, labels_of + ["seed"], "cosine")
        got_labels, got = idx.store.prototypes()
        assert got_labels == want_labels
        np.testing.assert_allclose(got, want, atol=1e-5)
        final = {c.label: c.score for c in idx.classify(probes, top_k=1000)[0].candidates}
        final_all = [{c.label: c.score for c in p.candidates} for p in idx.classify(probes, top_k=1000)]
        temperature = idx.temperature
    assert len(final) == len(files)

    # Every answer the reader got is the answer of one committed state: a set of whole classes,
    # each writer's classes a prefix of its order, every score the class's final score.
    assert len(answers) >= 3, "the reader did not overlap the writers"
    seen_sizes = set()
    for preds, hits, info in answers:
        for pred, fin in zip(preds, final_all):
            present = [c.label for c in pred.candidates]
            seen_sizes.add(len(present))
            for w, labs in order.items():
                got_w = [lab for lab in labs if lab in present]
                assert got_w == labs[: len(got_w)], (w, got_w)
            assert "seed" in present
            scores = np.array([c.score for c in pred.candidates])
            assert np.all(np.diff(scores) <= 1e-6)
            np.testing.assert_allclose(scores, [fin[lab] for lab in present], atol=1e-5)
            assert pred.label == present[0]
            assert pred.probability == pytest.approx(float(softmax(scores[None], temperature)[0, 0]), abs=1e-5)
        assert set(c.label for c in preds[0].candidates) == set(c.label for c in preds[1].candidates)
        for n in hits[0].neighbors:
            assert n.label in files and n.source  # committed records only, with their metadata
        assert info["count"] == sum(info["labels"].values())
        assert info["n_labels"] == len(info["labels"])
    assert len(seen_sizes) >= 2, "the reader saw only one state; nothing was tested concurrently"


# --------------------------------------------------------------------------- deterministic interleavings


def _write_between(idx: FewShotIndex, method: str, path: Path) -> None:
    """Make ``idx.store.<method>`` return its answer, then let another writer commit a new class."""
    real = getattr(idx.store, method)
    other = FaissStore.open(path)
    done = []

    def patched(*args, **kwargs):
        result = real(*args, **kwargs)
        if not done:
            other.add(np.random.default_rng(7).normal(size=(1, other.dim)), ["intruder"])
            other.close()
            done.append(True)
        return result

    setattr(idx.store, method, patched)


def test_info_answers_from_one_snapshot(tmp_path, encoder):
    """Needs the lead's fix (issue7_fixes.patch, FewShotIndex.info): count and labels from one snapshot."""
    ix = tmp_path / "idx"
    make_index(ix, encoder).close()
    with FewShotIndex.open(ix, encoder=encoder, readonly=True) as idx:
        _write_between(idx, "labels", ix)
        info = idx.info()
    assert info["count"] == sum(info["labels"].values()) and info["n_labels"] == len(info["labels"])


def test_classify_answers_from_one_snapshot(tmp_path, encoder, monkeypatch):
    """A class committed by another writer while classify embeds is searched with all the others."""
    ix = tmp_path / "idx"
    with make_index(ix, encoder) as idx:
        idx.add("other", [drawing(5)])
    with FewShotIndex.open(ix, encoder=encoder, readonly=True) as idx:
        real_embed = idx.encoder.embed

        def embed_then_write(*args, **kwargs):
            out = real_embed(*args, **kwargs)
            with FaissStore.open(ix) as other:
                other.add(np.random.default_rng(7).normal(size=(1, other.dim)), ["intruder"])
            return out

        monkeypatch.setattr(idx.encoder, "embed", embed_then_write)
        [pred] = idx.classify([drawing(9)], top_k=100)
        monkeypatch.undo()
        labels, protos = idx.store.prototypes()  # the state classify searched (nothing changed after)
        temperature = idx.temperature
    assert sorted(c.label for c in pred.candidates) == sorted(labels) == ["intruder", "other", "seed"]
    q = encoder.embed([drawing(9)])
    q = q / np.linalg.norm(q)
    scores = np.sort(q @ protos.T)[0][::-1]
    np.testing.assert_allclose([c.score for c in pred.candidates], scores, atol=1e-5)
    assert pred.probability == pytest.approx(float(softmax(scores[None], temperature)[0, 0]), abs=1e-5)
