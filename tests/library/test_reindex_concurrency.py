"""A reindex to another encoder while other processes add and classify (issue 16, items 1 and 2).

* An add embeds before it takes the writer lock. If a reindex commits in
  between, the add must not store vectors of the old encoder in the
  re-encoded index: under the lock the store checks the encoder fingerprint
  the vectors were made with, and the add re-embeds with the new encoder.
* A reader opened before a reindex must not search the new vectors with
  queries of its old encoder: each answer comes from one committed state, with
  queries embedded by that state's encoder.
* A stress run: several rounds of reindexing while two processes add and one
  classifies; afterwards the index is healthy, nothing is lost, and every
  answer is the answer of a committed state.
"""
from __future__ import annotations

import inspect
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fewshot import encoders
from fewshot.check import check
from fewshot.fewshot_index import FewShotIndex
from fewshot.prototypes import class_prototypes
from helpers import child_env
from helpers import drawing_files as images
from index import FaissStore


def make_index(ix: Path, encoder, files: list[Path], classes: int = 3) -> None:
    with FewShotIndex.create(ix, encoder=encoder) as idx:
        for c in range(classes):
            idx.add(f"c{c}", files[c::classes])


def reindex_with(ix: Path, encoder_file: Path) -> None:
    """What `fewshot reindex IX --encoder FILE` does, from another process's point of view."""
    with FewShotIndex(FaissStore.open(ix), encoders.load(encoder_file)) as other:
        other.reindex(other.encoder)


def after_first_call(obj, name: str, action) -> list:
    """Patch ``obj.name`` to run ``action`` (another writer) right after its first call; returns the calls."""
    real, calls = getattr(obj, name), []

    def wrapped(*args, **kwargs):
        out = real(*args, **kwargs)
        if inspect.isgenerator(out):
            out = iter(list(out))  # what the caller will read was read before the action
        if not calls:
            action()
        calls.append(1)
        return out

    setattr(obj, name, wrapped)
    return calls


def reindex_with_action(ix: Path, enc, target, name: str, action) -> tuple[dict, list]:
    """Reindex ``ix`` to ``enc``; right after the first call of ``target(idx).name``, another writer
    opens ``ix`` and runs ``action`` on it."""
    def another_writer():
        with FewShotIndex.open(ix) as other:
            action(other)

    with FewShotIndex(FaissStore.open(ix), enc) as idx:
        calls = after_first_call(target(idx), name, another_writer)
        out = idx.reindex(enc)
    return out, calls


def assert_vectors_match_the_encoder(ix: Path) -> None:
    report = check(ix, sample=None)
    assert report["healthy"], report["remaining"]
    assert report["stats"]["reembedded"] == report["stats"]["records"]


# --------------------------------------------------------------------------- item 1: add during reindex


def test_add_that_embedded_before_a_reindex_re_embeds_with_the_new_encoder(tmp_path, encoder_a, encoder_b_file):
    ix = tmp_path / "idx"
    make_index(ix, encoder_a, images(tmp_path / "base", range(9)))
    late = images(tmp_path / "late", range(100, 106))
    with FewShotIndex.open(ix) as adder:
        # another process reindexes while this add holds old-encoder vectors
        after_first_call(adder.encoder, "embed", lambda: reindex_with(ix, encoder_b_file))
        ids = adder.add("late", late)
        assert adder.encoder.fingerprint == encoders.load(encoder_b_file).fingerprint
    assert len(ids) == len(late)
    with FewShotIndex.open(ix, readonly=True) as idx:
        assert idx.labels()["late"] == len(late)
        assert idx.info()["fingerprint"] == encoders.load(encoder_b_file).fingerprint
    assert_vectors_match_the_encoder(ix)


