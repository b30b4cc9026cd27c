"""Our normalized surface Dice equals DeepMind's ``surface-distance`` (the test reference, like MONAI):
its surfel area tables, hand-made shapes with anisotropic spacing in 2D and 3D, random shapes
(every neighbourhood code), the empty-mask cases and real label maps.

``surface-distance`` 0.1 (PyPI) predates upstream's NumPy 2 fix (``np.Inf`` -> ``np.inf``, commit
5cf99b0 of google-deepmind/surface-distance), which it reaches only when a mask is empty; the
``numpy_inf`` fixture gives it that name back for those tests.
"""

import warnings

import numpy as np
import pytest
from scipy import ndimage as ndi
from tests.conftest import shared_dataset

from attnseg.metrics.surface_dice import nsd_key, surface_dice_metrics, surfel_measure_table

sd = pytest.importorskip("surface_distance")
lookup_tables = pytest.importorskip("surface_distance.lookup_tables")

TOLERANCES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0)
METHODS = ("offsets", "kdtree")
ATOL = 1e-12  # the sums run in another order; the areas and distances are the same floats


@pytest.fixture
def numpy_inf(monkeypatch):
    monkeypatch.setattr(np, "Inf", np.inf, raising=False)


def reference(pred, truth, spacing, tolerances=TOLERANCES):
    with warnings.catch_warnings():  # deprecated scipy.ndimage namespaces; 0 / 0 for two empty masks
        warnings.simplefilter("ignore")
        distances = sd.compute_surface_distances(
            np.asarray(truth, bool), np.asarray(pred, bool), [float(s) for s in spacing]
        )
        return {nsd_key(t): float(sd.compute_surface_dice_at_tolerance(distances, t)) for t in tolerances}


def assert_agrees(pred, truth, spacing, tolerances=TOLERANCES):
    expected = reference(pred, truth, spacing, tolerances)
    for method in METHODS:
        ours = surface_dice_metrics(pred, truth, spacing, tolerances, method=method)
        assert ours.keys() == expected.keys()
        np.testing.assert_allclose(list(ours.values()), list(expected.values()), rtol=0, atol=ATOL)


def deepmind_code(code: int, n_bits: int) -> int:
    """DeepMind numbers the neighbourhood voxels the other way round: bit b is our bit n_bits - 1 - b."""
    return int(format(code, f"0{n_bits}b")[::-1], 2)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.5, 1.0, 3.0), (2.3, 0.7, 1.1), (0.36, 4.1, 0.9)])
def test_area_table_equals_deepminds_for_all_256_codes(spacing):
    ours = surfel_measure_table(spacing)
    theirs = lookup_tables.create_table_neighbour_code_to_surface_area(spacing)
    np.testing.assert_allclose(ours, theirs[[deepmind_code(c, 8) for c in range(256)]], rtol=1e-14, atol=0)


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.5, 3.0), (2.3, 0.7)])
def test_length_table_equals_deepminds_for_all_16_codes(spacing):
    ours = surfel_measure_table(spacing, ndim=2)
    theirs = lookup_tables.create_table_neighbour_code_to_contour_length(spacing)
    np.testing.assert_allclose(ours, theirs[[deepmind_code(c, 4) for c in range(16)]], rtol=1e-14, atol=0)


def box(shape, lo, hi):
    m = np.zeros(shape, bool)
    m[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return m


def ball(shape, centre, radius_mm, spacing):
    grid = np.indices(shape).astype(float)
    return sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, spacing)) <= radius_mm**2


HAND_MADE_3D = {
    "cube shifted along the 0.5 mm axis": (
        box((12, 10, 8), (3, 2, 2), (8, 7, 5)),
        box((12, 10, 8), (5, 2, 2), (10, 7, 5)),
    ),
    "cube shifted along the 3 mm axis": (
        box((12, 10, 8), (3, 2, 2), (8, 7, 5)),
        box((12, 10, 8), (3, 2, 3), (8, 7, 6)),
    ),
    "cube inside a larger cube": (
        box((12, 10, 8), (4, 3, 3), (7, 6, 5)),
        box((12, 10, 8), (2, 1, 1), (10, 9, 7)),
    ),
    "plate one voxel thick vs two": (
        box((12, 10, 8), (2, 1, 4), (10, 9, 5)),
        box((12, 10, 8), (2, 1, 4), (10, 9, 6)),
    ),
    "balls of 4 and 5 mm": (
        ball((16, 12, 8), (8, 6, 4), 4.0, (0.5, 1.0, 3.0)),
        ball((16, 12, 8), (8, 6, 4), 5.0, (0.5, 1.0, 3.0)),
    ),
    "box touching the array border": (np.ones((5, 6, 4), bool), box((5, 6, 4), (1, 1, 1), (5, 6, 4))),
    "two voxels on a body diagonal vs one": (
        box((4, 4, 4), (1, 1, 1), (2, 2, 2)) | box((4, 4, 4), (2, 2, 2), (3, 3, 3)),
        box((4, 4, 4), (1, 1, 1), (2, 2, 2)),
    ),
}


@pytest.mark.parametrize("name", sorted(HAND_MADE_3D))
@pytest.mark.parametrize("spacing", [(0.5, 1.0, 3.0), (1.0, 1.0, 1.0), (1.3, 0.7, 2.1)])
def test_hand_made_3d_shapes(name, spacing):
    pred, truth = HAND_MADE_3D[name]
    assert_agrees(pred, truth, spacing)


