"""ONNX export, metadata, INT8 quantization and the onnxruntime predictor.

Torch runs with one thread here: on the shared 2-core machine two threads under contention were
measured 10x slower for these tiny models (spin-waiting at every op).
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from attnseg.errors import ModelFileError
from attnseg.export import (
    DepthFoldedConv3d,
    OnnxPredictor,
    export_onnx,
    integer_op_counts,
    quantize_model,
    read_metadata,
)
from attnseg.export.onnx import check_parity, compare_logits
from attnseg.export.quantize import _crop_or_pad, window_starts
from attnseg.models import AttentionUNet, UNet
from attnseg.models.smoke import sphere_batch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    pred, truth = pred == 1, truth == 1
    return 2 * float((pred & truth).sum()) / max(float(pred.sum() + truth.sum()), 1.0)


# --- pure pieces ---------------------------------------------------------------------------------------
def test_depth_folded_conv_equals_conv3d():
    conv = torch.nn.Conv3d(3, 5, 3, padding=1, bias=True)
    x = torch.randn(2, 3, 7, 6, 5)
    with torch.no_grad():
        expected = conv(x)
        got = DepthFoldedConv3d(conv)(x)
    assert got.shape == expected.shape == (2, 5, 7, 6, 5)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_depth_folded_conv_hand_made_depth_taps():
    # weight 1 only at depth tap 0 (the slice before), centre of the 3x3 in-plane kernel:
    # y[d] = x[d - 1], zero at d = 0 (the zero padding)
    conv = torch.nn.Conv3d(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 0, 1, 1] = 1.0
    x = torch.arange(4, dtype=torch.float32).reshape(1, 1, 4, 1, 1).expand(1, 1, 4, 2, 2).contiguous()
    with torch.no_grad():
        y = DepthFoldedConv3d(conv)(x)
    assert y[0, 0, :, 0, 0].tolist() == [0.0, 0.0, 1.0, 2.0]


def test_compare_logits_hand_made():
    ref = np.array([[[1.0, 0.0], [0.0, 1.0]]])  # (N=1, K=2, 2 voxels): argmax [0, 1]
    got = np.array([[[0.5, 0.25], [0.0, 1.5]]])  # argmax [0, 1]; |diff| max 0.5
    report = compare_logits(ref, got)
    assert report.max_abs_diff == pytest.approx(0.5)
    assert report.argmax_agreement == 1.0
    got[0, 1, 0] = 2.0  # voxel 0 now argmax 1
    assert compare_logits(ref, got).argmax_agreement == 0.5


def test_window_starts_and_crop():
    rng = np.random.default_rng(0)
    label = np.zeros((10, 10, 10), dtype=np.uint8)
    label[8, 1, 5] = 1
    # centred on the only labelled voxel, clipped to stay inside: x 8-2=6 (max 10-4=6), y max(1-2, 0)=0, z 3
    assert window_starts((10, 10, 10), (4, 4, 4), rng, label, foreground=True) == (6, 0, 3)
    image = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3)
    out = _crop_or_pad(image, (2, 1), (2, 4))  # 1 row left from row 2, 2 columns from column 1, rest 0
    assert out.shape == (2, 2, 4)
    assert out[0].tolist() == [[7.0, 8.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]


# --- export round trips ----------------------------------------------------------------------------------
@pytest.mark.parametrize("fold", [False, True])
def test_export_3d_odd_size_round_trip(tmp_path, fold):
    model = AttentionUNet(3, 2, 3, features=(4, 8, 16)).eval()
    report = export_onnx(
        model, tmp_path / "m.onnx", example_size=(13, 10, 9), exporter="torchscript", fold=fold
    )
    assert report.parity.max_abs_diff < 1e-4
    assert report.parity.input_shape == (2, 2, 12, 9, 8)  # example size minus one: exercises the padding
    assert report.parity.logits_shape == (2, 3, 12, 9, 8)
    assert str(report.parity).startswith("input (2, 2, 12, 9, 8): max |logit diff|")
    predictor = OnnxPredictor(tmp_path / "m.onnx", threads=1)
    x = torch.randn(3, 2, 7, 21, 12)  # another batch size, another odd size
    with torch.no_grad():
        expected = model(x)
    got = predictor(x)
    assert isinstance(got, torch.Tensor) and got.shape == (3, 3, 7, 21, 12)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    as_numpy = predictor(x.numpy())
    assert isinstance(as_numpy, np.ndarray) and np.allclose(as_numpy, got.numpy())


def test_export_2d_odd_size_round_trip(tmp_path):
    model = UNet(2, 1, 2, features=(4, 8, 16)).eval()
    export_onnx(model, tmp_path / "m2.onnx", example_size=(17, 11), exporter="torchscript", fold=True)
    x = torch.randn(2, 1, 23, 9)
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(OnnxPredictor(tmp_path / "m2.onnx")(x), expected, atol=1e-4, rtol=1e-4)
    assert read_metadata(tmp_path / "m2.onnx")["fold_depth"] is False  # nothing to fold in 2D


def test_export_graph_is_standard_onnx(tmp_path):
    model = AttentionUNet(3, 1, 2, features=(4, 8)).eval()
    export_onnx(model, tmp_path / "m.onnx", example_size=(8, 8, 8), exporter="torchscript", opset=17)
    proto = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(proto, full_check=True)
    assert {o.domain: o.version for o in proto.opset_import}[""] == 17
    dims = [d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "", "s0", "s1", "s2"]  # batch and spatial axes dynamic, channels fixed
    assert proto.graph.input[0].type.tensor_type.shape.dim[1].dim_value == 1


def test_metadata_round_trip(tmp_path):
    model = AttentionUNet(3, 4, 3, features=(4, 8)).eval()
    target = {
        "kind": "regions",
        "values": [0, 1, 2, 4],
        "names": ["WT", "TC", "ET"],
        "regions": [[1, 2, 4], [1, 4], [4]],
    }
    extra = {
        "target": target,
        "patch_size": [16, 16, 8],
        "preprocess": {
            "normalization": "zscore_nonzero",
            "clip_percentiles": None,
            "target_spacing_mm": [1.0, 1.0, 1.0],
        },
        "spacing_mm": [1.0, 1.0, 1.0],
        "channel_names": ["flair", "t1", "t1ce", "t2"],
    }
    export_onnx(model, tmp_path / "m.onnx", exporter="torchscript", metadata=extra)
    meta = read_metadata(tmp_path / "m.onnx")
    for key, value in extra.items():
        assert meta[key] == value
    assert meta["model_config"]["features"] == [4, 8]
    assert meta["model_config"]["in_channels"] == 4 and meta["stride"] == 2
    assert meta["exporter"] == "torchscript" and meta["precision"] == "float32"
    assert meta["example_size"] == [16, 16, 8]  # the patch size is the default example
    from attnseg import __version__

    assert meta["attnseg_version"] == __version__
    assert OnnxPredictor(tmp_path / "m.onnx").patch_size == (16, 16, 8)


def test_metadata_missing_or_broken_is_a_model_file_error(tmp_path):
    model = AttentionUNet(2, 1, 2, features=(4, 8)).eval()
    export_onnx(model, tmp_path / "m.onnx", example_size=(8, 8), exporter="torchscript")
    proto = onnx.load(str(tmp_path / "m.onnx"))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "bare.onnx"))
    with pytest.raises(ModelFileError, match="no 'attnseg' metadata"):
        read_metadata(tmp_path / "bare.onnx")
    entry = proto.metadata_props.add()
    entry.key, entry.value = "attnseg", "{not json"
    onnx.save(proto, str(tmp_path / "broken.onnx"))
    with pytest.raises(ModelFileError, match="not valid JSON"):
        read_metadata(tmp_path / "broken.onnx")
    with pytest.raises(ModelFileError, match="not found"):
        read_metadata(tmp_path / "absent.onnx")


def test_parity_failure_is_loud(tmp_path):
    model = AttentionUNet(3, 1, 2, features=(4, 8)).eval()
    export_onnx(model, tmp_path / "m.onnx", example_size=(8, 8, 8), exporter="torchscript")
    other = AttentionUNet(3, 1, 2, features=(4, 8)).eval()  # other random weights
    with pytest.raises(ModelFileError, match="disagree"):
        check_parity(other, tmp_path / "m.onnx", torch.randn(1, 1, 8, 8, 8))
    report = check_parity(other, tmp_path / "m.onnx", torch.randn(1, 1, 8, 8, 8), tolerance=None)
    assert report.max_abs_diff > 1e-2


@pytest.mark.slow
def test_dynamo_exporter_round_trip(tmp_path):
    pytest.importorskip("onnxscript")
    model = AttentionUNet(3, 1, 2, features=(4, 8)).eval()
    report = export_onnx(model, tmp_path / "m.onnx", example_size=(9, 8, 7), exporter="dynamo")
    assert report.exporter == "dynamo"
    assert report.parity.max_abs_diff < 1e-4


# --- INT8 on a tiny trained model ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_tiny():
    """A tiny AttentionUNet trained for 80 steps on noisy spheres (foreground Dice ~0.9)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    images, labels = sphere_batch(16, generator, batch=16)
    model = AttentionUNet(3, 1, 2, features=(8, 16, 32))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(80):
        idx = torch.randint(0, 16, (2,), generator=generator)
        loss = F.cross_entropy(model(images[idx]), labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    calibration = [sphere_batch(16, generator, batch=1)[0].numpy() for _ in range(10)]
    test_x, test_y = sphere_batch(16, generator, batch=6)
    torch.set_num_threads(before)
    return model, calibration, test_x, test_y


# Documented tolerance (docs/deployment.md): INT8 foreground Dice within 0.02 of fp32, and the two
# segmentations overlap with Dice >= 0.95.
INT8_DICE_TOLERANCE = 0.02


def test_int8_really_quantizes_and_stays_within_tolerance(tmp_path, trained_tiny):
    model, calibration, test_x, test_y = trained_tiny
    with torch.no_grad():
        fp32_pred = model(test_x).argmax(1).numpy()
    fp32_dice = _dice(fp32_pred, test_y.numpy())
    assert fp32_dice > 0.8  # the model learned the task; otherwise the comparison means nothing

    report = quantize_model(model, tmp_path / "q.onnx", calibration, exporter="torchscript")
    counts = integer_op_counts(tmp_path / "q.onnx")
    n_convs = sum(isinstance(m, torch.nn.Conv3d) for m in model.modules())  # 10 + 3 x 2 gates + head = 17
    n_up = sum(isinstance(m, torch.nn.ConvTranspose3d) for m in model.modules())
    assert counts["ops"]["QLinearConv"] == n_convs == 17
    assert counts["ops"].get("Conv", 0) == 0
    assert counts["float_convs"] == n_up == 2  # ConvTranspose has no int8 CPU kernel: stays float
    assert counts["int8_initializers"] >= n_convs
    weights = sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight") and p.ndim == 5)
    assert counts["int8_weight_values"] >= weights - sum(
        m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.ConvTranspose3d)
    )
    assert report.int8_size_bytes < report.float_size_bytes
    assert read_metadata(tmp_path / "q.onnx")["precision"] == "int8"
    assert read_metadata(tmp_path / "q.onnx")["quantization"]["activation"] == "uint8"

    int8_pred = OnnxPredictor(tmp_path / "q.onnx", threads=1)(test_x).argmax(1).numpy()
    int8_dice = _dice(int8_pred, test_y.numpy())
    assert abs(int8_dice - fp32_dice) <= INT8_DICE_TOLERANCE
    assert _dice(int8_pred, fp32_pred) >= 0.95
    assert report.argmax_agreement >= 0.95


