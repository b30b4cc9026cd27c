from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest
import torch

from attnseg.cli import main
from attnseg.config import PreprocessConfig, save_yaml
from attnseg.datasets.label_scheme import LabelScheme
from attnseg.errors import DataError, ModelFileError
from attnseg.inference.predict import (
    InferenceSettings,
    LoadedModel,
    PredictOptions,
    find_cases,
    nonzero_bbox,
    predict_case,
    predict_folder,
    read_settings,
)
from attnseg.io.nifti import load_image, load_label
from attnseg.models import AttentionUNet, save_model
from attnseg.transforms import normalize_zscore

AFFINE = np.array(
    [[0.0, -1.5, 0.0, 90.0], [1.2, 0.0, 0.0, -100.0], [0.0, 0.0, 2.0, -40.0], [0.0, 0.0, 0.0, 1.0]]
)


def brain(shape=(20, 18, 12), seed=0):
    """A bright ellipsoid ('brain') on a zero background, with noise inside."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    inside = (grid**2).sum(0) < 0.8
    image = np.where(inside, 100 + 20 * rng.standard_normal(shape), 0).astype(np.float32)
    return image


def write_nifti(path, data, affine=AFFINE):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data, np.float32), affine), str(path))
    return path


def intensity_model(dims=3, preprocess=None, kind="labels"):
    """A predictor that needs no training: class 1 where the (normalised) intensity is above 0."""

    def predictor(batch):
        return torch.cat([torch.zeros_like(batch), batch], dim=1)

    settings = InferenceSettings(
        dims, 1, 2, (8,) * dims, preprocess or PreprocessConfig(), LabelScheme("labels", (0, 1), ("bg", "fg"))
    )
    return LoadedModel(predictor, settings)


# --- settings ---------------------------------------------------------------------------------------------


def test_settings_defaults_and_sources(tmp_path):
    config = {"spatial_dims": 3, "in_channels": 4, "out_channels": 3}
    s = read_settings({"model_config": config})
    assert s.patch_size == (128, 128, 128) and s.preprocess.normalization == "zscore_nonzero"
    scheme = s.label_scheme
    assert scheme.values == (0, 1, 2) and scheme.kind == "labels" and scheme.activation == "softmax"

    payload = {
        "model_config": config,
        "run_config": {"data": {"patch_size": [64, 64, 32]}, "preprocess": {"normalization": "zscore"}},
        "target": {
            "kind": "regions",
            "values": [0, 1, 2, 4],
            "names": ["WT", "TC", "ET"],
            "regions": [[1, 2, 4], [1, 4], [4]],
        },
    }
    s = read_settings(payload)
    assert s.patch_size == (64, 64, 32) and s.preprocess.normalization == "zscore"
    scheme = s.label_scheme
    assert scheme.kind == "regions" and scheme.region_map == {"WT": [1, 2, 4], "TC": [1, 4], "ET": [4]}
    assert scheme.activation == "sigmoid" and s.sources["patch_size"] == "run_config"

    payload["preprocessing"] = {
        "patch_size": [32, 32, 32],
        "spacing_mm": [1, 1, 2],
        "labels": {"bg": 0, "a": 1, "b": 4},
    }
    s = read_settings(payload)
    assert s.patch_size == (32, 32, 32) and s.preprocess.target_spacing_mm == (1.0, 1.0, 2.0)
    scheme = s.label_scheme
    assert scheme.kind == "labels" and scheme.values == (0, 1, 4) and scheme.names == ("bg", "a", "b")
    assert s.preprocess.normalization == "zscore"  # the explicit dict overrides key by key

    # a run folder's config.yaml next to RUN/checkpoints/best.pt
    run = tmp_path / "run"
    save_yaml(
        run / "config.yaml", {"data": {"patch_size": [48, 48, 48]}, "preprocess": {"normalization": "none"}}
    )
    s = read_settings({"model_config": config}, run / "checkpoints" / "best.pt")
    assert s.patch_size == (48, 48, 48) and s.preprocess.normalization == "none"


def test_settings_that_contradict_the_model_are_refused():
    config = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2}
    with pytest.raises(ModelFileError, match=r"label values \[0, 1, 2\]; the model has 2"):
        read_settings({"model_config": config, "target": {"kind": "labels", "values": [0, 1, 2]}}, "m.pt")
    with pytest.raises(ModelFileError, match="patch_size"):
        read_settings({"model_config": config, "patch_size": [16, 16]}, "m.pt")
    with pytest.raises(ModelFileError, match="preprocessing settings are invalid"):
        read_settings({"model_config": config, "preprocess": {"normalisation": "z"}}, "m.pt")


def test_tta_mirrors_the_axes_flipped_in_training():
    from attnseg.inference.predict import tta_axes

    config = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2}
    run = {"augment": {"flip_axes": [0], "p_flip": 0.5}}
    s = read_settings({"model_config": config, "run_config": run})
    assert s.mirror_axes == (0,) and s.sources["mirror_axes"] == "run_config"
    assert tta_axes(True, s) == (0,)
    assert tta_axes([1, 2], s) == [1, 2] and tta_axes(False, s) is False  # explicit choices stand
    never = read_settings(
        {"model_config": config, "run_config": {"augment": {"flip_axes": [0, 1], "p_flip": 0}}}
    )
    assert never.mirror_axes == () and tta_axes(True, never) is False
    bare = read_settings({"model_config": config})
    assert bare.mirror_axes is None and tta_axes(True, bare) is True  # unknown: all 2**D flips
    with pytest.raises(ModelFileError, match="flip axes"):
        read_settings({"model_config": config, "mirror_axes": [3]}, "m.pt")


def test_tta_true_leaves_an_axis_never_flipped_in_training_alone():
    """A 'model' whose class depends on the side of axis 1 (like anterior/posterior): mirroring axis 1
    would swap its classes. With the training flips recorded as axis 0 only, tta=True keeps it intact."""

    def predictor(batch):
        side = torch.linspace(-1, 1, batch.shape[3]).view(1, 1, 1, -1, 1).expand_as(batch)
        return torch.cat([-side, side], dim=1) * 10

    settings = InferenceSettings(3, 1, 2, (8, 8, 8), PreprocessConfig(normalization="none"))  # classes 0, 1
    image = np.ones((1, 8, 8, 8), np.float32)
    plain = predict_case(LoadedModel(predictor, settings), image, options=PredictOptions(crop_nonzero=False))
    settings.mirror_axes = (0,)
    recorded = predict_case(
        LoadedModel(predictor, settings), image, options=PredictOptions(tta=True, crop_nonzero=False)
    )
    np.testing.assert_array_equal(recorded.labels, plain.labels)
    assert plain.labels[:, :4].max() == 0 and plain.labels[:, 4:].min() == 1
    settings.mirror_axes = None  # not recorded: all flips, and the two sides cancel out
    blind = predict_case(
        LoadedModel(predictor, settings), image, options=PredictOptions(tta=True, crop_nonzero=False)
    )
    assert not np.array_equal(blind.labels, plain.labels)


# --- one case -----------------------------------------------------------------------------------------------


def test_predict_case_is_threshold_of_the_normalised_image():
    image = brain()[None]
    no_crop = PredictOptions(crop_nonzero=False)
    result = predict_case(intensity_model(), image, (1.0, 1.0, 1.0), no_crop, with_probabilities=True)
    inside = image[0] != 0
    mean = image[0][inside].mean(dtype=np.float64)
    expected = inside & (image[0] > mean)
    # the z-score at a voxel exactly at the mean is 0 -> a tie -> class 0, like the strict inequality
    np.testing.assert_array_equal(result.labels, expected.astype(np.uint8))
    assert result.labels.dtype == np.uint8
    normalised = normalize_zscore(image)[0]
    np.testing.assert_allclose(result.probabilities[1], 1 / (1 + np.exp(-normalised)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.probabilities.sum(0), 1.0, rtol=1e-6)


def test_nonzero_bbox():
    image = np.zeros((2, 5, 6, 7), np.float32)
    image[0, 1, 2, 3] = 1
    image[1, 3, 4, 3] = -2  # any channel counts, negative values too
    assert nonzero_bbox(image) == (slice(1, 4), slice(2, 5), slice(3, 4))
    assert nonzero_bbox(np.zeros((1, 3, 3), np.float32)) is None


def test_crop_to_the_nonzero_box_changes_nothing_inside_and_is_background_outside():
    image = np.zeros((1, 30, 26, 20), np.float32)
    image[0, 6:20, 4:22, 3:15] = brain((14, 18, 12), seed=4)
    model = intensity_model()
    full = predict_case(model, image, options=PredictOptions(crop_nonzero=False), with_probabilities=True)
    cropped = predict_case(model, image, with_probabilities=True)  # default for zscore_nonzero: crop
    np.testing.assert_array_equal(cropped.labels, full.labels)
    box = (slice(None), *nonzero_bbox(image))
    assert box[1].start >= 6 and box[1].stop <= 20 and box[3].start >= 3 and box[3].stop <= 15
    np.testing.assert_allclose(cropped.probabilities[box], full.probabilities[box], rtol=1e-5, atol=1e-6)
    outside = np.ones(image.shape[1:], bool)
    outside[box[1:]] = False
    assert (cropped.probabilities[0][outside] == 1).all() and (cropped.probabilities[1][outside] == 0).all()
    empty = predict_case(model, np.zeros((1, 9, 9, 9), np.float32), with_probabilities=True)
    assert empty.labels.shape == (9, 9, 9) and not empty.labels.any() and (empty.probabilities[0] == 1).all()


def test_predict_case_regions_to_brats_labels_and_components():
    def predictor(batch):  # WT where x > 1, TC where x > 2, ET where x > 3 (raw intensities)
        return torch.cat([batch - 1, batch - 2, batch - 3], dim=1)

    settings = InferenceSettings(
        3,
        1,
        3,
        (8, 8, 8),
        PreprocessConfig(normalization="none"),
        LabelScheme("regions", (0, 1, 2, 4), ("WT", "TC", "ET"), ((1, 2, 4), (1, 4), (4,))),
    )
    image = np.zeros((1, 10, 10, 10), np.float32)
    image[0, 1:5, 1:5, 1:5] = 1.5  # edema only -> 2
    image[0, 2:4, 2:4, 2:4] = 2.5  # core -> 1
    image[0, 2, 2, 2] = 3.5  # enhancing -> 4
    image[0, 8, 8, 8] = 1.5  # a stray 1-voxel WT blob
    result = predict_case(LoadedModel(predictor, settings), image)
    expected = np.zeros((10, 10, 10), np.uint8)
    expected[1:5, 1:5, 1:5] = 2
    expected[2:4, 2:4, 2:4] = 1
    expected[2, 2, 2] = 4
    expected[8, 8, 8] = 2
    np.testing.assert_array_equal(result.labels, expected)
    cleaned = predict_case(LoadedModel(predictor, settings), image, options=PredictOptions(keep_largest=True))
    expected[8, 8, 8] = 0
    np.testing.assert_array_equal(cleaned.labels, expected)


def test_predict_case_resamples_to_the_training_spacing_and_back():
    ramp = np.broadcast_to(np.linspace(-1, 1, 24, dtype=np.float32)[:, None, None], (24, 16, 10))[None]
    pre = PreprocessConfig(normalization="none", target_spacing_mm=(2.0, 2.0, 2.0))
    result = predict_case(intensity_model(preprocess=pre), np.ascontiguousarray(ramp), (1.0, 1.0, 1.0))
    assert result.labels.shape == (24, 16, 10)
    np.testing.assert_array_equal(
        result.labels[:11], 0
    )  # ramp < 0 (up to the interpolation at the sign change)
    np.testing.assert_array_equal(result.labels[13:], 1)
    # one value is isotropic, as in training: [2.0] predicts exactly like [2.0, 2.0, 2.0]
    iso = PreprocessConfig(normalization="none", target_spacing_mm=(2.0,))
    same = predict_case(intensity_model(preprocess=iso), np.ascontiguousarray(ramp), (1.0, 1.0, 1.0))
    np.testing.assert_array_equal(same.labels, result.labels)
    # ... and for a 2D model over a volume, both in-plane axes (the slice axis keeps its spacing)
    slices = PredictOptions(slice_axis=2)
    in_plane = PreprocessConfig(normalization="none", target_spacing_mm=(2.0, 2.0))
    two_values = predict_case(
        intensity_model(2, preprocess=in_plane), np.ascontiguousarray(ramp), (1.0, 1.0, 1.0), slices
    )
    one_value = predict_case(
        intensity_model(2, preprocess=iso), np.ascontiguousarray(ramp), (1.0, 1.0, 1.0), slices
    )
    assert two_values.labels.shape == (24, 16, 10)
    np.testing.assert_array_equal(one_value.labels, two_values.labels)
    np.testing.assert_array_equal(one_value.labels[13:], 1)


def test_2d_model_runs_slice_wise_over_a_volume():
    image = brain()[None]
    three_d = predict_case(intensity_model(3), image).labels
    two_d = predict_case(intensity_model(2), image, options=PredictOptions(slice_axis=1)).labels
    np.testing.assert_array_equal(two_d, three_d)


def test_wrong_channel_count_names_the_case():
    with pytest.raises(DataError, match="case c7: image has 2 channel"):
        predict_case(intensity_model(), np.zeros((2, 8, 8, 8), np.float32), case_id="c7")


# --- finding cases ------------------------------------------------------------------------------------------


def test_find_cases_in_folders_and_files(tmp_path):
    img = brain((8, 8, 8))
    folder = tmp_path / "ts"
    for name in ("c1_0000", "c1_0001", "c2_0000", "c2_0001"):
        write_nifti(folder / f"{name}.nii.gz", img)
    dataset, root = find_cases(folder, in_channels=2)
    assert root == folder and [c.case_id for c in dataset.cases] == ["c1", "c2"]
    assert [p.name for p in dataset.cases[1].images] == ["c2_0000.nii.gz", "c2_0001.nii.gz"]

    dataset, root = find_cases(folder / "c2_0000.nii.gz", in_channels=2)  # siblings gathered
    # one file is its own input folder: predictions may go to a folder next to it
    assert root == folder / "c2_0000.nii.gz" and [p.name for p in dataset.cases[0].images] == [
        "c2_0000.nii.gz",
        "c2_0001.nii.gz",
    ]

    case_folder = tmp_path / "patient7"
    for name in ("flair", "t1", "seg"):
        write_nifti(case_folder / f"{name}.nii.gz", img)
    dataset, _ = find_cases(case_folder, in_channels=2)  # seg is not an image; 2 files = one case
    assert [c.case_id for c in dataset.cases] == ["patient7"] and len(dataset.cases[0].images) == 2
    dataset, _ = find_cases(case_folder, in_channels=1)  # a 1-channel model: one case per file
    assert [c.case_id for c in dataset.cases] == ["flair", "t1"]

    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        find_cases(tmp_path / "empty")
    with pytest.raises(DataError, match="input not found"):
        find_cases(tmp_path / "nope")


@pytest.mark.data
def test_find_cases_brats_case_folder_and_dataset():
    from tests.conftest import shared_dataset

    root = shared_dataset("brats2018_flair_t1_wt")
    case_dir = sorted(p for p in root.iterdir() if p.is_dir())[0]
    dataset, input_folder = find_cases(case_dir, in_channels=4)
    assert [c.case_id for c in dataset.cases] == [case_dir.name] and input_folder == case_dir
    assert [p.name.split("_")[-1] for p in dataset.cases[0].images] == [
        "flair.nii.gz",
        "t1.nii.gz",
        "t1ce.nii.gz",
        "t2.nii.gz",
    ]
    assert dataset.cases[0].label is None
    whole, _ = find_cases(root, in_channels=4)
    assert len(whole.cases) >= 1 and all(c.label is None for c in whole.cases)


# --- the command --------------------------------------------------------------------------------------------


@pytest.fixture
def model_file(tmp_path):
    torch.manual_seed(3)
    model = AttentionUNet(3, 1, 2, (4, 8)).eval()
    extra = {
        "target": {"kind": "labels", "values": [0, 1], "names": ["background", "tumour"]},
        "preprocessing": {"patch_size": [16, 16, 16], "normalization": "zscore_nonzero"},
    }
    return save_model(tmp_path / "model" / "model.pt", model, extra)


@pytest.fixture
def input_folder(tmp_path):
    folder = tmp_path / "data"
    write_nifti(folder / "a.nii.gz", brain(seed=1))
    write_nifti(folder / "b.nii.gz", brain(seed=2))
    return folder


def test_predict_cli_writes_one_file_per_case_with_the_input_affine(
    tmp_path, model_file, input_folder, capsys
):
    out = tmp_path / "pred"
    assert (
        main(["predict", str(model_file), str(input_folder), str(out), "--quiet", "--save-probabilities"])
        == 0
    )
    printed = capsys.readouterr().out
    assert "predicted 2 case(s)" in printed and "patch [16, 16, 16]" in printed
    for name in ("a", "b"):
        labels, meta = load_label(out / f"{name}.nii.gz")
        source = nib.load(str(input_folder / f"{name}.nii.gz"))
        np.testing.assert_allclose(meta.affine, source.affine, atol=1e-6)
        np.testing.assert_allclose(
            nib.load(str(out / f"{name}.nii.gz")).get_sform(), source.get_sform(), atol=1e-6
        )
        assert labels.shape == source.shape and set(np.unique(labels)) <= {0, 1}
        assert nib.load(str(out / f"{name}.nii.gz")).get_data_dtype() == np.uint8
        probabilities, _ = load_image(out / "probabilities" / f"{name}.nii.gz")
        assert probabilities.shape == (2, *source.shape)
        np.testing.assert_allclose(probabilities.sum(0), 1.0, rtol=1e-5)
        np.testing.assert_array_equal(labels, probabilities.argmax(0))
        # the file holds what the Python API gives for the same image
        from attnseg.inference.predict import load_for_inference

        image, _ = load_image(input_folder / f"{name}.nii.gz")
        api = predict_case(load_for_inference(model_file), image, meta.spacing_mm)
        np.testing.assert_array_equal(labels, api.labels)
    assert sorted(os.listdir(input_folder)) == ["a.nii.gz", "b.nii.gz"]  # nothing written into the input


def test_predict_cli_memory_budget_changes_the_plan_not_the_labels(
    tmp_path, model_file, input_folder, capsys
):
    roomy, tight = tmp_path / "roomy", tmp_path / "tight"
    assert main(["predict", str(model_file), str(input_folder), str(roomy), "--quiet"]) == 0
    assert "accumulating whole volume at once" in capsys.readouterr().err
    assert (
        main(
            ["predict", str(model_file), str(input_folder), str(tight), "--quiet", "--max-memory-gb", "1e-9"]
        )
        == 0
    )
    said = capsys.readouterr().err
    assert "a: accumulating cells split along axis 0, axis 1, axis 2" in said and "OVER budget" in said
    for name in ("a", "b"):
        np.testing.assert_array_equal(
            load_label(tight / f"{name}.nii.gz")[0], load_label(roomy / f"{name}.nii.gz")[0]
        )


def test_predict_cli_skips_existing_and_overwrites_on_request(tmp_path, model_file, input_folder, capsys):
    out = tmp_path / "pred"
    assert main(["predict", str(model_file), str(input_folder), str(out), "--quiet"]) == 0
    stamp = (out / "a.nii.gz").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["predict", str(model_file), str(input_folder), str(out), "--quiet"]) == 0
    assert "predicted 0 case(s)" in capsys.readouterr().out
    assert (out / "a.nii.gz").stat().st_mtime_ns == stamp
    (out / "b.nii.gz").unlink()
    assert main(["predict", str(model_file), str(input_folder), str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "predicted 1 case(s)" in printed and "skipped 1" in printed
    assert main(["predict", str(model_file), str(input_folder), str(out), "--quiet", "--overwrite"]) == 0
    assert "predicted 2 case(s)" in capsys.readouterr().out


@pytest.mark.parametrize("where", ["same", "inside"])
def test_predict_cli_refuses_the_input_folder(tmp_path, model_file, input_folder, capsys, where):
    out = input_folder if where == "same" else input_folder / "predictions"
    assert main(["predict", str(model_file), str(input_folder), str(out), "--quiet"]) == 2
    assert "inside the input folder" in capsys.readouterr().err
    assert sorted(os.listdir(input_folder)) == ["a.nii.gz", "b.nii.gz"]
    # a single file as input: its own folder holds input images, so it is refused too
    assert (
        main(["predict", str(model_file), str(input_folder / "a.nii.gz"), str(input_folder), "--quiet"]) == 2
    )


def test_a_failed_write_leaves_no_file_under_the_final_name(tmp_path, model_file, input_folder, monkeypatch):
    import attnseg.io.nifti as nifti

    real_save = nib.save

    def dying_save(img, filename):
        real_save(img, filename)  # the temporary file is complete on disk...
        raise KeyboardInterrupt  # ...and the run is killed before the rename

    monkeypatch.setattr(nifti.nib, "save", dying_save)
    out = tmp_path / "pred"
    with pytest.raises(KeyboardInterrupt):
        predict_folder(model_file, input_folder, out, progress=False)
    assert not (out / "a.nii.gz").exists()
    assert [p for p in out.iterdir()] == []  # the temporary file is removed too


def test_predict_folder_reports_bad_cases_and_goes_on(tmp_path, model_file, input_folder):
    (input_folder / "c.nii.gz").write_bytes(b"not a nifti")
    report = predict_folder(model_file, input_folder, tmp_path / "pred", progress=False)
    assert report.predicted == ["a", "b"] and [c for c, _ in report.failed] == ["c"]
    assert "c.nii.gz" in report.failed[0][1]


def test_predict_2d_png_input_writes_png(tmp_path):
    from PIL import Image

    from attnseg.io.images2d import load_mask2d

    pixels = np.zeros((20, 24), np.uint8)
    pixels[5:15, 6:18] = 200
    pixels[8:12, 9:14] = 250
    folder = tmp_path / "png"
    folder.mkdir()
    Image.fromarray(pixels).save(folder / "slice.png")
    report = predict_folder(intensity_model(2), folder / "slice.png", tmp_path / "out", progress=False)
    assert [p.name for p in report.written] == ["slice.png"]
    mask, _ = load_mask2d(tmp_path / "out" / "slice.png")
    inside = pixels > 0
    expected = inside & (pixels > pixels[inside].mean())
    np.testing.assert_array_equal(mask, expected.astype(np.uint8))


@pytest.mark.parametrize("values, stored", [((0, 1), 255), ((0, 1, 2), 1)])
def test_2d_masks_are_0_255_only_from_a_binary_model(tmp_path, values, stored):
    """A multi-class model's mask that happens to hold only class 1 stays class 1 on disk."""
    from PIL import Image

    pixels = np.zeros((20, 24), np.uint8)
    pixels[5:15, 6:18] = 200
    pixels[8:12, 9:14] = 250
    Image.fromarray(pixels).save(tmp_path / "slice.png")

    def predictor(batch):  # class 1 where brighter than the mean inside, never class 2
        return torch.cat([torch.zeros_like(batch), batch, torch.full_like(batch, -9.0)][: len(values)], dim=1)

    names = tuple(f"c{v}" for v in values)
    scheme = LabelScheme("labels", values, names)
    settings = InferenceSettings(2, 1, len(values), (8, 8), PreprocessConfig(), scheme)
    predict_folder(LoadedModel(predictor, settings), tmp_path / "slice.png", tmp_path / "out", progress=False)
    written = np.asarray(Image.open(tmp_path / "out" / "slice.png"))
    assert set(np.unique(written).tolist()) == {0, stored}


