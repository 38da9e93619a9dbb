"""Fine-tuning: the new encoder file, each loss learning, freezing, interrupt + resume,
the atomic switch of an index (with failures injected midway), data sources and the CLI.

Everything runs on a tiny random Conv-4 (width 8) and synthetic 28x28 classes, so
the whole file takes seconds on one CPU thread.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import fewshot.train.loop
from fewshot import encoders
from fewshot.data.dataset import LabelledSet
from fewshot.encoders.base import TorchImageEncoder
from fewshot.encoders.conv import ConvNet
from fewshot.encoders.preprocess import ImagePreprocess
from fewshot.errors import FewShotError, InputError
from fewshot.evaluation import evaluate
from fewshot.fewshot_index import FewShotIndex
from fewshot.finetune import (encoder_blocks, finetune, freeze_blocks, parse_classes, split_classes,
                              switch_index)
from helpers import cli_with

torch.set_num_threads(1)
FAST = dict(steps=24, ways=4, queries=3, lr=3e-3, expand="none", val_fraction=0, checkpoint_every=5,
            progress=False, warmup=2)


def synthetic(n_classes: int = 8, per: int = 10, seed: int = 0) -> LabelledSet:
    """Each class a random 4x4 pattern of 6-pixel cells on a 28x28 canvas, shifted and noisy per image."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for c in range(n_classes):
        pattern = rng.random((4, 4)) < 0.45
        base = np.kron(pattern, np.ones((6, 6))) * 255
        for _ in range(per):
            canvas = np.zeros((28, 28))
            dy, dx = rng.integers(0, 5, size=2)
            canvas[dy:dy + 24, dx:dx + 24] = base
            canvas = np.clip(canvas + rng.normal(0, 40, canvas.shape), 0, 255)
            images.append(canvas.astype(np.uint8))
            labels.append(f"c{c}")
    return LabelledSet(np.stack(images), labels)


@pytest.fixture(scope="module")
def data() -> LabelledSet:
    return synthetic()


