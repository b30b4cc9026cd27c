from __future__ import annotations

import numpy as np
import pytest
import torch

from attnseg.inference.postprocess import (
    keep_largest_component,
    postprocess_components,
    probabilities_from_logits,
    remove_small_components,
)


def test_probabilities():
    logits = torch.tensor([[0.0, np.log(3.0)], [0.0, 0.0]])
    soft = probabilities_from_logits(logits, "softmax")
    np.testing.assert_allclose(soft, [[0.5, 0.75], [0.5, 0.25]], rtol=1e-6)
    sig = probabilities_from_logits(logits, "sigmoid")
    np.testing.assert_allclose(sig, [[0.5, 0.75], [0.5, 0.5]], rtol=1e-6)
    assert soft.dtype == np.float32


def blobs():
    labels = np.zeros((12, 12, 12), np.uint8)
    labels[1:3, 1:3, 1:3] = 1  # 8 voxels
    labels[8:10, 8:9, 8:9] = 1  # 2 voxels
    labels[5, 5, 5] = 1  # 1 voxel
    labels[6, 6, 6] = 1  # touches (5,5,5) only at a corner: joined under 26-, apart under 6-connectivity
    labels[1:4, 8:11, 1:2] = 2  # 9 voxels
    labels[10, 1, 10] = 2  # 1 voxel
    return labels


def test_keep_largest_component_per_class():
    labels = blobs()
    out = keep_largest_component(labels)
    expected = np.zeros_like(labels)
    expected[1:3, 1:3, 1:3] = 1
    expected[1:4, 8:11, 1:2] = 2
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == labels.dtype and labels[10, 1, 10] == 2  # input untouched
    only_2 = keep_largest_component(labels, classes=[2])
    assert (only_2 == 1).sum() == 12 and (only_2 == 2).sum() == 9


def test_remove_small_components_thresholds_and_connectivity():
    labels = blobs()
    out = remove_small_components(labels, 3)
    assert (out == 1).sum() == 8 and (out == 2).sum() == 9
    out = remove_small_components(labels, 2)  # the corner-joined pair (2 voxels) stays under 26
    assert (out == 1).sum() == 12 and (out == 2).sum() == 9
    out = remove_small_components(labels, 2, connectivity=6)  # now they are two single voxels
    assert (out == 1).sum() == 10
    out = remove_small_components(labels, {2: 5})  # class 1 not in the mapping: untouched
    assert (out == 1).sum() == 12 and (out == 2).sum() == 9 and out[10, 1, 10] == 0


def test_components_in_2d():
    mask = np.zeros((6, 6), np.uint8)
    mask[0:2, 0:2] = 1
    mask[2, 2] = 1  # diagonal neighbour: same component under 8-connectivity
    mask[5, 5] = 1
    np.testing.assert_array_equal(keep_largest_component(mask), mask * (np.arange(36).reshape(6, 6) != 35))
    assert keep_largest_component(mask, connectivity=4).sum() == 4
    with pytest.raises(ValueError, match="connectivity=26"):
        keep_largest_component(mask, connectivity=26)


def test_postprocess_components_on_region_masks():
    masks = np.zeros((2, 12, 12, 12), bool)
    masks[0] = blobs() == 1
    masks[1] = blobs() == 2
    out = postprocess_components(masks, keep_largest=[2], min_voxels={1: 3}, channels_first=True)
    assert out.dtype == bool
    assert out[0].sum() == 8  # region 1: blobs below 3 voxels dropped
    assert out[1].sum() == 9  # region 2: largest only
    same = postprocess_components(blobs())
    np.testing.assert_array_equal(same, blobs())