def test_an_exported_onnx_model_plugs_in(tmp_path, model_file, input_folder):
    pytest.importorskip("onnxruntime")
    from attnseg.export.onnx import export_onnx
    from attnseg.inference.predict import load_for_inference
    from attnseg.models import load_model, read_model_file

    payload = read_model_file(model_file)
    metadata = {"target": payload["target"], "patch_size": payload["preprocessing"]["patch_size"]}
    onnx_file = tmp_path / "model.onnx"
    export_onnx(load_model(model_file), onnx_file, metadata=metadata, exporter="torchscript")
    loaded = load_for_inference(onnx_file)
    assert loaded.settings.patch_size == (16, 16, 16) and loaded.settings.label_scheme.values == (0, 1)
    image, meta = load_image(input_folder / "a.nii.gz")
    from_onnx = predict_case(loaded, image, meta.spacing_mm, with_probabilities=True)
    from_torch = predict_case(load_for_inference(model_file), image, meta.spacing_mm, with_probabilities=True)
    np.testing.assert_allclose(from_onnx.probabilities, from_torch.probabilities, atol=1e-4)
    assert (from_onnx.labels == from_torch.labels).mean() > 0.999
    report = predict_folder(onnx_file, input_folder, tmp_path / "pred", progress=False)
    assert report.predicted == ["a", "b"]


