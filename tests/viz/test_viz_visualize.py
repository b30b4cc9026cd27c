"""``attnseg visualize``: a model file and a case (dataset, case folder, image file, 2D) -> one figure;
a run folder -> training curves."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from PIL import Image

from attnseg import phantom
from attnseg.cli import main
from attnseg.datasets import LabelScheme, discover, load_case
from attnseg.io.nifti import save_image
from attnseg.models import AttentionUNet, save_model
from attnseg.viz.figures import most_foreground_slice
from attnseg.viz.visualize import CaseData, ModelBundle, load_model_bundle, render_case

TARGET = {"kind": "labels", "values": [0, 1, 2, 4], "names": ["background", "NCR", "ED", "ET"], "regions": []}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantom")
    phantom.write_phantom_dataset(root / "data", 1, 0, layout="brats", shape=(24, 24, 16), spacing_mm=3.0)
    return root / "data"


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    model = AttentionUNet(3, 4, 4, (4, 8, 16)).eval()
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_model(path, model, {"target": TARGET})
    return path


def panel_kinds(fig) -> list[str]:
    return [ax.get_label().split(":", 1)[1] for ax in fig.axes if ax.get_label().startswith("panel:")]


def test_cli_dataset_folder(data_dir, model_file, tmp_path, capsys):
    out = tmp_path / "fig.png"
    rc = main(["visualize", str(model_file), str(data_dir), "--out", str(out), "--gradcam", "ET"])
    text = capsys.readouterr().out
    assert rc == 0, text
    dataset = discover(data_dir)
    _, label, _ = load_case(dataset.cases[0], dataset)
    expected_slice = most_foreground_slice(label, 2)  # phantom files are RAS: axial = axis 2
    assert f"case Phantom_000, axial slice {expected_slice}, 9 panels" in text
    assert "Dice NCR/NET" in text  # class names from the dataset
    # 4 channels + truth + 2 gates + prediction + Grad-CAM = 9 panels
    with Image.open(out) as png:
        assert png.size == (1580, 3 * 335 + 45)  # 4 columns, 3 rows, square 24x24 slices


def test_gate_forced_to_zero_gives_a_zero_panel(data_dir, model_file, tmp_path):
    bundle = load_model_bundle(model_file)
    norm = bundle.model.gates[1].psi[1]
    with torch.no_grad():
        norm.weight.zero_()
        norm.bias.fill_(-1e4)
    dataset = discover(data_dir)
    image, label, meta = load_case(dataset.cases[0], dataset)
    case = CaseData("c", image, label, meta.spacing_mm, meta.axcodes, dataset.channel_names)
    result = render_case(bundle, case, view="co", channels=["t1ce"])
    assert panel_kinds(result.figure) == ["channel", "truth", "gate", "gate", "prediction"]
    gates = [ax for ax in result.figure.axes if ax.get_label() == "panel:gate"]
    assert gates[0].get_title().startswith("attention gate 0") and gates[1].get_title().startswith(
        "attention gate 1"
    )
    closed = np.ma.masked_invalid(np.asarray(gates[1].images[-1].get_array()))
    assert closed.count() > 100 and closed.max() == 0.0  # NaN (not drawn) outside the non-zero box
    assert np.nanmax(np.asarray(gates[0].images[-1].get_array())) > 0.0
    assert result.slice_index == most_foreground_slice(label, 1)


def test_cli_case_folder_image_file_and_options(data_dir, model_file, tmp_path, capsys):
    case_dir = data_dir / "Phantom_000"
    rc = main(["visualize", str(model_file), str(case_dir), "--out", str(tmp_path / "a.png"), "--slice", "3",
               "--axis", "sa", "--gate", "0", "--channel", "flair"])  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 0 and "case Phantom_000, sagittal slice 3, 4 panels" in text
    # one 4D NIfTI image file plus a label file
    dataset = discover(data_dir)
    image, label, meta = load_case(dataset.cases[0], dataset)
    save_image(tmp_path / "img.nii.gz", image, affine=meta.affine)  # (C, X, Y, Z): channels last on disk
    save_image(tmp_path / "lab.nii.gz", label.astype(np.uint8), affine=meta.affine)
    rc = main(["visualize", str(model_file), str(tmp_path / "img.nii.gz"), "--label", str(tmp_path / "lab.nii.gz"),
               "--out", str(tmp_path / "b.png"), "--channel", "0", "--channel", "3"])  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 0 and "case img, axial slice" in text and "6 panels" in text


def test_cli_errors(data_dir, model_file, tmp_path, capsys):
    torch.manual_seed(0)
    two = tmp_path / "two.pt"
    save_model(two, AttentionUNet(3, 2, 2, (4, 8)))
    assert main(["visualize", str(two), str(data_dir), "--out", str(tmp_path / "x.png")]) == 2
    assert "4 channel(s); the model expects 2" in capsys.readouterr().err
    assert main(["visualize", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert (
        main(
            ["visualize", str(model_file), str(data_dir), "--gradcam", "XX", "--out", str(tmp_path / "y.png")]
        )
        == 2
    )
    assert "--gradcam 'XX'" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_cli_run_folder_curves(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    lines = [{"epoch": e, "lr": 0.01, "train_loss": 1 / e, "val_dice": {"a": e / 4}} for e in (1, 2, 3)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert main(["visualize", str(run)]) == 0
    assert "training curves of run" in capsys.readouterr().out
    with Image.open(run / "training_curve.png") as png:
        assert png.size == (1300, 380)


def test_2d_model_on_a_2d_image_and_over_a_volume(tmp_path):
    torch.manual_seed(0)
    model2d = AttentionUNet(2, 1, 2, (4, 8, 16)).eval()
    path = tmp_path / "m2d.pt"
    save_model(path, model2d)
    bundle = load_model_bundle(path)
    image = np.random.default_rng(0).normal(size=(1, 30, 40)).astype(np.float32)
    label = np.zeros((30, 40), np.uint8)
    label[5:15, 5:25] = 1
    result = render_case(bundle, CaseData("img", image, label, (1.0, 1.0)), prepared=True)
    assert panel_kinds(result.figure) == ["channel", "truth", "gate", "gate", "prediction"]
    assert result.slice_index is None
    volume = np.random.default_rng(1).normal(size=(1, 12, 16, 10)).astype(np.float32)
    vlabel = np.zeros((12, 16, 10), np.uint8)
    vlabel[2:6, 2:6, 7] = 1
    result = render_case(
        bundle,
        CaseData("vol", volume, vlabel, (1.0, 1.0, 2.0), ("R", "A", "S")),
        gradcam="auto",
        prepared=True,
    )
    assert result.slice_index == 7
    assert panel_kinds(result.figure)[-1] == "gradcam"
    cam_axes = [ax for ax in result.figure.axes if ax.get_label() == "panel:gradcam"][0]
    cam = np.asarray(cam_axes.images[-1].get_array())
    assert cam.shape == (16, 12) and cam.min() >= 0.0


def test_2d_shared_data(tmp_path, capsys):
    from tests.conftest import shared_dataset

    root = shared_dataset("lgg_flair_2d")
    torch.manual_seed(0)
    path = tmp_path / "lgg.pt"
    save_model(path, AttentionUNet(2, 3, 2, (4, 8, 16)).eval())
    rc = main(["visualize", str(path), str(root), "--case-id", "TCGA_CS_4941_19960909_12", "--out",
               str(tmp_path / "lgg.png")])  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 0, text
    assert (
        "case TCGA_CS_4941_19960909_12, 2D image, 7 panels" in text
    )  # 3 channels, truth, 2 gates, prediction


def test_only_the_non_zero_box_runs_through_the_network(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "m1.pt"
    save_model(path, AttentionUNet(3, 1, 2, (4, 8)).eval())
    bundle = load_model_bundle(path)
    image = np.zeros((1, 12, 12, 8), np.float32)
    image[0, 2:9, 3:10, 1:7] = np.random.default_rng(0).uniform(1, 2, size=(7, 7, 6))
    result = render_case(bundle, CaseData("box", image, None, (1.0, 1.0, 1.0), ("R", "A", "S")), index=3)
    gate = [ax for ax in result.figure.axes if ax.get_label() == "panel:gate"][0]
    picture = np.asarray(gate.images[-1].get_array().filled(np.nan))  # rows: j from 11 down to 0
    inside = np.zeros((12, 12), bool)
    inside[2:9, 11 - np.arange(3, 10)] = True  # i in 2..8 (rows of the transposed plane), j in 3..9
    assert np.all(np.isfinite(picture.T[inside])) and np.all(np.isnan(picture.T[~inside]))
    prediction = [ax for ax in result.figure.axes if ax.get_label() == "panel:prediction"][0]
    rgba = np.asarray(prediction.images[-1].get_array())
    assert np.all(rgba.transpose(1, 0, 2)[~inside][:, 3] == 0)  # background (not painted) outside


class RegionThresholds(torch.nn.Module):
    """Region logits by intensity: whole where x > 0.5, core where x > 1.5, enhancing where x > 2.5."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(20.0))

    def forward(self, x):
        return torch.cat([x - 0.5, x - 1.5, x - 2.5], dim=1) * self.scale


