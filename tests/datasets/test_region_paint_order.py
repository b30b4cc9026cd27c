"""nnU-Net v2's ``regions_class_order``: regions painted in dataset.json's order with the listed values."""

from __future__ import annotations

import numpy as np
import pytest

from attnseg.datasets import LabelScheme, discover
from attnseg.datasets.regions import class_order_paint, regions_to_labels
from attnseg.errors import DataError
from conftest import write_nnunet_regions

# BraTS-PED style: 1 ET, 2 non-enhancing, 3 cystic, 4 edema
REGIONS = {"whole_tumor": [1, 2, 3, 4], "tumor_core": [1, 2, 3], "enhancing_tumor": [1]}


def nested_masks():
    """One row of 6 voxels: background, edema, core (twice), ET, and ET claimed outside the core."""
    wt = np.array([0, 1, 1, 1, 1, 1], bool)
    tc = np.array([0, 0, 1, 1, 1, 0], bool)
    et = np.array([0, 0, 0, 0, 1, 1], bool)
    return np.stack([wt, tc, et])


def test_the_listed_order_paints_the_listed_values():
    order = class_order_paint(REGIONS, ["background", *REGIONS], [4, 3, 1], "dataset.json")
    assert order == [("whole_tumor", 4), ("tumor_core", 3), ("enhancing_tumor", 1)]
    painted = regions_to_labels(nested_masks(), REGIONS, order=order)
    assert painted.tolist() == [0, 4, 3, 3, 1, 1]
    # attnseg's own rule paints each region with its own lowest label: the core becomes 2
    assert regions_to_labels(nested_masks(), REGIONS).tolist() == [0, 4, 2, 2, 1, 1]


def test_the_order_follows_the_file_not_the_region_table():
    """dataset.json lists ET first: nnU-Net paints ET first, so the core paints over it."""
    order = class_order_paint(
        REGIONS, ["background", "enhancing_tumor", "tumor_core", "whole_tumor"], [1, 3, 4], "d"
    )
    assert order == [("enhancing_tumor", 1), ("tumor_core", 3), ("whole_tumor", 4)]
    assert regions_to_labels(nested_masks(), REGIONS, order=order).tolist() == [0, 4, 4, 4, 4, 4]


@pytest.mark.parametrize(
    "class_order, words",
    [([4, 3], "has 2 value(s) for 3 region(s)"), ([4, 4, 1], "paints region 'tumor_core' with 4")],
)
def test_a_class_order_that_does_not_fit_is_refused(class_order, words):
    with pytest.raises(DataError, match="dataset.json: regions_class_order") as info:
        class_order_paint(REGIONS, ["background", *REGIONS], class_order, "dataset.json")
    assert words in str(info.value)


def test_discovery_records_the_order_and_training_carries_it_into_the_target(tmp_path):
    ds = discover(write_nnunet_regions(tmp_path / "ds", [4, 3, 1]))
    assert ds.info["region_paint_order"] == [["whole_tumor", 4], ["tumor_core", 3], ["enhancing_tumor", 1]]
    target = LabelScheme.from_labels(ds.labels, ds.regions, paint_order=ds.info.get("region_paint_order"))
    assert target.paint_order == (("whole_tumor", 4), ("tumor_core", 3), ("enhancing_tumor", 1))
    card = target.to_dict()
    assert card["paint_order"] == [["whole_tumor", 4], ["tumor_core", 3], ["enhancing_tumor", 1]]
    assert LabelScheme.from_dict(card) == target


def test_without_a_class_order_nothing_is_recorded(tmp_path):
    ds = discover(write_nnunet_regions(tmp_path / "ds"))
    assert "region_paint_order" not in ds.info
    target = LabelScheme.from_labels(ds.labels, ds.regions)
    assert target.paint_order == () and "paint_order" not in target.to_dict()


def test_a_bad_class_order_is_named_at_discovery(tmp_path):
    with pytest.raises(DataError, match=r"dataset.json: regions_class_order \[4, 3\] has 2 value"):
        discover(write_nnunet_regions(tmp_path / "ds", [4, 3]))
