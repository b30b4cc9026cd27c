from __future__ import annotations

import numpy as np
import pytest

from attnseg.datasets.regions import (
    brats_labels,
    brats_regions,
    brats_scheme,
    indices_to_labels,
    labels_to_indices,
    labels_to_regions,
    paint_order,
    regions_to_labels,
)
from attnseg.errors import ConfigError, DataError


@pytest.mark.parametrize(
    "year, scheme",
    [
        (2012, "2015"),
        (2015, "2015"),
        ("2016", "2015"),
        (2017, "2017"),
        (18, "2017"),
        (2021, "2017"),
        (2023, "2023"),
        (2024, "2023"),
        (None, "2017"),
        ("brats2015", "2015"),
        ("msd", "msd"),
    ],
)
def test_scheme_by_year(year, scheme):
    assert brats_scheme(year) == scheme


def test_region_tables():
    assert brats_regions(2018) == {"WT": [1, 2, 4], "TC": [1, 4], "ET": [4]}
    assert brats_regions(2023) == {"WT": [1, 2, 3], "TC": [1, 3], "ET": [3]}
    assert brats_regions(2015) == {"WT": [1, 2, 3, 4], "TC": [1, 3, 4], "ET": [4]}
    assert brats_regions(2018, ["wt"]) == {"WT": [1, 2, 4]}
    assert brats_labels(2023)["ET"] == 3 and brats_labels(2019)["ET"] == 4
    with pytest.raises(ConfigError, match="unknown BraTS region"):
        brats_regions(2018, ["XX"])
    with pytest.raises(ConfigError, match="unknown BraTS scheme"):
        brats_scheme("foo")


def test_labels_to_regions_hand_values_per_year():
    label = np.array([0, 1, 2, 3, 4])
    # 2017-2021: label 3 does not exist, ET is 4
    np.testing.assert_array_equal(
        labels_to_regions(label, brats_regions(2018)),
        [[0, 1, 1, 0, 1], [0, 1, 0, 0, 1], [0, 0, 0, 0, 1]],
    )
    # 2023: ET is 3
    np.testing.assert_array_equal(
        labels_to_regions(label, brats_regions(2023)),
        [[0, 1, 1, 1, 0], [0, 1, 0, 1, 0], [0, 0, 0, 1, 0]],
    )
    # 2015: 0-4 scheme, 3 (non-enhancing) is core
    out = labels_to_regions(label, brats_regions(2015))
    np.testing.assert_array_equal(out, [[0, 1, 1, 1, 1], [0, 1, 0, 1, 1], [0, 0, 0, 0, 1]])
    assert out.dtype == np.uint8 and out.shape == (3, 5)


@pytest.mark.parametrize("year, values", [(2018, [0, 1, 2, 4]), (2023, [0, 1, 2, 3])])
def test_round_trip_is_exact_for_2017_and_2023(year, values):
    rng = np.random.default_rng(0)
    label = rng.choice(values, size=(6, 7, 8))
    regions = brats_regions(year)
    np.testing.assert_array_equal(regions_to_labels(labels_to_regions(label, regions), regions), label)


def test_way_back_2015_merges_non_enhancing_into_necrosis():
    regions = brats_regions(2015)
    label = np.array([0, 1, 2, 3, 4])
    assert regions_to_labels(labels_to_regions(label, regions), regions).tolist() == [0, 1, 2, 1, 4]
    assert regions_to_labels(labels_to_regions(label, regions), regions, fill={"TC": 3}).tolist() == [
        0,
        3,
        2,
        3,
        4,
    ]
    assert paint_order(regions) == [("WT", 2), ("TC", 1), ("ET", 4)]


def test_way_back_from_probabilities_and_inconsistent_masks():
    regions = brats_regions(2018)
    probs = np.array(
        [
            [0.9, 0.9, 0.9, 0.2, 0.1],  # WT
            [0.8, 0.1, 0.6, 0.1, 0.1],  # TC
            [0.7, 0.1, 0.2, 0.1, 0.9],  # ET: last voxel is ET outside WT and TC
        ],
        dtype=np.float32,
    )
    # smallest claiming region wins: ET > TC > WT
    assert regions_to_labels(probs, regions).tolist() == [4, 2, 1, 0, 4]
    assert regions_to_labels(probs, regions, threshold=0.85).tolist() == [2, 2, 2, 0, 4]
    with pytest.raises(DataError, match="2 channels; 3 regions"):
        regions_to_labels(probs[:2], regions)
    with pytest.raises(ConfigError, match="background"):
        labels_to_regions(np.zeros(3), {"bad": [0, 1]})


def test_label_indices_both_ways():
    values = [0, 1, 2, 4]
    label = np.array([[0, 4], [2, 1]])
    idx = labels_to_indices(label, values)
    np.testing.assert_array_equal(idx, [[0, 3], [2, 1]])
    np.testing.assert_array_equal(indices_to_labels(idx, values), label)
    with pytest.raises(DataError, match=r"label values \[3\]"):
        labels_to_indices(np.array([0, 3]), values)