def test_region_predictions_are_painted_in_the_schemes_order():
    """The figure's prediction is the label map `attnseg predict` writes: a recorded nnU-Net
    regions_class_order paints the core 3, attnseg's own rule paints it 2 (its own lowest label)."""
    regions = {"whole": (1, 2, 3, 4), "core": (1, 2, 3), "enhancing": (1,)}
    own = LabelScheme("regions", (0, 1, 2, 3, 4), tuple(regions), tuple(regions.values()))
    ordered = own.with_paint_order([("whole", 4), ("core", 3), ("enhancing", 1)])
    image = np.zeros((1, 6, 6, 4), np.float32)
    image[0, 1:5, 1:5, 1:3] = 1.0
    image[0, 2:4, 2:4, 1:3] = 2.0
    image[0, 2, 2, 1:3] = 3.0
    case = CaseData("a", image, None, (1.0, 1.0, 1.0), ("R", "A", "S"))
    shown = {}
    for name, scheme in (("ordered", ordered), ("own", own)):
        result = render_case(
            ModelBundle(RegionThresholds(), label_scheme=scheme), case, index=1, prepared=True
        )
        assert panel_kinds(result.figure) == ["channel", "prediction"]
        shown[name] = [
            t.get_text() for ax in result.figure.axes for t in ax.get_yticklabels() if t.get_text()
        ]
    assert [t for t in shown["ordered"] if t.startswith("label")] == ["label 1", "label 3", "label 4"]
    assert [t for t in shown["own"] if t.startswith("label")] == ["label 1", "label 2", "label 4"]