def test_store_add_refuses_vectors_prepared_for_another_encoder(tmp_path):
    from index import ConflictError

    with FaissStore.create(tmp_path / "s", 4, extra={"fingerprint": "new"}) as store:
        before = store.generation
        with pytest.raises(ConflictError, match="fingerprint is now 'new', not 'old'") as info:
            store.add(np.ones((1, 4)), ["x"], expect={"fingerprint": "old"})
        assert (info.value.field, info.value.expected, info.value.found) == ("fingerprint", "old", "new")
        assert store.count() == 0 and store.generation == before
        assert len(store.add(np.ones((1, 4)), ["x"], expect={"fingerprint": "new"})) == 1


def test_reindex_covers_records_added_while_it_embedded(tmp_path, encoder_a, encoder_b_file):
    """An add committed between the reindex's listing and its commit is embedded in that commit (fill)."""
    ix = tmp_path / "idx"
    make_index(ix, encoder_a, images(tmp_path / "base", range(6)))
    enc_b = encoders.load(encoder_b_file)
    out, calls = reindex_with_action(ix, enc_b, lambda idx: enc_b, "embed",
                                     lambda other: other.add("during", images(tmp_path / "during", range(50, 53))))
    assert out["reembedded"] == 9 and len(calls) == 2
    assert_vectors_match_the_encoder(ix)


def test_reindex_lists_again_when_a_class_is_removed_while_it_runs(tmp_path, encoder_a, encoder_b_file):
    """A remove deletes copies the reindex listed: it lists the records again instead of failing."""
    ix = tmp_path / "idx"
    make_index(ix, encoder_a, images(tmp_path / "base", range(9)))
    enc_b = encoders.load(encoder_b_file)
    out, calls = reindex_with_action(ix, enc_b, lambda idx: idx.store, "records", lambda other: other.remove("c1"))
    assert out["reembedded"] == 6 and len(calls) == 2
    assert_vectors_match_the_encoder(ix)


# --------------------------------------------------------------------------- item 2: classify during reindex


def test_reader_opened_before_a_reindex_answers_from_the_new_state(tmp_path, encoder_a, encoder_b_file):
    ix = tmp_path / "idx"
    make_index(ix, encoder_a, images(tmp_path / "base", range(12)))
    probes = images(tmp_path / "probes", range(200, 204))
    reader = FewShotIndex.open(ix, readonly=True)
    before = [p.to_dict() for p in reader.classify(probes, top_k=2)]
    reindex_with(ix, encoder_b_file)
    got = [p.to_dict() for p in reader.classify(probes, top_k=2)]
    hits = reader.search(probes[:1], k=3)
    reader.close()
    with FewShotIndex.open(ix, readonly=True) as fresh:
        after = [p.to_dict() for p in fresh.classify(probes, top_k=2)]
        after_hits = fresh.search(probes[:1], k=3)
    assert got == after and got != before
    assert [h.to_dict() for h in hits] == [h.to_dict() for h in after_hits]


@pytest.fixture(scope="module")
def narrow_file(tmp_path_factory, encoder_a) -> Path:
    """An encoder of another dimension (32): the conv4 architecture, narrower, random weights."""
    from fewshot.encoders.archs import build_arch

    torch.manual_seed(0)
    module, dim = build_arch(encoder_a.arch, **{**encoder_a.arch_kwargs, "width": 32})
    narrow = type(encoder_a)("narrow-conv4", module, dim, encoder_a.preprocess, encoder_a.arch,
                             {**encoder_a.arch_kwargs, "width": 32})
    return narrow.save(tmp_path_factory.mktemp("enc") / "narrow.pt")


def test_add_during_a_reindex_to_another_dimension(tmp_path, encoder_a, narrow_file):
    ix = tmp_path / "idx"
    make_index(ix, encoder_a, images(tmp_path / "base", range(6)))
    with FewShotIndex.open(ix) as adder:
        after_first_call(adder.encoder, "embed", lambda: reindex_with(ix, narrow_file))
        adder.add("late", images(tmp_path / "late", range(100, 103)))
        assert adder.encoder.dim == 32
    assert_vectors_match_the_encoder(ix)


