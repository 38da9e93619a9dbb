"""Datasets: Omniglot, class-per-folder trees, scikit-learn digits; one in-memory shape."""
from fewshot.data.dataset import LabelledSet
from fewshot.data.digits import digits_to_images, load_digits
from fewshot.data.folders import load_folder_dataset
from fewshot.data.omniglot import download_omniglot, load_omniglot
from fewshot.data.registry import detect_layout, load_dataset
from fewshot.data.strokes import load_omniglot_strokes, load_sequence_folder

__all__ = ["LabelledSet", "download_omniglot", "load_omniglot", "load_dataset", "load_digits",
           "load_folder_dataset", "digits_to_images", "detect_layout",
           "load_omniglot_strokes", "load_sequence_folder"]
