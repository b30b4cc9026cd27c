from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from attnseg.inference import (
    axis_starts,
    flip_sets,
    gaussian_importance_map,
    sliding_window_inference,
    window_positions,
)
from attnseg.models import AttentionUNet

# --- window positions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size, patch, overlap, expected",
    [
        (240, 96, 0.5, [0, 48, 96, 144]),
        (155, 96, 0.5, [0, 30, 59]),  # span 59 in 2 steps of 29.5, rounded half up
        (96, 96, 0.5, [0]),
        (50, 96, 0.5, [0]),  # smaller than the window: padded by the caller
        (100, 96, 0.5, [0, 4]),
        (10, 4, 0.0, [0, 3, 6]),  # no overlap asked, 3 windows needed: steps of 3 <= 4
        (12, 4, 0.0, [0, 4, 8]),
        (13, 4, 0.75, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),  # max step 1
        (7, 1, 0.5, [0, 1, 2, 3, 4, 5, 6]),
    ],
)
def test_axis_starts_hand_values(size, patch, overlap, expected):
    assert axis_starts(size, patch, overlap) == expected


def test_window_positions_per_axis():
    assert window_positions((240, 240, 155), (96, 96, 96), 0.5) == [
        [0, 48, 96, 144],
        [0, 48, 96, 144],
        [0, 30, 59],
    ]
    assert window_positions((20, 10), (8, 8), (0.5, 0.0)) == [[0, 4, 8, 12], [0, 2]]
    with pytest.raises(ValueError, match="different numbers of axes"):
        window_positions((10, 10), (4,), 0.5)
    with pytest.raises(ValueError, match="overlap"):
        window_positions((10,), (4,), 1.0)


@settings(max_examples=300, deadline=None)
@given(
    size=st.integers(1, 400),
    patch=st.integers(1, 160),
    overlap=st.sampled_from([0.0, 0.1, 0.25, 1 / 3, 0.5, 0.6, 0.75, 0.9]),
)
def test_positions_cover_every_voxel(size, patch, overlap):
    starts = axis_starts(size, patch, overlap)
    assert starts[0] == 0
    if size <= patch:
        assert starts == [0]
        return
    assert starts[-1] == size - patch  # flush with the end, never past it
    assert all(b > a for a, b in zip(starts, starts[1:]))
    covered = np.zeros(size, bool)
    for s in starts:
        covered[s : s + patch] = True
    assert covered.all()
    # the overlap is the requested one up to rounding to whole voxels, and no window is wasted
    max_step = max(patch * (1 - overlap), 1)
    assert all(b - a <= math.ceil(max_step - 1e-9) for a, b in zip(starts, starts[1:]))
    if len(starts) > 2:
        assert (len(starts) - 2) * max_step < size - patch


# --- importance map --------------------------------------------------------------------------------


def test_gaussian_map_values():
    w = gaussian_importance_map((5,), sigma_scale=0.2)  # sigma = 1 voxel, centre 2
    expected = np.exp(-0.5 * np.array([4.0, 1.0, 0.0, 1.0, 4.0]))
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-6)
    w2 = gaussian_importance_map((4, 6))
    assert w2.dtype == torch.float32 and w2.shape == (4, 6)
    # separable, mirror symmetric, peak at the centre
    np.testing.assert_allclose(
        w2.numpy(),
        np.outer(gaussian_importance_map((4,)).numpy(), gaussian_importance_map((6,)).numpy()),
        rtol=1e-6,
    )
    torch.testing.assert_close(w2, w2.flip(0).flip(1), rtol=0, atol=0)


