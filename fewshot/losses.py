"""Metric-learning losses for training and fine-tuning encoders, with the maths in view.

Three metric losses, one calling convention: ``loss(embeddings, labels, n_support)``
where ``embeddings`` is ``[n, dim]`` (the raw encoder output), ``labels`` are
class indices ``0..C-1`` (``[n]`` int64) and the first ``n_support`` rows are an
episode's support set (the prototypical loss needs the split; the other two use
every row as an anchor and ignore it). A batch is always an episode of ``ways``
classes with ``shots + queries`` examples each, which is also the "P x K"
batch that batch-hard triplet mining and supervised contrastive learning want.

* :class:`PrototypicalLoss` (Snell et al., 2017): class prototypes are the mean
  of the L2-normalised support embeddings; query logits are
  ``s * cos(query, prototype)`` with a learned scale ``s`` (inverse temperature);
  the loss is the cross-entropy of the query's true class.
* :class:`TripletLoss` with batch-hard mining (Hermans, Beyer and Leibe, 2017):
  for every anchor, its farthest positive and nearest negative in the batch,
  ``mean(relu(d(a, p_hard) - d(a, n_hard) + margin))`` on unit vectors (or the
  soft-margin ``softplus`` version with ``margin=None``).
* :class:`SupConLoss` (Khosla et al., 2020, the "L_out" form): for anchor ``i``
  with positives ``P(i)``, ``-1/|P(i)| sum_p log(exp(z_i.z_p/t) / sum_{a != i} exp(z_i.z_a/t))``.

A fourth term, :class:`DistillationLoss`, pulls a linear projection of each
embedding towards a teacher's embedding of the same example (cosine); the stroke
GRU learns from the image CNN this way. The training loop calls every term as
``term.batch_loss(embeddings, batch)``, so a term reads what it needs from the batch.

Why written here rather than taken from pytorch-metric-learning: each is a dozen
lines of tensor code, the episode layout is ours, the prototypical loss (the
default, and the one the shipped encoder was trained with) is not in that
library in this form, and one more dependency (with its own faiss pin) is not
worth three short functions. The tests check each on a synthetic problem.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LOSSES = ("proto", "triplet", "supcon")  # metric losses; "ce" (ClassifierLoss) needs its classes


def _check(emb: torch.Tensor, labels: torch.Tensor) -> None:
    if emb.ndim != 2 or labels.ndim != 1 or len(emb) != len(labels):
        raise ValueError(f"need embeddings [n, dim] and labels [n]; got {tuple(emb.shape)} and {tuple(labels.shape)}")


def class_means(x: torch.Tensor, labels: torch.Tensor, n_classes: int | None = None) -> torch.Tensor:
    """Per-class mean rows ``[C, dim]`` for labels ``0..C-1`` (differentiable)."""
    c = int(labels.max()) + 1 if n_classes is None else n_classes
    sums = torch.zeros(c, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, labels, x)
    counts = torch.bincount(labels, minlength=c).clamp_min(1).to(x.dtype)
    return sums / counts[:, None]


def prototype_logits(support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor,
                     scale: torch.Tensor | float = 1.0, metric: str = "cosine") -> torch.Tensor:
    """Query logits ``[n_query, C]`` against the support set's class prototypes.

    Cosine: ``scale * cos(q, normalize(mean(normalize(support of c))))``, the same
    prototypes :func:`fewshot.prototypes.class_prototypes` builds at inference.
    L2: ``-scale * ||q - mean(support of c)||^2`` (Snell et al.'s original form).
    """
    if metric == "cosine":
        protos = F.normalize(class_means(F.normalize(support, dim=-1), support_labels), dim=-1)
        return scale * F.normalize(query, dim=-1) @ protos.T
    if metric == "l2":
        protos = class_means(support, support_labels)
        return -scale * torch.cdist(query, protos).pow(2)
    raise ValueError(f"unknown metric {metric!r}; choose cosine or l2")


def prototypical_loss(support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor,
                      query_labels: torch.Tensor, scale: torch.Tensor | float = 10.0,
                      metric: str = "cosine") -> torch.Tensor:
    """Cross-entropy of each query's softmax over prototype logits (Snell et al., 2017)."""
    return F.cross_entropy(prototype_logits(support, support_labels, query, scale, metric), query_labels)


def pairwise_distances(emb: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Euclidean distances ``[n, n]``; on unit vectors ``d^2 = 2 - 2 cos``. Safe gradient at 0."""
    z = F.normalize(emb, dim=-1) if normalize else emb
    sq = (z * z).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2 * z @ z.T).clamp_min(0)
    return torch.sqrt(d2 + 1e-12)


def batch_hard_triplet_loss(emb: torch.Tensor, labels: torch.Tensor, margin: float | None = 0.2,
                            normalize: bool = True) -> torch.Tensor:
    """Batch-hard triplet loss: hardest positive and hardest negative of each anchor.

    Anchors without a positive or without a negative in the batch are skipped.
    ``margin=None`` uses the soft margin ``softplus(d_ap - d_an)``.
    """
    _check(emb, labels)
    d = pairwise_distances(emb, normalize)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=emb.device)
    pos, neg = same & ~eye, ~same
    d_ap = torch.where(pos, d, torch.zeros_like(d)).max(1).values
    d_an = torch.where(neg, d, torch.full_like(d, float("inf"))).min(1).values
    valid = pos.any(1) & neg.any(1)
    if not valid.any():
        raise ValueError("batch-hard triplet loss needs >= 2 classes and >= 2 examples of some class per batch")
    gap = (d_ap - d_an)[valid]
    return (F.softplus(gap) if margin is None else F.relu(gap + margin)).mean()


def supervised_contrastive_loss(emb: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SupCon ("L_out", Khosla et al., 2020) on L2-normalised embeddings.

    Every row is an anchor; its positives are the other rows of its class and the
    denominator runs over all other rows. Anchors with no positive are skipped.
    """
    _check(emb, labels)
    z = F.normalize(emb, dim=-1)
    sim = z @ z.T / temperature
    eye = torch.eye(len(labels), dtype=torch.bool, device=emb.device)
    sim = sim.masked_fill(eye, float("-inf"))  # exclude a == i from the denominator
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    n_pos = pos.sum(1)
    valid = n_pos > 0
    if not valid.any():
        raise ValueError("supervised contrastive loss needs >= 2 examples of some class per batch")
    mean_log_prob_pos = torch.where(pos, log_prob, torch.zeros_like(log_prob)).sum(1)[valid] / n_pos[valid]
    return -mean_log_prob_pos.mean()


# --- modules: one calling convention for the training loop ------------------------------------
class MetricLoss(nn.Module):
    """Base class: ``forward(embeddings, labels, n_support) -> scalar loss``.

    ``temperature()`` is the softmax temperature this loss implies for the
    encoder's probabilities (or None to keep the encoder's own).
    """

    name = "metric"

    def forward(self, emb: torch.Tensor, labels: torch.Tensor, n_support: int) -> torch.Tensor:
        raise NotImplementedError

    def batch_loss(self, emb: torch.Tensor, batch) -> torch.Tensor:
        """The loss of one training batch (an object with ``labels`` and ``n_support``); rows past the
        labelled ones (unlabelled text carried for distillation) are not the metric loss's."""
        return self(emb[:len(batch.labels)], batch.labels, batch.n_support)

    def temperature(self) -> float | None:
        return None


class PrototypicalLoss(MetricLoss):
    """Episodic prototypical loss with a learnable scale (its ``log_scale`` is the only parameter).

    Its state dict ``{"log_scale"}`` is the "head" of :func:`fewshot.train.loop.fit`
    checkpoints, so those resume unchanged.
    """

    name = "proto"

    def __init__(self, init_scale: float = 10.0, metric: str = "cosine", learn_scale: bool = True):
        super().__init__()
        self.metric = metric
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)), requires_grad=learn_scale)

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    def logits(self, emb: torch.Tensor, labels: torch.Tensor, n_support: int) -> torch.Tensor:
        _check(emb, labels)
        if not 0 < n_support < len(emb):
            raise ValueError(f"prototypical loss needs a support set and queries; n_support={n_support} of {len(emb)}")
        if int(labels[n_support:].max()) > int(labels[:n_support].max()):
            raise ValueError("every query class needs support examples (labels 0..C-1, support rows first)")
        return prototype_logits(emb[:n_support], labels[:n_support], emb[n_support:], self.scale, self.metric)

    def forward(self, emb: torch.Tensor, labels: torch.Tensor, n_support: int) -> torch.Tensor:
        return F.cross_entropy(self.logits(emb, labels, n_support), labels[n_support:])

    def temperature(self) -> float | None:
        return round(1.0 / float(self.scale.detach()), 6) if self.metric == "cosine" else None