def test_quantize_refuses_too_few_windows(tmp_path, trained_tiny):
    from attnseg.errors import ConfigError

    model, calibration, _, _ = trained_tiny
    with pytest.raises(ConfigError, match="calibration window"):
        quantize_model(model, tmp_path / "q.onnx", calibration[:2], exporter="torchscript")
    assert not (tmp_path / "q.onnx").exists()


# --- the command --------------------------------------------------------------------------------------------
def test_cli_export_fp32_and_metadata_from_run_folder(tmp_path, capsys):
    from attnseg.cli import main
    from attnseg.models import save_model

    model = AttentionUNet(3, 1, 3, features=(4, 8)).eval()
    target = {"kind": "labels", "values": [0, 1, 2], "names": ["background", "a", "b"], "regions": []}
    save_model(tmp_path / "model.pt", model, {"target": target})
    (tmp_path / "config.yaml").write_text(
        "data:\n  patch_size: [12, 12, 12]\npreprocess:\n  normalization: zscore\n"
    )
    code = main(["export", str(tmp_path / "model.pt"), str(tmp_path / "m.onnx"), "--exporter", "torchscript"])
    out = capsys.readouterr().out
    assert code == 0
    assert "parity, random input" in out and "argmax agreement" in out
    meta = read_metadata(tmp_path / "m.onnx")
    assert meta["target"] == target
    assert meta["patch_size"] == [12, 12, 12]
    assert meta["preprocess"]["normalization"] == "zscore"
    assert json.loads(json.dumps(meta)) == meta


