"""Surface distances on shapes whose Hausdorff distance, HD95 and ASSD are known by hand."""

import math

import numpy as np
import pytest
import torch

from attnseg.metrics.surface import (
    average_surface_distance,
    bounding_box,
    hausdorff_distance,
    surface_coordinates,
    surface_distances,
    surface_metrics,
    surface_voxels,
    volume_diagonal_mm,
)

METHODS = ("edt", "kdtree")


def ball(shape, centre, radius_vox):
    grid = np.indices(shape).astype(float)
    return sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius_vox**2


def test_surface_of_a_cube_is_its_faces_and_array_border_counts_as_background():
    cube = np.zeros((6, 6, 6), bool)
    cube[1:5, 1:5, 1:5] = True  # 4^3 = 64 voxels, 2^3 = 8 interior
    assert surface_voxels(cube).sum() == 64 - 8
    assert not surface_voxels(cube)[2:4, 2:4, 2:4].any()
    full = np.ones((3, 3, 3), bool)  # touching the border: only the centre is interior
    assert surface_voxels(full).sum() == 26
    square = np.zeros((5, 5), bool)
    square[1:4, 1:4] = True  # 2D, 4-connected: the centre pixel is interior
    assert surface_voxels(square).sum() == 8
    line = np.zeros((5, 5), bool)
    line[2, :] = True  # one voxel thick: all surface
    assert surface_voxels(line).sum() == 5


def test_bounding_box_and_surface_coordinates():
    m = np.zeros((7, 8, 9), bool)
    m[2, 3, 4] = m[5, 1, 8] = True
    assert bounding_box(m) == (slice(2, 6), slice(1, 4), slice(4, 9))
    assert bounding_box(np.zeros((3, 3), bool)) is None
    assert sorted(map(tuple, surface_coordinates(m).tolist())) == [(2, 3, 4), (5, 1, 8)]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("axis", "shift_vox", "spacing", "expected_mm"),
    [
        (0, 3, (1.0, 1.0, 1.0), 3.0),  # two spheres 3 mm apart
        (0, 6, (0.5, 1.0, 3.0), 3.0),  # 6 voxels of 0.5 mm
        (2, 2, (0.5, 1.0, 3.0), 6.0),  # 2 voxels of 3 mm
        (1, 1, (0.5, 1.0, 3.0), 1.0),
    ],
)
def test_translated_sphere_hausdorff_equals_the_translation(method, axis, shift_vox, spacing, expected_mm):
    # Each surface voxel of the moved sphere has a partner at exactly the translation, so HD <= t;
    # the extreme voxel along the axis has no closer partner, so HD = t exactly.
    a = ball((28, 28, 28), (12, 12, 12), 6)
    b = np.roll(a, shift_vox, axis=axis)
    hd = hausdorff_distance(a, b, spacing, method=method)
    assert hd == pytest.approx(expected_mm, abs=1e-9)
    assert hausdorff_distance(b, a, spacing, method=method) == pytest.approx(expected_mm, abs=1e-9)
    hd95 = hausdorff_distance(a, b, spacing, percentile=95, method=method)
    assert 0 < hd95 <= expected_mm + 1e-9


@pytest.mark.parametrize("method", METHODS)
def test_nested_cubes_corner_distance_anisotropic(method):
    # truth cube [4..11]^3, prediction cube [6..9]^3: the farthest truth surface voxel is a corner,
    # 2 voxels from the prediction's corner along each axis -> sqrt((2*1)^2 + (2*2)^2 + (2*3)^2)
    truth = np.zeros((16, 16, 16), bool)
    truth[4:12, 4:12, 4:12] = True
    pred = np.zeros_like(truth)
    pred[6:10, 6:10, 6:10] = True
    spacing = (1.0, 2.0, 3.0)
    assert hausdorff_distance(pred, truth, spacing, method=method) == pytest.approx(math.sqrt(56))
    d_pt, d_tp = surface_distances(pred, truth, spacing, method=method)
    # the closest pairs are 2 voxels apart along axis 0 (1 mm spacing): e.g. (6, 6, 6) -> (4, 6, 6)
    assert d_pt.min() == pytest.approx(2.0)
    assert d_tp.max() == pytest.approx(math.sqrt(56))
    assert len(d_pt) == 4**3 - 2**3 and len(d_tp) == 8**3 - 6**3


@pytest.mark.parametrize("method", METHODS)
def test_stray_voxel_percentile_conventions_by_hand(method):
    # truth: one pixel at (0, 0); prediction: (0, 0) and a stray at (0, 10); spacing 1 mm.
    # pred->truth distances [0, 10], truth->pred [0].
    truth = np.zeros((3, 12), bool)
    truth[0, 0] = True
    pred = truth.copy()
    pred[0, 10] = True
    assert hausdorff_distance(pred, truth, method=method) == pytest.approx(10.0)
    # max convention: max(95th pct of [0, 10] = 9.5, 95th pct of [0] = 0) = 9.5
    assert hausdorff_distance(pred, truth, percentile=95, method=method) == pytest.approx(9.5)
    # pooled: 95th pct of [0, 0, 10] = position 1.9 -> 0 + 0.9 * 10 = 9.0
    hd95_pooled = hausdorff_distance(pred, truth, percentile=95, convention="pooled", method=method)
    assert hd95_pooled == pytest.approx(9.0)
    assert average_surface_distance(pred, truth, method=method) == pytest.approx(10 / 3)
    m = surface_metrics(pred, truth, percentile=95, method=method)
    assert m == pytest.approx({"hd_mm": 10.0, "hd95_mm": 9.5, "assd_mm": 10 / 3})