class TripletLoss(MetricLoss):
    name = "triplet"

    def __init__(self, margin: float | None = 0.2):
        super().__init__()
        self.margin = margin

    def forward(self, emb: torch.Tensor, labels: torch.Tensor, n_support: int = 0) -> torch.Tensor:
        return batch_hard_triplet_loss(emb, labels, self.margin)


class SupConLoss(MetricLoss):
    name = "supcon"

    def __init__(self, temperature: float = 0.1):
        super().__init__()
        if not temperature > 0:
            raise ValueError("temperature must be > 0")
        self.tau = temperature

    def forward(self, emb: torch.Tensor, labels: torch.Tensor, n_support: int = 0) -> torch.Tensor:
        return supervised_contrastive_loss(emb, labels, self.tau)

    def temperature(self) -> float | None:
        return self.tau


class ClassifierLoss(MetricLoss):
    """Supervised cross-entropy over a fixed list of classes: the embedding, ReLU, one linear layer.

    The classic transfer-learning recipe (the Keras CIFAR-10 tutorial's dense-64 -> ReLU ->
    softmax head): every row of a batch is a training example, whatever the episode
    calls support or query. The batch names its classes (``batch.classes``), so the
    episode's 0..ways-1 labels map onto this head's rows. The head is dropped after
    training; the encoder keeps the embedding.
    """

    name = "ce"

    def __init__(self, dim: int, classes: list[str]):
        super().__init__()
        if len(classes) < 2:
            raise ValueError("cross-entropy needs >= 2 classes")
        self.classes = list(classes)
        self._row = {c: i for i, c in enumerate(self.classes)}
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(dim, len(self.classes)))

    def forward(self, emb: torch.Tensor, labels: torch.Tensor, n_support: int = 0) -> torch.Tensor:
        """``labels``: rows of the head (0..len(classes)-1)."""
        return F.cross_entropy(self.head(emb), labels)

    def batch_loss(self, emb: torch.Tensor, batch) -> torch.Tensor:
        if batch.classes is None:
            raise ValueError("cross-entropy needs the batch's class names")
        try:
            rows = torch.tensor([self._row[c] for c in batch.classes], device=batch.labels.device)
        except KeyError as exc:
            raise ValueError(f"class {exc.args[0]!r} is not one of the head's {len(self.classes)} classes") from None
        return self(emb, rows[batch.labels])


