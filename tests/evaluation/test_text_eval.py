"""Text evaluation: the CLINC150 loader (real data, skipped when absent), roles in episodes, and
``fewshot evaluate`` with --oos on a tiny CLINC-shaped slice."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import REPO

from fewshot.data.dataset import LabelledSet
from fewshot.data.registry import dataset_kind
from fewshot.data.text import load_clinc, load_clinc_oos, load_text_dataset
from fewshot.episodes import EpisodeSampler
from fewshot.errors import InputError
from fewshot.evaluation.kernel import max_queries

CLINC = REPO.parent / "shared" / "data" / "clinc150" / "clinc150_dev.json"


@pytest.fixture(scope="module")
def clinc() -> Path:
    if not CLINC.exists():
        pytest.skip(f"CLINC150 data not found at {CLINC} (see ../shared/data/README.md)")
    return CLINC


def test_clinc_loader_real(clinc):
    ds = load_clinc(clinc)
    assert ds.kind == "text" and len(ds.classes) == 105 and len(set(ds.groups)) == 7
    assert ds.roles.count("support") == 10500 and ds.roles.count("query") == 3150
    held = load_clinc(clinc, groups=["home", "auto_and_commute"])
    assert len(held.classes) == 30 and set(held.groups) == {"home", "auto_and_commute"}
    assert len(load_clinc_oos(clinc)) == 100
    with pytest.raises(InputError, match="unknown alphabet"):
        load_clinc(clinc, groups=["weather"])
    assert dataset_kind(clinc) == "text"


def test_roles_supports_from_train_queries_from_test():
    labels = ["a"] * 6 + ["b"] * 6 + ["c"] * 6
    roles = (["support"] * 4 + ["query"] * 2) * 3
    s = EpisodeSampler(labels, 3, 2, 2, seed=1, roles=roles)
    for i in range(20):
        ep = s.episode(i)
        assert all(roles[j] == "support" for j in ep.support.ravel())
        assert all(roles[j] == "query" for j in ep.query.ravel())
    ds = LabelledSet(["t"] * 18, labels, roles=roles)
    assert max_queries(ds, 3, 4, 5) == 2  # two query rows per class, four support rows
    with pytest.raises(ValueError):
        max_queries(ds, 3, 5, 1)
    assert ds.subset([0, 5]).roles == ["support", "query"]


def _tiny_clinc(d: Path) -> Path:
    intents = {"money": ["balance", "transfer"], "travel": ["flight", "hotel"]}
    words = {"balance": "how much money is in my account", "transfer": "send cash to my friend",
             "flight": "book a plane ticket to paris", "hotel": "reserve a room for the night"}
    rows = {s: [[f"{words[i]} {k}", i] for i in words for k in range(n)] for s, n in (("train", 4), ("test", 3))}
    rows["oos_val"] = [["what is the capital of peru", "oos"], ["tell me a joke about cats", "oos"]]
    (d / "domains.json").write_text(json.dumps(intents))
    (d / "clinc.json").write_text(json.dumps(rows))
    return d / "clinc.json"


def test_malformed_clinc(tmp_path):
    (tmp_path / "x.json").write_text('{"train": [["only text"]], "test": []}')
    with pytest.raises(InputError, match="not a \\[text, intent\\] pair"):
        load_text_dataset(tmp_path / "x.json")
    (tmp_path / "y.json").write_text("[1, 2")
    with pytest.raises(InputError, match="not JSON"):
        load_text_dataset(tmp_path / "y.json")


def test_evaluate_cli_on_a_tiny_slice(tmp_path):
    pytest.importorskip("sentence_transformers", reason="the text extra is not installed")
    from fewshot.cli import cli

    data = _tiny_clinc(tmp_path)
    r = CliRunner().invoke(cli, ["evaluate", "--data", str(data), "--encoder", "minilm", "--ways", "2", "--shots", "1",
                                 "--queries", "3", "--episodes", "20", "--within-alphabet", "--alphabets",
                                 "money,travel", "--oos", "--json"], env={"FEWSHOT_NO_PROGRESS": "1"})
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["protocol"]["input_kind"] == "text" and out["accuracy"] > 0.9
    assert set(out["oos"]) >= {"auroc", "auroc_ci95", "false_accept_rate", "accuracy_kept"}
    assert 0.0 <= out["oos"]["auroc"] <= 1.0 and np.isfinite(out["precision"])
    r = CliRunner().invoke(cli, ["evaluate", "--data", str(data), "--oos", "--tta"])
    assert r.exit_code == 2 and "--tta applies to images" in r.stderr


def test_text_batcher_through_the_shared_loop(tmp_path):
    """The training loop knows nothing about text: the registered batcher feeds a tiny bag-of-hashes model."""
    import torch

    from fewshot.losses import PrototypicalLoss
    from fewshot.train.batches import TextBatcher, make_batcher
    from fewshot.train.loop import LossTerm, TrainConfig, fit

    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma"]
    texts = [f"{w} {w} item {k}" for w in words for k in range(6)]
    data = LabelledSet(texts, [t.split()[0] for t in texts])
    assert data.kind == "text"

    def tokenize(batch):
        ids = [torch.tensor([hash(w) % 997 for w in t.split()]) for t in batch]
        return torch.nn.utils.rnn.pad_sequence(ids, batch_first=True)

    class BagModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.EmbeddingBag(997, 16, mode="mean", padding_idx=0)

        def forward(self, x):
            return self.emb(x)

    cfg = TrainConfig(ways=3, shots=1, queries=2, steps=4, warmup=1, val_every=2, val_episodes=5, val_ways=3,
                      val_within_group=False, checkpoint_every=2, rotations=False)
    batcher = make_batcher(data, cfg, tokenize=tokenize)
    assert isinstance(batcher, TextBatcher)
    summary = fit(BagModel(), [LossTerm("proto", PrototypicalLoss())], batcher, data, tmp_path, cfg, val=data,
                  progress=False)
    assert (tmp_path / "last.pt").is_file() and summary