def test_dicom_series_folder_and_file_with_seg_as_truth(tmp_path, capsys):
    from tests.dicom_helpers import write_series

    from attnseg.io.dicom_seg import write_seg
    from attnseg.io.dicom_series import find_series, read_series

    shape, centre = (16, 14, 8), np.array([8, 9, 4])
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"))
    inside = ((grid - centre[:, None, None, None]) ** 2).sum(0) < 9
    paths = write_series(
        tmp_path / "dicom", np.where(inside, 900, 100).astype(np.uint16), iop=(0, 1, 0, 0, 0, -1)
    )
    series = find_series(tmp_path / "dicom").series[0]
    write_seg(tmp_path / "dicom" / "seg.dcm", inside[None], read_series(series), ["lesion"])
    model = tmp_path / "model.pt"
    save_model(model, AttentionUNet(3, 1, 2, (4, 8)).eval())
    # sagittal slices: the rows run superior -> inferior, so the axial planes are along axis 1
    expected = most_foreground_slice(inside.astype(np.uint8), 1)
    assert expected == 9
    for given in (tmp_path / "dicom", paths[0]):
        out = tmp_path / f"{given.name}.png"
        assert (
            main(["visualize", str(model), str(given), "--out", str(out), "--patch-size", "16", "16", "8"])
            == 0
        )
        text = capsys.readouterr().out
        assert f"case MR_s005_synthetic_t1, axial slice {expected}" in text and out.is_file()