def test_cli_int8_needs_calibration(tmp_path, capsys):
    from attnseg.cli import main
    from attnseg.models import save_model

    save_model(tmp_path / "model.pt", AttentionUNet(3, 1, 2, features=(4, 8)))
    code = main(["export", str(tmp_path / "model.pt"), str(tmp_path / "q.onnx"), "--int8"])
    assert code == 2
    assert "--calibration" in capsys.readouterr().err
    assert not (tmp_path / "q.onnx").exists()


@pytest.mark.data
def test_predict_with_onnx_matches_checkpoint(tmp_path):
    """`attnseg predict` runs the whole pipeline on the ONNX file and gives the checkpoint's labels."""
    from tests.conftest import shared_dataset

    root = shared_dataset("Task04_Hippocampus")
    pytest.importorskip("attnseg.inference.predict")
    from attnseg.cli import main
    from attnseg.io.nifti import load_label
    from attnseg.models import save_model

    torch.manual_seed(1)
    model = AttentionUNet(3, 1, 3, features=(4, 8)).eval()
    target = {"kind": "labels", "values": [0, 1, 2], "names": ["background", "anterior", "posterior"]}
    run = tmp_path / "run"
    save_model(run / "model.pt", model, {"target": target})
    (run / "config.yaml").write_text("data:\n  patch_size: [24, 24, 24]\n")
    assert main(["export", str(run / "model.pt"), str(run / "model.onnx"), "--exporter", "torchscript"]) == 0
    image = root / "imagesTr" / "hippocampus_001.nii.gz"
    assert main(["predict", str(run / "model.pt"), str(image), str(tmp_path / "pt"), "--quiet"]) == 0
    assert main(["predict", str(run / "model.onnx"), str(image), str(tmp_path / "onnx"), "--quiet"]) == 0
    a, _ = load_label(next((tmp_path / "pt").glob("*.nii.gz")))
    b, _ = load_label(next((tmp_path / "onnx").glob("*.nii.gz")))
    assert a.shape == b.shape
    for value in (1, 2):
        if (a == value).any() or (b == value).any():
            assert _dice((a == value).astype(int), (b == value).astype(int)) >= 0.999
    assert np.mean(a == b) >= 0.999


