"""LabelScheme: one meaning of the output channels, one encode, one decode (issue 14, item 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from attnseg.datasets import discover
from attnseg.datasets.label_scheme import ATTNSEG_PAINT_RULE, LabelScheme
from attnseg.datasets.regions import brats_regions, labels_to_regions
from attnseg.errors import ConfigError, DataError
from conftest import write_nnunet_regions

BRATS = LabelScheme.from_labels(
    {"background": 0, "NCR": 1, "ED": 2, "ET": 4}, brats_regions(2017)
)  # WT {1,2,4}, TC {1,4}, ET {4}
CLASSES = LabelScheme("labels", (0, 1, 2, 4), ("bg", "ncr", "ed", "et"))
# BraTS-PED style (field case 09): 1 ET, 2 non-enhancing, 3 cystic, 4 edema
PED = {"whole_tumor": [1, 2, 3, 4], "tumor_core": [1, 2, 3], "enhancing_tumor": [1]}


def logits_of(masks: np.ndarray) -> np.ndarray:
    """Region logits that are on (+5) exactly where ``masks`` is."""
    return np.where(masks, 5.0, -5.0).astype(np.float32)


def nested_masks() -> np.ndarray:
    """One row of 6 voxels: background, edema, core (twice), ET, and ET claimed outside the core."""
    wt = np.array([0, 1, 1, 1, 1, 1], bool)
    tc = np.array([0, 0, 1, 1, 1, 0], bool)
    et = np.array([0, 0, 0, 0, 1, 1], bool)
    return np.stack([wt, tc, et])


# --- what the channels are --------------------------------------------------------------------------------
def test_a_labels_scheme_from_a_datasets_labels():
    scheme = LabelScheme.from_labels({"tumour": 1, "background": 0, "oedema": 2})
    assert scheme == LabelScheme("labels", (0, 1, 2), ("background", "tumour", "oedema"))
    assert scheme.kind == "labels" and scheme.activation == "softmax" and scheme.out_channels == 3
    assert scheme.channel_names == ["tumour", "oedema"] and scheme.targets == {"tumour": [1], "oedema": [2]}
    assert scheme.background == 0 and scheme.painting == () and scheme.label_dtype == np.uint8


def test_a_regions_scheme_from_a_datasets_regions():
    assert BRATS.kind == "regions" and BRATS.activation == "sigmoid" and BRATS.out_channels == 3
    assert BRATS.values == (0, 1, 2, 4) and BRATS.names == ("WT", "TC", "ET")
    assert BRATS.regions == ((1, 2, 4), (1, 4), (4,))
    assert BRATS.region_map == BRATS.targets == {"WT": [1, 2, 4], "TC": [1, 4], "ET": [4]}
    assert BRATS.channel_names == ["WT", "TC", "ET"] and BRATS.describe() == (
        "regions WT=[1, 2, 4], TC=[1, 4], ET=[4]"
    )
    # data.target=labels on a dataset with regions: plain classes
    classes = LabelScheme.from_labels(
        {"background": 0, "NCR": 1, "ED": 2, "ET": 4}, brats_regions(2017), kind="labels"
    )
    assert classes.kind == "labels" and classes.values == (0, 1, 2, 4) and classes.regions == ()


def test_label_values_above_255_give_int32_maps():
    big = LabelScheme("labels", (0, 1, 1000), ("bg", "a", "b"))
    assert big.label_dtype == np.int32
    assert big.decode(np.array([[0.0, 0], [0, 0], [1, 0]])).tolist() == [1000, 0]
    assert big.decode(np.zeros((3, 2))).dtype == np.int32


def test_the_default_scheme_of_a_model_that_records_none():
    assert LabelScheme.default(3) == LabelScheme("labels", (0, 1, 2), ("background", "label_1", "label_2"))
    one = LabelScheme.default(1)  # one channel: one sigmoid region, label 1
    assert one.kind == "regions" and one.region_map == {"foreground": [1]}
    np.testing.assert_array_equal(one.decode(np.array([[-0.5, 0.5]])), [0, 1])


# --- encode / decode ---------------------------------------------------------------------------------------
def test_encode_hand_values():
    label = np.array([[0, 1], [2, 4]])
    assert BRATS.encode(label).tolist() == [[[0, 1], [1, 1]], [[0, 1], [0, 1]], [[0, 0], [0, 1]]]
    assert BRATS.encode(label).dtype == np.uint8
    assert CLASSES.encode(label).tolist() == [[0, 1], [2, 3]] and CLASSES.encode(label).dtype == np.int64
    with pytest.raises(
        DataError, match=r"label values \[3\] are not among the declared values \[0, 1, 2, 4\]"
    ):
        CLASSES.encode(np.array([0, 3]))
    with pytest.raises(DataError, match=r"\[2\]"):
        LabelScheme.default(2).encode(np.array([0, 2]))


def test_labels_encode_decode_round_trip():
    label = np.array([[0, 1, 2], [4, 4, 0]], dtype=np.uint8)
    logits = np.moveaxis(np.eye(4, dtype=np.float32)[CLASSES.encode(label)], -1, 0) * 3  # one-hot
    decoded = CLASSES.decode(torch.from_numpy(logits))  # a torch tensor works too
    np.testing.assert_array_equal(decoded, label)
    assert decoded.dtype == np.uint8


def test_regions_encode_decode_round_trip():
    label = np.array([[0, 1, 2], [4, 2, 1]], dtype=np.uint8)
    decoded = BRATS.decode(logits_of(BRATS.encode(label).astype(bool)))
    np.testing.assert_array_equal(decoded, label)
    np.testing.assert_array_equal(BRATS.paint(labels_to_regions(label, BRATS.region_map)), label)


def test_decode_takes_the_argmax_and_maps_it_to_label_values():
    logits = torch.tensor(
        [
            [[5.0, 0.0], [0.0, 1.0]],  # class 0
            [[1.0, 3.0], [0.0, 1.0]],  # class 1
            [[0.0, 0.0], [2.0, 1.0]],  # class 2 (last voxel: a three-way tie -> class 0)
        ]
    )
    np.testing.assert_array_equal(LabelScheme.default(3).decode(logits), [[0, 1], [2, 0]])
    out = LabelScheme("labels", (0, 2, 4), ("bg", "a", "b")).decode(logits.numpy())
    np.testing.assert_array_equal(out, [[0, 2], [4, 0]])
    assert out.dtype == np.uint8
    with pytest.raises(ValueError, match="3 class channels but 2"):
        LabelScheme.default(2).decode(logits)


def test_decode_of_a_strided_torch_view_equals_numpys_argmax_with_ties_first():
    """Pieces of the sliding window are strided views (cells are (n, K, ...)); torch's argmax reads them
    in place and must give numpy's answer: the first of tied maxima, label values mapped."""
    rng = np.random.default_rng(0)
    cells = torch.from_numpy(rng.integers(0, 4, size=(5, 4, 6, 7)).astype(np.float32))  # many ties
    view = cells.movedim(1, 0)[:, 1:4, :, 2:]  # (K, 3, 6, 5), not contiguous
    assert not view.is_contiguous()
    expected = np.argmax(view.numpy(), axis=0)
    np.testing.assert_array_equal(LabelScheme.default(4).decode(view), expected)
    np.testing.assert_array_equal(CLASSES.decode(view), np.array([0, 1, 2, 4])[expected])
    assert CLASSES.decode(view).dtype == np.uint8


