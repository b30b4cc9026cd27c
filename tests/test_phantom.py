"""The embedded demo data: anatomy and contrasts, labels, small lesions, affine, layouts, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from attnseg.phantom import CHANNELS, make_case, phantom_affine, write_phantom_dataset


@pytest.fixture(scope="module")
def cases():
    return [make_case(np.random.default_rng([0, i]), f"Phantom_{i:03d}") for i in range(4)]


def test_shape_dtype_affine(cases):
    case = cases[0]
    assert case.image.shape == (4, 64, 64, 48) and case.image.dtype == np.float32
    assert case.label.shape == (64, 64, 48) and case.label.dtype == np.uint8
    np.testing.assert_array_equal(case.image, np.round(case.image))  # int16 values
    assert case.image.min() >= 0 and case.image.max() < 2**15
    expected = np.diag([-2.5, -2.5, 2.5, 1.0])
    expected[:3, 3] = [78.75, 78.75, -58.75]  # centre voxel (31.5, 31.5, 23.5) at world 0
    np.testing.assert_allclose(case.affine, expected)
    np.testing.assert_allclose(phantom_affine((64, 64, 48), 2.5) @ [31.5, 31.5, 23.5, 1], [0, 0, 0, 1])


def test_skull_stripped_brain_fills_the_field_of_view(cases):
    brain = np.any(cases[0].image > 0, axis=0)
    assert 0.15 < brain.mean() < 0.45  # BraTS: ~16 % of 240x240x155
    assert not brain[0].any() and not brain[:, :, -1].any()  # a margin of zeros like BraTS
    assert not cases[0].label[~brain].any()


def test_all_labels_present_and_bratslike_per_case(cases):
    seen = set()
    for case in cases:
        values = set(np.unique(case.label).tolist())
        assert values <= {0, 1, 2, 4}
        assert {2, 4} <= values or {1, 2} <= values  # every case has a tumour with edema and a core
        seen |= values
    assert seen == {0, 1, 2, 4}


def test_contrasts_differ_like_real_sequences(cases):
    flair, t1, t1ce, t2 = (CHANNELS.index(n) for n in ("flair", "t1", "t1ce", "t2"))
    for case in cases:
        img, lab = case.image, case.label
        brain = np.any(img > 0, axis=0) & (lab == 0)
        normal = {c: np.median(img[c][brain]) for c in range(4)}
        edema = lab == 2
        assert np.median(img[flair][edema]) > 1.4 * normal[flair]  # edema is bright in FLAIR
        assert np.median(img[t2][edema]) > 1.3 * normal[t2]
        if (lab == 4).sum() > 20:
            # enhancing tumour: bright in T1ce, not in T1
            assert np.median(img[t1ce][lab == 4]) > 1.3 * normal[t1ce]
            assert np.median(img[t1][lab == 4]) < normal[t1]
        if (lab == 1).sum() > 20:
            assert np.median(img[t1][lab == 1]) < 0.8 * normal[t1]  # core is dark in T1


def test_small_lesions_under_5mm_are_labelled(cases):
    smalls = [les for case in cases for les in case.lesions if les.kind == "small"]
    assert len(smalls) >= len(cases)
    for case in cases:
        for les in case.lesions:
            if les.kind != "small":
                continue
            assert les.diameter_mm < 5.0
            centre = tuple(int(round(v)) for v in les.centre_vox)
            assert case.label[centre] in les.labels
            assert 1 <= les.voxels <= 8  # < 5 mm across at 2.5 mm voxels


def test_seeded_and_varied():
    a = make_case(np.random.default_rng([7, 0]), shape=(32, 32, 24), spacing_mm=5.0)
    b = make_case(np.random.default_rng([7, 0]), shape=(32, 32, 24), spacing_mm=5.0)
    c = make_case(np.random.default_rng([7, 1]), shape=(32, 32, 24), spacing_mm=5.0)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label, b.label)
    assert not np.array_equal(a.label, c.label)


def test_brats_layout_on_disk_loads_with_affine_and_spacing(tmp_path):
    from attnseg.datasets import discover, load_case

    out = write_phantom_dataset(tmp_path / "demo", n_cases=2, seed=3, shape=(32, 32, 24), spacing_mm=5.0)
    assert (out / "Phantom_001" / "Phantom_001_t1ce.nii.gz").is_file()
    dataset = discover(out)
    assert dataset.layout == "brats" and dataset.case_ids == ["Phantom_000", "Phantom_001"]
    assert dataset.channel_names == list(CHANNELS) and dataset.label_values == [0, 1, 2, 4]
    image, label, meta = load_case(dataset.cases[1], dataset)
    expected = make_case(np.random.default_rng([3, 1]), "Phantom_001", (32, 32, 24), 5.0)
    np.testing.assert_array_equal(image, expected.image)
    np.testing.assert_array_equal(label, expected.label)
    np.testing.assert_allclose(meta.affine, expected.affine)
    assert meta.spacing_mm == (5.0, 5.0, 5.0)
    assert meta.axcodes == ("L", "P", "S")
    record = json.loads((out / "phantom.json").read_text())
    assert record["seed"] == 3 and set(record["cases"]) == {"Phantom_000", "Phantom_001"}


def test_msd_layout_uses_task01_numbering(tmp_path):
    from attnseg.datasets import discover, load_case

    out = write_phantom_dataset(
        tmp_path / "msd", n_cases=1, seed=3, layout="msd", shape=(32, 32, 24), spacing_mm=5.0
    )
    meta_json = json.loads((out / "dataset.json").read_text())
    assert meta_json["modality"] == {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}
    dataset = discover(out)
    assert dataset.layout == "msd" and dataset.label_values == [0, 1, 2, 3]
    image, label, _ = load_case(dataset.cases[0], dataset)
    brats = make_case(np.random.default_rng([3, 0]), "Phantom_000", (32, 32, 24), 5.0).label
    assert image.shape == (4, 32, 32, 24)
    np.testing.assert_array_equal(label == 1, brats == 2)  # edema
    np.testing.assert_array_equal(label == 2, brats == 1)  # non-enhancing / necrotic core
    np.testing.assert_array_equal(label == 3, brats == 4)  # enhancing


def test_cli_demo_data(tmp_path, capsys):
    from attnseg.cli import main

    assert (
        main(
            ["demo-data", str(tmp_path / "d"), "--cases", "1", "--shape", "32", "32", "24", "--spacing", "5"]
        )
        == 0
    )
    assert "wrote 1 phantom case" in capsys.readouterr().out
    assert (tmp_path / "d" / "Phantom_000" / "Phantom_000_seg.nii.gz").is_file()
    assert main(["demo-data", str(tmp_path / "e"), "--cases", "0"]) == 2


# --- small-lesion mode ------------------------------------------------------------------------------
def test_small_lesion_mode_sizes_contrast_and_placement():
    from attnseg.metrics.lesions import match_lesions
    from attnseg.phantom import SmallLesionSettings, make_small_lesion_case

    settings = SmallLesionSettings(lesions=(5, 5), diameter_mm=(2.0, 10.0))
    case = make_small_lesion_case(np.random.default_rng([1, 0]), settings=settings)
    assert case.image.shape == (4, 64, 64, 64) and case.spacing_mm == (1.0, 1.0, 1.0)
    assert np.any(case.image > 0, axis=0).mean() > 0.5  # mostly brain: the view is inside it
    assert len(case.lesions) == 5
    assert set(np.unique(case.label).tolist()) <= {0, 2, 4}
    for les in case.lesions:
        assert les.kind == "small" and 2.0 <= les.diameter_mm <= 10.0
        centre = tuple(int(round(v)) for v in les.centre_vox)
        assert case.label[centre] in les.labels
        # the labelled voxels are those whose centre is in the sphere: ~ pi/6 d^3 at 1 mm
        assert les.voxels == pytest.approx(np.pi / 6 * les.diameter_mm**3, rel=0.35, abs=4)
    # lesions are separate components whose equivalent diameters are the nominal ones
    match = match_lesions(case.label > 0, case.label > 0, case.spacing_mm)
    assert match.n_truth == 5
    nominal = sorted(les.diameter_mm for les in case.lesions)
    np.testing.assert_allclose(sorted(match.truth_diameter_mm), nominal, rtol=0.15)
    # the world position of each lesion is its voxel position through the affine
    les = case.lesions[0]
    np.testing.assert_allclose(case.affine @ [*les.centre_vox, 1], [*les.centre_mm, 1], atol=1e-6)


def test_small_lesion_contrast_is_controlled():
    from attnseg.phantom import SmallLesionSettings, make_small_lesion_case

    ratios = []
    for contrast in (1.0, 0.5):
        settings = SmallLesionSettings(
            lesions=(6, 6), diameter_mm=(6.0, 9.0), nodule_fraction=1.0, contrast=contrast
        )
        case = make_small_lesion_case(np.random.default_rng([2, 0]), settings=settings)
        t1ce = case.image[CHANNELS.index("t1ce")]
        brain = np.any(case.image > 0, axis=0)
        normal = np.median(t1ce[brain & (case.label == 0)])
        ratios.append(np.median(t1ce[case.label == 4]) / normal)
    assert ratios[0] > 1.5  # full contrast: enhancing nodules bright in T1ce
    assert 1.1 < ratios[1] < 1.0 + 0.7 * (ratios[0] - 1.0)  # half contrast: about half the excess


def test_small_lesion_settings_refused_in_words():
    from attnseg.errors import ConfigError
    from attnseg.phantom import SmallLesionSettings

    with pytest.raises(ConfigError, match="lesions per case"):
        SmallLesionSettings(lesions=(5, 2))
    with pytest.raises(ConfigError, match="diameters"):
        SmallLesionSettings(diameter_mm=(0.1, 3.0))
    with pytest.raises(ConfigError, match="contrast"):
        SmallLesionSettings(contrast=-1)


def test_cli_demo_data_small_lesions(tmp_path, capsys):
    from attnseg.cli import main

    args = ["demo-data", str(tmp_path / "s"), "--cases", "1", "--small-lesions", "--lesions", "3", "3"]
    assert main([*args, "--shape", "48", "48", "48", "--contrast", "0.8"]) == 0
    assert "wrote 1 small-lesion phantom case" in capsys.readouterr().out
    record = json.loads((tmp_path / "s" / "phantom.json").read_text())
    assert record["mode"] == "small_lesions" and record["spacing_mm"] == 1.0
    assert record["small_lesions"]["contrast"] == 0.8 and record["small_lesions"]["lesions"] == [3, 3]
    assert len(record["cases"]["Phantom_000"]["lesions"]) == 3
    assert (
        main(["demo-data", str(tmp_path / "t"), "--cases", "1", "--contrast", "0.5"]) == 2
    )  # needs the mode