@pytest.mark.parametrize("patch, scale", [((96, 96, 96), 0.125), ((64, 64), 0.01), ((33,), 0.001)])
def test_gaussian_map_never_zero(patch, scale):
    w = gaussian_importance_map(patch, sigma_scale=scale)
    assert float(w.min()) > 0
    assert float(w.max()) == float(w[tuple(p // 2 for p in patch)])  # peak at the centre


def test_gaussian_map_min_weight():
    w = gaussian_importance_map((32, 32, 32), min_weight=1e-3)
    assert float(w.min()) == pytest.approx(1e-3)
    corner = float(torch.exp(torch.tensor(-0.5 * (15.5 / 4) ** 2)) ** 3)
    assert float(gaussian_importance_map((32, 32, 32)).min()) == pytest.approx(corner, rel=1e-4)


def test_flip_sets():
    assert flip_sets(3, False) == [()]
    assert flip_sets(2, True) == [(), (0,), (1,), (0, 1)]
    assert len(flip_sets(3, True)) == 8
    assert flip_sets(3, [2, 0]) == [(), (0,), (2,), (0, 2)]
    with pytest.raises(ValueError, match="axis 3"):
        flip_sets(3, [3])


# --- accumulation ----------------------------------------------------------------------------------


def constant_predictor(values):
    values = torch.tensor(values, dtype=torch.float32)

    def predict(batch):
        shape = (batch.shape[0], len(values), *batch.shape[2:])
        return values.view(1, -1, *([1] * (batch.ndim - 2))).expand(shape)

    return predict


@pytest.mark.parametrize(
    "shape, patch, overlap",
    [((1, 30, 23, 17), (8, 8, 8), 0.5), ((2, 5, 40), (16, 16), 0.25), ((1, 7, 9, 30), (12, 12, 12), 0.6)],
)
@pytest.mark.parametrize("mode", ["gaussian", "constant"])
def test_constant_predictor_gives_the_constant(shape, patch, overlap, mode):
    volume = torch.randn(shape)
    out = sliding_window_inference(volume, constant_predictor([3.25, -1.5]), patch, overlap, 3, mode)
    assert out.shape == (2, *shape[1:]) and out.dtype == torch.float32
    np.testing.assert_allclose(out[0].numpy(), 3.25, rtol=1e-6)
    np.testing.assert_allclose(out[1].numpy(), -1.5, rtol=1e-6)


@pytest.mark.parametrize(
    "shape, patch", [((2, 21, 16, 13), (8, 8, 8)), ((1, 5, 6, 7), (8, 8, 8)), ((3, 50, 33), (16, 24))]
)
def test_identity_predictor_reproduces_the_input(shape, patch):
    volume = torch.randn(shape)
    out = sliding_window_inference(volume.numpy(), lambda b: b, patch, 0.5, batch_size=4)
    np.testing.assert_allclose(out.numpy(), volume.numpy(), rtol=1e-5, atol=1e-6)


def test_windows_see_the_right_voxels():
    """A predictor that returns the window's mean must give the gaussian-weighted mean of means."""
    volume = torch.arange(12, dtype=torch.float32).view(1, 12)

    def mean_predictor(batch):
        return batch.mean(dim=2, keepdim=True).expand_as(batch)

    out = sliding_window_inference(volume, mean_predictor, (4,), 0.5, mode="constant")
    # starts 0, 2, 4, 6, 8 -> means 1.5, 3.5, 5.5, 7.5, 9.5; voxel 0 in window 0 only, voxel 2 in 0 and 1
    assert out[0, 0].item() == pytest.approx(1.5)
    assert out[0, 2].item() == pytest.approx(2.5)
    assert out[0, 11].item() == pytest.approx(9.5)


def tiny_model(dims=3, in_channels=2, out_channels=3):
    torch.manual_seed(1)
    return AttentionUNet(dims, in_channels, out_channels, (4, 8, 16)).eval()


def test_single_window_equals_plain_forward():
    model = tiny_model()
    volume = torch.randn(2, 16, 24, 8)
    out = sliding_window_inference(volume, model, (16, 24, 8), 0.5)
    with torch.no_grad():
        expected = model(volume[None])[0]
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_batch_size_does_not_change_the_result():
    model = tiny_model()
    volume = torch.randn(2, 20, 18, 12)
    a = sliding_window_inference(volume, model, (8, 8, 8), 0.5, batch_size=1)
    b = sliding_window_inference(volume, model, (8, 8, 8), 0.5, batch_size=7)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_small_volume_is_padded_then_cropped():
    model = tiny_model()
    volume = torch.randn(2, 5, 12, 7)
    out = sliding_window_inference(volume, model, (8, 8, 8), 0.5)
    padded = F.pad(volume, (0, 1, 0, 0, 1, 2))  # z 7 -> 8 (0 before, 1 after); x 5 -> 8 (1, 2)
    with torch.no_grad():
        expected = sliding_window_inference(padded, model, (8, 8, 8), 0.5)[:, 1:6, :, 0:7]
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)


# --- test-time augmentation ------------------------------------------------------------------------


def symmetric_conv_predictor(dims):
    """A convolution whose kernel is mirror symmetric on every axis: flip-equivariant."""
    torch.manual_seed(2)
    k = torch.randn(3, 2, *([3] * dims))
    for d in range(dims):
        k = k + k.flip(2 + d)
    conv = F.conv3d if dims == 3 else F.conv2d

    def predict(batch):
        return conv(batch, k, padding=1)

    return predict


@pytest.mark.parametrize("tta", [True, [0, 2], [1]])
def test_tta_with_flip_equivariant_predictor_equals_no_tta(tta):
    predictor = symmetric_conv_predictor(3)
    volume = torch.randn(2, 19, 14, 11)
    plain = sliding_window_inference(volume, predictor, (8, 8, 8), 0.5)
    flipped = sliding_window_inference(volume, predictor, (8, 8, 8), 0.5, tta=tta)
    torch.testing.assert_close(flipped, plain, rtol=1e-5, atol=1e-5)


def test_tta_averages_the_flipped_predictions():
    volume = torch.arange(6, dtype=torch.float32).view(1, 6)
    ramp = torch.arange(6, dtype=torch.float32)

    def position_predictor(batch):  # not flip-equivariant: adds the voxel index
        return batch + ramp

    out = sliding_window_inference(volume, position_predictor, (6,), tta=True)
    # identity: x + i; flip: flip(flip(x) + i) = x + (5 - i); mean: x + 2.5
    torch.testing.assert_close(out[0], volume[0] + 2.5)


def test_tta_with_a_real_model_is_the_mean_of_flips():
    model = tiny_model(dims=2, in_channels=1, out_channels=2)
    image = torch.randn(1, 16, 16)
    out = sliding_window_inference(image, model, (16, 16), tta=[1])
    with torch.no_grad():
        expected = (model(image[None]) + model(image[None].flip(3)).flip(3))[0] / 2
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)


# --- 2D models over 3D volumes ---------------------------------------------------------------------


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slice_wise_equals_a_loop_over_slices(axis):
    model = tiny_model(dims=2, in_channels=2, out_channels=3)
    volume = torch.randn(2, 9, 10, 7)  # the 7-voxel axis is padded to the 8-voxel window
    out = sliding_window_inference(volume, model, (8, 8), 0.5, batch_size=5, slice_axis=axis)
    assert out.shape == (3, 9, 10, 7)
    for i in range(volume.shape[1 + axis]):
        image = volume.select(1 + axis, i)
        expected = sliding_window_inference(image, model, (8, 8), 0.5, batch_size=1)
        torch.testing.assert_close(out.select(1 + axis, i), expected, rtol=1e-5, atol=1e-5)


def test_slice_wise_shape_errors():
    with pytest.raises(ValueError, match="patch_size"):
        sliding_window_inference(torch.randn(1, 8, 8, 8), lambda b: b, (8, 8, 8), slice_axis=0)
    with pytest.raises(ValueError, match="needs a 3D volume"):
        sliding_window_inference(torch.randn(1, 8, 8), lambda b: b, (8,), slice_axis=0)


def test_wrong_predictor_output_is_reported():
    with pytest.raises(ValueError, match=r"predictor returned shape \(1, 1, 4, 4\)"):
        sliding_window_inference(torch.randn(1, 8, 8), lambda b: b[..., :4, :4], (8, 8))


# --- precision options -----------------------------------------------------------------------------


def test_bf16_autocast_stays_close_and_accumulates_in_float32():
    model = tiny_model()
    volume = torch.randn(2, 16, 16, 12)
    full = sliding_window_inference(volume, model, (8, 8, 8), 0.5)
    half = sliding_window_inference(volume, model, (8, 8, 8), 0.5, autocast=True, channels_last=True)
    assert half.dtype == torch.float32
    assert (full - half).abs().max() < 0.1 * full.abs().max()
    assert (full.argmax(0) == half.argmax(0)).float().mean() > 0.95


# --- MONAI as the reference ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, overlap",
    [((2, 40, 32, 24), 0.5), ((2, 12, 40, 16), 0.5), ((2, 16, 28, 40), 0.25)],
)
def test_matches_monai_when_conventions_match(shape, overlap):
    monai_inferers = pytest.importorskip("monai.inferers")
    model = tiny_model()
    volume = torch.randn(shape)
    ours = sliding_window_inference(volume, model, (16, 16, 16), overlap, batch_size=3, min_weight=1e-3)
    with torch.no_grad():
        theirs = monai_inferers.sliding_window_inference(
            volume[None], (16, 16, 16), 3, model, overlap=overlap, mode="gaussian"
        )[0]
    torch.testing.assert_close(
        ours, theirs.as_tensor() if hasattr(theirs, "as_tensor") else theirs, rtol=1e-4, atol=1e-5
    )


def test_every_window_is_visited_once_per_tta_pass():
    calls = []

    def counting(batch):
        calls.append(batch.shape[0])
        return batch

    sliding_window_inference(torch.randn(1, 20, 20), counting, (8, 8), 0.5, batch_size=4, tta=[0])
    n_windows = len(list(itertools.product(*window_positions((20, 20), (8, 8), 0.5))))
    assert sum(calls) == 2 * n_windows == 2 * 16
