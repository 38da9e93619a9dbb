"""SIGKILL real ``fewshot add`` processes at random moments: the index always survives.

After every kill, ``fewshot info`` and ``fewshot classify`` work and the index
holds exactly the state from before that add or the state after it: the same
ids, labels and vectors (bit for bit for old records; the new records exactly
the files' embeddings), prototypes equal to a recomputation from the records,
and every record's stored example file present with the right content. Files
that an interrupted add copied but never committed are the only leftovers
allowed; temporary files are gone after the next open by a writer, and
``fewshot check --repair`` removes the leftovers.

CI runs ``CI_KILLS`` kills (several lanes, each its own index, run at once to
keep the wall time down). A longer soak is run by hand:

    FEWSHOT_SOAK=500 pytest -m slow tests/library/test_crash_safety.py -s

Kill timing. Half of the kills land at a uniformly random delay over the whole
run of the command (interpreter start, torch import, encoder load, embedding,
writing). The other half aim at the write phase, which is a small part of the
run: a test-only hook (``sitecustomize.py`` written by this module and put on
the child's ``PYTHONPATH``; nothing in fewshot is changed) makes every
``os.fsync`` first append a byte to a marker file and sleep
``FEWSHOT_TEST_FSYNC_DELAY`` seconds, like a slow disk. The test picks n
uniformly among the fsyncs of a whole add (copies of the examples, then the
SQLite commit, then the FAISS files and manifest; the count is learnt from runs
that finish), waits for the n-th, and kills after a further random delay. The
kills are real SIGKILLs of the real ``fewshot`` console script.

Environment: ``FEWSHOT_SOAK`` (kills of the slow soak, default 500),
``FEWSHOT_CRASH_LANES`` (concurrent lanes, default 4), ``FEWSHOT_CRASH_SEED``
(random seed; printed), ``FEWSHOT_TEST_FSYNC_DELAY`` (default 0.02 s).
The summary line (kills, outcomes, kills inside the write phase) prints with ``-s``.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fewshot.check import check
from fewshot.cli import cli
from fewshot.fewshot_index import FewShotIndex
from fewshot.prototypes import class_prototypes
from helpers import REPO, drawing, fewshot_exe

CI_KILLS = 50
LANES = int(os.environ.get("FEWSHOT_CRASH_LANES", "4"))
FSYNC_DELAY = os.environ.get("FEWSHOT_TEST_FSYNC_DELAY", "0.02")
FILES_PER_ADD = 4
LABELS = ["alpha", "beta", "ünï/猫", "../x", None]  # None: a new class

HOOK = '''"""Test-only hook of tests/library/test_crash_safety.py, loaded as sitecustomize through PYTHONPATH.