def test_decode_of_classes_and_regions_by_hand():
    logits = np.zeros((4, 3), dtype=np.float32)
    logits[:, 0] = [5, 0, 0, 0]  # background
    logits[:, 1] = [0, 0, 0, 5]  # class index 3 -> label value 4
    logits[:, 2] = [0, 0, 5, 0]  # class index 2 -> label 2
    np.testing.assert_array_equal(CLASSES.decode(logits), [0, 4, 2])
    np.testing.assert_array_equal(LabelScheme.default(4).decode(logits), [0, 3, 2])
    r = np.array([[-1, 1, 1, 1], [-1, -1, 1, 1], [-1, -1, -1, 1]], dtype=np.float32)  # (3 regions, 4 voxels)
    np.testing.assert_array_equal(BRATS.decode(r), [0, 2, 1, 4])


def test_region_masks_threshold():
    scheme = LabelScheme("regions", (0, 1), ("a",), ((1,),))
    logits = torch.tensor([[-1.0, 0.0, 0.1, 0.84, 0.85]])
    np.testing.assert_array_equal(scheme.region_masks(logits), [[False, False, True, True, True]])
    # sigmoid(x) > 0.7  <=>  x > log(7/3) = 0.8473
    np.testing.assert_array_equal(
        scheme.region_masks(logits, threshold=0.7), [[False, False, False, False, True]]
    )
    np.testing.assert_array_equal(scheme.decode(logits, threshold=0.7), [0, 0, 0, 0, 1])
    with pytest.raises(ValueError, match="threshold"):
        scheme.region_masks(logits, threshold=1.0)
    with pytest.raises(ValueError, match="2 class channels but 1 regions"):
        scheme.decode(np.zeros((2, 3)))


