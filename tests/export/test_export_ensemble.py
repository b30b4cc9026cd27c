"""An ensemble (a cross-validation folder, or several model files) exported as one ONNX file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnseg.cli import main
from attnseg.config import ModelConfig
from attnseg.export import read_metadata
from attnseg.inference.predict import PredictOptions, load_for_inference, predict_case
from attnseg.models import build_model, save_model

CARD = {"patch_size": [16, 16], "postprocessing": {"keep_largest": [1], "min_component_vox": {}}}


@pytest.fixture(autouse=True)
def _one_thread():  # as tests/export/test_export.py: tiny models are faster on one thread here
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def cv_folder(root, k=3):
    for fold in range(k):
        torch.manual_seed(fold)
        model = build_model(ModelConfig(spatial_dims=2, in_channels=1, out_channels=3, features=(4, 8)))
        (root / f"fold_{fold}").mkdir(parents=True)
        save_model(root / f"fold_{fold}" / "model.pt", model, CARD)
    return root


def test_a_cross_validation_folder_exports_as_one_onnx_file_that_predicts_like_the_ensemble(tmp_path, capsys):
    run = cv_folder(tmp_path / "cv", 2)
    out = tmp_path / "ensemble.onnx"
    assert main(["export", str(run), str(out), "--exporter", "torchscript"]) == 0
    assert "argmax agreement 100.0000 %" in capsys.readouterr().out
    meta = read_metadata(out)
    assert meta["ensemble"]["activation"] == "softmax" and len(meta["ensemble"]["members"]) == 2
    assert meta["postprocessing"] == CARD["postprocessing"] and meta["patch_size"] == [16, 16]
    image = np.random.default_rng(0).normal(size=(1, 23, 19)).astype(np.float32)
    options = PredictOptions(card_postprocessing=False)
    torch_pred = predict_case(load_for_inference(run), image, None, options, with_probabilities=True)
    onnx_model = load_for_inference(out)
    assert onnx_model.settings.postprocessing == CARD["postprocessing"]
    onnx_pred = predict_case(onnx_model, image, None, options, with_probabilities=True)
    np.testing.assert_allclose(onnx_pred.probabilities, torch_pred.probabilities, atol=1e-4)
    np.testing.assert_array_equal(onnx_pred.labels, torch_pred.labels)


def test_an_ensemble_is_not_quantized(tmp_path, capsys):
    run = cv_folder(tmp_path / "cv", 2)
    assert main(["export", str(run), str(tmp_path / "e.onnx"), "--int8", "--calibration", str(tmp_path)]) == 2
    assert "--int8 of an ensemble is not supported" in capsys.readouterr().err