# --- the model card travels (issue 14, field case 13) --------------------------------------------------------
REGION_TARGET = {
    "kind": "regions",
    "values": [0, 1, 2, 3],
    "names": ["whole", "core", "enhancing"],
    "regions": [[1, 2, 3], [2, 3], [3]],
    "paint_order": [["whole", 1], ["core", 2], ["enhancing", 3]],
}


@pytest.fixture
def shipped_model(tmp_path):
    """A region model written with its training card, copied away from its run folder."""
    from attnseg.config import RunConfig, to_dict
    from attnseg.models import save_model, training_card

    torch.manual_seed(3)
    model = AttentionUNet(3, 1, 3, features=(4, 8)).eval()
    run = to_dict(RunConfig())
    run["model"].update(out_channels=3, features=[4, 8])
    run["data"]["patch_size"] = [16, 16, 8]
    run["preprocess"] = {
        "normalization": "zscore",
        "clip_percentiles": [1.0, 99.0],
        "target_spacing_mm": None,
    }
    run["augment"].update(flip_axes=[0, 1], p_flip=0.5)
    card = training_card(run, REGION_TARGET, ["T1"])
    return save_model(tmp_path / "shipped" / "model.pt", model, card)


def test_onnx_metadata_is_the_model_files_card(tmp_path, shipped_model):
    from attnseg.export import export_model_file
    from attnseg.models import read_model_card

    summary = export_model_file(shipped_model, tmp_path / "m.onnx", exporter="torchscript")
    assert summary["patch_size"] == [16, 16, 8] and summary["defaulted"] == []
    pt_card = read_model_card(shipped_model)
    meta = read_metadata(tmp_path / "m.onnx")
    written = pt_card.to_dict()
    for key in ("patch_size", "preprocess", "target", "channel_names", "mirror_axes", "spacing_mm"):
        assert meta[key] == written[key], key
    assert meta["target"]["paint_order"] == REGION_TARGET["paint_order"]
    assert meta["preprocess"] == {
        "normalization": "zscore",
        "clip_percentiles": [1.0, 99.0],
        "target_spacing_mm": None,
    }
    assert meta["mirror_axes"] == [0, 1] and meta["channel_names"] == ["T1"]
    onnx_card = read_model_card(tmp_path / "m.onnx")  # the same reader, from the ONNX file
    assert onnx_card == pt_card and set(onnx_card.sources.values()) == {"ONNX metadata"}