def test_masks_of_the_scored_channels():
    logits = np.array([[5.0, 0, 0], [0, 5, 0], [0, 0, 5]])  # classes 0, 1, 2 at voxels 0, 1, 2
    three = LabelScheme.default(3)
    assert three.masks_from_logits(logits).tolist() == [[False, True, False], [False, False, True]]
    assert three.masks_from_labels(np.array([0, 1, 2])).tolist() == [
        [False, True, False],
        [False, False, True],
    ]
    region = np.array([[-1.0, 1.0, 1.0], [-1.0, -1.0, 1.0], [-1.0, -1.0, -1.0]])
    assert BRATS.masks_from_logits(region).tolist() == [
        [False, True, True],
        [False, False, True],
        [False] * 3,
    ]
    assert BRATS.masks_from_labels(np.array([0, 2, 1])).tolist() == [
        [False, True, True],
        [False, False, True],
        [False] * 3,
    ]


# --- painting order -----------------------------------------------------------------------------------------
def test_attnsegs_own_rule_when_the_dataset_declares_no_order():
    """Largest region first, each with its own lowest label: an ET voxel outside TC is still ET."""
    assert "attnseg's rule: largest region first" in ATTNSEG_PAINT_RULE
    assert BRATS.paint_order == () and BRATS.painting == (("WT", 2), ("TC", 1), ("ET", 4))
    masks = np.zeros((3, 1, 2), bool)
    masks[:, 0, 0] = [True, False, True]  # WT and ET, not TC
    masks[:, 0, 1] = [True, False, False]  # WT only
    np.testing.assert_array_equal(BRATS.paint(masks), [[4, 2]])
    ped = LabelScheme.from_labels({"background": 0, "et": 1, "ne": 2, "cy": 3, "ed": 4}, PED)
    assert ped.painting == (("whole_tumor", 4), ("tumor_core", 2), ("enhancing_tumor", 1))
    assert ped.decode(logits_of(nested_masks())).tolist() == [0, 4, 2, 2, 1, 1]


def test_nnunet_regions_class_order_paints_the_listed_values_in_the_listed_order(tmp_path):
    ds = discover(write_nnunet_regions(tmp_path / "ds", [4, 3, 1]))
    scheme = LabelScheme.from_labels(ds.labels, ds.regions, paint_order=ds.info.get("region_paint_order"))
    assert (
        scheme.painting
        == scheme.paint_order
        == (("whole_tumor", 4), ("tumor_core", 3), ("enhancing_tumor", 1))
    )
    decoded = scheme.decode(logits_of(nested_masks()))
    assert decoded.tolist() == [0, 4, 3, 3, 1, 1]  # only 0 and the listed values, as nnU-Net paints
    assert set(decoded.tolist()) <= {0, 4, 3, 1}
    # the same regions without the order: attnseg's rule paints the core with its own lowest label
    own = LabelScheme.from_labels(ds.labels, ds.regions)
    assert own.paint_order == () and own.decode(logits_of(nested_masks())).tolist() == [0, 4, 2, 2, 1, 1]
    assert own.with_paint_order([["whole_tumor", 4], ["tumor_core", 3], ["enhancing_tumor", 1]]) == scheme