@pytest.mark.parametrize("method", ("auto", *METHODS))
def test_one_dimensional_masks_by_hand(method):
    # 1D profiles at 2 mm: pred = voxels 3-5 (surface 3 and 5), truth = voxels 10-11 (both surface).
    # pred->truth: 3 -> 10 = 14 mm, 5 -> 10 = 10 mm; truth->pred: 10 -> 5 = 10 mm, 11 -> 5 = 12 mm.
    pred = np.zeros(20, bool)
    pred[3:6] = True
    truth = np.zeros(20, bool)
    truth[10:12] = True
    d_pt, d_tp = surface_distances(pred, truth, 2.0, method=method)
    np.testing.assert_allclose(sorted(d_pt), [10.0, 14.0])
    np.testing.assert_allclose(sorted(d_tp), [10.0, 12.0])
    assert hausdorff_distance(pred, truth, 2.0, method=method) == pytest.approx(14.0)
    # max convention: max(10 + 0.95 * 4, 10 + 0.95 * 2) = 13.8
    assert hausdorff_distance(pred, truth, (2.0,), 95, method=method) == pytest.approx(13.8)
    assert average_surface_distance(pred, truth, 2.0, method=method) == pytest.approx(46 / 4)
    m = surface_metrics(pred, truth, 2.0, method=method)
    assert m == pytest.approx({"hd_mm": 14.0, "hd95_mm": 13.8, "assd_mm": 11.5})


def test_single_voxels_with_anisotropic_spacing():
    a = np.zeros((5, 5, 5), bool)
    b = np.zeros_like(a)
    a[0, 0, 0] = True
    b[3, 1, 0] = True
    # sqrt((3 * 2)^2 + (1 * 0.5)^2)
    expected = math.sqrt(36 + 0.25)
    for method in METHODS:
        assert hausdorff_distance(a, b, (2.0, 0.5, 7.0), method=method) == pytest.approx(expected)
        assert average_surface_distance(a, b, (2.0, 0.5, 7.0), method=method) == pytest.approx(expected)


def test_empty_mask_conventions():
    empty = np.zeros((240, 240, 155), bool)
    one = empty.copy()
    one[100, 100, 50] = True
    assert hausdorff_distance(empty, empty) == 0.0
    assert average_surface_distance(empty, empty) == 0.0
    # BraTS' worst case: the diagonal of 240 x 240 x 155 mm
    assert volume_diagonal_mm(empty.shape, 1.0) == pytest.approx(373.128664, abs=1e-6)
    assert hausdorff_distance(one, empty, percentile=95) == pytest.approx(373.128664, abs=1e-6)
    assert hausdorff_distance(empty, one) == pytest.approx(373.128664, abs=1e-6)
    assert average_surface_distance(empty, one) == pytest.approx(373.128664, abs=1e-6)
    small = np.zeros((2, 3, 4), bool)
    small_one = small.copy()
    small_one[0, 0, 0] = True
    # sqrt((2*10)^2 + (3*20)^2 + (4*30)^2) = sqrt(18400)
    assert hausdorff_distance(small, small_one, (10, 20, 30)) == pytest.approx(math.sqrt(18400))
    assert hausdorff_distance(small, small_one, empty_distance_mm=99.0) == 99.0
    assert surface_metrics(small, small) == {"hd_mm": 0.0, "hd95_mm": 0.0, "assd_mm": 0.0}


def test_torch_input_and_methods_agree_on_random_shapes():
    rng = np.random.default_rng(3)
    for _ in range(5):
        a = rng.random((20, 17, 9)) > 0.7
        b = rng.random((20, 17, 9)) > 0.6
        spacing = tuple(rng.uniform(0.4, 3.0, 3))
        e = surface_distances(a, b, spacing, method="edt")
        k = surface_distances(torch.from_numpy(a), torch.from_numpy(b), spacing, method="kdtree")
        # edt computes in float32, the KD-tree in float64 (docs/metrics.md: up to about 1e-7)
        np.testing.assert_allclose(e[0], k[0], rtol=2e-7)
        np.testing.assert_allclose(e[1], k[1], rtol=2e-7)


def test_bad_arguments():
    a = np.ones((3, 3), bool)
    with pytest.raises(ValueError, match="percentile"):
        hausdorff_distance(a, a, percentile=101)
    with pytest.raises(ValueError, match="convention"):
        hausdorff_distance(a, a, percentile=95, convention="mean")
    with pytest.raises(ValueError, match="spacing"):
        hausdorff_distance(a, a, spacing_mm=(1.0, 0.0))
    with pytest.raises(ValueError, match="spacing"):
        hausdorff_distance(a, a, spacing_mm=(1.0, 1.0, 1.0))
