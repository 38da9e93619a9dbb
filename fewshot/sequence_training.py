"""Old import path of the stroke training and fusion evaluation code; nothing is defined here.

Training is :mod:`fewshot.train` (one loop for every input kind), evaluation
:mod:`fewshot.evaluation` (one kernel), fusion :mod:`fewshot.encoders.fusion`.
"""
from fewshot.encoders.fusion import fuse_embeddings  # noqa: F401
from fewshot.evaluation.fusion import (choose_fusion_weight, evaluate_fusion, evaluate_sequences,  # noqa: F401
                                       fusion_parts)
from fewshot.train.classes import expand_symmetries  # noqa: F401
from fewshot.train.export import export_sequence_encoder  # noqa: F401
from fewshot.train.loop import SequenceTrainConfig  # noqa: F401
