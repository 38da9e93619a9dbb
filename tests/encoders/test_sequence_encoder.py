"""RNN sequence encoders: packing, saving, the registry, the index and CLI on sequences, training, evaluation."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fewshot import encoders
from fewshot.data.dataset import LabelledSet
from fewshot.encoders.fusion import FusionEncoder
from fewshot.encoders.sequence import (SequenceRNN, TorchSequenceEncoder, new_sequence_encoder,
                                       pack_batch)
from fewshot.errors import EncoderError, InputError
from fewshot.sequences import SequencePreprocess, strokes_to_array

STROKES = "omniglot-strokes-gru"


def shape_strokes(kind: int, rng: np.random.Generator, noise: float = 1.5) -> np.ndarray:
    """A hand-drawn-looking example of one of a few distinct shapes, in Omniglot's canvas frame."""
    t = np.linspace(0, 1, int(rng.integers(25, 60)))[:, None]
    if kind == 0:  # horizontal bar
        ss = [np.hstack([20 + 60 * t, -50 + 0 * t])]
    elif kind == 1:  # circle
        ss = [np.hstack([52 + 25 * np.cos(6.28 * t), -52 + 25 * np.sin(6.28 * t)])]
    elif kind == 2:  # cross: two strokes
        ss = [np.hstack([20 + 60 * t, -20 - 60 * t]), np.hstack([20 + 60 * t, -80 + 60 * t])]
    elif kind == 3:  # zigzag
        ss = [np.hstack([20 + 60 * t, -50 + 20 * np.sign(np.sin(18 * t))])]
    else:  # vertical bar then dot
        ss = [np.hstack([50 + 0 * t, -20 - 60 * t]), np.array([[70.0, -85.0]])]
    return strokes_to_array([(s + rng.normal(0, noise, s.shape)).astype(np.float32) for s in ss])


def stroke_text(a: np.ndarray) -> str:
    lines = ["START"]
    for i, row in enumerate(a):
        lines.append(f"{row[0]:.4f},{row[1]:.4f},{10 * i}")
        if row[2] > 0.5:
            lines.append("BREAK")
    return "\n".join(lines) + "\n"


def shapes_dataset(n_per: int = 6, kinds: int = 5, seed: int = 0) -> LabelledSet:
    rng = np.random.default_rng(seed)
    seqs, labels, groups = [], [], []
    for k in range(kinds):
        for _ in range(n_per):
            seqs.append(shape_strokes(k, rng))
            labels.append(f"g{k % 2}/shape{k}")
            groups.append(f"g{k % 2}")
    return LabelledSet(seqs, labels, groups)


@pytest.fixture(scope="module")
def stroke_files(tmp_path_factory) -> dict[str, list[Path]]:
    root = tmp_path_factory.mktemp("strokes")
    rng = np.random.default_rng(3)
    files: dict[str, list[Path]] = {}
    for k, name in enumerate(["bar", "circle", "cross"]):
        d = root / name
        d.mkdir()
        files[name] = []
        for i in range(3):
            p = d / f"{i}.txt"
            p.write_text(stroke_text(shape_strokes(k, rng)))
            files[name].append(p)
    return files


def small_encoder(cell: str = "gru", pooling: str = "attention", bidirectional: bool = True,
                  **kw) -> TorchSequenceEncoder:
    torch.manual_seed(0)
    return new_sequence_encoder("test-rnn", SequencePreprocess(**kw), cell=cell, pooling=pooling,
                                bidirectional=bidirectional, hidden=16, layers=2, dim=8)


# --- the module and packing --------------------------------------------------------------------
@pytest.mark.parametrize("cell, pooling, bidirectional", [
    ("gru", "attention", True), ("gru", "mean", False), ("lstm", "last", True), ("lstm", "attention", False)])