def distillation_loss(projected: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cosine distance ``1 - cos(projected_i, target_i)`` between student and teacher rows."""
    if projected.shape != targets.shape:
        raise ValueError(f"student {tuple(projected.shape)} and teacher {tuple(targets.shape)} rows differ in shape")
    return (1 - F.cosine_similarity(projected, targets, dim=-1)).mean()


class DistillationLoss(MetricLoss):
    """Distillation from a teacher: a linear head maps the student embedding to the teacher's space.

    The teacher's targets come with the batch (``batch.targets``, one row per
    example); the head is trained with the student and dropped afterwards.
    ``project=False``: no head, the student's own embedding must point where the
    teacher's does (same size), so it inherits the teacher's geometry, not a map of it.
    """

    name = "distill"

    def __init__(self, student_dim: int, teacher_dim: int, project: bool = True):
        super().__init__()
        if not project and student_dim != teacher_dim:
            raise ValueError(f"distilling without a head needs the teacher's size ({teacher_dim}), not {student_dim}")
        self.head = nn.Linear(student_dim, teacher_dim) if project else nn.Identity()

    def forward(self, emb: torch.Tensor, targets: torch.Tensor, n_support: int = 0) -> torch.Tensor:  # type: ignore[override]
        return distillation_loss(self.head(emb), targets)

    def batch_loss(self, emb: torch.Tensor, batch) -> torch.Tensor:
        if batch.targets is None:
            raise ValueError("distillation needs teacher targets in the batch")
        return self(emb, batch.targets)


def make_loss(name: str, **kwargs) -> MetricLoss:
    """A loss module by name: ``proto`` (default), ``triplet`` or ``supcon``."""
    table = {"proto": PrototypicalLoss, "prototypical": PrototypicalLoss, "triplet": TripletLoss,
             "supcon": SupConLoss, "ce": ClassifierLoss}
    if name not in table:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)} or ce")
    return table[name](**kwargs)


@torch.no_grad()
def episode_accuracy(emb: torch.Tensor, labels: torch.Tensor, n_support: int) -> float:
    """Nearest-prototype (cosine) accuracy of the queries, whatever loss trained the embedding."""
    if not 0 < n_support < len(emb):
        return float("nan")
    logits = prototype_logits(emb[:n_support], labels[:n_support], emb[n_support:])
    return float((logits.argmax(1) == labels[n_support:]).float().mean())
