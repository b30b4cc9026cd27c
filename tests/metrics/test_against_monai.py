"""Our HD, HD95 and ASSD equal MONAI's under the "max" convention: random shapes and real label maps.

MONAI computes in float32; we compare with a relative tolerance of 1e-5.
"""

import warnings

import numpy as np
import pytest
from scipy import ndimage as ndi
from tests.conftest import shared_dataset

from attnseg.metrics.surface import average_surface_distance, hausdorff_distance

monai_metrics = pytest.importorskip("monai.metrics")
torch = pytest.importorskip("torch")


def monai_values(pred, truth, spacing):
    p = torch.from_numpy(np.ascontiguousarray(pred))[None, None]
    t = torch.from_numpy(np.ascontiguousarray(truth))[None, None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd = monai_metrics.compute_hausdorff_distance(p, t, include_background=True, spacing=spacing)
        hd95 = monai_metrics.compute_hausdorff_distance(
            p, t, include_background=True, percentile=95, spacing=spacing
        )
        assd = monai_metrics.compute_average_surface_distance(
            p, t, include_background=True, symmetric=True, spacing=spacing
        )
    return float(hd[0, 0]), float(hd95[0, 0]), float(assd[0, 0])


def ours(pred, truth, spacing, method="auto"):
    return (
        hausdorff_distance(pred, truth, spacing, method=method),
        hausdorff_distance(pred, truth, spacing, percentile=95, method=method),
        average_surface_distance(pred, truth, spacing, method=method),
    )


def random_blob(rng, shape, sigma, fraction):
    field = ndi.gaussian_filter(rng.random(shape), sigma)
    return field > np.quantile(field, 1 - fraction)


@pytest.mark.parametrize("seed", range(12))
def test_random_shapes_anisotropic_spacing(seed):
    rng = np.random.default_rng(seed)
    ndim = 2 if seed % 3 == 0 else 3
    shape = tuple(int(n) for n in rng.integers(6, 28, ndim))
    sigma = rng.uniform(0.6, 2.5)
    pred = random_blob(rng, shape, sigma, rng.uniform(0.05, 0.6))
    truth = random_blob(rng, shape, sigma, rng.uniform(0.05, 0.6))
    spacing = tuple(float(s) for s in rng.uniform(0.3, 3.0, ndim))
    expected = monai_values(pred, truth, spacing)
    for method in ("edt", "kdtree"):
        np.testing.assert_allclose(ours(pred, truth, spacing, method), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.data
def test_brats_regions_against_eroded_and_perturbed_copy():
    nib = pytest.importorskip("nibabel")
    root = shared_dataset("brats2018_flair_t1_wt")
    seg = np.asanyarray(nib.load(root / "Brats18_CBICA_AQN_1" / "Brats18_CBICA_AQN_1_seg.nii.gz").dataobj)
    rng = np.random.default_rng(0)
    spacing = (1.0, 1.0, 1.0)
    # WT on the whole 240 x 240 x 155 grid with stray false positives far from the tumour
    truth = seg > 0
    pred = ndi.binary_erosion(truth) | (ndi.binary_dilation(truth) & (rng.random(truth.shape) > 0.5))
    stray = rng.integers(0, 155, size=(5, 3))
    pred[tuple(stray.T)] = True
    np.testing.assert_allclose(ours(pred, truth, spacing), monai_values(pred, truth, spacing), rtol=1e-5)
    # TC and ET (small, fragmented) in a box around the tumour, anisotropic spacing as if the
    # volume had been acquired at 0.9 x 1.1 x 3 mm
    box = tuple(slice(max(int(i.min()) - 10, 0), int(i.max()) + 11) for i in np.nonzero(truth))
    spacing = (0.9, 1.1, 3.0)
    for values in ((1, 4), (4,)):
        truth = np.isin(seg[box], values)
        pred = ndi.binary_erosion(truth) | (ndi.binary_dilation(truth) & (rng.random(truth.shape) > 0.5))
        np.testing.assert_allclose(ours(pred, truth, spacing), monai_values(pred, truth, spacing), rtol=1e-5)


@pytest.mark.data
def test_hippocampus_label_pairs():
    nib = pytest.importorskip("nibabel")
    root = shared_dataset("Task04_Hippocampus")
    files = sorted((root / "labelsTr").glob("hippocampus_*.nii.gz"))[:4]
    rng = np.random.default_rng(1)
    for path in files:
        label = np.asanyarray(nib.load(path).dataobj)
        for value in (1, 2):
            truth = label == value
            # a plausible prediction: a ragged border, some voxels inside missed
            grown = ndi.binary_dilation(truth) & (rng.random(truth.shape) > 0.3)
            pred = grown | (truth & (rng.random(truth.shape) > 0.1))
            spacing = (1.0, 1.0, 1.0) if value == 1 else (1.2, 0.8, 2.0)
            np.testing.assert_allclose(
                ours(pred, truth, spacing), monai_values(pred, truth, spacing), rtol=1e-5, err_msg=path.name
            )