def test_a_bare_model_file_predicts_with_announced_defaults(tmp_path, input_folder, capsys):
    bare = save_model(tmp_path / "bare.pt", AttentionUNet(3, 1, 2, (4, 8)))
    out = tmp_path / "pred"
    assert main(["predict", str(bare), str(input_folder / "a.nii.gz"), str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "does not say preprocess, patch_size, target" in captured.err
    assert "patch [128, 128, 128]" in captured.out and "classes background=0, label_1=1" in captured.out
    labels, meta = load_label(out / "a.nii.gz")
    np.testing.assert_allclose(meta.affine, AFFINE, atol=1e-6)


def test_exported_metadata_carries_the_training_flips(tmp_path):
    from attnseg.export.onnx import metadata_from_model_file

    model = AttentionUNet(3, 1, 2, (4, 8)).eval()
    run = {"augment": {"flip_axes": [0, 2], "p_flip": 0.5}, "data": {"patch_size": [16, 16, 16]}}
    path = save_model(tmp_path / "elsewhere" / "model.pt", model, {"run_config": run})
    meta = metadata_from_model_file(path)  # no config.yaml beside it: the file's own run config
    assert meta["mirror_axes"] == [0, 2] and meta["patch_size"] == [16, 16, 16]
    assert read_settings({"model_config": {"spatial_dims": 3}, **meta}).mirror_axes == (0, 2)


def test_predict_folder_says_which_mirrors_tta_uses(tmp_path, model_file, input_folder):
    said: list[str] = []
    predict_folder(
        model_file, input_folder, tmp_path / "pred", PredictOptions(tta=True), progress=False, log=said.append
    )
    assert any("all 2^D mirrors" in line for line in said)  # this model file records no training flips