def test_pt_and_onnx_predict_the_same_away_from_the_run_folder(tmp_path, shipped_model):
    from attnseg.export import export_model_file
    from attnseg.inference.predict import load_for_inference, predict_case

    export_model_file(shipped_model, tmp_path / "m.onnx", exporter="torchscript")
    from_pt, from_onnx = load_for_inference(shipped_model), load_for_inference(tmp_path / "m.onnx")
    for name in ("patch_size", "preprocess", "label_scheme", "mirror_axes"):
        assert getattr(from_pt.settings, name) == getattr(from_onnx.settings, name), name
    assert from_onnx.settings.label_scheme.paint_order == (("whole", 1), ("core", 2), ("enhancing", 3))
    image = np.random.default_rng(0).normal(50, 20, size=(1, 21, 19, 11)).astype(np.float32)
    a = predict_case(from_pt, image, (1.0, 1.0, 1.0)).labels
    b = predict_case(from_onnx, image, (1.0, 1.0, 1.0)).labels
    assert a.shape == b.shape == (21, 19, 11)
    assert len(np.unique(a)) > 1  # the comparison is not between two blank maps
    assert float((a == b).mean()) >= 0.999


def test_a_bare_model_file_exports_its_defaults_as_defaults(tmp_path, capsys):
    from attnseg.cli import main
    from attnseg.export import export_model_file
    from attnseg.models import read_model_card, save_model

    path = save_model(tmp_path / "bare.pt", UNet(2, 1, 2, features=(4, 8)))
    summary = export_model_file(path, tmp_path / "bare.onnx", exporter="torchscript")
    assert summary["patch_size"] == [256, 256]  # predict's default patch, not another one
    assert set(summary["defaulted"]) == {"patch_size", "preprocess", "target"}
    card = read_model_card(tmp_path / "bare.onnx")
    assert card == read_model_card(path) and set(card.defaulted) == {"patch_size", "preprocess", "target"}
    image = np.random.default_rng(0).uniform(0, 255, size=(24, 20)).astype(np.uint8)
    from PIL import Image

    Image.fromarray(image).save(tmp_path / "img.png")
    assert (
        main(["predict", str(tmp_path / "bare.onnx"), str(tmp_path / "img.png"), str(tmp_path / "out")]) == 0
    )
    assert "does not say" in capsys.readouterr().err  # the same note as for the .pt file
