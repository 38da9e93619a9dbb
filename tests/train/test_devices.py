"""Training on a chosen device: batches and states move, checkpoints and the returned model stay CPU."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_sequence

from fewshot.data.dataset import LabelledSet
from fewshot.encoders.conv import ConvNet
from fewshot.errors import InputError
from fewshot.train.batches import Batch
from fewshot.train.devices import cpu_state, module_device, resolve_device, to_device
from fewshot.train.loop import TrainConfig
from fewshot.train.recipes import train_model

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="torch sees no CUDA GPU on this machine")


def blobs(n_classes: int = 6, per: int = 4, size: int = 12) -> LabelledSet:
    """Tiny images: class k is a bright square at its own place, with noise."""
    rng = np.random.default_rng(0)
    items, labels = [], []
    for k in range(n_classes):
        for _ in range(per):
            im = rng.integers(0, 40, (size, size)).astype(np.uint8)
            r, c = divmod(k, 3)
            im[2 + 4 * r:6 + 4 * r, 1 + 3 * c:5 + 3 * c] = 255
            items.append(im)
            labels.append(f"a/c{k}")
    return LabelledSet(np.stack(items), labels, ["a"] * len(labels))


def test_to_device_moves_every_tensor_and_keeps_the_containers():
    t = torch.ones(2)
    packed = pack_sequence([torch.ones(3, 2), torch.ones(1, 2)])
    batch = Batch(x=packed, labels=torch.tensor([0, 1]), n_support=1, targets=None, classes=["a", "b"])
    state = OrderedDict(w=t, opt={"state": {0: {"m": t}}, "groups": [{"lr": 0.1, "params": [0]}]})
    moved = to_device({"batch": batch, "state": state, "words": ["x", "y"], "pair": (t, "s")}, "cpu")
    assert isinstance(moved["batch"], Batch) and moved["batch"].classes == ["a", "b"]
    assert moved["batch"].n_support == 1 and torch.equal(moved["batch"].x.data, packed.data)
    assert isinstance(moved["state"], OrderedDict) and moved["state"]["opt"]["groups"][0]["lr"] == 0.1
    assert moved["words"] == ["x", "y"] and moved["pair"][1] == "s"
    assert cpu_state({"w": t})["w"].device.type == "cpu"


def test_resolve_device_checks_the_name():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device(None).type == "cpu"
    assert resolve_device("auto").type == ("cuda" if CUDA else "cpu")
    with pytest.raises(InputError, match="unknown device"):
        resolve_device("gpu0")
    with pytest.raises(InputError, match="not supported"):
        resolve_device("meta")
    if not CUDA:
        with pytest.raises(InputError, match="sees no CUDA GPU"):
            resolve_device("cuda")


def tiny_run(tmp_path, device: str, steps: int = 4):
    torch.manual_seed(0)
    model = ConvNet(1, 8, 2)
    cfg = TrainConfig(ways=3, shots=1, queries=2, steps=steps, warmup=1, val_every=2, val_ways=3, val_episodes=5,
                      val_queries=2, checkpoint_every=2, rotations=False, device=device)
    data = blobs()
    summary = train_model(model, data, tmp_path / "run", cfg, val=data, progress=False)
    return model, cfg, data, summary


def test_cpu_training_records_its_device(tmp_path):
    model, cfg, _, summary = tiny_run(tmp_path, "cpu")
    assert module_device(model).type == "cpu" and summary["step"] == 4
    assert '"device": "cpu"' in (tmp_path / "run" / "config.json").read_text()


@needs_cuda
def test_cuda_training_leaves_cpu_checkpoints_and_model(tmp_path):
    model, cfg, data, summary = tiny_run(tmp_path, "cuda")
    assert module_device(model).type == "cpu", "the model is handed back on the CPU"
    ck = torch.load(tmp_path / "run" / "last.pt", weights_only=True)  # no map_location: as saved
    tensors = [*ck["model"].values(), *ck["head"].values(),
               *(v for st in ck["optimizer"]["state"].values() for v in st.values() if isinstance(v, torch.Tensor))]
    assert tensors and {v.device.type for v in tensors} == {"cpu"}
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert all(v.device.type == "cpu" for v in best.values())
    # a GPU run resumes on the CPU (and the other way round) from the same files
    cfg.steps, cfg.device = 6, "cpu"
    s = train_model(model, data, tmp_path / "run", cfg, val=data, progress=False)
    assert s["step"] == 6 and 0 <= summary["best_val_acc"] <= 1


@needs_cuda
def test_cuda_sequence_training_with_a_teacher(tmp_path):
    from fewshot import encoders
    from fewshot.encoders.sequence import SequenceRNN
    from fewshot.sequences import SequencePreprocess, strokes_to_array
    from fewshot.train.loop import SequenceTrainConfig

    rng = np.random.default_rng(0)
    seqs, labels = [], []
    for k in range(4):
        for _ in range(3):
            t = np.linspace(0, 1, 12)
            xy = np.stack([t * (k + 1) + rng.normal(0, 0.02, 12), np.sin(t * (k + 2))], 1) * 20
            seqs.append(strokes_to_array([xy.astype(np.float32)]))
            labels.append(f"g/s{k}")
    ds = LabelledSet(seqs, labels, ["g"] * len(seqs))
    pre = SequencePreprocess(resample=0.1)
    model = SequenceRNN(pre.in_features, hidden=8, layers=1, dim=8, pooling="attention")
    cfg = SequenceTrainConfig(ways=3, queries=1, steps=3, warmup=1, checkpoint_every=1, symmetries=1,
                              teacher_views=2, within_group_fraction=0, device="cuda", val_every=1, val_ways=3,
                              val_episodes=3, val_queries=1)
    s = train_model(model, ds, tmp_path / "run", cfg, val=ds, pre=pre, teacher=encoders.load("omniglot-conv4@1"),
                    progress=False)
    assert s["step"] == 3 and module_device(model).type == "cpu"
    ck = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert all(v.device.type == "cpu" for v in ck["distill"].values())