FEWSHOT_TEST_FSYNC_MARKER=PATH: append a byte to PATH at every os.fsync (the process is writing).
FEWSHOT_TEST_FSYNC_DELAY=SECONDS: sleep that long before every os.fsync (a slow disk), so that a
random kill can land inside the write phase. Nothing else changes.
"""
import os
import time

_marker = os.environ.get("FEWSHOT_TEST_FSYNC_MARKER")
_delay = float(os.environ.get("FEWSHOT_TEST_FSYNC_DELAY") or 0)
if _marker or _delay:
    _real_fsync = os.fsync

    def _hooked_fsync(fd):
        if _marker:
            m = os.open(_marker, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.write(m, b".")
            os.close(m)
        if _delay:
            time.sleep(_delay)
        return _real_fsync(fd)

    os.fsync = _hooked_fsync
'''


def sha256_file(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@dataclass
class Row:
    label: str
    vector: bytes
    blob: str
    source: str


@dataclass
class Stats:
    kills: int = 0
    completed: int = 0
    outcomes: Counter = field(default_factory=Counter)
    write_phase_kills: int = 0
    left_temp_files: int = 0
    left_orphan_blobs: int = 0
    kill_delays: list = field(default_factory=list)
    totals: list = field(default_factory=list)
    writes: list = field(default_factory=list)
    cli_checks: int = 0


class Harness:
    """Shared pieces: the encoder, one lock for everything that uses torch or click in this process."""

    def __init__(self, encoder, root: Path, target: int, seed: int, deadline: float) -> None:
        self.encoder = encoder
        self.root = root
        self.target = target
        self.seed = seed
        self.deadline = deadline
        self.lock = threading.Lock()
        self.stats = Stats()
        self.stats_lock = threading.Lock()
        hook_dir = root / "hook"
        hook_dir.mkdir()
        (hook_dir / "sitecustomize.py").write_text(HOOK)
        self.hook_dir = hook_dir
        self.est_total = 20.0  # seconds of a whole `fewshot add`; refined as runs are observed
        self.fsyncs = 13  # fsync calls of a whole add of FILES_PER_ADD new files; learnt from finished runs

    def env(self, marker: Path) -> dict[str, str]:
        path = os.pathsep.join(p for p in [str(self.hook_dir), str(REPO), os.environ.get("PYTHONPATH", "")] if p)
        return {**os.environ, "PYTHONPATH": path, "FEWSHOT_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1",
                "FEWSHOT_TEST_FSYNC_MARKER": str(marker), "FEWSHOT_TEST_FSYNC_DELAY": FSYNC_DELAY}

    def done(self) -> bool:
        with self.stats_lock:
            return self.stats.kills >= self.target


class Lane:
    """One index, killed again and again; ``state`` is what it must hold (before the next add)."""

    def __init__(self, h: Harness, n: int) -> None:
        self.h, self.n = h, n
        self.dir = h.root / f"lane{n}"
        self.dir.mkdir()
        self.ix = self.dir / "idx"
        self.marker = self.dir / "fsync.marker"
        self.rng = random.Random(h.seed * 1000 + n)
        self.garbage_ok: set[str] = set()  # example files of killed, uncommitted adds
        self.iteration = 0
        self.probe = self.dir / "probe.png"
        drawing(900_000 + n).save(self.probe)
        seed_files = self.new_files(3)
        with h.lock:
            with FewShotIndex.create(self.ix, encoder=h.encoder) as idx:
                idx.add("alpha", seed_files[:2])
                idx.add("beta", seed_files[2:])
            self.state = self.read_state()

    def new_files(self, k: int) -> list[Path]:
        out = []
        for j in range(k):
            p = self.dir / f"i{self.iteration}_{j}.png"
            drawing(hash((self.h.seed, self.n, self.iteration, j)) % 2**32).save(p)
            out.append(p)
        self.iteration += 1
        return out

    def read_state(self) -> dict[int, Row]:
        with FewShotIndex.open(self.ix, encoder=self.h.encoder, readonly=True) as idx:
            return {r.id: Row(r.label, r.vector.tobytes(), r.metadata["blob"], r.metadata["source"])
                    for r in idx.store.records()}

    def fsyncs_seen(self) -> int:
        try:
            return self.marker.stat().st_size
        except FileNotFoundError:
            return 0

    def ctx(self) -> str:
        return f"lane {self.n}, iteration {self.iteration}, seed {self.h.seed}"

    # ------------------------------------------------------------------ one kill

    def run(self) -> None:
        while not self.h.done():
            assert time.monotonic() < self.h.deadline, f"out of time after {self.h.stats.kills} kills"
            self.one_round()
        self.final_checks()

    def one_round(self) -> None:
        h = self.h
        files = self.new_files(FILES_PER_ADD)
        label = self.rng.choice(LABELS) or f"new {self.n}.{self.iteration}"
        with h.lock:
            expected = unit(h.encoder.embed(files)).astype(np.float32)
        keys = [f"examples/{d[:2]}/{d}.png" for d in map(sha256_file, files)]
        self.marker.unlink(missing_ok=True)
        aim_write = self.rng.random() < 0.5
        t0 = time.monotonic()
        proc = subprocess.Popen([fewshot_exe(), "add", str(self.ix), "--label", label, *map(str, files), "--json"],
                                env=h.env(self.marker), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if aim_write:
            # Kill just after the n-th fsync of the write sequence, n uniform over the whole sequence
            # (example copies, then the SQLite commit, then cache files and manifest), give or take.
            n = self.rng.randint(1, h.fsyncs)
            while proc.poll() is None and self.fsyncs_seen() < n:
                time.sleep(0.002 if self.marker.exists() else 0.01)
            h.est_total = 0.8 * h.est_total + 0.2 * (time.monotonic() - t0 + 0.5)
            delay = self.rng.uniform(0, 1.5 * float(FSYNC_DELAY))
        else:
            delay = self.rng.uniform(0, h.est_total)
        in_write = False
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            in_write = self.marker.exists()
            proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate()
        t_end = time.monotonic()
        assert proc.returncode in (0, -signal.SIGKILL), (proc.returncode, err.decode())
        killed = proc.returncode == -signal.SIGKILL  # it may have exited just before the signal
        if not killed:
            # It finished before its kill: it must have succeeded; it tells how long and how many fsyncs.
            assert proc.returncode == 0, err.decode()
            h.est_total = 0.7 * h.est_total + 0.3 * (t_end - t0)
            h.fsyncs = max(1, self.fsyncs_seen())
        with h.stats_lock:
            if killed:
                h.stats.kills += 1
                h.stats.write_phase_kills += in_write
                h.stats.kill_delays.append(round(t_end - t0, 2))
            else:
                h.stats.completed += 1
                h.stats.totals.append(round(t_end - t0, 2))
        with h.lock:
            self.verify_after(label, files, expected, keys, killed, t_end)

    def verify_after(self, label: str, files: list[Path], expected: np.ndarray, keys: list[str], killed: bool,
                     t_kill: float) -> None:
        h, ctx = self.h, self.ctx()
        before = self.state
        # `fewshot info` and `fewshot classify` work (the CLI commands, in this process).
        r = CliRunner().invoke(cli, ["info", str(self.ix), "--json"])
        assert r.exit_code == 0, (ctx, r.stderr)
        info = json.loads(r.stdout)
        r = CliRunner().invoke(cli, ["classify", str(self.ix), str(self.probe), "--json", "--top-k", "100"])
        assert r.exit_code == 0, (ctx, r.stderr)
        [pred] = json.loads(r.stdout)
        now = self.read_state()
        assert info["count"] == len(now), ctx

        # Exactly the state before or after this add.
        new_ids = sorted(set(now) - set(before))
        assert set(before) <= set(now), f"{ctx}: records lost: {sorted(set(before) - set(now))[:5]}"
        for i, row in before.items():
            assert now[i] == row, f"{ctx}: record {i} changed"
        if new_ids:
            assert len(new_ids) == len(files), f"{ctx}: a partial add is visible: {len(new_ids)} of {len(files)}"
            for j, i in enumerate(new_ids):
                row = now[i]
                assert row.label == label and row.blob == keys[j] and row.source == str(files[j].resolve()), ctx
                np.testing.assert_allclose(np.frombuffer(row.vector, np.float32), expected[j], atol=1e-5,
                                           err_msg=ctx)
            outcome = "after"
        else:
            outcome = "before"
        if not killed:
            assert outcome == "after", f"{ctx}: a completed add is missing"

        # Prototypes = recomputation from the records; the CLI's answer is that of this state.
        vecs = np.stack([np.frombuffer(row.vector, np.float32) for row in now.values()])
        labs = [row.label for row in now.values()]
        want_labels, want = class_prototypes(vecs, labs, "cosine")
        with FewShotIndex.open(self.ix, encoder=h.encoder, readonly=True) as idx:
            got_labels, got = idx.store.prototypes()
            assert idx.labels() == dict(sorted(Counter(labs).items())), ctx
        assert got_labels == want_labels, ctx
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=ctx)
        q = unit(h.encoder.embed([self.probe]))[0]
        scores = want.astype(np.float64) @ q
        assert pred["label"] == want_labels[int(np.argmax(scores))], ctx
        assert pred["score"] == pytest.approx(float(scores.max()), abs=1e-5), ctx
        assert len(pred["candidates"]) == len(want_labels), ctx

        # Every record's stored example file is there with its content; other files only from killed adds.
        if outcome == "before":
            self.garbage_ok |= set(keys)
        referenced = {row.blob for row in now.values()}
        for key in referenced:
            p = self.ix / key
            assert p.is_file() and sha256_file(p) == Path(key).stem, f"{ctx}: example file {key} bad"
        on_disk = {p.relative_to(self.ix).as_posix() for p in (self.ix / "examples").rglob("*")
                   if p.is_file() and not p.name.endswith(".tmp")}
        orphans = on_disk - referenced
        assert orphans <= self.garbage_ok, f"{ctx}: unexpected files {sorted(orphans - self.garbage_ok)}"
        temps = [p for p in self.ix.rglob("*.tmp")]
        with h.stats_lock:
            h.stats.outcomes[outcome] += killed
            h.stats.left_temp_files += bool(temps) and killed
            h.stats.left_orphan_blobs += bool(orphans & set(keys)) and killed

        # The next open by a writer cleans temporary files and brings the derived files up to date.
        time.sleep(max(0.0, t_kill + 1.1 - time.monotonic()))  # temp files younger than 1 s are spared
        with FewShotIndex.open(self.ix, encoder=h.encoder) as idx:
            assert idx.store.verify() == [], ctx
        leftover = [p.name for p in self.ix.rglob("*.tmp")]
        assert not leftover, f"{ctx}: temp files survived a writer's open: {leftover}"
        self.state = now

    # ------------------------------------------------------------------ lane end

    def final_checks(self) -> None:
        h, ctx = self.h, self.ctx()
        if self.n == 0:  # the installed script too, in a process of its own (once: each costs a torch import)
            env = {**os.environ, "FEWSHOT_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
            for args in (["info", str(self.ix), "--json"], ["classify", str(self.ix), str(self.probe), "--json"]):
                p = subprocess.run([fewshot_exe(), *args], capture_output=True, text=True, env=env, timeout=600)
                assert p.returncode == 0 and p.stderr == "", (ctx, p.stderr)
                json.loads(p.stdout)
            with h.stats_lock:
                h.stats.cli_checks += 2
        with h.lock:
            report = check(str(self.ix), sample=None, repair=True, min_age_s=0)
            assert report["healthy"], (ctx, report)
            report = check(str(self.ix), sample=None)
            assert report["healthy"] and report["stats"]["orphan_blobs"] == 0, (ctx, report)
            assert report["stats"]["temp_files"] == 0, (ctx, report)
            assert self.read_state() == self.state, ctx


def run_soak(tmp_path: Path, kills: int, budget_s: float) -> Stats:
    from fewshot import encoders

    seed = int(os.environ.get("FEWSHOT_CRASH_SEED", random.randrange(2**31)))
    h = Harness(encoders.load("omniglot-conv4"), tmp_path, kills, seed, time.monotonic() + budget_s)
    lanes = [Lane(h, n) for n in range(LANES)]
    errors: list[BaseException] = []

    def work(lane: Lane) -> None:
        try:
            lane.run()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)
            h.target = -1  # stop the other lanes

    threads = [threading.Thread(target=work, args=(lane,), daemon=True) for lane in lanes]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    s = h.stats
    print(f"\ncrash soak (seed {seed}): {s.kills} SIGKILLs survived in {time.monotonic() - t0:.0f}s "
          f"({LANES} lanes); outcomes {dict(s.outcomes)}; {s.write_phase_kills} kills after the first fsync, "
          f"{s.left_temp_files} left temp files, {s.left_orphan_blobs} left uncommitted example files; "
          f"{s.completed} adds finished before their kill; {s.cli_checks} real info/classify runs; "
          f"an add takes ~{h.est_total:.1f}s and {h.fsyncs} fsyncs")
    assert s.kills >= kills
    return s


def test_writer_open_sweeps_dead_temp_files_and_spares_live_ones(tmp_path):
    """A copy in progress holds a lock on its temp file; one whose writer died holds none."""
    import fcntl

    from index import BlobStore, FaissStore

    FaissStore.create(tmp_path / "ix", 4).close()
    root = tmp_path / "ix" / "examples"
    root.mkdir()
    dead, live, young = (root / f".incoming.{n}.tmp" for n in ("dead00000000", "live00000000", "young0000000"))
    for p in (dead, live, young):
        p.write_bytes(b"partial copy")
    old = time.time() - 60
    os.utime(dead, (old, old))
    os.utime(live, (old, old))
    fd = os.open(live, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # its writer is alive
    try:
        FaissStore.open(tmp_path / "ix").close()
        assert not dead.exists() and live.exists() and young.exists()
    finally:
        os.close(fd)
    assert BlobStore(tmp_path / "ix").sweep_temps(min_age_s=0) == 2
    assert not any(root.iterdir())


def test_sigkill_fewshot_add_at_random_moments(tmp_path):
    s = run_soak(tmp_path, CI_KILLS, budget_s=1500)
    # The kills covered the write phase (not only the interpreter start) and both outcomes.
    assert s.write_phase_kills >= CI_KILLS // 5, s
    assert s.outcomes["before"] > 0 and s.outcomes["after"] > 0, s


@pytest.mark.slow
def test_sigkill_soak(tmp_path):
    kills = int(os.environ.get("FEWSHOT_SOAK", "500"))
    s = run_soak(tmp_path, kills, budget_s=float(os.environ.get("FEWSHOT_SOAK_BUDGET_S", 6 * 3600)))
    assert s.outcomes["before"] > 0 and s.outcomes["after"] > 0, s
