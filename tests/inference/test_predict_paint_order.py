"""Region models paint label maps in the recorded order, or the input dataset's for older model files."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import torch

from attnseg.config import PreprocessConfig
from attnseg.datasets.label_scheme import LabelScheme
from attnseg.inference.predict import InferenceSettings, LoadedModel, predict_folder

REGIONS = {"whole_tumor": [1, 2, 3, 4], "tumor_core": [1, 2, 3], "enhancing_tumor": [1]}
ORDER = (("whole_tumor", 4), ("tumor_core", 3), ("enhancing_tumor", 1))


def region_model(paint_order=None, regions=REGIONS):
    """WT where the raw image is > 0.5, TC where > 1.5, ET where > 2.5 (no normalisation)."""

    def predictor(batch):
        return torch.cat([batch - 0.5, batch - 1.5, batch - 2.5], dim=1) * 20

    scheme = LabelScheme(
        "regions", (0, 1, 2, 3, 4), tuple(regions), tuple(regions.values()), paint_order or ()
    )
    settings = InferenceSettings(3, 1, 3, (8, 8, 8), PreprocessConfig(normalization="none"), scheme)
    return LoadedModel(predictor, settings)


def write_nnunet(root, class_order=None, regions=REGIONS):
    image = np.zeros((6, 6, 4), np.float32)
    image[1:5, 1:5, 1:3] = 1.0
    image[2:4, 2:4, 1:3] = 2.0
    image[2, 2, 1:3] = 3.0
    (root / "imagesTr").mkdir(parents=True)
    nib.save(nib.Nifti1Image(image, np.eye(4)), str(root / "imagesTr" / "a_0000.nii.gz"))
    labels = {"background": 0, **{k: v if len(v) > 1 else v[0] for k, v in regions.items()}}
    spec = {"channel_names": {"0": "T2"}, "labels": labels, "numTraining": 0, "file_ending": ".nii.gz"}
    if class_order is not None:
        spec["regions_class_order"] = class_order
    (root / "dataset.json").write_text(json.dumps(spec))
    return root


def predicted_values(out):
    return sorted(np.unique(np.asarray(nib.load(str(out / "a.nii.gz")).dataobj)).tolist())


def test_a_recorded_order_paints_the_recorded_values(tmp_path):
    data = write_nnunet(tmp_path / "ds")
    predict_folder(region_model(ORDER), data, tmp_path / "pred", progress=False)
    assert predicted_values(tmp_path / "pred") == [0, 1, 3, 4]
    predict_folder(region_model(), data, tmp_path / "own", progress=False)
    assert predicted_values(tmp_path / "own") == [0, 1, 2, 4]  # attnseg's rule: the core's own lowest label


def test_an_older_model_file_follows_the_input_datasets_class_order_and_says_so(tmp_path):
    data = write_nnunet(tmp_path / "ds", [4, 3, 1])
    said = []
    predict_folder(region_model(), data, tmp_path / "pred", progress=False, log=said.append)
    assert predicted_values(tmp_path / "pred") == [0, 1, 3, 4]
    notes = [s for s in said if "regions_class_order" in s]
    assert len(notes) == 1 and "whole_tumor -> 4, tumor_core -> 3, enhancing_tumor -> 1" in notes[0]


def test_a_dataset_with_other_regions_keeps_the_models_rule_and_says_so(tmp_path):
    other = {"whole_tumor": [1, 2, 3, 4], "tumor_core": [1, 3], "enhancing_tumor": [1]}
    data = write_nnunet(tmp_path / "ds", [4, 3, 1], regions=other)
    said = []
    predict_folder(region_model(), data, tmp_path / "pred", progress=False, log=said.append)
    assert predicted_values(tmp_path / "pred") == [0, 1, 2, 4]
    assert any("regions differ from the model's" in s for s in said)
