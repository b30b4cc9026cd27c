"""Attention maps from real gate hooks, slice orientation, label decoding, figure panels and size."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from PIL import Image

from attnseg.models import AttentionUNet, UNet
from attnseg.viz.figures import (
    attention_maps,
    case_figure,
    forward_with_attention,
    make_view,
    most_foreground_slice,
    save_figure,
    to_input_grid,
    view_axis,
)


def tiny_3d(in_channels: int = 2, out_channels: int = 3) -> AttentionUNet:
    torch.manual_seed(0)
    return AttentionUNet(3, in_channels, out_channels, (4, 8, 16)).eval()


def force_gate_closed(model: AttentionUNet, k: int) -> None:
    """Make gate k output alpha = 0 through its own weights: psi's norm gives -1e4, sigmoid(-1e4) == 0."""
    norm = model.gates[k].psi[1]
    with torch.no_grad():
        norm.weight.zero_()
        norm.bias.fill_(-1e4)


def panel_kinds(fig) -> list[str]:
    return [ax.get_label().split(":", 1)[1] for ax in fig.axes if ax.get_label().startswith("panel:")]


# --- up-sampling to the input grid -------------------------------------------------------------------
def test_to_input_grid_hand_values():
    # 2x2 -> padded 4x4 (linear, align_corners=False), then cropped to 3x3.
    # source coordinate of output i: (i + 0.5) / 2 - 0.5 -> -0.25, 0.25, 0.75 (clamped at 0)
    t = torch.tensor([[0.0, 1.0], [2.0, 3.0]]).reshape(1, 1, 2, 2)
    out = to_input_grid(t, (3, 3), stride=4)[0, 0].numpy()
    axis = np.array([0.0, 0.25, 0.75])
    expected = 2 * axis[:, None] + axis[None, :]
    np.testing.assert_allclose(out, expected, atol=1e-6)
    # a constant stays constant; the same grid is returned unchanged
    const = torch.full((1, 1, 2, 3, 2), 0.3)
    np.testing.assert_allclose(to_input_grid(const, (7, 11, 5), stride=4).numpy(), 0.3, atol=1e-7)
    same = torch.rand(1, 1, 5, 6)
    assert to_input_grid(same, (5, 6), stride=4) is same


# --- attention maps from forward hooks -----------------------------------------------------------------
def test_attention_maps_come_from_gate_hooks_and_match_the_gate_output():
    model = tiny_3d()
    image = torch.randn(2, 16, 12, 8)  # a multiple of the stride (4): no padding
    maps = attention_maps(model, image)
    assert len(maps) == len(model.gates) == 2
    with torch.no_grad():
        _, alphas = model(image[None], return_attention=True)
    # the finest gate works on the input grid: its map is alpha itself, voxel for voxel
    np.testing.assert_array_equal(maps[1], alphas[1][0, 0].numpy())
    # the coarse gate's alpha (8x6x4) is up-sampled trilinearly (align_corners=False) to 16x12x8
    coarse = maps[0]
    assert alphas[0].shape[2:] == (8, 6, 4) and coarse.shape == (16, 12, 8)
    up = torch.nn.functional.interpolate(alphas[0], size=(16, 12, 8), mode="trilinear", align_corners=False)
    np.testing.assert_allclose(coarse, up[0, 0].numpy(), atol=1e-6)
    # voxel (1, 1, 1) lies 1/4 of the way from coarse voxel (0,0,0) towards (1,1,1) on each axis
    a = alphas[0][0, 0].numpy()
    w = np.array([0.75, 0.25])
    expected = np.einsum("i,j,k,ijk->", w, w, w, a[:2, :2, :2])
    assert coarse[1, 1, 1] == pytest.approx(expected, abs=1e-6)
    assert 0.0 <= coarse.min() and coarse.max() <= 1.0
    # hooks are removed afterwards
    assert all(len(g._forward_hooks) == 0 for g in model.gates)


def test_attention_maps_do_not_use_return_attention():
    model = tiny_3d()
    forward = model.forward

    def forward_without_attention_flag(x, return_attention=False):
        assert not return_attention, "maps must come from hooks"
        return forward(x)

    model.forward = forward_without_attention_flag
    maps = attention_maps(model, torch.randn(2, 9, 10, 7))
    assert [m.shape for m in maps] == [(9, 10, 7), (9, 10, 7)]


