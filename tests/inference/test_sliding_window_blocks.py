"""Piece-wise (slab / cell) accumulation equals whole-volume accumulation; the memory plan."""

from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch

from attnseg.config import PreprocessConfig
from attnseg.datasets.label_scheme import LabelScheme
from attnseg.devices import available_memory_bytes
from attnseg.errors import ConfigError
from attnseg.inference import (
    plan_accumulation,
    sliding_window_blocks,
    sliding_window_inference,
)
from attnseg.inference.predict import (
    InferenceSettings,
    LoadedModel,
    PredictOptions,
    _thin_slabs,
    predict_case,
)
from attnseg.inference.sliding_window import _zeros


def assembled(volume, predictor, patch, overlap, levels, **kw) -> torch.Tensor:
    """The pieces written into one tensor; each voxel must be written exactly once."""
    out = None
    seen = torch.zeros(volume.shape[1:], dtype=torch.int32)
    for region, logits in sliding_window_blocks(volume, predictor, patch, overlap, 3, levels=levels, **kw):
        if out is None:
            out = torch.zeros((logits.shape[0], *volume.shape[1:]))
        assert tuple(logits.shape[1:]) == tuple(s.stop - s.start for s in region)
        out[(slice(None), *region)] = logits
        seen[region] += 1
    assert bool((seen == 1).all()), "the pieces must tile the volume exactly once"
    return out


def check_equal(volume, predictor, patch, overlap, max_levels, **kw) -> None:
    whole = sliding_window_inference(volume, predictor, patch, overlap, 3, **kw)
    labels = whole.argmax(0)
    probabilities = torch.softmax(whole, 0)
    for levels in range(max_levels + 1):
        pieces = assembled(volume, predictor, patch, overlap, levels, **kw)
        assert torch.equal(pieces.argmax(0), labels), f"levels={levels}"
        difference = (torch.softmax(pieces, 0) - probabilities).abs().max().item()
        assert difference <= 1e-6, f"levels={levels}: probabilities differ by {difference}"


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    return {
        3: torch.nn.Conv3d(2, 5, 3, padding=1).eval(),
        2: torch.nn.Conv2d(2, 5, 3, padding=1).eval(),
    }


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.75])
def test_3d_pieces_equal_the_whole_volume_odd_sizes(nets, overlap):
    volume = torch.randn(2, 23, 17, 13, generator=torch.Generator().manual_seed(1))
    check_equal(volume, nets[3], (8, 9, 7), overlap, 3)


@pytest.mark.parametrize("overlap", [0.0, 0.5, 0.75])
def test_2d_pieces_equal_the_whole_image(nets, overlap):
    image = torch.randn(2, 37, 21, generator=torch.Generator().manual_seed(2))
    check_equal(image, nets[2], (10, 9), overlap, 2)


@pytest.mark.parametrize("slice_axis", [0, 2])
def test_2d_model_over_a_volume_pieces_equal_the_whole(nets, slice_axis):
    volume = torch.randn(2, 15, 11, 9, generator=torch.Generator().manual_seed(3))
    check_equal(volume, nets[2], (8, 7), 0.5, 3, slice_axis=slice_axis)


def test_pieces_with_tta_and_padding_equal_the_whole(nets):
    # axis 1 is smaller than the window: padded, and the padding is never handed out
    volume = torch.randn(2, 21, 5, 11, generator=torch.Generator().manual_seed(4))
    check_equal(volume, nets[3], (8, 8, 8), 0.5, 3, tta=True)
    check_equal(volume, nets[3], (8, 8, 8), 0.25, 3, mode="constant")


def test_whole_volume_is_one_piece_and_finer_levels_hand_out_early(nets):
    volume = torch.randn(2, 20, 9, 9)
    assert len(list(sliding_window_blocks(volume, nets[3], (8, 9, 9), 0.5, levels=0))) == 1
    # starts along axis 0: 0, 4, 8, 12; window edges split it into 5 slabs of 4 voxels
    regions = [r for r, _ in sliding_window_blocks(volume, nets[3], (8, 9, 9), 0.5, levels=1)]
    assert [(r[0].start, r[0].stop) for r in regions] == [(0, 4), (4, 8), (8, 12), (12, 16), (16, 20)]


def test_a_finished_piece_is_freed_once_the_consumer_drops_it(nets):
    """The generators must not keep a handed-out cell alive through the following windows: only the
    consumer's reference may (regression: their frames held the last finished cell until the next one
    was handed out, K x cell float32 more through every forward in between)."""
    volume = torch.randn(2, 40, 9, 9)
    cell = None
    alive_during_forward = []

    def predictor(batch):
        if cell is not None:
            alive_during_forward.append(cell() is not None)
        return nets[3](batch)

    pieces = sliding_window_blocks(volume, predictor, (8, 9, 9), 0.5, 1, levels=1)
    _, logits = next(pieces)
    cell = weakref.ref(logits._base if logits._base is not None else logits)
    del logits
    next(pieces)  # runs the next window(s) until the next piece is finished
    assert alive_during_forward == [False], "the first cell was still referenced during the next forward"
    pieces.close()


def test_large_accumulator_cells_are_zeros_in_their_own_map():
    small, large = _zeros((3, 4, 5)), _zeros((2, 64, 64, 16))
    assert small.dtype == large.dtype == torch.float32
    assert tuple(large.shape) == (2, 64, 64, 16) and large.is_contiguous()
    assert not small.any() and not large.any()
    large += 1.5  # writable
    assert float(large.sum()) == 1.5 * 2 * 64 * 64 * 16


