"""Episodic few-shot evaluation: N-way K-shot accuracy with a 95% confidence interval.

One kernel (:mod:`fewshot.evaluation.kernel`) serves every caller: ``fewshot
evaluate`` (:func:`evaluate_data`), :func:`evaluate`, validation during training,
the fusion evaluation (:mod:`fewshot.evaluation.fusion`) and the benchmarks.
"""
from fewshot.evaluation.api import (PLOT_EXTRA_EPISODES, EvalReport, dataset_size_for, evaluate, evaluate_data,
                                    load_for)
from fewshot.evaluation.embedding import TTA_SHIFTS, _shift, check_kinds, dataset_counts, embed_dataset
from fewshot.evaluation.kernel import (MAX_CONFUSION_CLASSES, EvalResult, episode_accuracies, episode_predictions,
                                       evaluate_embeddings, max_queries, run_episodes)

__all__ = ["evaluate", "evaluate_data", "EvalReport", "EvalResult", "evaluate_embeddings", "embed_dataset",
           "max_queries", "dataset_counts", "check_kinds", "dataset_size_for", "load_for", "run_episodes",
           "episode_accuracies", "episode_predictions", "TTA_SHIFTS", "MAX_CONFUSION_CLASSES",
           "PLOT_EXTRA_EPISODES", "_shift"]
