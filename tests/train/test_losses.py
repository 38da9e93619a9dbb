"""The metric-learning losses: their maths against brute force, and that each one learns."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fewshot.losses import (LOSSES, PrototypicalLoss, SupConLoss, TripletLoss, batch_hard_triplet_loss,
                            episode_accuracy, make_loss, prototype_logits, supervised_contrastive_loss)
from fewshot.prototypes import class_prototypes, prototype_scores

torch.set_num_threads(1)


def _episode(ways=4, shots=2, queries=3, dim=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(ways * (shots + queries), dim, generator=g)
    labels = torch.cat([torch.arange(ways).repeat_interleave(shots), torch.arange(ways).repeat_interleave(queries)])
    return emb, labels, ways * shots


def test_prototype_logits_match_the_numpy_prototype_code():
    emb, labels, ns = _episode()
    logits = prototype_logits(emb[:ns], labels[:ns], emb[ns:], scale=1.0).numpy()
    _, protos = class_prototypes(emb[:ns].numpy(), labels[:ns].numpy(), "cosine")
    np.testing.assert_allclose(logits, prototype_scores(emb[ns:].numpy(), protos, "cosine"), atol=1e-5)
    l2 = prototype_logits(emb[:ns], labels[:ns], emb[ns:], scale=1.0, metric="l2").numpy()
    _, p2 = class_prototypes(emb[:ns].numpy(), labels[:ns].numpy(), "l2")
    np.testing.assert_allclose(l2, prototype_scores(emb[ns:].numpy(), p2, "l2"), atol=1e-4)


def test_prototypical_loss_is_cross_entropy_with_the_learned_scale():
    emb, labels, ns = _episode()
    loss = PrototypicalLoss(init_scale=7.0)
    logits = prototype_logits(emb[:ns], labels[:ns], emb[ns:], scale=7.0)
    expected = torch.nn.functional.cross_entropy(logits, labels[ns:])
    assert torch.allclose(loss(emb, labels, ns), expected, atol=1e-5)
    assert loss.temperature() == pytest.approx(1 / 7.0, rel=1e-5)
    with pytest.raises(ValueError, match="support set and queries"):
        loss(emb, labels, 0)
    with pytest.raises(ValueError, match="needs support"):
        loss(emb, labels, 2)


def test_batch_hard_triplet_matches_brute_force():
    emb, labels, _ = _episode(ways=3, shots=1, queries=2, dim=5, seed=3)
    z = torch.nn.functional.normalize(emb, dim=-1)
    n, margin, terms = len(z), 0.3, []
    for a in range(n):
        d = [float((z[a] - z[j]).norm()) for j in range(n)]
        pos = [d[j] for j in range(n) if j != a and labels[j] == labels[a]]
        neg = [d[j] for j in range(n) if labels[j] != labels[a]]
        terms.append(max(0.0, max(pos) - min(neg) + margin))
    got = batch_hard_triplet_loss(emb, labels, margin=margin)
    assert float(got) == pytest.approx(np.mean(terms), abs=1e-5)
    soft = batch_hard_triplet_loss(emb, labels, margin=None)
    assert float(soft) > 0


def test_supcon_matches_brute_force():
    emb, labels, _ = _episode(ways=3, shots=1, queries=2, dim=5, seed=4)
    z = torch.nn.functional.normalize(emb, dim=-1).double()
    tau, n, per_anchor = 0.2, len(z), []
    for i in range(n):
        others = [a for a in range(n) if a != i]
        denom = sum(math.exp(float(z[i] @ z[a]) / tau) for a in others)
        pos = [p for p in others if labels[p] == labels[i]]
        per_anchor.append(-np.mean([float(z[i] @ z[p]) / tau - math.log(denom) for p in pos]))
    got = supervised_contrastive_loss(emb, labels, temperature=tau)
    assert float(got) == pytest.approx(np.mean(per_anchor), rel=1e-5)


def test_gradients_are_finite_even_for_identical_embeddings():
    emb = torch.ones(6, 4, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    for name in LOSSES:
        emb.grad = None
        make_loss(name)(emb, labels, 3).backward()
        assert torch.isfinite(emb.grad).all(), name


def test_losses_refuse_batches_they_cannot_use():
    emb = torch.randn(4, 3)
    with pytest.raises(ValueError, match="2 classes"):
        batch_hard_triplet_loss(emb, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="2 examples"):
        supervised_contrastive_loss(emb, torch.arange(4))
    with pytest.raises(ValueError, match="unknown loss"):
        make_loss("arcface")
    with pytest.raises(ValueError, match="temperature"):
        SupConLoss(temperature=0)


def _blobs(n_classes=8, per=12, dim=16, seed=0):
    """Classes that differ in a few of many noisy input dimensions: a random projection mixes them."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim)) * 1.2
    x = np.concatenate([c + rng.normal(size=(per, dim)) for c in centres]).astype(np.float32)
    y = np.repeat(np.arange(n_classes), per)
    return torch.from_numpy(x), torch.from_numpy(y)