@pytest.fixture(scope="module")
def base_path(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    enc = TorchImageEncoder("tiny", ConvNet(1, 8, 4), 8, ImagePreprocess(size=28), "conv",
                            {"in_channels": 1, "width": 8, "depth": 4})
    path = tmp_path_factory.mktemp("enc") / "tiny.pt"
    enc.save(path)
    return path


def tree_hash(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


def make_index(tmp_path: Path, encoder_path: Path, data: LabelledSet, per: int = 2) -> Path:
    root = tmp_path / "idx"
    with FewShotIndex.create(root, encoder=encoders.load(str(encoder_path))) as idx:
        pairs = []
        for c in data.classes:
            imgs = [data.items[i] for i, lab in enumerate(data.labels) if lab == c][:per]
            pairs.append((c, imgs))
        idx.add_many(pairs)
    return root


# --- the output encoder ------------------------------------------------------------------------
def test_finetune_writes_a_weights_only_encoder_with_a_new_fingerprint(tmp_path, base_path, data):
    before = hashlib.sha256(base_path.read_bytes()).hexdigest()
    out = tmp_path / "ft.pt"
    res = finetune(str(base_path), data, out=out, **FAST)
    base = encoders.load(str(base_path))
    assert res.encoder.fingerprint != base.fingerprint
    payload = torch.load(out, map_location="cpu", weights_only=True)
    assert payload["config"]["format"] == "fewshot-encoder" and set(payload["state_dict"]) == \
        set(base.module.state_dict())
    again = encoders.load(str(out))
    assert again.fingerprint == res.encoder.fingerprint and again.name == "ft"
    assert json.loads(out.with_suffix(".json").read_text())["fingerprint"] == res.encoder.fingerprint
    x = np.stack([data.items[0], data.items[1]])
    np.testing.assert_allclose(again.embed(list(x)), res.encoder.embed(list(x)), atol=1e-5)
    assert hashlib.sha256(base_path.read_bytes()).hexdigest() == before  # the base file is untouched
    assert not (tmp_path / "ft.pt.run").exists()  # checkpoints are scratch once the encoder is written
    assert res.summary["step"] == 24 and res.summary["base_fingerprint"] == base.fingerprint


def test_an_encoder_object_is_left_unchanged(tmp_path, base_path, data):
    base = encoders.load(str(base_path))
    fp, w = base.fingerprint, base.module.features[0][0].weight.clone()
    res = finetune(base, data, out=tmp_path / "ft.pt", **FAST)
    assert res.encoder.fingerprint != fp
    assert base.fingerprint == fp and torch.equal(base.module.features[0][0].weight, w)
    with pytest.raises(InputError, match="out="):
        finetune(base, data, **FAST)


@pytest.mark.parametrize("loss", ["proto", "triplet", "supcon"])
def test_each_loss_falls_and_accuracy_on_unseen_classes_rises(tmp_path, base_path, loss):
    data = synthetic(n_classes=12, per=10, seed=1)
    train = data.subset([i for i, lab in enumerate(data.labels) if int(lab[1:]) < 8])
    unseen = data.subset([i for i, lab in enumerate(data.labels) if int(lab[1:]) >= 8])
    res = finetune(str(base_path), train, loss=loss, out=tmp_path / "ft.pt", keep_run=True,
                   **{**FAST, "steps": 60, "lr": 1e-2, "checkpoint_every": 10})
    log = [json.loads(line) for line in (tmp_path / "ft.pt.run" / "log.jsonl").read_text().splitlines()]
    floor = np.log(FAST["queries"]) if loss == "supcon" else 0.0  # SupCon's minimum: log(positives per anchor)
    assert log[-1]["loss"] - floor < 0.7 * (log[0]["loss"] - floor), log
    before = evaluate(str(base_path), unseen, 4, 1, 5, 100, seed=0, progress=False).accuracy
    after = evaluate(res.encoder, unseen, 4, 1, 5, 100, seed=0, progress=False).accuracy
    assert after > before + 0.1, (loss, before, after)


def test_validation_classes_are_held_out_and_pick_the_best_weights(tmp_path, base_path, data):
    res = finetune(str(base_path), data, out=tmp_path / "ft.pt", keep_run=True,
                   **{**FAST, "val_fraction": 0.25, "val_every": 6, "patience": 2})
    s = res.summary
    assert len(s["val_classes"]) == 2 and not set(s["val_classes"]) & set(s["train_classes"])
    assert 0 < s["best_val_acc"] <= 1
    best = torch.load(tmp_path / "ft.pt.run" / "best.pt", weights_only=True)
    for k, v in best.items():
        assert torch.equal(v, res.encoder.module.state_dict()[k])


def test_early_stopping_stops_a_run_that_stopped_improving(tmp_path, base_path, data):
    res = finetune(str(base_path), data, out=tmp_path / "ft.pt",
                   **{**FAST, "steps": 400, "lr": 1e-9, "val_fraction": 0.25, "val_every": 2, "patience": 2})
    assert res.summary["stopped_early"] and res.summary["step"] < 400


# --- freezing ------------------------------------------------------------------------------------
def test_train_last_freezes_earlier_blocks_including_their_batchnorm_statistics(tmp_path, base_path, data):
    base = encoders.load(str(base_path))
    res = finetune(str(base_path), data, out=tmp_path / "ft.pt", train_last=1, **FAST)
    old, new = base.module.state_dict(), res.encoder.module.state_dict()
    changed = {k for k in old if not torch.equal(old[k], new[k])}
    assert changed and all(k.startswith("features.3.") for k in changed), changed
    assert "features.3.1.running_mean" in changed  # the trained block's BatchNorm adapts
    assert res.summary["trainable_blocks"] == 1 and res.summary["blocks"] == 4


def test_freeze_options_are_checked():
    m = ConvNet(1, 4, 4)
    assert len(encoder_blocks(m)) == 4
    params, frozen, n, k = freeze_blocks(m, freeze_until=3)
    assert (n, k) == (4, 3) and len(params) == 3 and all(not p.requires_grad for mod in frozen
                                                          for p in mod.parameters())
    for bad in ({"train_last": 0}, {"train_last": 5}, {"freeze_until": 4}, {"train_last": 1, "freeze_until": 1}):
        with pytest.raises(InputError):
            freeze_blocks(ConvNet(1, 4, 4), **bad)


# --- interrupt and resume ----------------------------------------------------------------------
def _interrupt_at(monkeypatch, at_step: int) -> None:
    real = fewshot.train.loop.lr_at

    def lr_at(step, cfg):
        if step == at_step:
            raise KeyboardInterrupt
        return real(step, cfg)

    monkeypatch.setattr(fewshot.train.loop, "lr_at", lr_at)


def test_ctrl_c_keeps_the_last_checkpoint_and_the_index_and_resume_continues(tmp_path, base_path, data,
                                                                              monkeypatch):
    idx = make_index(tmp_path, base_path, data)
    before = tree_hash(idx)
    out = tmp_path / "ft.pt"
    _interrupt_at(monkeypatch, 13)
    with pytest.raises(KeyboardInterrupt):
        finetune(str(base_path), data, out=out, into=idx, **FAST)
    monkeypatch.undo()
    last = torch.load(tmp_path / "ft.pt.run" / "last.pt", weights_only=True)
    assert last["step"] == 10 and not out.exists()  # the checkpoint before the interrupt; no half encoder
    assert tree_hash(idx) == before
    with pytest.raises(FewShotError, match="--resume"):  # an unfinished run is never silently overwritten
        finetune(str(base_path), data, out=out, **FAST)
    resumed = finetune(str(base_path), data, out=out, into=idx, resume=True, **FAST)
    straight = finetune(str(base_path), data, out=tmp_path / "straight.pt", **FAST)
    a, b = resumed.encoder.module.state_dict(), straight.encoder.module.state_dict()
    for k in a:  # episodes, augmentation and optimizer state all continue exactly
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    with FewShotIndex.open(idx) as opened:
        assert opened.encoder.fingerprint == resumed.encoder.fingerprint


def test_resume_refuses_different_options_and_fresh_starts_over(tmp_path, base_path, data, monkeypatch):
    out = tmp_path / "ft.pt"
    _interrupt_at(monkeypatch, 7)
    with pytest.raises(KeyboardInterrupt):
        finetune(str(base_path), data, out=out, **FAST)
    monkeypatch.undo()
    with pytest.raises(FewShotError, match="loss"):
        finetune(str(base_path), data, out=out, resume=True, loss="triplet", **FAST)
    res = finetune(str(base_path), data, out=out, fresh=True, **FAST)
    assert res.summary["step"] == 24 and out.exists()


# --- switching an index ------------------------------------------------------------------------
def test_into_switches_the_index_and_it_still_classifies(tmp_path, base_path, data):
    idx = make_index(tmp_path, base_path, data)
    res = finetune(str(base_path), data, out=tmp_path / "ft.pt", into=idx, **FAST)
    info = res.summary["into"]
    assert info["reembedded"] == 16 and info["fingerprint"] == res.encoder.fingerprint != info["old_fingerprint"]
    with FewShotIndex.open(idx) as opened:  # loads the new encoder from the path the manifest records
        assert opened.encoder.fingerprint == res.encoder.fingerprint and opened.info()["count"] == 16
        preds = opened.classify([data.items[5]])
        assert preds[0].label in data.classes


def test_data_index_trains_on_the_index_own_examples(tmp_path, base_path, data):
    idx = make_index(tmp_path, base_path, data, per=4)
    res = finetune(str(base_path), "index", into=idx, out=tmp_path / "ft.pt", **{**FAST, "queries": 3})
    assert res.summary["train_classes"] == data.classes and res.summary["into"]["reembedded"] == 32
    with pytest.raises(InputError, match="into"):
        finetune(str(base_path), "index", out=tmp_path / "x.pt", **FAST)


@pytest.mark.parametrize("where", ["embed", "commit"])
def test_a_failure_midway_through_the_switch_leaves_the_index_intact(tmp_path, base_path, data, monkeypatch,
                                                                      where):
    idx = make_index(tmp_path, base_path, data)
    old_fp = encoders.load(str(base_path)).fingerprint
    before = tree_hash(idx)
    new = finetune(str(base_path), data, out=tmp_path / "ft.pt", **FAST).encoder
    if where == "embed":  # the new encoder dies after its first batch
        calls = {"n": 0}
        real = TorchImageEncoder.embed_tensor

        def flaky(self, x):
            calls["n"] += 1
            if calls["n"] > 1:
                raise RuntimeError("injected failure while embedding")
            return real(self, x)

        monkeypatch.setattr(TorchImageEncoder, "embed_tensor", flaky)
        monkeypatch.setattr(FewShotIndex, "reindex", _small_batches(FewShotIndex.reindex))
    else:  # the store dies inside its write transaction, after the vectors were updated
        from index.sqlite_meta import MetaDB

        def boom(self, *a, **k):
            raise RuntimeError("injected failure inside the commit")

        monkeypatch.setattr(MetaDB, "replace_classes", boom)
    with pytest.raises(RuntimeError, match="injected"):
        switch_index(idx, new)
    monkeypatch.undo()
    assert tree_hash(idx) == before
    with FewShotIndex.open(idx) as opened:
        assert opened.encoder.fingerprint == old_fp and opened.store.extra["fingerprint"] == old_fp
        assert opened.store.verify() == [] and opened.classify([data.items[0]])[0].label in data.classes
    assert switch_index(idx, new)["fingerprint"] == new.fingerprint  # and the switch works afterwards


def test_finetune_into_that_fails_keeps_the_index_and_says_how_to_retry(tmp_path, base_path, data, monkeypatch):
    idx = make_index(tmp_path, base_path, data)
    before = tree_hash(idx)
    from index.sqlite_meta import MetaDB

    def boom(self, *a, **k):
        raise RuntimeError("injected")

    monkeypatch.setattr(MetaDB, "update_vectors", boom)
    with pytest.raises(FewShotError, match="index is unchanged; retry with `fewshot reindex"):
        finetune(str(base_path), data, out=tmp_path / "ft.pt", into=idx, **FAST)
    monkeypatch.undo()
    assert tree_hash(idx) == before and (tmp_path / "ft.pt").exists()


def _small_batches(reindex):
    def wrapped(self, encoder=None, progress=False, batch_size=256):
        return reindex(self, encoder, progress=progress, batch_size=4)
    return wrapped


# --- data -------------------------------------------------------------------------------------
def test_parse_classes():
    avail = [str(i) for i in range(10)] + ["Greek/a", "Greek/b", "Latin/a"]
    assert parse_classes("0-4", avail) == ["0", "1", "2", "3", "4"]
    assert parse_classes("7,2", avail) == ["2", "7"]
    assert parse_classes("Greek/*", avail) == ["Greek/a", "Greek/b"]
    assert parse_classes(None, avail) == sorted(avail)
    assert parse_classes(["Latin/a", "3"], avail) == ["3", "Latin/a"]
    with pytest.raises(InputError, match="no class matches 'Cyrillic"):
        parse_classes("Cyrillic/*", avail)


def test_split_classes_is_seeded_disjoint_and_checked():
    cls = [f"c{i}" for i in range(10)]
    tr, va = split_classes(cls, 0.2, seed=3)
    assert len(va) == 2 and sorted(tr + va) == cls and split_classes(cls, 0.2, seed=3) == (tr, va)
    assert split_classes(cls, 0, seed=0) == (cls, [])
    with pytest.raises(InputError, match="too few"):
        split_classes(cls[:3], 0.5, seed=0)


def test_class_per_folder_data_and_dihedral_expansion(tmp_path, base_path, data):
    root = tmp_path / "classes"
    for i, (img, lab) in enumerate(zip(data.items, data.labels)):
        if lab in ("c0", "c1", "c2"):
            (root / lab).mkdir(parents=True, exist_ok=True)
            Image.fromarray(255 - img).save(root / lab / f"{i}.png")  # dark ink on white, as scanned
    res = finetune(str(base_path), str(root), out=tmp_path / "ft.pt", expand="dihedral",
                   **{k: v for k, v in FAST.items() if k != "expand"} | {"steps": 4})
    assert res.summary["train_classes"] == ["c0", "c1", "c2"] and res.summary["expand"] == "dihedral"
    assert res.summary["n_train_images"] == 8 * 30


def test_an_rgb_encoder_trains_on_colour_folders_without_class_expansion(tmp_path, data):
    torch.manual_seed(0)
    enc = TorchImageEncoder("tiny-rgb", ConvNet(3, 8, 4), 8, ImagePreprocess(size=28, channels=3, invert="never"),
                            "conv", {"in_channels": 3, "width": 8, "depth": 4})
    root = tmp_path / "colour"
    for i, (img, lab) in enumerate(zip(data.items, data.labels)):
        (root / lab).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.stack([img, img // 2, 255 - img], -1)).save(root / lab / f"{i}.png")
    res = finetune(enc, str(root), out=tmp_path / "rgb.pt", **{k: v for k, v in FAST.items() if k != "expand"})
    assert res.summary["expand"] == "none" and res.summary["n_train_images"] == len(data)
    assert encoders.load(str(tmp_path / "rgb.pt")).preprocess.channels == 3


# --- CLI ---------------------------------------------------------------------------------------
@pytest.fixture()
def cli():
    from fewshot.commands.finetune import command

    yield from cli_with(command)


def _dump_folder(root: Path, data: LabelledSet) -> Path:
    for i, (img, lab) in enumerate(zip(data.items, data.labels)):
        (root / lab).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / lab / f"{i}.png")
    return root


def test_cli_finetune_json_and_into(tmp_path, base_path, data, cli, monkeypatch):
    monkeypatch.setenv("FEWSHOT_NO_PROGRESS", "1")
    folder = _dump_folder(tmp_path / "data", data)
    idx = make_index(tmp_path, base_path, data)
    out = tmp_path / "ft.pt"
    r = CliRunner().invoke(cli, ["finetune", "--encoder", str(base_path), "--data", str(folder), "--classes",
                                 "c0,c1,c2,c3,c4,c5", "--steps", "8", "--ways", "4", "--queries", "3",
                                 "--expand", "none", "--val-fraction", "0", "--loss", "supcon",
                                 "--out", str(out), "--into", str(idx), "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["loss"] == "supcon" and d["path"] == str(out) and d["into"]["reembedded"] == 16
    assert d["train_classes"] == [f"c{i}" for i in range(6)]
    assert encoders.load(str(out)).fingerprint == d["fingerprint"]
    r = CliRunner().invoke(cli, ["finetune", "--encoder", str(base_path), "--data", str(folder), "--steps", "4",
                                 "--expand", "none", "--val-fraction", "0", "--out", str(tmp_path / "b.pt")])
    assert r.exit_code == 0 and "wrote" in r.stdout and "fingerprint" in r.stdout


@pytest.mark.parametrize("args,code,msg", [
    (["--train-last", "1", "--freeze-until", "1"], 2, "not both"),
    (["--queries", "3", "--batch-size", "12"], 2, "not both"),
    (["--margin", "0.3"], 2, "--loss triplet"),
    (["--loss", "arcface"], 2, "arcface"),
    (["--classes", "zz"], 1, "no class matches"),
    (["--train-last", "9"], 1, "between 1 and 4"),
])
def test_cli_errors_are_one_line(tmp_path, base_path, data, cli, args, code, msg):
    folder = _dump_folder(tmp_path / "data", synthetic(3, 6))
    r = CliRunner().invoke(cli, ["finetune", "--encoder", str(base_path), "--data", str(folder),
                                 "--val-fraction", "0", "--out", str(tmp_path / "x.pt"), *args])
    assert r.exit_code == code, r.output
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and msg in err[0], r.stderr
    assert "Traceback" not in r.output


def test_cli_data_index_needs_into(tmp_path, cli):
    r = CliRunner().invoke(cli, ["finetune", "--data", "index", "--out", str(tmp_path / "x.pt")])
    assert r.exit_code == 2 and "--into" in r.stderr


def test_the_digits_demo_runs_end_to_end(tmp_path):
    """A tiny run of demos/finetune_digits.py (the real numbers come from its default settings)."""
    import subprocess
    import sys

    png = tmp_path / "plot.png"
    r = subprocess.run([sys.executable, "demos/finetune_digits.py", "--steps", "3", "--episodes", "20",
                        "--losses", "proto,triplet", "--threads", "1", "--plot", str(png), "--json",
                        "--max-per-class", "12", "--queries", "5"],
                       cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    d = json.loads(r.stdout)
    for key in ("frozen", "finetuned"):
        assert 0 <= d[key]["accuracy"] <= 1 and d[key]["ci95"] > 0
    assert set(d["per_loss"]) == {"proto", "triplet"} and d["protocol"]["episodes"] == 20
    assert d["finetuned"]["fingerprint"] != d["frozen"]["fingerprint"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_kill_9_mid_run_leaves_a_resumable_checkpoint_and_the_index_untouched(tmp_path, base_path, data):
    """A real SIGKILL of a fine-tune in another process (not a polite Ctrl-C), then --resume."""
    import os
    import signal
    import subprocess
    import sys
    import time

    folder = _dump_folder(tmp_path / "data", data)
    idx = make_index(tmp_path, base_path, data)
    before = tree_hash(idx)
    out, run = tmp_path / "ft.pt", tmp_path / "ft.pt.run"
    script = ("import sys, torch; torch.set_num_threads(1); from fewshot.finetune import finetune; "
              f"finetune({str(base_path)!r}, {str(folder)!r}, out={str(out)!r}, into={str(idx)!r}, "
              "steps=100000, ways=4, queries=3, expand='none', val_fraction=0, checkpoint_every=5, "
              "progress=False, resume='--resume' in sys.argv)")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2])
    try:
        deadline = time.time() + 120
        while not (run / "last.pt").exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(0.3)  # let it run on, possibly into the middle of the next checkpoint write
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists() and tree_hash(idx) == before
    step = torch.load(run / "last.pt", weights_only=True)["step"]  # complete, whatever the moment of the kill
    assert step >= 5 and step % 5 == 0
    res = finetune(str(base_path), str(folder), out=out, into=idx, resume=True, steps=step + 5, ways=4,
                   queries=3, expand="none", val_fraction=0, checkpoint_every=5, progress=False)
    assert res.summary["step"] == step + 5
    with FewShotIndex.open(idx) as opened:
        assert opened.encoder.fingerprint == res.encoder.fingerprint


def test_fewshot_index_finetune_switches_the_index(tmp_path):
    """FewShotIndex.finetune: trains on the index's own examples, then re-embeds them atomically."""
    import numpy as np

    from fewshot import FewShotIndex
    from fewshot.data import load_digits

    ds = load_digits()
    imgs = ds.items
    labels = list(ds.labels)
    idx = FewShotIndex.create(tmp_path / "idx")
    for c in sorted(set(labels))[:4]:
        picks = [i for i, lab in enumerate(labels) if lab == c][:6]
        idx.add(str(c), [imgs[i] for i in picks])
    before = idx.info()["fingerprint"]
    res = idx.finetune("index", out=tmp_path / "ft.pt", steps=4, val_fraction=0, progress=False)
    after = idx.info()
    assert after["fingerprint"] == res.encoder.fingerprint != before
    assert after["count"] == 24 and (tmp_path / "ft.pt").exists()
    assert isinstance(idx.classify([imgs[0]])[0].label, str)
    assert np.isfinite(idx.embed([imgs[0], imgs[1]])).all()


# --- few examples per class (issue 16 item 5) ---------------------------------------------------
@pytest.mark.parametrize("per", [3, 1])
def test_finetune_an_index_whose_classes_have_few_examples(tmp_path, base_path, cli, monkeypatch, per):
    """6 classes x 3 examples, and x 1 example: the `--data index` example of the help works as is."""
    monkeypatch.setenv("FEWSHOT_NO_PROGRESS", "1")
    idx = make_index(tmp_path, base_path, synthetic(6, per), per=per)
    out = tmp_path / "ft.pt"
    r = CliRunner().invoke(cli, ["finetune", "--encoder", str(base_path), "--data", "index", "--into", str(idx),
                                 "--out", str(out), "--steps", "4", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout, parse_constant=lambda name: pytest.fail(f"not JSON: {name}"))
    assert d["into"]["reembedded"] == 6 * per and d["queries"] == max(1, per - 1)
    if per == 1:
        assert d["val_classes"] == [] and d["val_acc"] is None
        assert any("no validation" in n for n in d["notes"]) and any("two augmented views" in n for n in d["notes"])
    else:
        assert len(d["val_classes"]) == 2 and 0 <= d["best_val_acc"] <= 1
        assert any("2 queries per class" in n for n in d["notes"])
    text = CliRunner().invoke(cli, ["finetune", "--encoder", str(base_path), "--data", "index", "--into", str(idx),
                                    "--out", str(tmp_path / "again.pt"), "--steps", "2"])
    assert text.exit_code == 0, text.output
    assert "note:" in text.stdout


def test_finetune_device(tmp_path, base_path, data):
    """``device=``: a bad name fails before any work; on a GPU the result equals a CPU encoder file."""
    with pytest.raises(InputError, match="unknown device"):
        finetune(str(base_path), data, out=tmp_path / "bad.pt", device="gpu0", **FAST)
    assert not (tmp_path / "bad.pt").exists() and not (tmp_path / "bad.pt.run").exists()
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA GPU on this machine: the cuda run is checked where one is")
    res = finetune(str(base_path), data, out=tmp_path / "gpu.pt", device="cuda", **FAST)
    assert all(p.device.type == "cpu" for p in res.encoder.module.parameters())
    assert encoders.load(str(tmp_path / "gpu.pt")).fingerprint == res.encoder.fingerprint
