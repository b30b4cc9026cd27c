"""Prediction names its outputs after the names the input lists (never a symlink's target, in
lower-case ``.nii.gz``/``.png`` whatever the input's letter case), never ends with exit 0 having
written fewer outputs than cases found, and a single input file is its own input folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from attnseg.cli import main
from attnseg.config import PreprocessConfig
from attnseg.datasets.label_scheme import LabelScheme
from attnseg.errors import ConfigError
from attnseg.inference import predict as predict_module
from attnseg.inference.predict import (
    InferenceSettings,
    LoadedModel,
    PredictOptions,
    find_cases,
    predict_case,
    predict_folder,
)
from attnseg.models import AttentionUNet, save_model

EYE = np.eye(4)


def write_nifti(path: Path, value: float = 100.0, shape=(10, 9, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.zeros(shape, np.float32)
    data[2:-2, 2:-2, 2:-2] = value
    nib.save(nib.Nifti1Image(data, EYE), str(path))
    return path


def link(path: Path, target: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(target, path.parent), path)
    return path


def threshold_model(dims: int = 3, channels: int = 1) -> LoadedModel:
    """Class 1 where the first normalised channel is above 0: no training, no weights."""

    def predictor(batch):
        return torch.cat([torch.zeros_like(batch[:, :1]), batch[:, :1]], dim=1)

    settings = InferenceSettings(
        dims, channels, 2, (8,) * dims, PreprocessConfig(), LabelScheme("labels", (0, 1), ("bg", "fg"))
    )
    return LoadedModel(predictor, settings)


@pytest.fixture
def model_file(tmp_path):
    torch.manual_seed(3)
    model = AttentionUNet(3, 1, 2, (4, 8)).eval()
    extra = {"preprocessing": {"patch_size": [16, 16, 16], "normalization": "zscore_nonzero"}}
    return save_model(tmp_path / "model" / "model.pt", model, extra)


def msd_of_links(tmp_path: Path, target_names: list[str]) -> Path:
    """``ds/imagesTr/hip_00N.nii.gz -> ../../raw/patientN/<target name>`` (labels alike)."""
    root = tmp_path / "ds"
    training = []
    for i, name in enumerate(target_names, start=1):
        image = write_nifti(tmp_path / "raw" / f"patient{i}" / name, 10.0 * i)
        label = write_nifti(tmp_path / "raw" / f"patient{i}" / f"mask_{name}", 1.0)
        link(root / "imagesTr" / f"hip_00{i}.nii.gz", image)
        link(root / "labelsTr" / f"hip_00{i}.nii.gz", label)
        training.append({"image": f"./imagesTr/hip_00{i}.nii.gz", "label": f"./labelsTr/hip_00{i}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({"modality": {"0": "MRI"}, "training": training}))
    return root


def outputs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file())


@pytest.mark.parametrize(
    "targets",
    [["image.nii.gz"] * 3, ["scan_7f3a.nii.gz", "scan_91bc.nii.gz", "scan_0c2d.nii.gz"]],
    ids=["same-named-targets", "distinct-targets"],
)
def test_msd_links_predict_and_evaluate_under_the_listed_names(tmp_path, model_file, capsys, targets):
    root = msd_of_links(tmp_path, targets)
    pred = tmp_path / "pred"
    assert main(["predict", str(model_file), str(root), str(pred), "--quiet"]) == 0
    assert outputs(pred) == ["hip_001.nii.gz", "hip_002.nii.gz", "hip_003.nii.gz"]
    assert "predicted 3 case(s)" in capsys.readouterr().out
    assert main(["evaluate", str(pred), str(root), "--no-lesions", "--labels", "1"]) == 0
    # run again: every output exists, so each case is skipped, and that counts as written
    assert main(["predict", str(model_file), str(root), str(pred), "--quiet"]) == 0
    assert "skipped 3 already predicted, 0 failed" in capsys.readouterr().out


def test_nnunet_brats_and_paired_links_predict_under_their_names(tmp_path):
    raw = [write_nifti(tmp_path / "raw" / f"export_{i}" / "volume.nii.gz", 10.0 * i) for i in (1, 2)]
    nnunet = tmp_path / "Dataset002_X"
    for case_id, target in zip(["pt_a", "pt_b"], raw):
        link(nnunet / "imagesTr" / f"{case_id}_0000.nii.gz", target)
    (nnunet / "dataset.json").write_text(
        json.dumps(
            {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "x": 1}, "file_ending": ".nii.gz"}
        )
    )
    paired = tmp_path / "paired"
    for case_id, target in zip(["left", "right"], raw):
        link(paired / "images" / f"{case_id}.nii.gz", target)
    (paired / "labels").mkdir()
    brats = tmp_path / "brats"
    for key in ("flair", "t1", "t1ce", "t2"):
        link(tmp_path / "raw" / "case_folder" / f"Brats18_Z_1_{key}.nii.gz", raw[0])
    link(brats / "Brats18_Q_1", tmp_path / "raw" / "case_folder")  # the case folder itself is a link
    expected = {
        nnunet: (1, ["pt_a.nii.gz", "pt_b.nii.gz"]),
        paired: (1, ["left.nii.gz", "right.nii.gz"]),
        brats: (4, ["Brats18_Q_1.nii.gz"]),
    }
    for i, (root, (channels, names)) in enumerate(expected.items()):
        out = tmp_path / f"pred{i}"
        report = predict_folder(threshold_model(3, channels), root, out, progress=False)
        assert (report.failed, outputs(out)) == ([], names)


def test_a_symlinked_single_file_is_named_after_the_link(tmp_path):
    target = write_nifti(tmp_path / "raw" / "1.2.840.113619.nii.gz")
    scan = link(tmp_path / "study" / "knee_left.nii.gz", target)
    report = predict_folder(threshold_model(), scan, tmp_path / "pred", progress=False)
    assert report.predicted == ["knee_left"] and outputs(tmp_path / "pred") == ["knee_left.nii.gz"]


def test_predict_next_to_a_single_file_input(tmp_path, model_file, capsys, monkeypatch):
    """``attnseg predict model.pt scan.nii.gz out`` in the scan's folder writes out/scan.nii.gz;
    the scan's own folder (or, for a link, its target's folder) is refused, naming no --out option."""
    write_nifti(tmp_path / "scan.nii.gz")
    monkeypatch.chdir(tmp_path)
    assert main(["predict", str(model_file), "scan.nii.gz", "out", "--quiet"]) == 0
    assert outputs(tmp_path / "out") == ["scan.nii.gz"]
    capsys.readouterr()
    assert main(["predict", str(model_file), "scan.nii.gz", ".", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "holds input images" in err and "--out" not in err
    link(tmp_path / "links" / "other.nii.gz", tmp_path / "scan.nii.gz")
    assert main(["predict", str(model_file), "links/other.nii.gz", str(tmp_path), "--quiet"]) == 2
    assert "holds input images (links/other.nii.gz)" in capsys.readouterr().err
    assert outputs(tmp_path) == ["scan.nii.gz"]  # nothing written next to the input
    # a dataset folder: the folder and anything inside it stay refused
    (tmp_path / "data").mkdir()
    write_nifti(tmp_path / "data" / "a.nii.gz")
    assert main(["predict", str(model_file), "data", "data/pred", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "inside the input folder data" in err and "--out" not in err


def test_upper_case_extensions_predict_to_lower_case_names(tmp_path):
    folder = tmp_path / "in"
    write_nifti(folder / "tmp.nii.gz").rename(folder / "ct_01.NII.GZ")
    nii = folder / "ct_02.nii"
    nib.save(nib.Nifti1Image(np.ones((10, 9, 8), np.float32), EYE), str(nii))
    nii.rename(folder / "ct_02.Nii")
    report = predict_folder(threshold_model(), folder, tmp_path / "pred", progress=False)
    assert report.failed == [] and outputs(tmp_path / "pred") == ["ct_01.nii.gz", "ct_02.nii.gz"]
    # one file, nnU-Net channel naming in capitals: the sibling channels are found in any case
    write_nifti(tmp_path / "nn" / "tmp.nii.gz").rename(tmp_path / "nn" / "case_0000.NII.GZ")
    dataset, _ = find_cases(tmp_path / "nn" / "case_0000.NII.GZ")
    assert dataset.case_ids == ["case"] and [p.name for p in dataset.cases[0].images] == ["case_0000.NII.GZ"]
    # 2D
    png = tmp_path / "png"
    png.mkdir()
    Image.fromarray(np.full((12, 10), 80, np.uint8)).save(png / "photo.PNG", format="PNG")
    report = predict_folder(threshold_model(2), png, tmp_path / "pred2d", progress=False)
    assert report.failed == [] and outputs(tmp_path / "pred2d") == ["photo.png"]


def test_fewer_outputs_than_cases_is_a_failure(tmp_path, model_file, capsys, monkeypatch):
    # two different files listed under one case id: both are refused, by name, exit 1
    root = tmp_path / "ds"
    write_nifti(root / "imagesTr" / "a.nii.gz", 1.0)
    write_nifti(root / "other" / "a.nii.gz", 2.0)
    write_nifti(root / "imagesTr" / "b.nii.gz", 3.0)
    training = [
        {"image": "./imagesTr/a.nii.gz"},
        {"image": "./other/a.nii.gz"},
        {"image": "./imagesTr/b.nii.gz"},
    ]
    (root / "dataset.json").write_text(json.dumps({"modality": {"0": "MRI"}, "training": training}))
    assert main(["predict", str(model_file), str(root), str(tmp_path / "pred"), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "predicted 1 case(s)" in captured.out and "2 failed" in captured.out
    assert "failed cases: a, a" in captured.err
    assert outputs(tmp_path / "pred") == ["b.nii.gz"]

    # a writer that returns without writing: the count of files on disk still decides
    monkeypatch.setattr(predict_module, "save_image", lambda path, *a, **k: Path(path))
    report = predict_folder(threshold_model(), root / "imagesTr", tmp_path / "pred2", progress=False)
    assert sorted(c for c, _ in report.failed) == ["a", "b"]
    assert all("was not written" in why for _, why in report.failed)
    assert main(["predict", str(model_file), str(root / "imagesTr"), str(tmp_path / "pred3"), "--quiet"]) == 1
    assert "failed cases: a, b" in capsys.readouterr().err


def test_bf16_on_mps_is_refused_before_any_window():
    model = threshold_model()
    on_mps = LoadedModel(model.predictor, model.settings, device=torch.device("mps"))
    image = np.random.default_rng(0).normal(size=(1, 8, 8, 8)).astype(np.float32)
    with pytest.raises(ConfigError, match="--bf16 on mps"):
        predict_case(on_mps, image, (1.0, 1.0, 1.0), PredictOptions(autocast=True))
