"""Bad image and label files, each through the Python API and the CLI (check, predict, evaluate).

A bad image is put next to a good one: the error names the bad file and says what was expected, the
good case is still done, and nothing is written for the bad one. Inputs with a defined result
(all-zero, 1 voxel thick, 0.5 x 0.5 x 7 mm, sheared affine, empty masks) are checked for that
result.
"""

from __future__ import annotations

import gzip
import re

import nibabel as nib
import numpy as np
import pytest
from robustness_helpers import (
    AFFINE,
    SHAPE,
    assert_clean_error,
    blob_label,
    brain,
    cli,
    failed_line,
    tree_digest,
    visible_files,
    write_nifti,
    write_raw_sform,
)

from attnseg.datasets import discover, load_case
from attnseg.datasets.check import check
from attnseg.errors import DataError
from attnseg.inference.predict import load_for_inference, predict_case
from attnseg.io.nifti import load_image, load_label

SINGULAR = np.diag([1.2, 1.2, 0.0, 1.0])  # the third voxel axis has no length


def _good_bytes(tmp_path) -> bytes:
    return write_nifti(tmp_path / "source.nii.gz", brain()).read_bytes()


# kind -> (write the bad image at PATH, what the error must say: a regular expression)
BAD_IMAGES = {
    "truncated": (lambda p, raw: p.write_bytes(raw[: len(raw) // 2]), "truncated"),
    "not_nifti": (lambda p, raw: p.write_text("subject,age\n1,42\n"), "not a NIfTI file"),
    "empty": (lambda p, raw: p.write_bytes(b""), "empty file \\(0 bytes\\)"),
    "uncompressed_named_gz": (
        lambda p, raw: p.write_bytes(gzip.decompress(raw)),
        "uncompressed NIfTI named bad.nii.gz",
    ),
    "nan": (lambda p, raw: write_nifti(p, np.where(blob_label() > 0, np.nan, brain())), "NaN/inf"),
    "inf": (lambda p, raw: write_nifti(p, np.where(blob_label() > 1, np.inf, brain())), "NaN/inf"),
    "singular_affine": (lambda p, raw: write_raw_sform(p, brain(), SINGULAR), "singular"),
    "nan_affine": (
        lambda p, raw: write_raw_sform(p, brain(), np.where(np.eye(4) > 0, np.nan, 0.0)),
        "NaN or infinite",
    ),
    "2d_for_3d": (lambda p, raw: write_nifti(p, brain()[:, :, 5]), "2D|image has \\(12, 12\\)"),
    "4d_three_channels": (
        lambda p, raw: write_nifti(p, np.stack([brain()] * 3, axis=-1)),
        "3 channel",
    ),  # the model and this dataset take 1
}


@pytest.mark.parametrize("kind", sorted(BAD_IMAGES))
def test_bad_image(tmp_path, model_file, capsys, kind):
    write, expected = BAD_IMAGES[kind]
    raw = _good_bytes(tmp_path)
    data = tmp_path / "data"
    for case in ("bad", "good", "good2"):
        write_nifti(data / "labels" / f"{case}.nii.gz", blob_label(), dtype=np.uint8)
        if case != "bad":
            write_nifti(data / "images" / f"{case}.nii.gz", brain(seed=len(case)))
    bad = data / "images" / "bad.nii.gz"
    write(bad, raw)
    before = tree_digest(data)

    # Python API: loading the case (or predicting it) raises a DataError naming the file or case
    dataset = discover(data)
    with pytest.raises(DataError) as info:
        image, _, meta = load_case(dataset.case("bad"), dataset)
        predict_case(load_for_inference(model_file), image, meta.spacing_mm, case_id="bad")
    assert "bad.nii.gz" in str(info.value) or "case bad" in str(info.value)
    assert re.search(expected, str(info.value)), str(info.value)

    # attnseg check: exit 1, a FAIL line for the bad case only
    code, out, err = cli(capsys, "check", data)
    assert code == 1 and "Traceback" not in err
    fails = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert fails and all(line.startswith("FAIL bad: ") for line in fails), out

    # attnseg predict: exit 1, the good case predicted, one 'failed' line naming the bad one
    pred = tmp_path / "pred"
    code, out, err = cli(capsys, "predict", model_file, data, pred, "--quiet")
    assert code == 1 and "predicted 2 case(s)" in out and "1 failed" in out
    line = failed_line(err, "bad")
    assert re.search(expected, line) and ("bad.nii.gz" in line or "case bad" in line)
    assert visible_files(pred) == ["good.nii.gz", "good2.nii.gz"]
    assert tree_digest(data) == before


def test_debug_shows_the_traceback(tmp_path, capsys):
    code, _, err = cli(capsys, "check", tmp_path / "absent")
    assert code == 2
    assert_clean_error(err, "absent", "not found")
    with pytest.raises(DataError, match="absent"):
        cli(capsys, "--debug", "check", tmp_path / "absent")


def test_bad_files_given_to_evaluate(tmp_path, capsys):
    """evaluate stops at the first unreadable map with one line naming it."""
    truth, pred = tmp_path / "truth", tmp_path / "pred"
    write_nifti(truth / "a.nii.gz", blob_label(), dtype=np.uint8)
    raw = write_nifti(pred / "a.nii.gz", blob_label(), dtype=np.uint8).read_bytes()
    (pred / "a.nii.gz").write_bytes(raw[: len(raw) // 2])
    code, _, err = cli(capsys, "evaluate", pred, truth)
    assert code == 2
    assert_clean_error(err, str(pred / "a.nii.gz"), "truncated")
    (pred / "a.nii.gz").write_bytes(b"")
    code, _, err = cli(capsys, "evaluate", pred, truth)
    assert code == 2
    assert_clean_error(err, str(pred / "a.nii.gz"), "empty file (0 bytes)")


# --- label files ---------------------------------------------------------------------------------------------
def _labelled(tmp_path, label, *, label_affine=AFFINE, dtype=np.uint8, declared=None):
    """A two-case MSD folder (labels 0, 1, 2 declared) whose case 'bad' has ``label``."""
    import json

    root = tmp_path / "msd"
    for case in ("good", "bad"):
        write_nifti(root / "imagesTr" / f"{case}.nii.gz", brain())
    write_nifti(root / "labelsTr" / "good.nii.gz", blob_label(), dtype=np.uint8)
    write_nifti(root / "labelsTr" / "bad.nii.gz", label, affine=label_affine, dtype=dtype)
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "modality": {"0": "MRI"},
                "labels": declared or {"0": "background", "1": "anterior", "2": "posterior"},
                "training": [
                    {"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"}
                    for c in ("good", "bad")
                ],
            }
        )
    )
    return root


@pytest.mark.parametrize("dtype", [np.uint8, np.float32], ids=["int", "float"])
def test_label_values_outside_dataset_json(tmp_path, capsys, dtype):
    label = blob_label()
    label[0, 0, 0] = 7
    root = _labelled(tmp_path, label, dtype=dtype)
    dataset = discover(root)
    _, loaded, _ = load_case(dataset.case("bad"), dataset)  # loading is fine: 7.0 is a whole number
    assert loaded.dtype == np.uint8 and set(np.unique(loaded)) == {0, 1, 2, 7}
    report = check(root)
    (problem,) = report.problems
    assert (problem.case_id, problem.kind) == ("bad", "undeclared_labels")
    assert (
        "[7]" in problem.message and "1 voxels" in problem.message and "declares [0, 1, 2]" in problem.message
    )
    code, out, _ = cli(capsys, "check", root)
    assert code == 1 and "FAIL bad: undeclared_labels: labelsTr/bad.nii.gz has value(s) [7]" in out


@pytest.mark.parametrize(
    "values, expected",
    [
        (np.where(blob_label() == 2, 1.5, blob_label().astype(np.float32)), "non-integer values, e.g. [1.5]"),
        (np.where(blob_label() == 2, np.nan, blob_label().astype(np.float32)), "NaN"),
        (np.where(blob_label() == 2, -1.0, blob_label().astype(np.float32)), "negative values [-1]"),
    ],
    ids=["fractional", "nan", "negative"],
)
def test_float_label_that_is_not_a_label_map(tmp_path, capsys, values, expected):
    root = _labelled(tmp_path, values, dtype=np.float32)
    report = check(root)
    kinds = [(p.case_id, p.kind) for p in report.problems]
    assert ("bad", "bad_label_values") in kinds and {case for case, _ in kinds} == {"bad"}
    assert expected in report.problems[kinds.index(("bad", "bad_label_values"))].message
    if expected.startswith("negative"):
        return  # a negative whole number loads (int32); check is what flags it
    with pytest.raises(DataError, match="labelsTr/bad.nii.gz: label map"):
        load_label(root / "labelsTr" / "bad.nii.gz")
    # evaluate refuses it as a truth map, with one line
    pred = tmp_path / "pred"
    write_nifti(pred / "bad.nii.gz", blob_label(), dtype=np.uint8)
    code, _, err = cli(capsys, "evaluate", pred, root / "labelsTr")
    assert code == 2
    assert_clean_error(err, "labelsTr/bad.nii.gz", "label map")


@pytest.mark.parametrize("what", ["shape", "affine"])
def test_label_grid_differs_from_image(tmp_path, capsys, what):
    if what == "shape":
        root = _labelled(tmp_path, blob_label((12, 12, 9)))
        expected_api, expected_check = "has shape (12, 12, 9), image has (12, 12, 10)", "shape_mismatch"
    else:
        shifted = AFFINE.copy()
        shifted[0, 3] += 2.5
        root = _labelled(tmp_path, blob_label(), label_affine=shifted)
        expected_api, expected_check = "have different affines", "affine_mismatch"
    dataset = discover(root)
    with pytest.raises(DataError, match="case bad: label .*bad.nii.gz") as info:
        load_case(dataset.case("bad"), dataset)
    assert expected_api in str(info.value)
    code, out, _ = cli(capsys, "check", root)
    assert code == 1 and f"FAIL bad: {expected_check}: labelsTr/bad.nii.gz" in out
    if what == "affine":
        assert "largest difference 2.5" in out


# --- defined results ---------------------------------------------------------------------------------------------
def test_all_zero_image_is_background_everywhere(tmp_path, model_file, capsys):
    """No non-zero voxel: nothing to normalise or segment. Prediction is background (label 0) and
    the probabilities say 'certainly background' without running the network."""
    data = tmp_path / "data"
    write_nifti(data / "zero.nii.gz", np.zeros(SHAPE))
    code, out, _ = cli(
        capsys, "predict", model_file, data, tmp_path / "pred", "--quiet", "--save-probabilities"
    )
    assert code == 0 and "predicted 1 case(s)" in out
    labels, meta = load_label(tmp_path / "pred" / "zero.nii.gz")
    assert labels.shape == SHAPE and not labels.any()
    np.testing.assert_allclose(meta.affine, AFFINE)
    probabilities, _ = load_image(tmp_path / "pred" / "probabilities" / "zero.nii.gz")
    np.testing.assert_array_equal(probabilities[0], 1.0)
    np.testing.assert_array_equal(probabilities[1], 0.0)
    assert check(_labelled(tmp_path, blob_label())).ok  # and an all-zero label map is a valid label map


@pytest.mark.parametrize("model", ["3d", "2d"])
def test_one_voxel_thick_volume(tmp_path, model_file, model_file_2d, capsys, model):
    """A 12 x 12 x 1 volume: the 3D model pads it to a window and crops back; a 2D model runs on its
    single slice. The output has the input's shape and affine."""
    data = tmp_path / "data"
    thin = brain((12, 12, 1)) + brain((12, 12, 3))[:, :, 1:2]
    write_nifti(data / "thin.nii.gz", thin)
    path = model_file if model == "3d" else model_file_2d
    code, _, err = cli(capsys, "predict", path, data, tmp_path / "pred", "--quiet")
    assert code == 0, err
    labels, meta = load_label(tmp_path / "pred" / "thin.nii.gz")
    assert labels.shape == (12, 12, 1)
    np.testing.assert_allclose(meta.affine, AFFINE)


def test_2d_model_over_a_3d_volume_runs_slice_wise(tmp_path, model_file_2d, capsys):
    """Not an error: a 2D model predicts a volume slice by slice along axis 2 (``--slice-axis``);
    the output has the volume's shape and affine. (That each slice equals a 2D prediction is
    tests/inference/test_predict.py::test_2d_model_runs_slice_wise_over_a_volume.)"""
    data = tmp_path / "data"
    write_nifti(data / "vol.nii.gz", brain())
    code, _, err = cli(
        capsys, "predict", model_file_2d, data, tmp_path / "pred", "--quiet", "--slice-axis", "0"
    )
    assert code == 0, err
    labels, meta = load_label(tmp_path / "pred" / "vol.nii.gz")
    assert labels.shape == SHAPE and set(np.unique(labels)) <= {0, 1}
    np.testing.assert_allclose(meta.affine, AFFINE)


def test_extreme_anisotropy(tmp_path, model_file, capsys):
    """0.5 x 0.5 x 7 mm: predicted on the file's grid, written with its affine; the metrics work in mm
    (a 1-voxel shift along z is 7 mm)."""
    data = tmp_path / "data"
    affine = np.diag([0.5, 0.5, 7.0, 1.0])
    write_nifti(data / "aniso.nii.gz", brain((20, 20, 3)), affine=affine)
    code, _, err = cli(capsys, "predict", model_file, data, tmp_path / "pred", "--quiet")
    assert code == 0, err
    labels, meta = load_label(tmp_path / "pred" / "aniso.nii.gz")
    assert labels.shape == (20, 20, 3) and meta.spacing_mm == (0.5, 0.5, 7.0)
    np.testing.assert_allclose(meta.affine, affine)

    from attnseg.metrics import hausdorff_distance

    a = np.zeros((20, 20, 3), bool)
    a[5:15, 5:15, 0] = True
    b = np.roll(a, 1, axis=2)
    assert hausdorff_distance(a, b, (0.5, 0.5, 7.0)) == pytest.approx(7.0)
    assert hausdorff_distance(a, np.roll(a, 1, axis=0), (0.5, 0.5, 7.0)) == pytest.approx(0.5)


def test_sheared_affine_is_kept_exactly(tmp_path, model_file, capsys):
    """A non-orthogonal (sheared) affine is legal NIfTI: the prediction carries the same sform, so
    it overlays the input in any viewer (qform, which cannot shear, is nibabel's closest fit)."""
    data = tmp_path / "data"
    sheared = AFFINE.copy()
    sheared[0, 1] = 0.6
    write_nifti(data / "shear.nii.gz", brain(), affine=sheared)
    code, _, err = cli(capsys, "predict", model_file, data, tmp_path / "pred", "--quiet")
    assert code == 0, err
    written = nib.load(str(tmp_path / "pred" / "shear.nii.gz"))
    np.testing.assert_allclose(written.get_sform(), sheared, atol=1e-6)
    assert int(written.header["sform_code"]) > 0


def test_empty_masks_have_defined_metrics(tmp_path, capsys):
    """docs/metrics.md: both empty -> Dice 1 and distances 0; one empty -> Dice 0 and distances equal
    to the volume diagonal (never NaN)."""
    truth, pred = tmp_path / "truth", tmp_path / "pred"
    write_nifti(truth / "both.nii.gz", np.zeros((10, 10, 10)), affine=np.eye(4), dtype=np.uint8)
    write_nifti(pred / "both.nii.gz", np.zeros((10, 10, 10)), affine=np.eye(4), dtype=np.uint8)
    one = np.zeros((10, 10, 10))
    one[2:4, 2:4, 2:4] = 1
    write_nifti(truth / "one.nii.gz", one, affine=np.eye(4), dtype=np.uint8)
    write_nifti(pred / "one.nii.gz", np.zeros((10, 10, 10)), affine=np.eye(4), dtype=np.uint8)
    code, _, err = cli(capsys, "evaluate", pred, truth, "--labels", "1", "--out", tmp_path / "metrics")
    assert code == 0, err
    import csv

    rows = {r["case_id"]: r for r in csv.DictReader(open(tmp_path / "metrics" / "metrics_per_case.csv"))}
    diagonal = float(np.sqrt(3 * 10.0**2))
    assert float(rows["both"]["dice"]) == 1.0 and float(rows["both"]["hd95_mm"]) == 0.0
    assert float(rows["one"]["dice"]) == 0.0
    assert float(rows["one"]["hd95_mm"]) == pytest.approx(diagonal)


# --- paths ------------------------------------------------------------------------------------------------------
def test_paths_with_spaces_and_non_ascii(tmp_path, model_file):
    """A real process with real argv: folders and case names with spaces, accents and CJK."""
    from robustness_helpers import run_attnseg

    root = tmp_path / "my data" / "étude 病例"
    write_nifti(root / "images" / "pätient 1.nii.gz", brain())
    write_nifti(root / "labels" / "pätient 1.nii.gz", blob_label(), dtype=np.uint8)
    assert load_image(root / "images" / "pätient 1.nii.gz")[0].shape == (1, *SHAPE)
    report = check(root)
    assert report.ok and report.n_cases == 1
    out = tmp_path / "prédictions ü"
    proc = run_attnseg("predict", model_file, root / "images", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert visible_files(out) == ["pätient 1.nii.gz"]
    proc = run_attnseg("evaluate", out, root / "labels", "--out", tmp_path / "métriques 1")
    assert proc.returncode == 0, proc.stderr
    assert "pätient 1" in (tmp_path / "métriques 1" / "metrics_per_case.csv").read_text(encoding="utf-8")
