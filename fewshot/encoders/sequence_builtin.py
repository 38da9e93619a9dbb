"""The built-in sequence encoders: the shipped stroke RNN, stroke+image fusion, ts-rocket, ts-gru, and the RNN family."""
from __future__ import annotations

from fewshot.encoders.fusion import FusionEncoder
from fewshot.encoders.registry import DEFAULTS, from_file, load, register
from fewshot.encoders.sequence import TorchSequenceEncoder, new_sequence_encoder
from fewshot.encoders.weights import load_weights_file, packaged_path, seeded_init
from fewshot.errors import EncoderError

STROKE_RNN = "omniglot-strokes-gru"
STROKE_FUSION = "omniglot-strokes-fusion"
#: The default for stroke indexes (chosen in ``registry.DEFAULTS``): the shipped GRU together
#: with the shipped CNN on the rendered trajectory, more accurate than either alone
#: (SEQUENCE_MODEL_CARD.md has the measurements).
DEFAULT_SEQUENCE_ENCODER = DEFAULTS["sequence"]
STROKES_WEIGHTS = "omniglot_strokes_gru.pt"
#: Weight of the GRU's cosine in the fused cosine (the CNN's is 1 - w). Chosen on validation
#: episodes of the held-out alphabet (seed 12345), reported on others (seed 0): SEQUENCE_MODEL_CARD.md.
FUSION_SEQUENCE_WEIGHT = 0.15
#: Version 2's weight, chosen the same way for its parts (GRU version 2 + omniglot-resnet12).
FUSION_V2_SEQUENCE_WEIGHT = 0.1
STROKES_GRU_V2_FINGERPRINT = "e930de460f496c92"
STROKES_FUSION_V2_FINGERPRINT = "bed050d3945a8122"


@register(STROKE_RNN, input_kind="sequence", dim=128,
          weights="package data (trained on Omniglot strokes here)",
          description="bidirectional GRU over pen offsets with attention pooling (the RNN of the stroke default)",
          version=1, fingerprint="5c7a378691a1273e")
def omniglot_strokes_gru(weights: str | None = None) -> TorchSequenceEncoder:
    return from_file(weights or packaged_path(STROKES_WEIGHTS), name=STROKE_RNN)


@register(STROKE_FUSION, input_kind="sequence", dim=128 + 64,
          weights="package data (omniglot-strokes-gru + omniglot-conv4)",
          description=f"the default for strokes: GRU on the pen trajectory + CNN on its rendering; "
                      f"cosine = {FUSION_SEQUENCE_WEIGHT:g} x GRU + {1 - FUSION_SEQUENCE_WEIGHT:g} x CNN",
          version=1, fingerprint="909b15f2c4685408")
def omniglot_strokes_fusion(weights: str | None = None) -> FusionEncoder:
    """Version 1 pins version 1 of both parts: a new GRU or CNN release is a new fusion version
    (registered with its parts' versions), so indexes of this one keep their fingerprint."""
    if weights is not None:
        raise EncoderError("omniglot-strokes-fusion takes no weights; build FusionEncoder(...) for other parts")
    return FusionEncoder(STROKE_FUSION, load(f"{STROKE_RNN}@1"), load("omniglot-conv4@1"),
                         sequence_weight=FUSION_SEQUENCE_WEIGHT)


@register(STROKE_RNN, input_kind="sequence", dim=128,
          weights="package data (trained on Omniglot strokes here)",
          description="bidirectional GRU over pen offsets with attention pooling, trained on all five stroke "
                      "alphabets (the RNN of the stroke default)",
          version=2, fingerprint=STROKES_GRU_V2_FINGERPRINT)
def omniglot_strokes_gru_v2(weights: str | None = None) -> TorchSequenceEncoder:
    return from_file(weights or packaged_path("omniglot_strokes_gru_v2.pt"), name=STROKE_RNN)


@register(STROKE_FUSION, input_kind="sequence", dim=128 + 256,
          weights="package data (omniglot-strokes-gru@2 + omniglot-resnet12@1)",
          description=f"the default for strokes: GRU on the pen trajectory + ResNet-12 on its rendering; "
                      f"cosine = {FUSION_V2_SEQUENCE_WEIGHT:g} x GRU + {1 - FUSION_V2_SEQUENCE_WEIGHT:g} x CNN",
          version=2, fingerprint=STROKES_FUSION_V2_FINGERPRINT)
def omniglot_strokes_fusion_v2(weights: str | None = None) -> FusionEncoder:
    """Version 2: the GRU trained on all five alphabets and the ResNet-12 CNN (both pinned)."""
    if weights is not None:
        raise EncoderError("omniglot-strokes-fusion takes no weights; build FusionEncoder(...) for other parts")
    return FusionEncoder(STROKE_FUSION, load(f"{STROKE_RNN}@2"), load("omniglot-resnet12@1"),
                         sequence_weight=FUSION_V2_SEQUENCE_WEIGHT)


TS_GRU = "ts-gru"
TS_WEIGHTS = "ts_gru.pt"


@register(TS_GRU, input_kind="sequence", dim=12 * 66,
          weights="package data (trained on the 10 classification problems shipped with aeon)",
          description="time series with any channel count: resampled to 128 steps, one shared conv+GRU per "
                      "z-normalised channel + its level and scale, channels in 12 slots (TIMESERIES_MODEL_CARD.md)")
def ts_gru(weights: str | None = None) -> TorchSequenceEncoder:
    return from_file(weights or packaged_path(TS_WEIGHTS), name=TS_GRU)


TS_ROCKET = "ts-rocket"
TS_ROCKET_WEIGHTS = "ts_rocket.pt"


@register(TS_ROCKET, input_kind="sequence", dim=12 * (84 * 6 * 5 + 4),
          weights="package data (PPV biases fitted and a metric trained on the 10 aeon classification problems)",
          description="time series with any channel count (the one to use): per channel MiniRocket's 84 fixed kernels "
                      "x 6 dilations x 5 biases (PPV) + level and scale, weighted by a learnt metric, in 12 "
                      "channel slots (TIMESERIES_MODEL_CARD.md)",
          version=1, fingerprint="88aae6d07b044c17")
def ts_rocket(weights: str | None = None) -> TorchSequenceEncoder:
    return from_file(weights or packaged_path(TS_ROCKET_WEIGHTS), name=TS_ROCKET)


def _rnn(cell: str, weights: str | None, kind: str = "strokes", n_features: int = 3, **arch) -> TorchSequenceEncoder:
    """A fresh RNN of the family (seeded, so its fingerprint is stable); weights = a state-dict path."""
    from fewshot.sequences import SequencePreprocess

    pre = SequencePreprocess(kind=kind, n_features=n_features)
    with seeded_init(0):
        enc = new_sequence_encoder(f"rnn-{cell}", pre, cell=cell, **arch)
    if weights not in (None, "none"):
        sd = load_weights_file(weights)
        try:
            enc.module.load_state_dict(sd)
        except (RuntimeError, TypeError) as exc:
            raise EncoderError(f"{weights} does not fit rnn-{cell}: {str(exc).splitlines()[0][:160]}") from None
        enc.weights_source = str(weights)
    return enc


for _cell in ("gru", "lstm"):
    register(f"rnn-{_cell}", input_kind="sequence", dim=128, weights="none (random init, to train)",
             description=f"{_cell.upper()} family: stacked, bidirectional, attention/mean/last pooling")(
        lambda weights=None, _c=_cell, **kw: _rnn(_c, weights, **kw))
