"""Tiny synthetic datasets in every layout, written to tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

LPS = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, 239.0], [0, 0, 1.0, 0], [0, 0, 0, 1]])
SHAPE = (6, 5, 4)


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray = LPS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def channel_volume(value: float, shape=SHAPE) -> np.ndarray:
    return np.full(shape, value, np.float32)


def label_volume(values=(0, 1, 2), shape=SHAPE) -> np.ndarray:
    label = np.zeros(shape, np.uint8)
    flat = label.reshape(-1)
    for i, v in enumerate(values):
        flat[i] = v
    return label


@pytest.fixture
def msd_root(tmp_path):
    """MSD: 3 cases, 4D images with 2 channels (channel c holds the value 10*c + case)."""
    root = tmp_path / "Task99_Test"
    training = []
    for i in range(3):
        name = f"case_{i:03d}.nii.gz"
        image = np.stack([channel_volume(10 * c + i) for c in range(2)], axis=-1)
        write_nifti(root / "imagesTr" / name, image)
        write_nifti(root / "labelsTr" / name, label_volume())
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "name": "Test",
                "modality": {"0": "FLAIR", "1": "T1w"},
                "labels": {"0": "background", "1": "a", "2": "b"},
                "numTraining": 3,
                "training": training,
                "test": ["./imagesTs/case_100.nii.gz"],
            }
        )
    )
    return root


@pytest.fixture
def nnunet_root(tmp_path):
    """nnU-Net v2: 2 cases, one file per channel, region-based labels."""
    root = tmp_path / "Dataset001_Test"
    for i in range(2):
        for c in range(2):
            write_nifti(root / "imagesTr" / f"pt{i}_{c:04d}.nii.gz", channel_volume(10 * c + i))
        write_nifti(root / "labelsTr" / f"pt{i}.nii.gz", label_volume((0, 1, 2, 3)))
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "T2", "1": "ADC"},
                "labels": {"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enhancing": 3},
                "regions_class_order": [1, 2, 3],
                "numTraining": 2,
                "file_ending": ".nii.gz",
            }
        )
    )
    return root


BRATS17 = {"flair": 1.0, "t1": 2.0, "t1ce": 3.0, "t2": 4.0}
BRATS23 = {"t2f": 1.0, "t1n": 2.0, "t1c": 3.0, "t2w": 4.0}


@pytest.fixture
def brats2018_root(tmp_path):
    """BraTS 2018 naming in HGG/LGG grade folders; each channel holds a distinct constant."""
    root = tmp_path / "MICCAI_BraTS_2018"
    for grade, case in [("HGG", "Brats18_A_1"), ("HGG", "Brats18_B_1"), ("LGG", "Brats18_C_1")]:
        for key, value in BRATS17.items():
            write_nifti(root / grade / case / f"{case}_{key}.nii.gz", channel_volume(value))
        write_nifti(root / grade / case / f"{case}_seg.nii.gz", label_volume((0, 1, 2, 4)))
    return root


@pytest.fixture
def brats2023_root(tmp_path):
    root = tmp_path / "BraTS2023"
    for case in ["BraTS-GLI-00000-000", "BraTS-GLI-00002-000"]:
        for key, value in BRATS23.items():
            write_nifti(root / case / f"{case}-{key}.nii.gz", channel_volume(value))
        write_nifti(root / case / f"{case}-seg.nii.gz", label_volume((0, 1, 2, 3)))
    return root


@pytest.fixture
def deepmedic_root(tmp_path):
    """DeepMedic's BraTS 2015 form: file names without the case id, float32 labels 0-4."""
    root = tmp_path / "brats2015"
    for case in ["brats_2013_pat0001_1", "brats_2013_pat0004_1"]:
        write_nifti(root / case / "Flair_subtrMeanDivStd.nii.gz", channel_volume(1.0))
        write_nifti(root / case / "T1c_subtrMeanDivStd.nii.gz", channel_volume(3.0))
        write_nifti(root / case / "OTMultiClass.nii.gz", label_volume((0, 1, 2, 3, 4)).astype(np.float32))
        write_nifti(root / case / "brainmask.nii.gz", np.ones(SHAPE, np.int32))
        (root / case / "License.txt").write_text("licence")
    return root


@pytest.fixture
def paired_nifti_root(tmp_path):
    root = tmp_path / "paired"
    for i in range(4):
        write_nifti(root / "images" / f"hippo_{i:03d}.nii.gz", channel_volume(i), np.eye(4))
        write_nifti(root / "labels" / f"hippo_{i:03d}.nii.gz", label_volume(), np.eye(4))
    return root


@pytest.fixture
def paired_2d_root(tmp_path):
    """images/*.jpg (RGB) + masks/*_mask.png (0/255)."""
    root = tmp_path / "polyps"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(3):
        rgb = np.zeros((8, 10, 3), np.uint8)
        rgb[..., 0] = 50 + i
        Image.fromarray(rgb).save(root / "images" / f"img{i}.png")
        mask = np.zeros((8, 10), np.uint8)
        mask[2:5, 3:7] = 255
        Image.fromarray(mask).save(root / "masks" / f"img{i}_mask.png")
    return root


@pytest.fixture
def slices_root(tmp_path):
    """Two patients, slices 1..11 (numeric sort matters), 3-channel TIFF images and 0/255 masks."""
    import tifffile

    root = tmp_path / "lgg"
    for patient, n in [("TCGA_AA_0001_20000101", 11), ("TCGA_BB_0002_20000202", 3)]:
        folder = root / patient
        folder.mkdir(parents=True)
        for s in range(1, n + 1):
            image = np.zeros((6, 7, 3), np.uint8)
            image[..., 1] = s  # "FLAIR" channel holds the slice number
            tifffile.imwrite(folder / f"{patient}_{s}.tif", image, photometric="rgb")
            mask = np.zeros((6, 7), np.uint8)
            if s == 2:
                mask[1:3, 1:4] = 255
            tifffile.imwrite(folder / f"{patient}_{s}_mask.tif", mask)
    (root / "data.csv").write_text("Patient\n")
    return root


NESTED_REGIONS = {"whole_tumor": [1, 2, 3, 4], "tumor_core": [1, 2, 3], "enhancing_tumor": [1]}


def write_nnunet_regions(root: Path, class_order=None) -> Path:
    """A one-case nnU-Net v2 folder with nested BraTS-PED-like regions (optionally a regions_class_order)."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    label = np.zeros((4, 4, 3), np.uint8)
    label[1:3, 1:3, 1] = [[4, 3], [1, 2]]
    nib.save(
        nib.Nifti1Image(np.ones((4, 4, 3), np.float32), np.eye(4)), str(root / "imagesTr" / "a_0000.nii.gz")
    )
    nib.save(nib.Nifti1Image(label, np.eye(4)), str(root / "labelsTr" / "a.nii.gz"))
    labels = {"background": 0, **{k: v if len(v) > 1 else v[0] for k, v in NESTED_REGIONS.items()}}
    spec = {"channel_names": {"0": "T2"}, "labels": labels, "numTraining": 1, "file_ending": ".nii.gz"}
    if class_order is not None:
        spec["regions_class_order"] = class_order
    (root / "dataset.json").write_text(json.dumps(spec))
    return root
