"""Datasets: discover cases in a folder (MSD, nnU-Net, BraTS, folders, paired, 2D slices), load them,
convert BraTS labels to regions, make splits, and check integrity."""

from attnseg.datasets.base import Case, Dataset, Problem
from attnseg.datasets.discover import LAYOUTS, declared_labels, detect_layout, discover, load_case
from attnseg.datasets.label_scheme import LabelScheme
from attnseg.datasets.regions import (
    brats_labels,
    brats_regions,
    brats_scheme,
    indices_to_labels,
    labels_to_indices,
    labels_to_regions,
    regions_to_labels,
)
from attnseg.datasets.splits import load_splits, make_dataset_splits, make_splits, save_splits

__all__ = [
    "LAYOUTS",
    "Case",
    "Dataset",
    "LabelScheme",
    "Problem",
    "brats_labels",
    "brats_regions",
    "brats_scheme",
    "declared_labels",
    "detect_layout",
    "discover",
    "indices_to_labels",
    "labels_to_indices",
    "labels_to_regions",
    "load_case",
    "load_splits",
    "make_dataset_splits",
    "make_splits",
    "regions_to_labels",
    "save_splits",
]
