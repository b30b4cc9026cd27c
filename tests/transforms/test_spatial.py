"""The fused sampling grid: hand-made geometry, identity, fused == sequential, labels in the set."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from attnseg.transforms.spatial import (
    SpatialParams,
    bspline_basis,
    control_grid_shape,
    elastic_displacement,
    resample_to_spacing,
    resampled_affine,
    resampled_shape,
    rotation_matrix,
    sample_patch,
    sampling_grid,
)


def test_rotation_matrix_turns_axis_k_plus_1_towards_k_plus_2():
    r = rotation_matrix([math.pi / 2, 0, 0], 3)
    np.testing.assert_allclose(r @ [0, 1, 0], [0, 0, 1], atol=1e-12)
    r = rotation_matrix([0, math.pi / 2, 0], 3)
    np.testing.assert_allclose(r @ [0, 0, 1], [1, 0, 0], atol=1e-12)
    r = rotation_matrix([math.pi / 2], 2)
    np.testing.assert_allclose(r @ [1, 0], [0, 1], atol=1e-12)


def test_bspline_basis_partition_of_unity_and_reproduces_lines():
    for n_out, m in [(96, 4), (7, 1), (10, 3), (1, 1)]:
        w = bspline_basis(n_out, m)
        assert w.shape == (n_out, m + 3)
        np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-12)
        positions = (np.arange(m + 3) - 1.0) * ((n_out - 1) / m)
        np.testing.assert_allclose(w @ positions, np.arange(n_out), atol=1e-9)


def test_identity_grid_is_the_crop():
    coords = sampling_grid((4, 5, 6), SpatialParams(start_vox=(2, -3, 4)))
    expected = np.stack(np.meshgrid(np.arange(4) + 2, np.arange(5) - 3, np.arange(6) + 4, indexing="ij"))
    np.testing.assert_allclose(coords, expected, atol=1e-5)


def test_rotation_about_patch_centre_by_hand():
    # centre (1, 1, 1); output voxel (1, 2, 1) is q = (0, 1, 0): 90 deg about axis 0 -> (0, 0, 1)
    coords = sampling_grid((3, 3, 3), SpatialParams(start_vox=(0, 0, 0), rotation_rad=(math.pi / 2, 0, 0)))
    np.testing.assert_allclose(coords[:, 1, 2, 1], [1, 1, 2], atol=1e-5)
    np.testing.assert_allclose(coords[:, 0, 1, 1], [0, 1, 1], atol=1e-5)  # the rotation axis stays


def test_zoom_and_flip_by_hand():
    p = SpatialParams(start_vox=(0, 0, 0), zoom=(2.0, 2.0, 2.0))
    coords = sampling_grid((5, 5, 5), p)
    np.testing.assert_allclose(coords[:, 4, 2, 2], [3, 2, 2], atol=1e-5)  # q=(2,0,0) -> 2 + 2/2
    flipped = sampling_grid((5, 5, 5), SpatialParams(start_vox=(0, 0, 0), zoom=(2.0,) * 3, flip=(True,) * 3))
    np.testing.assert_allclose(flipped, coords[:, ::-1, ::-1, ::-1], atol=1e-5)


def test_rotation_acts_in_millimetres_with_anisotropic_voxels():
    # voxels 1 x 2 x 1 mm; 90 deg about axis 2 turns axis 0 into axis 1:
    # 2 voxels (2 mm) along axis 0 become 2 mm = 1 voxel along axis 1
    p = SpatialParams(start_vox=(0, 0, 0), rotation_rad=(0, 0, math.pi / 2), spacing_mm=(1.0, 2.0, 1.0))
    coords = sampling_grid((5, 5, 5), p)
    np.testing.assert_allclose(coords[:, 4, 2, 2], [2, 3, 2], atol=1e-5)


def test_constant_elastic_field_is_a_shift():
    shape = control_grid_shape((8, 9, 10), 4)
    ctrl = np.zeros((3, *shape), np.float32)
    ctrl[0], ctrl[1], ctrl[2] = 1.5, -0.5, 2.0
    u = elastic_displacement(ctrl, (8, 9, 10))
    np.testing.assert_allclose(u[:, 3, 4, 5], [1.5, -0.5, 2.0], atol=1e-5)
    coords = sampling_grid((8, 9, 10), SpatialParams(start_vox=(0, 0, 0), elastic_vox=ctrl))
    base = sampling_grid((8, 9, 10), SpatialParams(start_vox=(0, 0, 0)))
    np.testing.assert_allclose(coords - base, u, atol=1e-5)


def _smooth_volume(shape, seed=0):
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"))
    centre = np.array(shape) / 2 + rng.uniform(-2, 2, 3)
    r = np.sqrt(((grid - centre.reshape(3, 1, 1, 1)) ** 2).sum(0))
    image = np.stack([np.cos(r / 5.0), np.sin(grid[0] / 7.0) * np.cos(grid[1] / 9.0)]).astype(np.float32)
    label = (r < shape[0] / 4).astype(np.uint8) + 3 * (r < shape[0] / 8)  # values 0, 1, 4
    return image, label


def test_identity_params_give_the_identity():
    image, label = _smooth_volume((20, 22, 24))
    p = SpatialParams(start_vox=(3, 2, 5))
    img, lbl = sample_patch(image, label, (10, 12, 9), p)
    np.testing.assert_array_equal(img, image[:, 3:13, 2:14, 5:14])
    np.testing.assert_array_equal(lbl, label[3:13, 2:14, 5:14])
    assert img.dtype == np.float32 and lbl.dtype == np.int64
    # the interpolating path with a full turn is the identity up to float rounding
    full_turn = SpatialParams(start_vox=(3, 2, 5), rotation_rad=(2 * math.pi, 0, 0))
    img2, lbl2 = sample_patch(image, label, (10, 12, 9), full_turn)
    np.testing.assert_allclose(img2, image[:, 3:13, 2:14, 5:14], atol=1e-4)
    np.testing.assert_array_equal(lbl2, label[3:13, 2:14, 5:14])


def test_2d_quarter_turn_is_rot90():
    image = np.arange(25, dtype=np.float32).reshape(1, 5, 5)
    label = (np.arange(25).reshape(5, 5) % 3).astype(np.uint8)
    p = SpatialParams(start_vox=(0, 0), rotation_rad=(math.pi / 2,))
    img, lbl = sample_patch(image, label, (5, 5), p)
    np.testing.assert_allclose(img[0], np.rot90(image[0], -1), atol=1e-4)
    np.testing.assert_array_equal(lbl, np.rot90(label, -1))


def test_crop_outside_volume_reads_zero():
    image, label = _smooth_volume((10, 10, 10))
    img, lbl = sample_patch(image, label, (4, 4, 4), SpatialParams(start_vox=(8, 0, 0)))
    np.testing.assert_array_equal(img[:, 2:], 0)
    np.testing.assert_array_equal(img[:, :2], image[:, 8:10, 0:4, 0:4])
    far = SpatialParams(start_vox=(50, 50, 50), rotation_rad=(0.3, 0, 0))
    img, lbl = sample_patch(image, label, (4, 4, 4), far)
    assert not img.any() and not lbl.any()


def test_fused_grid_equals_sequential_composition():
    """rotate+zoom the whole volume about the patch centre, crop, deform, mirror -- sequentially with
    scipy -- against one fused sample. They differ only by the extra interpolation."""
    image, label = _smooth_volume((48, 48, 48))
    patch = (20, 22, 18)
    start = (12, 11, 14)
    rng = np.random.default_rng(3)
    ctrl = (rng.standard_normal((3, *control_grid_shape(patch, 8))) * 1.5).astype(np.float32)
    params = SpatialParams(
        start_vox=start,
        rotation_rad=(0.2, -0.15, 0.1),
        zoom=(1.1, 1.1, 1.1),
        flip=(True, False, True),
        elastic_vox=ctrl,
    )
    fused_img, fused_lbl = sample_patch(image, label, patch, params)

    centre = np.array(start) + (np.array(patch) - 1) / 2
    a = rotation_matrix(params.rotation_rad, 3) / 1.1
    # 1) affine about the centre, whole volume
    y = np.stack(np.meshgrid(*[np.arange(48.0)] * 3, indexing="ij")).reshape(3, -1)
    x = centre[:, None] + a @ (y - centre[:, None])
    step1 = np.stack([ndimage.map_coordinates(ch, x, order=1).reshape(48, 48, 48) for ch in image])
    step1_lbl = ndimage.map_coordinates(label, x, order=0).reshape(48, 48, 48)
    # 2) crop with a margin so that 3) the elastic step has support
    m = 6
    sl = tuple(slice(s - m, s + p + m) for s, p in zip(start, patch))
    step2, step2_lbl = step1[(slice(None), *sl)], step1_lbl[sl]
    # 3) elastic on the crop: out(p) = in(p + u(p))
    u = elastic_displacement(ctrl, patch)
    p = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in patch], indexing="ij"))
    src = (p + u + m).reshape(3, -1)
    step3 = np.stack([ndimage.map_coordinates(ch, src, order=1).reshape(patch) for ch in step2])
    step3_lbl = ndimage.map_coordinates(step2_lbl, src, order=0).reshape(patch)
    # 4) mirror
    step4 = step3[:, ::-1, :, ::-1]
    step4_lbl = step3_lbl[::-1, :, ::-1]

    err = np.abs(fused_img - step4)
    assert err.max() < 0.05, err.max()  # the volume varies by ~0.2 per voxel: one linear step's error
    assert err.mean() < 0.005
    # nearest twice vs once can move a boundary by a voxel: away from boundaries they agree exactly
    interior = ndimage.minimum_filter(step4_lbl, 5) == ndimage.maximum_filter(step4_lbl, 5)
    assert interior.mean() > 0.1
    np.testing.assert_array_equal(fused_lbl[interior], step4_lbl[interior])
    assert (fused_lbl == step4_lbl).mean() > 0.9
    # and the fused label is exactly the source label at the rounded fused coordinates
    coords = np.rint(sampling_grid(patch, params)).astype(int)
    np.testing.assert_array_equal(fused_lbl, label[tuple(coords)])


def test_region_path_equals_in_place_path():
    image, label = _smooth_volume((30, 30, 30))
    params = SpatialParams(start_vox=(5, 6, 7), rotation_rad=(0.3, 0.2, -0.1), zoom=(0.9,) * 3)
    in_place, _ = sample_patch(image, None, (16, 16, 16), params)
    region, _ = sample_patch(image.astype(np.float64), None, (16, 16, 16), params)
    np.testing.assert_allclose(in_place, region, atol=1e-5)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    angles=st.tuples(*[st.floats(-math.pi, math.pi)] * 3),
    zoom=st.floats(0.5, 2.0),
    flips=st.tuples(*[st.booleans()] * 3),
    mode=st.sampled_from(["nearest", "linear"]),
    elastic=st.floats(0.0, 4.0),
)
def test_labels_stay_in_the_declared_set(seed, angles, zoom, flips, mode, elastic):
    rng = np.random.default_rng(seed)
    declared = [0, 1, 2, 4]
    label = rng.choice(declared, size=(14, 13, 12)).astype(np.uint8)
    image = rng.standard_normal((1, 14, 13, 12)).astype(np.float32)
    patch = (9, 8, 10)
    ctrl = (rng.standard_normal((3, *control_grid_shape(patch, 4))) * elastic).astype(np.float32)
    params = SpatialParams(
        start_vox=tuple(int(v) for v in rng.integers(-4, 8, 3)),
        rotation_rad=angles,
        zoom=(zoom,) * 3,
        flip=flips,
        elastic_vox=ctrl,
    )
    img, lbl = sample_patch(image, label, patch, params, label_mode=mode, classes=declared)
    assert set(np.unique(lbl).tolist()) <= set(declared)
    assert img.shape == (1, *patch) and np.isfinite(img).all()
    again_img, again_lbl = sample_patch(image, label, patch, params, label_mode=mode, classes=declared)
    np.testing.assert_array_equal(img, again_img)
    np.testing.assert_array_equal(lbl, again_lbl)


def test_linear_label_mode_keeps_thin_structure_smoother():
    label = np.zeros((20, 20, 20), np.uint8)
    label[5:15, 5:15, 5:15] = 2
    params = SpatialParams(start_vox=(0, 0, 0), rotation_rad=(0.3, 0, 0))
    _, lbl = sample_patch(None, label, (20, 20, 20), params, label_mode="linear", classes=[0, 2])
    assert set(np.unique(lbl).tolist()) == {0, 2}
    # volume roughly preserved by a rotation
    assert abs((lbl == 2).sum() - 1000) < 80


def test_resampling_shape_affine_and_labels():
    assert resampled_shape((240, 240, 155), (1, 1, 1), (2, 2, 2.5)) == (120, 120, 62)
    aff = np.diag([-1.0, -1.0, 1.0, 1.0])
    aff[:3, 3] = [0, 239, 0]
    new = resampled_affine(aff, (4, 4, 4), (2, 2, 2))
    # new voxel 0 covers old voxels 0 and 1: its centre is old index 0.5
    np.testing.assert_allclose(new @ [0, 0, 0, 1], aff @ [0.5, 0.5, 0.5, 1])
    np.testing.assert_allclose(np.abs(np.diag(new)[:3]), [2, 2, 2])
    label = np.zeros((8, 8, 8), np.uint8)
    label[2:6, 2:6, 2:6] = 4
    out, out_aff = resample_to_spacing(label, (1, 1, 1), (2, 2, 2), is_label=True, classes=[0, 4], affine=aff)
    assert out.shape == (4, 4, 4) and set(np.unique(out).tolist()) == {0, 4}
    assert (out == 4).sum() == 8  # the 4^3 cube becomes a 2^3 cube
    image = np.ones((2, 8, 8, 8), np.float32)
    img, _ = resample_to_spacing(image, (1, 1, 1), (2, 2, 2))
    assert img.shape == (2, 4, 4, 4)
    np.testing.assert_allclose(img, 1.0, atol=1e-6)


def test_bad_arguments_raise():
    image = np.zeros((1, 8, 8, 8), np.float32)
    with pytest.raises(ValueError, match="label_mode"):
        sample_patch(image, None, (4, 4, 4), SpatialParams((0, 0, 0)), label_mode="cubic")
    with pytest.raises(ValueError, match="classes"):
        sample_patch(image, None, (4, 4, 4), SpatialParams((0, 0, 0)), label_mode="linear")
    with pytest.raises(ValueError, match="elastic"):
        elastic_displacement(np.zeros((2, 4, 4, 4)), (8, 8, 8))


@settings(max_examples=30, deadline=None)
@given(
    shape=st.tuples(*[st.integers(2, 12)] * 3),
    patch=st.tuples(*[st.integers(1, 10)] * 3),
    offset=st.tuples(*[st.integers(-6, 12)] * 3),
    flips=st.tuples(*[st.booleans()] * 3),
)
def test_identity_and_mirror_params_are_exact_crops(shape, patch, offset, flips):
    rng = np.random.default_rng(0)
    image = rng.standard_normal((2, *shape)).astype(np.float32)
    label = rng.integers(0, 3, shape).astype(np.uint8)
    img, lbl = sample_patch(image, label, patch, SpatialParams(start_vox=offset, flip=flips))
    padded = np.zeros((2, *[n + 40 for n in shape]), np.float32)
    padded[:, 20 : 20 + shape[0], 20 : 20 + shape[1], 20 : 20 + shape[2]] = image
    padded_lbl = np.zeros([n + 40 for n in shape], np.int64)
    padded_lbl[20 : 20 + shape[0], 20 : 20 + shape[1], 20 : 20 + shape[2]] = label
    sl = tuple(slice(o + 20, o + 20 + p) for o, p in zip(offset, patch))
    want, want_lbl = padded[(slice(None), *sl)], padded_lbl[sl]
    axes = [i for i, f in enumerate(flips) if f]
    if axes:
        want, want_lbl = np.flip(want, [a + 1 for a in axes]), np.flip(want_lbl, axes)
    np.testing.assert_array_equal(img, want)
    np.testing.assert_array_equal(lbl, want_lbl)
