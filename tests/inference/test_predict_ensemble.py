"""Prediction with a fold ensemble (several model files, or a cross-validation folder) and with the
component rules a model card records."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnseg.cli import main
from attnseg.config import ModelConfig
from attnseg.errors import ConfigError, DataError
from attnseg.inference.postprocess import keep_largest_component, postprocess_components
from attnseg.inference.predict import (
    PredictOptions,
    ensemble_members,
    load_for_inference,
    predict_case,
)
from attnseg.models import build_model, save_model
from attnseg.models.ensemble import EnsembleModel

REGIONS = {"kind": "regions", "values": [0, 1, 2], "names": ["whole", "core"], "regions": [[1, 2], [2]]}


def model_file(path, seed=0, out_channels=2, **card):
    torch.manual_seed(seed)
    model = build_model(
        ModelConfig(spatial_dims=3, in_channels=1, out_channels=out_channels, features=(4, 8))
    )
    return save_model(path, model, {"patch_size": [8, 8, 8], **card})


def image(seed=0):
    return np.random.default_rng(seed).normal(size=(1, 13, 11, 9)).astype(np.float32)


@pytest.mark.parametrize("card", [{}, {"target": REGIONS}])
def test_an_ensemble_of_two_identical_models_predicts_what_one_model_does(tmp_path, card):
    out_channels = 2
    a = model_file(tmp_path / "a.pt", 0, out_channels, **card)
    b = tmp_path / "b.pt"
    b.write_bytes(a.read_bytes())
    one = load_for_inference(a)
    two = load_for_inference([a, b])
    assert isinstance(two.predictor, EnsembleModel) and len(two.predictor.members) == 2
    for tta in (False, True):
        options = PredictOptions(tta=tta)
        p1 = predict_case(one, image(), (1.0, 1.0, 1.0), options, with_probabilities=True)
        p2 = predict_case(two, image(), (1.0, 1.0, 1.0), options, with_probabilities=True)
        np.testing.assert_allclose(p2.probabilities, p1.probabilities, atol=2e-6)
        np.testing.assert_array_equal(p2.labels, p1.labels)


def test_an_ensemble_averages_the_members_probabilities(tmp_path):
    a, b = model_file(tmp_path / "a.pt", 0), model_file(tmp_path / "b.pt", 1)
    one_window = image()[:, :8, :8, :8]  # the patch: one window, no blending between windows
    options = PredictOptions(crop_nonzero=False)
    pa, pb, both = (
        predict_case(load_for_inference(m), one_window, None, options, with_probabilities=True)
        for m in (a, b, [a, b])
    )
    assert not np.allclose(pa.probabilities, pb.probabilities, atol=0.02)
    np.testing.assert_allclose(both.probabilities, (pa.probabilities + pb.probabilities) / 2, atol=1e-6)
    np.testing.assert_array_equal(both.labels, np.argmax(pa.probabilities + pb.probabilities, axis=0))


def test_a_cross_validation_folder_is_the_ensemble_of_its_folds(tmp_path):
    for k in (1, 0, 10, 2):
        (tmp_path / "cv" / f"fold_{k}").mkdir(parents=True)
        model_file(tmp_path / "cv" / f"fold_{k}" / "model.pt", k)
    assert [p.parent.name for p in ensemble_members(tmp_path / "cv")] == [
        "fold_0",
        "fold_1",
        "fold_2",
        "fold_10",
    ]
    (tmp_path / "run").mkdir()
    model_file(tmp_path / "run" / "model.pt")
    assert ensemble_members(tmp_path / "run") is None  # a run folder is its model.pt
    assert load_for_inference(tmp_path / "run").path == tmp_path / "run" / "model.pt"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="fold_<k>/model.pt"):
        ensemble_members(tmp_path / "empty")


def test_a_cross_validation_folder_with_a_missing_fold_is_refused(tmp_path):
    for k in (0, 2):
        (tmp_path / f"fold_{k}").mkdir()
        model_file(tmp_path / f"fold_{k}" / "model.pt", k)
    (tmp_path / "splits.json").write_text('{"version": 1, "k": 3, "folds": []}')
    with pytest.raises(DataError, match=r"fold\(s\) \[1\] of the 3 in splits.json have no model.pt"):
        ensemble_members(tmp_path)


def test_an_ensemble_refuses_models_that_disagree(tmp_path):
    a = model_file(tmp_path / "a.pt")
    b = model_file(tmp_path / "b.pt", patch_size=[16, 16, 16])
    with pytest.raises(ConfigError, match="patch_size differ"):
        load_for_inference([a, b])


def test_predict_applies_the_card_postprocessing_unless_told_otherwise(tmp_path):
    card = {"postprocessing": {"keep_largest": [1], "min_component_vox": {}}}
    path = model_file(tmp_path / "m.pt", 3, **card)
    loaded = load_for_inference(path)
    assert loaded.settings.postprocessing == card["postprocessing"]
    raw = predict_case(loaded, image(), None, PredictOptions(card_postprocessing=False)).labels
    assert len(np.unique(__import__("cc3d").connected_components(raw == 1))) > 2  # several parts
    ruled = predict_case(loaded, image(), None, PredictOptions()).labels
    np.testing.assert_array_equal(ruled, keep_largest_component(raw, [1]))
    given = predict_case(loaded, image(), None, PredictOptions(min_component_vox=5)).labels
    np.testing.assert_array_equal(given, postprocess_components(raw, min_voxels=5))  # replaces the card's


def test_predict_cli_takes_several_model_files(tmp_path, capsys):
    import nibabel as nib

    a, b = model_file(tmp_path / "a.pt", 0), model_file(tmp_path / "b.pt", 1)
    nib.save(nib.Nifti1Image(image()[0], np.eye(4)), str(tmp_path / "case.nii.gz"))
    assert (
        main(["predict", str(a), str(b), str(tmp_path / "case.nii.gz"), str(tmp_path / "out"), "--quiet"])
        == 0
    )
    assert "ensemble of 2 models: their softmax outputs are averaged per window" in capsys.readouterr().err
    expected = predict_case(load_for_inference([a, b]), image(), (1.0, 1.0, 1.0)).labels
    written = np.asarray(nib.load(str(tmp_path / "out" / "case.nii.gz")).dataobj)
    np.testing.assert_array_equal(written, expected)
