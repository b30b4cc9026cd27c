"""Cases to training patches: preprocessing, one fused sampling grid per patch, foreground
oversampling, class weights, a decoded-volume cache, the seeded batch plan and a torch
Dataset/DataLoader (``loader`` is the one training-data pipeline).

``preprocess`` is imported from its module, ``attnseg.transforms.preprocess``; re-exporting the
function here would hide that module behind a function of the same name.
"""

from attnseg.transforms.batch_plan import BatchPlan
from attnseg.transforms.cache import VolumeCache, file_key
from attnseg.transforms.intensity import (
    IntensityParams,
    apply_intensity,
    clip_percentiles,
    nonzero_mask,
    normalize_zscore,
)
from attnseg.transforms.loader import (
    CaseStore,
    PatchDataset,
    PreparedCase,
    make_loader,
    seed_worker,
)
from attnseg.transforms.sampling import (
    PatchSampler,
    SampleParams,
    TrainTransform,
    choose_patch_start,
    class_locations,
    class_weights,
    label_counts,
    voxel_weight_map,
)
from attnseg.transforms.spatial import (
    SpatialParams,
    elastic_displacement,
    resample_to_spacing,
    resampled_affine,
    rotation_matrix,
    sample_patch,
    sampling_grid,
)

__all__ = [
    "BatchPlan",
    "CaseStore",
    "IntensityParams",
    "PatchDataset",
    "PatchSampler",
    "PreparedCase",
    "SampleParams",
    "SpatialParams",
    "TrainTransform",
    "VolumeCache",
    "apply_intensity",
    "choose_patch_start",
    "class_locations",
    "class_weights",
    "clip_percentiles",
    "elastic_displacement",
    "file_key",
    "label_counts",
    "make_loader",
    "nonzero_mask",
    "normalize_zscore",
    "resample_to_spacing",
    "resampled_affine",
    "rotation_matrix",
    "sample_patch",
    "sampling_grid",
    "seed_worker",
    "voxel_weight_map",
]