HAND_MADE_2D = {
    "square shifted by one pixel": (box((10, 9), (2, 2), (6, 6)), box((10, 9), (3, 2), (7, 6))),
    "square vs disc": (box((12, 12), (3, 3), (9, 9)), ball((12, 12), (6, 6), 3.2, (1.0, 1.0))),
    "diagonal pixels vs a 2 x 2 block": (
        box((5, 5), (1, 1), (2, 2)) | box((5, 5), (2, 2), (3, 3)),
        box((5, 5), (1, 1), (3, 3)),
    ),
    "line across the whole array vs a shifted line": (
        box((6, 7), (2, 0), (3, 7)),
        box((6, 7), (3, 0), (4, 7)),
    ),
}


@pytest.mark.parametrize("name", sorted(HAND_MADE_2D))
@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.7, 1.9), (3.0, 0.5)])
def test_hand_made_2d_shapes(name, spacing):
    pred, truth = HAND_MADE_2D[name]
    assert_agrees(pred, truth, spacing)


@pytest.mark.parametrize("seed", range(10))
def test_random_shapes_anisotropic_spacing(seed):
    rng = np.random.default_rng(seed)
    ndim = 2 if seed % 3 == 0 else 3
    shape = tuple(int(n) for n in rng.integers(6, 24, ndim))
    spacing = tuple(float(s) for s in rng.uniform(0.3, 3.0, ndim))
    if seed % 2:  # speckle: every neighbourhood code occurs
        pred, truth = rng.random(shape) < 0.5, rng.random(shape) < 0.5
    else:  # smooth blobs
        fields = [ndi.gaussian_filter(rng.random(shape), rng.uniform(0.8, 2.5)) for _ in range(2)]
        pred, truth = (f > np.quantile(f, 1 - rng.uniform(0.05, 0.5)) for f in fields)
    assert_agrees(pred, truth, spacing)


def test_speckle_covers_every_code():
    rng = np.random.default_rng(1)
    m = rng.random((14, 14, 14)) < 0.5
    codes = sum(m[i : i + 13, j : j + 13, k : k + 13].astype(int) << (4 * i + 2 * j + k)
                for i in (0, 1) for j in (0, 1) for k in (0, 1))  # fmt: skip
    assert len(np.unique(codes)) == 256


def test_one_empty_mask_gives_zero_as_deepmind(numpy_inf):
    empty = np.zeros((7, 8, 9), bool)
    voxel = box((7, 8, 9), (3, 3, 3), (4, 5, 4))
    for pred, truth in ((voxel, empty), (empty, voxel)):
        assert_agrees(pred, truth, (3.0, 2.0, 1.0), (1.0, 100.0))
        assert reference(pred, truth, (3.0, 2.0, 1.0), (1.0,)) == {"nsd_1mm": 0.0}
    assert_agrees(np.zeros((6, 6), bool), box((6, 6), (2, 2), (3, 4)), (3.0, 2.0), (1.0,))


def test_both_empty_is_one_where_deepmind_gives_nan():
    empty = np.zeros((6, 7, 8), bool)
    assert np.isnan(reference(empty, empty, (3.0, 2.0, 1.0), (1.0,))["nsd_1mm"])
    assert surface_dice_metrics(empty, empty, (3.0, 2.0, 1.0), (1.0,)) == {"nsd_1mm": 1.0}


@pytest.mark.data
def test_brats_regions_and_hippocampus_labels_against_perturbed_copies():
    nib = pytest.importorskip("nibabel")
    rng = np.random.default_rng(0)
    root = shared_dataset("brats2018_flair_t1_wt")
    seg = np.asanyarray(nib.load(root / "Brats18_CBICA_AQN_1" / "Brats18_CBICA_AQN_1_seg.nii.gz").dataobj)
    # a box around the tumour, anisotropic spacing as if acquired at 0.9 x 1.1 x 3 mm; a ragged
    # border, a shift and stray voxels
    crop = tuple(slice(max(int(i.min()) - 10, 0), int(i.max()) + 11) for i in np.nonzero(seg))
    for values in ((1, 2, 4), (1, 4), (4,)):
        truth = np.isin(seg[crop], values)
        pred = ndi.binary_erosion(truth) | (ndi.binary_dilation(truth) & (rng.random(truth.shape) > 0.5))
        pred = np.roll(pred, 1, axis=0)
        pred[tuple(rng.integers(0, 20, size=(3, 3)).T)] = True
        assert_agrees(pred, truth, (0.9, 1.1, 3.0))
    root = shared_dataset("Task04_Hippocampus")
    for path in sorted((root / "labelsTr").glob("hippocampus_*.nii.gz"))[:3]:
        label = np.asanyarray(nib.load(path).dataobj)
        for value, spacing in ((1, (1.0, 1.0, 1.0)), (2, (1.2, 0.8, 2.0))):
            truth = label == value
            pred = (ndi.binary_dilation(truth) & (rng.random(truth.shape) > 0.3)) | (
                truth & (rng.random(truth.shape) > 0.1)
            )
            assert_agrees(pred, truth, spacing)