def test_reader_follows_a_reindex_to_another_dimension(tmp_path, encoder_a, narrow_file):
    """Before the fix: a raw ValidationError (queries of the old width); now the new encoder's answer."""
    ix = tmp_path / "idx"
    make_index(ix, encoder_a, images(tmp_path / "base", range(9)))
    probes = images(tmp_path / "probes", range(400, 402))
    with FewShotIndex.open(ix, readonly=True) as reader:
        reader.classify(probes)
        reindex_with(ix, narrow_file)
        got = [p.to_dict() for p in reader.classify(probes, top_k=2)]
        assert reader.encoder.dim == 32
    with FewShotIndex.open(ix, readonly=True) as fresh:
        assert fresh.store.dim == 32 and got == [p.to_dict() for p in fresh.classify(probes, top_k=2)]


def test_classify_searches_the_state_whose_encoder_embedded_the_queries(tmp_path, encoder_a, encoder_b_file):
    """A reindex committed while classify embeds: the queries are re-embedded for the new state."""
    ix = tmp_path / "idx"
    make_index(ix, encoder_a, images(tmp_path / "base", range(12)))
    probes = images(tmp_path / "probes", range(300, 303))
    with FewShotIndex.open(ix, readonly=True) as reader:
        after_first_call(reader.encoder, "embed", lambda: reindex_with(ix, encoder_b_file))
        got = [p.to_dict() for p in reader.classify(probes, top_k=3)]
    with FewShotIndex.open(ix, readonly=True) as fresh:
        assert got == [p.to_dict() for p in fresh.classify(probes, top_k=3)]


def test_cli_reindex_add_and_classify_at_once(tmp_path, encoder_a, encoder_b_file):
    """The issue's repro, scaled down: `fewshot reindex --encoder` with `add` and `classify --json` running."""
    exe = Path(sys.executable).with_name("fewshot")
    if not exe.exists():
        pytest.skip("the fewshot console script is not installed (pip install -e .)")
    ix = tmp_path / "idx"
    base = images(tmp_path / "base", range(30))
    make_index(ix, encoder_a, base)
    late = images(tmp_path / "late", range(600, 615))
    probes = images(tmp_path / "probes", range(700, 703))
    env = child_env()
    run = [[str(exe), "reindex", str(ix), "--encoder", str(encoder_b_file), "--json"],
           [str(exe), "add", str(ix), "--label", "late", *map(str, late), "--lock-timeout", "120", "--json"],
           [str(exe), "classify", str(ix), *map(str, probes), "--top-k", "2", "--json"]]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for cmd in run]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0 and "Traceback" not in err, err
    assert_vectors_match_the_encoder(ix)
    files = {f"c{c}": base[c::3] for c in range(3)} | {"late": late}
    want = [expected_scores(e, files, probes) for e in (encoder_a, encoders.load(encoder_b_file))]
    rows = json.loads(outs[2][0])
    assert any(all(np.allclose([c["score"] for c in row["candidates"]],
                               [w[c["label"]][i] for c in row["candidates"]], atol=1e-4)
                   for i, row in enumerate(rows)) for w in want), rows


# --------------------------------------------------------------------------- stress

ADDER = """
import json, pathlib, sys, time
from fewshot.fewshot_index import FewShotIndex
ix, plan, ready = sys.argv[1], json.loads(sys.argv[2]), pathlib.Path(sys.argv[3])
with FewShotIndex.open(ix, lock_timeout=120) as idx:
    idx.encoder.embed([plan[0][1][0]])  # warm up, then wait for everyone
    ready.touch()
    while len(list(ready.parent.glob("ready-*"))) < 3:
        time.sleep(0.02)
    for label, files in plan:
        idx.add(label, files)
        time.sleep(0.3)
"""

CLASSIFIER = """
import json, os, pathlib, sys, time
from fewshot.fewshot_index import FewShotIndex
ix, probes, stop, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
answers = []
with FewShotIndex.open(ix, readonly=True) as idx:
    idx.classify(probes)
    pathlib.Path(out).with_name("ready-classifier").touch()
    while not os.path.exists(stop) or len(answers) < 3:
        preds = idx.classify(probes, top_k=1000)
        answers.append([{c.label: c.score for c in p.candidates} for p in preds])
        time.sleep(0.02)
with open(out, "w") as fh:
    json.dump(answers, fh)
"""


