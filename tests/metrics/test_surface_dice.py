"""Normalized surface Dice on shapes whose surface areas and NSD are known by hand."""

import math

import numpy as np
import pytest
import torch

from attnseg.metrics.surface_dice import (
    ball_offsets,
    check_tolerances,
    normalized_surface_dice,
    nsd_key,
    surface_dice_metrics,
    surface_elements,
    surfel_measure_table,
)

METHODS = ("offsets", "kdtree")


def one_voxel(shape, index):
    m = np.zeros(shape, bool)
    m[index] = True
    return m


def test_a_single_voxel_is_an_octahedron_of_8_corner_triangles():
    corners, areas = surface_elements(one_voxel((3, 3, 3), (1, 1, 1)))
    assert sorted(map(tuple, corners.tolist())) == [(i, j, k) for i in (1, 2) for j in (1, 2) for k in (1, 2)]
    np.testing.assert_allclose(areas, math.sqrt(3) / 8)  # a triangle through 3 edge midpoints
    # anisotropic: each triangle's normal scales by the other two spacings
    s0, s1, s2 = 0.5, 1.0, 3.0
    _, areas = surface_elements(one_voxel((3, 3, 3), (1, 1, 1)), (s0, s1, s2))
    np.testing.assert_allclose(areas.sum(), math.hypot(s1 * s2, s0 * s2, s0 * s1))
    # 2D: a pixel is a diamond of 4 segments of half its diagonal
    _, lengths = surface_elements(one_voxel((3, 3), (1, 1)), (0.6, 0.8))
    np.testing.assert_allclose(lengths, 0.5 * math.hypot(0.6, 0.8))


def test_measure_tables_planar_cases_by_hand():
    area = surfel_measure_table((2.0, 3.0, 5.0))
    assert area[0] == area[255] == 0.0
    # a whole face x0 = 0 inside (bits of the offsets (0, *, *) = 0, 1, 2, 3): a 3 x 5 mm square
    assert area[0b00001111] == pytest.approx(3.0 * 5.0)
    # one edge along axis 2 (offsets (0, 0, 0) and (0, 0, 1)): a rectangle 5 mm long, its width the
    # diagonal of the half-voxel in the (x0, x1) plane
    assert area[0b00000011] == pytest.approx(5.0 * math.hypot(1.0, 1.5))
    length = surfel_measure_table((2.0, 3.0), ndim=2)
    assert length[0b0011] == pytest.approx(3.0)  # an edge along axis 1
    assert length[0b1001] == pytest.approx(2 * 0.5 * math.hypot(2.0, 3.0))  # a diagonal: 2 corners cut


@pytest.mark.parametrize("method", METHODS)
def test_a_voxel_against_its_neighbour_along_a_2_mm_axis(method):
    # 4 corners of each cube are shared (distance 0), the other 4 are 2 mm from the other cube's
    a, b = one_voxel((4, 4, 4), (1, 1, 1)), one_voxel((4, 4, 4), (2, 1, 1))
    values = surface_dice_metrics(a, b, (2.0, 1.0, 1.0), (0.0, 1.0, 1.999, 2.0, 3.0), method=method)
    assert values == {"nsd_0mm": 0.5, "nsd_1mm": 0.5, "nsd_1.999mm": 0.5, "nsd_2mm": 1.0, "nsd_3mm": 1.0}
    # along a 1 mm axis the far corners are 1 mm away
    assert normalized_surface_dice(a, b, (1.0, 2.0, 2.0), 1.0, method=method) == 1.0
    # 2D: pixels one pixel apart along a 1.5 mm axis: facing corners 1.5 mm apart, the others 3 mm
    p, q = one_voxel((6, 3), (1, 1)), one_voxel((6, 3), (3, 1))
    assert normalized_surface_dice(p, q, (1.5, 1.0), 1.0, method=method) == 0.0
    assert normalized_surface_dice(p, q, (1.5, 1.0), 1.5, method=method) == 0.5
    assert normalized_surface_dice(p, q, (1.5, 1.0), 3.0, method=method) == 1.0


@pytest.mark.parametrize("method", METHODS)
def test_a_cube_against_the_same_cube_grown_by_one_voxel(method):
    truth = np.zeros((10, 10, 10), bool)
    truth[3:7, 3:7, 3:7] = True
    pred = np.zeros_like(truth)
    pred[2:8, 2:8, 2:8] = True
    # every corner of the grown cube is 1 voxel (along one, two or three axes) from the inner cube
    # surface: at spacing 1 the faces lie 1 mm apart, edges sqrt(2), corners sqrt(3)
    assert normalized_surface_dice(pred, truth, 1.0, 0.99, method=method) == 0.0
    assert normalized_surface_dice(pred, truth, 1.0, math.sqrt(3), method=method) == 1.0
    nsd_1 = normalized_surface_dice(pred, truth, 1.0, 1.0, method=method)
    assert 0.5 < nsd_1 < 1.0
    assert nsd_1 == normalized_surface_dice(truth, pred, 1.0, 1.0, method=method)  # symmetric