def test_a_gate_forced_to_zero_shows_an_all_zero_map():
    model = tiny_3d()
    force_gate_closed(model, 0)
    image = np.random.default_rng(1).normal(size=(2, 11, 13, 6)).astype(np.float32)  # padded inside
    out = forward_with_attention(model, image)
    assert set(out.maps) == {0, 1}
    assert out.maps[0].shape == (11, 13, 6)
    assert np.all(out.maps[0] == 0.0)
    assert out.maps[1].max() > 0.05  # the other gate is untouched
    # and the logits are the model's plain forward
    with torch.no_grad():
        expected = model(torch.from_numpy(image)[None])[0].numpy()
    np.testing.assert_allclose(out.logits, expected, rtol=0, atol=1e-6)


def test_gate_selection_and_plain_unet():
    model = tiny_3d()
    out = forward_with_attention(model, torch.randn(2, 8, 8, 8), gates=[-1])
    assert list(out.maps) == [1]
    with pytest.raises(ValueError, match="2 attention gate"):
        forward_with_attention(model, torch.randn(2, 8, 8, 8), gates=[2])
    unet = UNet(3, 2, 3, (4, 8, 16)).eval()
    assert attention_maps(unet, torch.randn(2, 8, 8, 8)) == []


def test_sliding_window_with_one_window_equals_the_whole_volume_forward():
    model = tiny_3d()
    image = torch.randn(2, 12, 8, 8)
    whole = forward_with_attention(model, image)
    windowed = forward_with_attention(model, image, patch_size=(12, 8, 8))
    np.testing.assert_allclose(windowed.logits, whole.logits, atol=1e-5)
    for k in whole.maps:
        np.testing.assert_allclose(windowed.maps[k], whole.maps[k], atol=1e-6)


def test_2d_model_slice_by_slice_over_a_volume():
    torch.manual_seed(0)
    model = AttentionUNet(2, 1, 2, (4, 8)).eval()
    volume = torch.randn(1, 6, 10, 5)
    out = forward_with_attention(model, volume, slice_axis=2)
    assert out.logits.shape == (2, 6, 10, 5)
    assert out.maps[0].shape == (6, 10, 5)
    with torch.no_grad():
        _, alphas = model(volume[:, :, :, 3][None], return_attention=True)
    # slice 3 along axis 2: the 2D model's alpha on that slice (6x10 is padded to 6x10: stride 2)
    np.testing.assert_allclose(out.maps[0][:, :, 3], alphas[0][0, 0].numpy(), atol=1e-6)


# --- slices ---------------------------------------------------------------------------------------------
def test_view_axis_from_axcodes():
    assert [view_axis(v) for v in ("sa", "co", "ax")] == [0, 1, 2]
    assert view_axis("ax", ("P", "I", "R")) == 1
    assert view_axis("sa", ("P", "I", "R")) == 2
    assert view_axis("co", ("P", "I", "R")) == 0
    with pytest.raises(ValueError, match="ax, co, sa"):
        view_axis("axial")


def test_make_view_orientation_and_aspect():
    i, j, k = np.meshgrid(np.arange(4), np.arange(5), np.arange(6), indexing="ij")
    volume = 100 * i + 10 * j + k  # shape (4, 5, 6)
    spacing = (1.0, 2.0, 3.0)
    ax = make_view(volume.shape, spacing, "ax", 2, axcodes=("R", "A", "S"))
    picture = ax.take(volume)
    # columns run along i (towards R), rows top-down along j from anterior (j = 4) to posterior
    assert picture.shape == (5, 4)
    assert picture[0, 0] == 0 + 40 + 2 and picture[0, 3] == 300 + 40 + 2 and picture[4, 0] == 2
    assert ax.aspect == pytest.approx(2.0)  # spacing[j] / spacing[i]
    assert ax.name == "axial 2/5"
    # an LPS file: i points left, so it is mirrored to keep the patient's right on the right
    lps = make_view(volume.shape, spacing, "ax", 2, axcodes=("L", "P", "S")).take(volume)
    assert lps[0, 0] == 300 + 0 + 2  # top-left: i = 3 (rightmost), j = 0 (most anterior)
    co = make_view(volume.shape, spacing, "co", 1, axcodes=("R", "A", "S"))
    assert (co.h_axis, co.v_axis, co.aspect) == (0, 2, 3.0)
    assert co.take(volume)[0, 0] == 0 + 10 + 5  # superior on top
    sa = make_view(volume.shape, spacing, "sa", 0, axcodes=("R", "A", "S"))
    assert (sa.h_axis, sa.v_axis, sa.aspect) == (1, 2, 1.5)
    assert make_view(volume.shape, spacing, "ax").index == 3  # middle by default
    with pytest.raises(ValueError, match="outside"):
        make_view(volume.shape, spacing, "ax", 6)
    flat = make_view((3, 4), (0.5, 1.0))
    assert flat.axis is None and flat.aspect == 0.5
    np.testing.assert_array_equal(flat.take(np.arange(12).reshape(3, 4)), np.arange(12).reshape(3, 4))