def expected_scores(enc, files: dict[str, list[Path]], probes: list[Path]) -> dict[str, np.ndarray]:
    """label -> cosine scores of each probe against the class prototype, with ``enc``."""
    labels = [lab for lab in files for _ in files[lab]]
    emb = enc.embed([p for lab in files for p in files[lab]])
    names, protos = class_prototypes(emb, labels, "cosine")
    q = enc.embed(probes)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    scores = q @ protos.T
    return {name: scores[:, j] for j, name in enumerate(names)}


def run_stress(tmp_path: Path, encoder_a, encoder_b_file: Path, rounds: int, per_add: int) -> None:
    ix = tmp_path / "idx"
    base = images(tmp_path / "base", range(12))
    make_index(ix, encoder_a, base)
    files = {f"c{c}": base[c::3] for c in range(3)}
    plans = []
    for w in range(2):
        plan = []
        for r in range(rounds):
            label = f"w{w}-r{r}"
            files[label] = images(tmp_path / label, range(1000 * (w + 1) + 10 * r, 1000 * (w + 1) + 10 * r + per_add))
            plan.append((label, [str(p) for p in files[label]]))
        plans.append(plan)
    probes = images(tmp_path / "probes", range(5000, 5003))
    stop, out = tmp_path / "stop", tmp_path / "answers.json"
    env = child_env()
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(ADDER), str(ix), json.dumps(plan),
                               str(tmp_path / f"ready-adder{w}")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for w, plan in enumerate(plans)]
    procs.append(subprocess.Popen([sys.executable, "-c", textwrap.dedent(CLASSIFIER), str(ix),
                                   json.dumps([str(p) for p in probes]), str(stop), str(out)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    encs = [encoders.load(encoder_b_file), encoder_a]
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("ready-*"))) < 3:  # all started: the rounds overlap their work
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "children did not start"
            time.sleep(0.05)
        for r in range(rounds):  # A -> B -> A -> ...: every reindex switches the encoder
            enc = encs[r % 2]
            with FewShotIndex(FaissStore.open(ix, lock_timeout=120), enc) as idx:
                idx.reindex(enc)
            time.sleep(0.15)
        for p in procs[:2]:
            _, err = p.communicate(timeout=300)
            assert p.returncode == 0, err
    finally:
        stop.touch()
    _, err = procs[2].communicate(timeout=300)
    assert procs[2].returncode == 0, err

    assert_vectors_match_the_encoder(ix)
    with FewShotIndex.open(ix, readonly=True) as idx:
        assert idx.labels() == {lab: len(fs) for lab, fs in sorted(files.items())}
    # Every answer is a committed state's: all its classes scored with one encoder (A or B).
    want = [expected_scores(e, files, probes) for e in encs]
    answers = json.loads(out.read_text())
    states = set()
    for answer in answers:
        fits = [e for e, w in enumerate(want)
                if all(np.allclose([row[lab] for lab in row], [w[lab][i] for lab in row], atol=1e-4)
                       for i, row in enumerate(answer))]
        assert fits, answer
        assert {"c0", "c1", "c2"} <= set(answer[0])
        states.add((fits[0], len(answer[0])))
    assert len({e for e, _ in states}) == 2 and len(states) >= 3, "the reader did not see the index change"


def test_stress_reindex_while_two_processes_add_and_one_classifies(tmp_path, encoder_a, encoder_b_file):
    run_stress(tmp_path, encoder_a, encoder_b_file, rounds=5, per_add=2)


@pytest.mark.slow
def test_stress_soak(tmp_path, encoder_a, encoder_b_file):
    run_stress(tmp_path, encoder_a, encoder_b_file, rounds=20, per_add=6)