def test_a_listed_order_that_paints_small_regions_first_is_followed():
    """ET listed first: later, larger regions paint over it (nnU-Net does exactly this)."""
    scheme = LabelScheme(
        "regions", (0, 1, 2, 3, 4), tuple(PED), tuple(PED.values()),
        (("enhancing_tumor", 1), ("tumor_core", 3), ("whole_tumor", 4)),
    )  # fmt: skip
    assert scheme.decode(logits_of(nested_masks())).tolist() == [0, 4, 4, 4, 4, 4]


# --- the model card's form ----------------------------------------------------------------------------------
def test_to_dict_from_dict_round_trip():
    ordered = BRATS.with_paint_order([("WT", 2), ("TC", 1), ("ET", 4)])
    for scheme in (BRATS, CLASSES, ordered, LabelScheme.default(1)):
        d = scheme.to_dict()
        assert json.loads(json.dumps(d)) == d  # plain data
        assert LabelScheme.from_dict(json.loads(json.dumps(d))) == scheme
    assert CLASSES.to_dict() == {
        "kind": "labels", "values": [0, 1, 2, 4], "names": ["bg", "ncr", "ed", "et"], "regions": [],
    }  # fmt: skip
    assert "paint_order" not in BRATS.to_dict()
    assert ordered.to_dict()["paint_order"] == [["WT", 2], ["TC", 1], ["ET", 4]]


def test_from_dict_fills_what_older_files_left_out():
    assert LabelScheme.from_dict({"values": [0, 1]}) == LabelScheme("labels", (0, 1), ("label_0", "label_1"))
    regions = LabelScheme.from_dict({"kind": "regions", "names": ["WT", "TC"], "regions": [[1, 2], [2]]})
    assert regions.values == (0, 1, 2)
    stray = {
        "kind": "labels",
        "values": [0, 1],
        "names": ["a", "b"],
        "regions": [[1]],
        "paint_order": [["x", 1]],
    }
    assert LabelScheme.from_dict(stray) == LabelScheme("labels", (0, 1), ("a", "b"))


@pytest.mark.parametrize(
    "args, words",
    [
        (("softmax", (0, 1), ("a", "b")), "pass 'labels'"),
        (("labels", (0, 1), ("a",)), "1 class name(s)"),
        (("labels", (0, 1, 1), ("a", "b", "c")), "repeat a value"),
        (("regions", (0, 1), ("a", "b"), ((1,),)), "give one name per region"),
        (("regions", (0, 1), ("a",), ((0, 1),)), "region 'a' has label values [0, 1]"),
        (("regions", (0, 1), ("a",), ((1,),), (("b", 1),)), "paint_order names regions ['b']"),
    ],
)
def test_a_scheme_that_does_not_add_up_is_refused(args, words):
    with pytest.raises(ValueError) as info:
        LabelScheme(*args)
    assert words in str(info.value)


def test_from_labels_refuses_what_cannot_be_trained():
    with pytest.raises(ConfigError, match="data.target='x'"):
        LabelScheme.from_labels({"background": 0, "a": 1}, kind="x")
    with pytest.raises(ConfigError, match="declares no regions"):
        LabelScheme.from_labels({"background": 0, "a": 1}, kind="regions")
    with pytest.raises(ConfigError, match="only one label declared"):
        LabelScheme.from_labels({"background": 0})
    with pytest.raises(ConfigError, match="declares no labels"):
        LabelScheme.from_labels({})