def test_identical_masks_give_one_at_zero_tolerance_and_inputs_may_be_torch():
    rng = np.random.default_rng(0)
    m = rng.random((9, 8, 7)) < 0.4
    assert surface_dice_metrics(m, m, (0.3, 2.0, 1.1), (0.0, 1.0)) == {"nsd_0mm": 1.0, "nsd_1mm": 1.0}
    t = torch.from_numpy(m.astype(np.uint8))
    assert normalized_surface_dice(t, t, None, 0.0) == 1.0


def test_empty_masks_never_nan():
    empty = np.zeros((5, 5, 5), bool)
    full = one_voxel((5, 5, 5), (2, 2, 2))
    assert surface_dice_metrics(empty, empty, 1.0) == {"nsd_1mm": 1.0, "nsd_2mm": 1.0}  # as Dice
    assert surface_dice_metrics(full, empty, 1.0) == {"nsd_1mm": 0.0, "nsd_2mm": 0.0}
    assert surface_dice_metrics(empty, full, 1.0, (5.0,)) == {"nsd_5mm": 0.0}
    assert normalized_surface_dice(np.zeros((4, 4)), np.zeros((4, 4)), 1.0, 1.0) == 1.0
    assert surface_dice_metrics(full, full, 1.0, ()) == {}
    corners, areas = surface_elements(empty)
    assert corners.shape == (0, 3) and areas.shape == (0,)


def test_a_box_filling_the_array_is_a_chamfered_box_through_the_border_voxel_faces():
    n, s = (3, 4, 5), (1.0, 2.0, 3.0)
    corners, areas = surface_elements(np.ones(n, bool), s)
    assert corners.min() == 0 and tuple(corners.max(axis=0)) == n  # the array border is background
    # flat faces between the border voxels' centres, chamfer strips along the 12 edges (width: the
    # half-voxel diagonal across the edge), one corner triangle at each of the 8 corners
    a, b, c = ((k - 1) * h for k, h in zip(n, s))
    faces = 2 * (b * c + a * c + a * b)
    edges = 4 * (a * math.hypot(s[1], s[2]) + b * math.hypot(s[0], s[2]) + c * math.hypot(s[0], s[1])) / 2
    triangles = math.hypot(s[1] * s[2], s[0] * s[2], s[0] * s[1])
    assert areas.sum() == pytest.approx(faces + edges + triangles, rel=1e-12)


def test_ball_offsets_are_sorted_and_exact():
    offsets, lengths = ball_offsets((1.0, 1.0, 1.0), 2.0)
    assert len(offsets) == 33  # 1 + 6 (1 mm) + 12 (sqrt 2) + 8 (sqrt 3) + 6 (2 mm)
    assert tuple(offsets[0]) == (0, 0, 0) and lengths[0] == 0.0
    assert np.all(np.diff(lengths) >= 0) and lengths[-1] == 2.0
    offsets, lengths = ball_offsets((0.5, 3.0), 1.0)
    assert sorted(map(tuple, offsets.tolist())) == [(-2, 0), (-1, 0), (0, 0), (1, 0), (2, 0)]


def test_keys_tolerances_and_bad_inputs():
    assert nsd_key(1) == "nsd_1mm" and nsd_key(0.5) == "nsd_0.5mm" and nsd_key(2.25) == "nsd_2.25mm"
    assert check_tolerances(1) == (1.0,)
    assert check_tolerances([2, 1, 2.0]) == (2.0, 1.0)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="tolerance"):
            check_tolerances([1.0, bad])
    m = one_voxel((4, 4, 4), (1, 1, 1))
    with pytest.raises(ValueError, match="2D or 3D"):
        normalized_surface_dice(np.ones(5), np.ones(5), 1.0, 1.0)
    with pytest.raises(ValueError, match="method"):
        surface_dice_metrics(m, m, 1.0, method="edt")
    with pytest.raises(ValueError, match="spacing"):
        surface_dice_metrics(m, m, (1.0, 1.0))


def test_both_methods_and_auto_agree_small_and_large_tolerance_balls():
    rng = np.random.default_rng(3)
    pred, truth = rng.random((14, 12, 10)) < 0.3, rng.random((14, 12, 10)) < 0.3
    truth[:, :, 5:] = False  # some elements far from the other surface
    spacing = (0.5, 0.6, 1.7)
    for tolerances in ((0.0, 0.5, 1.0), (2.0, 6.0)):  # auto: offsets (ball of ~60), KD-tree (~9000)
        values = [
            surface_dice_metrics(pred, truth, spacing, tolerances, method=m) for m in ("auto", *METHODS)
        ]
        assert values[0] == values[1] == values[2]
        assert 0.0 < values[0][nsd_key(tolerances[0])] < values[0][nsd_key(tolerances[-1])] < 1.0