def test_packing_unequal_lengths_is_exact(cell, pooling, bidirectional):
    """A sequence embeds the same alone and in a batch with longer ones: padding never leaks in."""
    enc = small_encoder(cell, pooling, bidirectional, kind="series", n_features=3)
    rng = np.random.default_rng(0)
    seqs = [rng.normal(size=(n, 3)).astype(np.float32) for n in (5, 40, 1, 17)]
    together = enc.embed(seqs, batch_size=4)
    alone = np.stack([enc.embed([s])[0] for s in seqs])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert together.shape == (4, 8) and together.dtype == np.float32
    # batches of 3 then 1: the prefetching path gives the same numbers
    np.testing.assert_allclose(enc.embed(seqs, batch_size=3), together, atol=1e-6)


@pytest.mark.parametrize("cell, layers", [("gru", 2), ("lstm", 1)])
def test_rnn_equals_a_packed_torch_rnn(cell, layers):
    """Per-direction RNNs over the padded batch give exactly what a packed nn.GRU/nn.LSTM gives."""
    from torch.nn.utils.rnn import pad_packed_sequence

    torch.manual_seed(0)
    m = SequenceRNN(3, hidden=6, layers=layers, cell=cell, bidirectional=True, dim=0)
    ref = getattr(torch.nn, cell.upper())(3, 6, num_layers=layers, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for i in range(layers):
            for d, suffix in ((m.fwd[i], ""), (m.bwd[i], "_reverse")):
                for name, p in d.named_parameters():
                    getattr(ref, name.replace("_l0", f"_l{i}") + suffix).copy_(p)
    arrays = [np.random.default_rng(k).normal(size=(n, 3)).astype(np.float32) for k, n in enumerate((7, 2, 11))]
    packed = pack_batch(arrays)
    want, lengths = pad_packed_sequence(ref(packed)[0], batch_first=True)
    pad, _ = pad_packed_sequence(packed, batch_first=True)
    got = m.run(pad, lengths)
    for b, n in enumerate(lengths):
        torch.testing.assert_close(got[b, :n], want[b, :n], atol=1e-5, rtol=1e-5)


def test_pack_batch_keeps_every_step():
    arrays = [np.ones((n, 2), np.float32) for n in (3, 9, 1)]
    packed = pack_batch(arrays)
    assert packed.data.shape == (13, 2)
    with pytest.raises(InputError):
        pack_batch([np.zeros((0, 2), np.float32)])


def test_bad_module_options_are_refused():
    with pytest.raises(ValueError, match="cell"):
        SequenceRNN(3, cell="rnn")
    with pytest.raises(ValueError, match="pooling"):
        SequenceRNN(3, pooling="max")


# --- saving, loading, fingerprints ---------------------------------------------------------------
def test_save_and_load_round_trip(tmp_path):
    enc = small_encoder(kind="series", n_features=2, mean=(1.0, 2.0), std=(3.0, 4.0))
    path = enc.save(tmp_path / "enc.pt")
    assert json.loads(path.with_suffix(".json").read_text())["input_kind"] == "sequence"
    again = encoders.load(str(path))
    assert isinstance(again, TorchSequenceEncoder) and again.fingerprint == enc.fingerprint
    assert again.preprocess == enc.preprocess
    x = np.random.default_rng(0).normal(size=(12, 2)).astype(np.float32)
    np.testing.assert_allclose(again.embed([x]), enc.embed([x]), atol=1e-6)
    other = new_sequence_encoder("test-rnn", SequencePreprocess(kind="series", n_features=2), hidden=16,
                                 layers=2, dim=8)
    other.module.load_state_dict(enc.module.state_dict())
    assert other.fingerprint != enc.fingerprint  # same weights, other preprocessing


def test_a_corrupt_sequence_encoder_file_is_an_encoder_error(tmp_path):
    enc = small_encoder()
    payload = {"config": {**enc.config(), "arch_kwargs": {**enc.arch_kwargs, "hidden": 99}},
               "state_dict": enc.module.state_dict()}
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(EncoderError, match="not a loadable sequence encoder"):
        encoders.load(str(tmp_path / "bad.pt"))


def test_registry_lists_the_sequence_encoders():
    specs = {s.name: s for s in encoders.available()}
    assert specs[STROKES].input_kind == "sequence"
    assert {"rnn-gru", "rnn-lstm", "omniglot-strokes-fusion"} <= set(specs)
    enc = encoders.load(STROKES)
    assert enc.input_kind == "sequence" and enc.dim == specs[STROKES].dim
    assert enc.fingerprint == encoders.load(STROKES).fingerprint
    lstm = encoders.load("rnn-lstm")
    assert lstm.arch_kwargs["cell"] == "lstm" and lstm.fingerprint == encoders.load("rnn-lstm").fingerprint


# --- the library: FewShotIndex on strokes ------------------------------------------------------
def test_index_on_strokes_like_images(tmp_path, stroke_files):
    from fewshot import FewShotIndex

    with FewShotIndex.create(tmp_path / "idx", encoder=STROKES) as idx:
        assert idx.info()["input_kind"] == "sequence"
        for name, files in stroke_files.items():
            idx.add(name, files[:2])
        arr = shape_strokes(1, np.random.default_rng(9))
        idx.add("circle", arr)  # an in-memory array, stored as a .npy copy
        with pytest.raises(InputError, match="holds sequences"):
            png = tmp_path / "x.png"
            png.write_bytes(b"\x89PNG")
            idx.add("bar", png)
        from PIL import Image

        with pytest.raises(InputError, match="image cannot go into a sequence"):
            idx.add("bar", Image.new("L", (28, 28)))
    with FewShotIndex.open(tmp_path / "idx") as idx:
        queries = [files[2] for files in stroke_files.values()]
        preds = idx.classify(queries)
        assert [p.label for p in preds] == list(stroke_files)
        hits = idx.search(queries[1], k=3)[0].neighbors
        assert hits[0].label == "circle"
        before = idx.classify(queries)
        idx.reindex()  # from the stored copies (.txt and .npy blobs)
        after = idx.classify(queries)
        assert [p.score for p in before] == pytest.approx([p.score for p in after], abs=1e-5)


def test_index_on_series_with_csv_and_npy(tmp_path):
    from fewshot import FewShotIndex

    enc = small_encoder(kind="series", n_features=2)
    rng = np.random.default_rng(0)
    up = [np.stack([np.linspace(0, 1, n), np.linspace(0, 2, n)], 1) + rng.normal(0, .01, (n, 2)) for n in (20, 30, 25)]
    down = [a[::-1].copy() for a in up]
    np.save(tmp_path / "up.npy", up[0])
    (tmp_path / "down.csv").write_text("a,b\n" + "\n".join(f"{x},{y}" for x, y in down[0]))
    with FewShotIndex.create(tmp_path / "idx", encoder=enc) as idx:
        idx.add("up", tmp_path / "up.npy")
        idx.add("down", tmp_path / "down.csv")
        preds = idx.classify([up[1], down[2]])
        assert [p.label for p in preds] == ["up", "down"]
        with pytest.raises(InputError, match="reads 2 features per step, got 3"):
            idx.classify([np.zeros((5, 3))])


# --- the CLI -----------------------------------------------------------------------------------
def run(*args: str):
    from fewshot.cli import cli

    return CliRunner().invoke(cli, list(args), catch_exceptions=False, env={"FEWSHOT_NO_PROGRESS": "1"})


def test_cli_on_strokes(tmp_path, stroke_files):
    idx = str(tmp_path / "idx")
    r = run("init", idx, "--encoder", STROKES, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["input_kind"] == "sequence"
    for name, files in stroke_files.items():
        r = run("add", idx, "--label", name, *map(str, files[:2]), "--json")
        assert r.exit_code == 0, r.output
    r = run("classify", idx, str(stroke_files["cross"][2]), "--json")
    assert r.exit_code == 0 and json.loads(r.output)[0]["label"] == "cross"
    r = run("search", idx, str(stroke_files["bar"][2]), "-k", "2", "--json")
    assert r.exit_code == 0 and json.loads(r.output)[0]["neighbors"][0]["label"] == "bar"
    r = run("embed", str(stroke_files["bar"][0].parent), "--encoder", STROKES, "--json")
    out = json.loads(r.output)
    assert r.exit_code == 0 and len(out["embeddings"]) == 3 and len(out["embeddings"][0]["embedding"]) == out["dim"]
    bad = tmp_path / "bad.txt"
    bad.write_text("START\n1,2,3\n4,oops,6\n")
    r = run("classify", idx, str(bad))
    assert r.exit_code == 1 and "bad.txt, line 3" in r.output and "Traceback" not in r.output
    png = tmp_path / "a.png"
    png.write_bytes(b"\x89PNG\r\n")
    r = run("add", idx, "--label", "bar", str(png))
    assert r.exit_code == 1 and "holds sequences" in r.output
    r = run("info", idx, "--json")
    assert json.loads(r.output)["count"] == 6


# --- training and evaluation -------------------------------------------------------------------
def test_smoke_training_resumes_and_exports(tmp_path):
    from fewshot.train.export import export_sequence_encoder
    from fewshot.train.loop import SequenceTrainConfig
    from fewshot.train.recipes import train_model

    ds = shapes_dataset(n_per=6)
    pre = SequencePreprocess(resample=0.1)
    torch.manual_seed(0)
    model = SequenceRNN(pre.in_features, hidden=16, layers=1, dim=8)
    cfg = SequenceTrainConfig(ways=3, queries=2, steps=4, warmup=1, val_every=2, val_ways=3, val_episodes=5,
                              checkpoint_every=2, symmetries=4)
    before = [p.detach().clone() for p in model.parameters()]
    s = train_model(model, ds, tmp_path / "run", cfg, val=ds, pre=pre, progress=False)
    assert (tmp_path / "run" / "best.pt").exists() and (tmp_path / "run" / "last.pt").exists()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert 0 <= s["best_val_acc"] <= 1
    cfg.steps = 6  # resume: continues from step 4
    train_model(model, ds, tmp_path / "run", cfg, val=ds, pre=pre, progress=False)
    steps = [json.loads(x)["step"] for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]
    enc = export_sequence_encoder(tmp_path / "run" / "best.pt", tmp_path / "enc.pt", pre,
                                  {"in_features": 5, "hidden": 16, "layers": 1, "dim": 8}, "tiny", ds, s["scale"])
    loaded = encoders.load(str(tmp_path / "enc.pt"))
    assert loaded.fingerprint == enc.fingerprint and loaded.centre is not None and loaded.temperature > 0


def test_smoke_training_with_a_teacher(tmp_path):
    from fewshot.train.loop import SequenceTrainConfig
    from fewshot.train.recipes import train_model

    ds = shapes_dataset(n_per=3, kinds=3)
    pre = SequencePreprocess(resample=0.1)
    model = SequenceRNN(pre.in_features, hidden=8, layers=1, dim=8)
    cfg = SequenceTrainConfig(ways=3, queries=1, steps=2, warmup=1, checkpoint_every=2, symmetries=1,
                              teacher_views=2, within_group_fraction=0)
    train_model(model, ds, tmp_path / "run", cfg, pre=pre, teacher=encoders.load("omniglot-conv4"), progress=False)
    assert "distill" in torch.load(tmp_path / "run" / "last.pt", weights_only=True)


def test_evaluate_sequences_and_fusion_on_the_same_episodes():
    from fewshot.evaluation.fusion import evaluate_fusion, evaluate_sequences

    ds = shapes_dataset(n_per=6)
    enc = encoders.load(STROKES)
    r = evaluate_sequences(enc, ds, ways=5, shots=1, queries=3, episodes=20, seed=0)
    assert r["accuracy"] > 0.5 and r["ci95"] >= 0 and r["n_classes"] == 5
    rows = evaluate_fusion(enc, encoders.load("omniglot-conv4"), ds,
                           [{"ways": 5, "shots": 1, "queries": 3, "episodes": 20}])
    assert rows[0]["sequence"]["accuracy"] == pytest.approx(r["accuracy"])
    assert set(rows[0]) >= {"sequence", "image", "fusion", "fusion_beats_both"}
    # weight 1 = the sequence alone, 0 = the image alone, on the same episodes
    for w, part in ((1.0, "sequence"), (0.0, "image")):
        only = evaluate_fusion(enc, encoders.load("omniglot-conv4"), ds,
                               [{"ways": 5, "shots": 1, "queries": 3, "episodes": 20}], sequence_weight=w)
        assert only[0]["fusion"]["accuracy"] == pytest.approx(rows[0][part]["accuracy"])


def test_choose_fusion_weight_picks_the_best_on_its_episodes():
    from fewshot.evaluation.fusion import choose_fusion_weight

    ds = shapes_dataset(n_per=6)
    c = choose_fusion_weight(encoders.load(STROKES), encoders.load("omniglot-conv4"), ds, grid=(0.0, 0.5, 1.0),
                             ways=5, episodes=20, seed=3, within_group=False)
    assert set(c["accuracy"]) == {0.0, 0.5, 1.0} and c["accuracy"][c["best"]] == max(c["accuracy"].values())


def test_fusion_encoder_weighted_mean_of_cosines():
    from fewshot.prototypes import l2_normalize

    fused = encoders.load("omniglot-strokes-fusion")
    w = fused.sequence_weight
    assert isinstance(fused, FusionEncoder) and fused.dim == fused.sequence.dim + fused.image.dim
    rng = np.random.default_rng(0)
    a, b = shape_strokes(1, rng), shape_strokes(3, rng)
    f = fused.embed([a, b])
    s = l2_normalize(fused.sequence.embed([a, b]))
    from fewshot.sequences import render_strokes

    i = l2_normalize(fused.image.embed([render_strokes(a), render_strokes(b)]))
    assert float(f[0] @ f[1]) == pytest.approx(w * float(s[0] @ s[1]) + (1 - w) * float(i[0] @ i[1]), abs=1e-5)
    # the weight is part of the fingerprint; 0 and 1 reduce to one part alone
    only_img = FusionEncoder("img", fused.sequence, fused.image, sequence_weight=0.0)
    only_seq = FusionEncoder("seq", fused.sequence, fused.image, sequence_weight=1.0)
    assert len({only_img.fingerprint, only_seq.fingerprint, fused.fingerprint}) == 3
    assert float(np.dot(*only_img.embed([a, b]))) == pytest.approx(float(i[0] @ i[1]), abs=1e-5)
    assert float(np.dot(*only_seq.embed([a, b]))) == pytest.approx(float(s[0] @ s[1]), abs=1e-5)
    with pytest.raises(EncoderError):
        FusionEncoder("bad", fused.sequence, fused.image, sequence_weight=1.5)


def test_cli_fusion_index_keeps_both_embeddings(tmp_path, stroke_files):
    idx = str(tmp_path / "fused")
    r = run("init", idx, "--encoder", "omniglot-strokes-fusion", "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["input_kind"] == "sequence" and info["dim"] == encoders.load("omniglot-strokes-fusion").dim
    r = run("add", idx, "--from-folder", str(stroke_files["bar"][0].parent.parent))
    assert r.exit_code == 0, r.output
    r = run("classify", idx, str(stroke_files["circle"][0]), "--json")
    assert r.exit_code == 0 and json.loads(r.output)[0]["label"] == "circle"
