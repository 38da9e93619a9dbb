"""Datasets: Omniglot, class-per-folder trees, scikit-learn digits; one in-memory shape."""
from fewshot.data.dataset import ImageDataset
from fewshot.data.omniglot import download_omniglot, load_omniglot

__all__ = ["ImageDataset", "download_omniglot", "load_omniglot"]