def test_most_foreground_slice():
    mask = np.zeros((3, 4, 5), dtype=np.uint8)
    mask[:, :, 1] = 1  # 12 voxels in slice 1
    mask[0, 0, 3] = 1
    mask[:, 0:2, 4] = 2  # 6 voxels
    assert most_foreground_slice(mask, 2) == 1
    assert most_foreground_slice(mask, 0) == 0  # slice 0 holds the extra voxel
    assert most_foreground_slice(np.zeros((2, 2, 2)), 1) is None


# --- the figure -------------------------------------------------------------------------------------------
def test_case_figure_panels_and_png_size(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(2, 20, 20, 9)).astype(np.float32)
    label = np.zeros((20, 20, 9), dtype=np.uint8)
    label[5:12, 6:14, 2:6] = 1
    label[8:10, 8:10, 3:5] = 4
    pred = np.roll(label, 1, axis=0)
    maps = {0: np.zeros((20, 20, 9), np.float32), 1: np.full((20, 20, 9), 0.5, np.float32)}
    cam = rng.random((20, 20, 9)).astype(np.float32)
    view = make_view(image.shape[1:], (1.0, 1.0, 2.0), "ax", 3, axcodes=("R", "A", "S"))
    fig = case_figure(
        image, view=view, label=label, prediction=pred, maps=maps, gradcam=cam,
        channel_names=["flair", "t1"], class_names={1: "necrosis", 4: "enhancing"}, title="case",
    )  # fmt: skip
    assert panel_kinds(fig) == ["channel", "channel", "truth", "gate", "gate", "prediction", "gradcam"]
    # the zero-forced gate panel draws exactly the map it was given
    gate_axes = [ax for ax in fig.axes if ax.get_label() == "panel:gate"]
    assert np.all(np.asarray(gate_axes[0].images[-1].get_array()) == 0)
    assert np.allclose(np.asarray(gate_axes[1].images[-1].get_array()), 0.5)
    # every panel has a colour bar, labelled; class colour bars name the classes
    colourbars = [ax for ax in fig.axes if not ax.get_label().startswith("panel:")]
    assert len(colourbars) == 7
    tick_labels = {t.get_text() for cb in colourbars for t in cb.get_yticklabels()}
    assert {"necrosis", "enhancing"} <= tick_labels
    path = save_figure(fig, tmp_path / "fig.png")
    # 4 columns x (3.0 + 0.95) in; 2 rows x (3.0 * 1 + 0.35) + 0.45 in (a square 20x20 slice, aspect 1)
    with Image.open(path) as png:
        assert png.size == (1580, 715)


def test_case_figure_chosen_channel_and_2d_image(tmp_path):
    image = np.random.default_rng(0).normal(size=(3, 30, 60)).astype(np.float32)
    label = np.zeros((30, 60), dtype=np.uint8)
    label[10:20, 10:40] = 1
    fig = case_figure(image, label=label, prediction=label, channels=[1], maps={0: np.ones((30, 60))})
    assert panel_kinds(fig) == ["channel", "truth", "gate", "prediction"]
    path = save_figure(fig, tmp_path / "fig2d.png")
    # 30 rows x 60 columns at aspect 1: panel height 3.0 * 0.5 + 0.35 in
    with Image.open(path) as png:
        assert png.size == (1580, round((3.0 * 0.5 + 0.35 + 0.45) * 100))
    with pytest.raises(ValueError, match="label has shape"):
        case_figure(image, label=label[:10])
