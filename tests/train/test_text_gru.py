"""text-gru: both tokenisers, the encoder file round trip (v2: int8 table), batch invariance, static vectors,
and smoke training runs of both architectures."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fewshot import encoders
from fewshot.encoders.text_rnn import HashTokenizer, new_text_encoder
from fewshot.encoders.weights import seeded_init


def test_tokenizer_is_deterministic_and_subword():
    tok = HashTokenizer(buckets=1000)
    a, b = tok(["Balance please"]), HashTokenizer(buckets=1000)(["balance please"])
    assert (a[0] == b[0]).all() and a[1].tolist() == [2]  # lowercased, two words
    typo, word = set(tok.word_ids("balanse")), set(tok.word_ids("balance"))
    assert len(typo & word) >= 3 and all(0 < i < 1000 for i in typo)
    assert HashTokenizer.from_dict(tok.to_dict()).to_dict() == tok.to_dict()


def test_encoder_file_round_trip_and_batch_invariance(tmp_path):
    with seeded_init(0):
        enc = new_text_encoder(word_dim=16, hidden=16, dim=16)
    texts = ["hi", "what is the balance of my checking account today", "play jazz"]
    together = enc.embed(texts)
    alone = np.concatenate([enc.embed([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)  # padding never changes an embedding
    enc.save(tmp_path / "t.pt")
    again = encoders.resolve(str(tmp_path / "t.pt"))
    assert again.input_kind == "text" and again.fingerprint == enc.fingerprint
    np.testing.assert_allclose(again.embed(texts), together, atol=1e-6)


def _tiny_clinc(tmp_path):
    intents = {"money": ["balance", "transfer", "bill"], "travel": ["flight", "hotel", "car"]}
    rows = {s: [[f"{i} request number {k} please", i] for d in intents.values() for i in d for k in range(6)]
            for s in ("train", "val")}
    (tmp_path / "domains.json").write_text(json.dumps(intents))
    (tmp_path / "c.json").write_text(json.dumps({**rows, "test": []}))
    return str(tmp_path / "c.json")


SMOKE = dict(progress=False, steps=3, ways=3, shots=1, queries=2, val_every=3, val_episodes=3, val_ways=3,
             checkpoint_every=3, val_queries=2, threads=1)


def test_smoke_training_run(tmp_path):
    from fewshot.train.text import train_text_gru

    enc, summary = train_text_gru(_tiny_clinc(tmp_path), str(tmp_path / "run"), ["travel"], **SMOKE)
    assert (tmp_path / "run" / "best.pt").is_file() and (tmp_path / "run" / "last.pt").is_file()
    assert enc.embed(["balance"]).shape == (1, enc.dim)


def test_smoke_distillation_run(tmp_path):
    """Distillation: the teacher's rows travel with the batch (a small saved encoder stands in for minilm)."""
    from fewshot.train.text import train_text_gru

    with seeded_init(1):
        teacher = new_text_encoder("teacher", word_dim=8, hidden=8, dim=24)
    teacher.save(tmp_path / "teacher.pt")
    enc, _ = train_text_gru(_tiny_clinc(tmp_path), str(tmp_path / "run"), ["travel"], distill=1.0,
                            teacher=str(tmp_path / "teacher.pt"), **SMOKE)
    cached = list((tmp_path / "run").glob("teacher-*.npy"))
    assert len(cached) == 1 and np.load(cached[0]).shape == (18, 24)  # the train rows of the domain not held out
    assert "distill" in __import__("torch").load(tmp_path / "run" / "last.pt", weights_only=True)


def test_smoke_distillation_on_unlabelled_sentences(tmp_path, monkeypatch):
    """Unlabelled sentences join every step (their teacher rows after the episode's); the metric loss sees
    only the labelled rows; the teacher's embeddings are cached once, beside nothing in the repo."""
    from fewshot.train import text as text_train
    from fewshot.train.text import train_text_gru

    with seeded_init(1):
        teacher = new_text_encoder("teacher", word_dim=8, hidden=8, dim=24)
    teacher.save(tmp_path / "teacher.pt")
    wiki = tmp_path / "wiki.txt"
    wiki.write_text("\n".join(f"sentence number {k} about nothing" for k in range(12)) + "\n\n")
    seen = []
    real = text_train.make_batcher
    monkeypatch.setattr(text_train, "make_batcher", lambda *a, **kw: seen.append(real(*a, **kw)) or seen[-1])
    kw = dict(distill=1.0, teacher=str(tmp_path / "teacher.pt"), unlabelled=str(wiki),
              teacher_cache=str(tmp_path / "cache"), **{**SMOKE, "extra": {"unlabelled_per_step": 5}})
    train_text_gru(_tiny_clinc(tmp_path), str(tmp_path / "run"), ["travel"], **kw)
    x, targets = seen[0].inputs(np.arange(9), 0, np.random.default_rng(0))
    assert x[0].shape[0] == 14 and targets.shape == (14, 24)  # 9 labelled + 5 unlabelled rows
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "cache").glob("*.npy")) == ["teacher", "teacher"]


VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "balance", "transfer", "bill", "flight", "hotel", "car",
         "request", "number", "please", "0", "1", "2", "3", "4", "5", "##s"]


class FakeTeacher:
    """Stands in for minilm in static_start: a vocab.txt, a fingerprint, ``forward`` on BERT features
    (a token alone: its fixed random row) and ``tokenize`` + ``module`` (tokens in context: the row
    plus the mean of the sentence's rows)."""

    def __init__(self, folder, dim: int = 12):
        import torch

        self.model_dir, self.fingerprint = folder, "fake-teacher"
        (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
        self.rows = torch.randn(len(VOCAB), dim, generator=torch.Generator().manual_seed(0))
        self.calls = 0

    def embed(self, texts):  # an encoder object: resolve() passes it through
        raise AssertionError("static_start needs only the token vectors")

    def forward(self, feats):
        self.calls += 1
        return self.rows[feats["input_ids"][:, 1]]

    def tokenize(self, texts):
        import torch

        from fewshot.encoders.wordpiece import WordPieceTokenizer

        ids, lengths = WordPieceTokenizer(VOCAB)(texts)
        ids = torch.cat([torch.full((len(texts), 1), 2), ids, torch.zeros(len(texts), 1, dtype=torch.long)], 1)
        ids[torch.arange(len(texts)), lengths + 1] = 3  # [CLS] ... [SEP]
        return {"input_ids": ids, "attention_mask": (ids > 0).long()}

    def module(self, feats):
        self.calls += 1
        rows = self.rows[feats["input_ids"]] * feats["attention_mask"][..., None]
        return {"token_embeddings": rows + rows.mean(1, keepdim=True)}


def _wordpiece_encoder(dim: int = 8):
    import torch

    from fewshot.encoders.wordpiece import WordPieceTokenizer

    tok = WordPieceTokenizer(VOCAB)
    with seeded_init(0):
        return new_text_encoder(tokenizer=tok, table=torch.randn(len(VOCAB), dim), hidden=8)


def test_v2_starts_as_the_mean_of_its_token_vectors():
    enc = _wordpiece_encoder()
    table = enc.module.emb.weight.detach().numpy()
    ids = enc.preprocess.token_ids("balance transfer please")
    np.testing.assert_allclose(enc.embed(["balance transfer please"])[0], table[ids].mean(0), atol=1e-6)


def test_v2_file_stores_an_int8_table_and_loads_back_the_same_encoder(tmp_path):
    import torch

    enc = _wordpiece_encoder()
    with torch.no_grad():
        enc.module.rnn.proj_out.weight.normal_(0, 0.1)  # a trained GRU branch
    enc.invalidate()
    texts = ["balance please", "flight hotel car bills request number 5", "unseen words only"]
    before = enc.embed(texts)
    path = enc.save(tmp_path / "v2.pt")
    stored = torch.load(path, weights_only=True)["state_dict"]
    assert stored["emb.weight"].dtype == torch.int8 and stored["emb.scale"].shape == (len(VOCAB),)
    again = encoders.resolve(str(path))
    assert again.fingerprint == enc.fingerprint and again.preprocess.vocab == VOCAB
    sidecar = json.loads(path.with_suffix(".json").read_text())  # for people: the vocabulary summarised
    assert sidecar["fingerprint"] == enc.fingerprint and sidecar["preprocess"]["vocab"].startswith("21 pieces")
    np.testing.assert_allclose(again.embed(texts), enc.embed(texts), atol=1e-6)
    np.testing.assert_allclose(again.embed(texts), before, atol=0.02)  # int8 rounding moved it only a little
    alone = np.concatenate([again.embed([t]) for t in texts])
    np.testing.assert_allclose(again.embed(texts), alone, atol=1e-5)  # padding never changes an embedding


def test_static_table_is_pca_then_sif_weighted():
    from fewshot.encoders.wordpiece import WordPieceTokenizer
    from fewshot.train.static_vectors import pca, static_table, token_frequencies

    tok = WordPieceTokenizer(VOCAB)
    freq = token_frequencies(tok, ["please please please balance"], len(VOCAB))
    assert freq.sum() == pytest.approx(1.0) and freq[13] == 4 * freq[5] / 2 and freq[6] < freq[5]
    vecs = np.random.default_rng(0).normal(size=(len(VOCAB), 12)).astype(np.float32)
    table = static_table(vecs, freq, 4, a=1e-3, drop=2)
    assert table.shape == (len(VOCAB), 4) and not table[0].any()
    weight = 1e-3 / (1e-3 + freq)
    np.testing.assert_allclose(table[1:], pca(vecs, 6)[1:, 2:] * weight[1:, None], rtol=1e-5)
    spread = pca(vecs, 6).std(0)
    assert (np.diff(spread) <= 1e-6).all() and abs(pca(vecs, 6).mean(0)).max() < 1e-5  # largest axes first


def test_v2_table_starts_from_the_teacher_s_tokens_alone_and_in_context(tmp_path):
    from fewshot.encoders.wordpiece import WordPieceTokenizer
    from fewshot.train.static_vectors import blend, static_table, teacher_context_vectors, token_frequencies
    from fewshot.train.text import clinc_split, train_text_gru

    teacher, data = FakeTeacher(tmp_path), _tiny_clinc(tmp_path)
    texts = list(clinc_split(data, "train", ["travel"]).items)
    ctx, counts = teacher_context_vectors(teacher, texts, len(VOCAB))
    assert counts[VOCAB.index("balance")] == 6 and counts[VOCAB.index("car")] == 0  # "car" is in travel only
    vectors = blend(teacher.rows.numpy(), ctx, counts)
    car = teacher.rows[VOCAB.index("car")]
    np.testing.assert_allclose(vectors[VOCAB.index("car")], car / car.norm(), atol=1e-6)  # unseen: alone only
    start = static_table(vectors, token_frequencies(WordPieceTokenizer(VOCAB), texts, len(VOCAB)), 4, drop=2)

    enc, _ = train_text_gru(data, str(tmp_path / "run0"), ["travel"], teacher=teacher, arch_name="static-text-rnn",
                            arch={"dim": 4, "hidden": 8, "drop": 2}, teacher_cache=str(tmp_path / "cache"),
                            **{**SMOKE, "steps": 0})
    np.testing.assert_allclose(enc.module.emb.weight.detach().numpy(), start, atol=1e-6)
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "cache").glob("*.npz")) == ["context", "tokens"]

    calls = teacher.calls
    enc, _ = train_text_gru(data, str(tmp_path / "run"), ["travel"], teacher=teacher, arch_name="static-text-rnn",
                            arch={"dim": 4, "hidden": 8, "drop": 2}, teacher_cache=str(tmp_path / "cache"),
                            **{**SMOKE, "steps": 2, "val_every": 2})
    assert teacher.calls == calls  # the teacher's passes were read from the cache
    assert enc.arch == "static-text-rnn" and enc.dim == 4 and enc.preprocess.vocab == VOCAB
    assert not np.allclose(enc.module.emb.weight.detach().numpy(), start)  # it trained
    path = enc.save(tmp_path / "enc.pt")
    assert encoders.resolve(str(path)).fingerprint == enc.fingerprint