@pytest.mark.parametrize("name", LOSSES)
def test_each_loss_falls_and_one_shot_accuracy_rises_on_a_synthetic_problem(name):
    """A small MLP embedding trained by each loss on 6 classes; accuracy measured on 2 unseen classes too."""
    torch.manual_seed(0)
    x, y = _blobs()
    net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    loss_fn = make_loss(name)
    opt = torch.optim.Adam(list(net.parameters()) + list(loss_fn.parameters()), lr=1e-2)
    rng = np.random.default_rng(1)

    def batch(classes, shots=1, queries=4):
        sup, qry = [], []
        for c in classes:
            idx = rng.permutation(np.flatnonzero((y == c).numpy()))[: shots + queries]
            sup.append(idx[:shots])
            qry.append(idx[shots:])
        idx = np.concatenate(sup + qry)
        lab = torch.cat([torch.arange(len(classes)).repeat_interleave(shots),
                         torch.arange(len(classes)).repeat_interleave(queries)])
        return x[idx], lab, len(classes) * shots

    def accuracy(classes, episodes=60):
        with torch.no_grad():
            return float(np.mean([episode_accuracy(net(xb), lb, ns)
                                  for xb, lb, ns in (batch(classes) for _ in range(episodes))]))

    all_classes = list(range(8))
    before, losses = accuracy(all_classes), []
    for _ in range(150):
        xb, lb, ns = batch(rng.choice(6, 4, replace=False).tolist(), shots=1, queries=3)
        loss = loss_fn(net(xb), lb, ns)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    after = accuracy(all_classes)
    # SupCon cannot go below mean log |P(i)|: here 3 positives per anchor.
    floor = math.log(3) if name == "supcon" else 0.0
    early, late = np.mean(losses[:20]) - floor, np.mean(losses[-20:]) - floor
    assert late < 0.5 * early, (name, losses[:3], losses[-3:])
    assert after > before + 0.1, (name, before, after)
    assert accuracy([6, 7]) > 0.6  # two classes never trained on: the embedding generalises


def test_module_names_and_temperatures():
    assert make_loss("proto").name == "proto" and isinstance(make_loss("prototypical"), PrototypicalLoss)
    assert isinstance(make_loss("triplet", margin=0.5), TripletLoss) and make_loss("triplet").temperature() is None
    assert make_loss("supcon", temperature=0.07).temperature() == 0.07


def test_distillation_with_and_without_a_head():
    """With a head the student is mapped to the teacher's size; without one its own embedding is compared."""
    from fewshot.losses import DistillationLoss, distillation_loss

    emb, targets = torch.randn(6, 4), torch.randn(6, 4)
    direct = DistillationLoss(4, 4, project=False)
    assert not list(direct.parameters())
    assert torch.allclose(direct(emb, targets), distillation_loss(emb, targets))
    assert torch.allclose(direct(targets, targets), torch.tensor(0.0), atol=1e-6)
    headed = DistillationLoss(4, 8)
    assert headed(emb, torch.randn(6, 8)).shape == () and len(list(headed.parameters())) == 2
    with pytest.raises(ValueError, match="teacher's size"):
        DistillationLoss(4, 8, project=False)