def test_thin_slabs_tile_a_piece_and_bound_the_decoding_temporaries():
    piece = (slice(10, 60), slice(0, 32), slice(5, 37))
    for classes, slab_bytes in ((2, 1 << 16), (64, 1 << 20), (64, 1)):
        logits = torch.zeros(classes, 50, 32, 32)
        slabs = list(_thin_slabs(piece, logits, slab_bytes))
        rows = [(r[0].start, r[0].stop) for r, _ in slabs]
        assert rows[0][0] == 10 and rows[-1][1] == 60
        assert all(a[1] == b[0] for a, b in zip(rows, rows[1:]))
        for region, part in slabs:
            assert region[1:] == piece[1:] and part.shape[1] == region[0].stop - region[0].start
            # at least one row; otherwise K floats (or an int64) per voxel within the budget
            assert part.shape[1] == 1 or part[0].numel() * max(8, 4 * classes) <= slab_bytes


def test_plan_hand_computed_bytes():
    # a 10 x 6 image, 4 x 6 windows at overlap 0.5: starts 0, 2, 4, 6 along axis 0, K = 3
    # whole: 60 voxels x (3 logit sums + 1 weight sum) x 4 bytes = 960
    # split along axis 0 at the window edges: cells of 2 x 6 voxels (192 bytes), two alive at once
    whole = plan_accumulation((10, 6), (4, 6), 0.5, classes=3, batch_size=1, budget_bytes=1000)
    assert (whole.levels, whole.accumulator_bytes, whole.whole_bytes) == (0, 960, 960)
    slabs = plan_accumulation((10, 6), (4, 6), 0.5, classes=3, batch_size=1, budget_bytes=500)
    assert (slabs.levels, slabs.accumulator_bytes) == (1, 384)
    assert "axis 0" in slabs.describe() and "OVER" not in slabs.describe()
    # nothing fits: the finest split, said to be over the budget
    tight = plan_accumulation((10, 6), (4, 6), 0.5, classes=3, batch_size=1, budget_bytes=100)
    assert (tight.levels, tight.accumulator_bytes) == (2, 384)
    assert "OVER budget" in tight.describe()
    # a batch of 2 windows keeps 3 slabs alive
    assert (
        plan_accumulation((10, 6), (4, 6), 0.5, classes=3, batch_size=2, budget_bytes=500).accumulator_bytes
        == 576
    )
    # no budget: the whole volume, as sliding_window_inference does
    assert plan_accumulation((10, 6), (4, 6), 0.5, classes=3).levels == 0


def test_plan_for_a_ct_volume_with_64_classes():
    plan = plan_accumulation((512, 512, 400), (64, 64, 64), 0.5, classes=64, budget_bytes=int(2.5e9))
    assert plan.whole_bytes == 512 * 512 * 400 * 65 * 4
    assert plan.levels == 2 and plan.accumulator_bytes < 2.5e9
    # a slice-wise 2D model: slices first
    slices = plan_accumulation((64, 64, 40), (32, 32), 0.5, classes=4, slice_axis=2, budget_bytes=1)
    assert slices.levels == 3 and slices.describe().count("slices") == 1


def test_available_memory_is_a_positive_byte_count():
    available = available_memory_bytes()
    assert available is None or available > 0


def _model(kind: str):
    if kind == "labels":
        scheme = LabelScheme("labels", (0, 1, 2), ("bg", "a", "b"))

        def predictor(batch):
            return torch.cat([torch.zeros_like(batch), batch, 0.5 * batch.flip(2) + 0.3], dim=1)

    else:
        scheme = LabelScheme("regions", (0, 1, 2, 4), ("WT", "TC", "ET"), ((1, 2, 4), (1, 4), (4,)))

        def predictor(batch):
            return torch.cat([batch - 0.2, batch - 0.8, batch.flip(3) - 1.2], dim=1)

    settings = InferenceSettings(3, 1, 3, (8, 8, 8), PreprocessConfig(normalization="none"), scheme)
    return LoadedModel(predictor, settings)


@pytest.mark.parametrize("kind", ["labels", "regions"])
def test_predict_case_is_the_same_whatever_the_budget(kind):
    rng = np.random.default_rng(5)
    image = np.zeros((1, 21, 19, 15), np.float32)
    image[0, 2:19, 3:17, 1:14] = rng.normal(1.0, 1.0, (17, 14, 13))  # a zero border: the crop box
    model = _model(kind)
    results = {}
    for budget in (1e-9, 1e-3, 100.0):
        options = PredictOptions(crop_nonzero=True, max_memory_gb=budget, keep_largest=kind == "regions")
        results[budget] = predict_case(model, image, options=options, with_probabilities=True)
    assert "OVER budget" in results[1e-9].plan and "axis 0, axis 1, axis 2" in results[1e-9].plan
    assert "whole volume at once" in results[100.0].plan
    for budget in (1e-9, 1e-3):
        np.testing.assert_array_equal(results[budget].labels, results[100.0].labels)
        np.testing.assert_allclose(
            results[budget].probabilities, results[100.0].probabilities, atol=1e-6, rtol=0
        )
    assert len(np.unique(results[100.0].labels)) >= 3  # not a trivial map


def test_a_non_positive_budget_is_refused():
    with pytest.raises(ConfigError, match="max_memory_gb"):
        predict_case(
            _model("labels"), np.ones((1, 9, 9, 9), np.float32), options=PredictOptions(max_memory_gb=0)
        )