def test_shipped_text_gru_resolves_offline():
    """The shipped weights (version 2): package data under 10 MiB, no extra needed, related texts closer."""
    from fewshot.encoders.weights import packaged_path

    v2 = packaged_path("text_gru_v2.pt")
    assert v2.stat().st_size + v2.with_suffix(".json").stat().st_size < 10 * 2**20
    enc = encoders.resolve("text-gru")
    assert enc.input_kind == "text" and enc.dim == 240 and enc.registered_as == ("text-gru", None)
    v = enc.embed(["how much money do i have", "what's my account balance", "turn off the lights"])
    assert (v[0] @ v[1]) / np.linalg.norm(v[0]) / np.linalg.norm(v[1]) > \
        (v[0] @ v[2]) / np.linalg.norm(v[0]) / np.linalg.norm(v[2])


INTENTS = {"balance": ["how much money do i have", "what is my balance", "show my account balance"],
           "transfer": ["send money to mom", "move 20 dollars to savings", "transfer funds to john"],
           "weather": ["will it rain today", "what's the weather like", "is it sunny tomorrow"],
           "alarm": ["set an alarm for 7", "wake me up at six", "alarm at 8 am please"],
           "music": ["play some jazz", "put on my playlist", "play the next song"],
           "timer": ["start a 10 minute timer", "set a timer for pasta", "count down five minutes"]}


def test_finetune_a_text_index_on_its_own_examples(tmp_path):
    """`fewshot finetune --data index --into IDX` starts from the index's own (text) encoder, trains
    through the shared loop and switches the index; nothing in the recipe is image- or stroke-only."""
    from helpers import ok

    idx = tmp_path / "intents"
    ok("init", idx, "--encoder", "text-gru")
    for label, texts in INTENTS.items():
        ok("add", idx, "--label", label, *sum((["--text", t] for t in texts), []))
    out = json.loads(ok("finetune", "--data", "index", "--into", idx, "--out", tmp_path / "ft.pt",
                        "--steps", "4", "--threads", "1", "--json").stdout)
    assert out["input_kind"] == "text" and out["base"] == "text-gru" and out["step"] == 4
    assert out["into"]["reembedded"] == 18
    assert json.loads(ok("info", idx, "--json").stdout)["fingerprint"] == out["fingerprint"]
    assert json.loads(ok("classify", idx, "--text", "what is my balance", "--json").stdout)[0]["label"]
    ok("check", idx, "--sample", "all")
