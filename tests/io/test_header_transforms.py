"""Every file written from a source keeps both of the source's transforms (qform and sform, with codes).

ITK-based tools (SimpleITK, ITK-SNAP, MITK) place a NIfTI by its qform when it has one; nibabel and
FSLeyes by its sform. A prediction must overlay its input in both kinds of reader, so SimpleITK is
the second reader here: origin, spacing and direction of input and output must be equal.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from attnseg.cli import main
from attnseg.io.nifti import load_image, reorient_to_ras, save_image
from attnseg.models import AttentionUNet
from attnseg.models.model_file import save_model

SHAPE = (9, 11, 7)
# scanner space: 1.2 x 0.9 x 2 mm, LPS-like axes
QFORM = np.array([[-1.2, 0, 0, 17.0], [0, -0.9, 0, 25.0], [0, 0, 2.0, -17.0], [0, 0, 0, 1]])
# aligned space: 10 degrees about z, other origin, same voxel sizes
_c, _s = np.cos(np.radians(10)), np.sin(np.radians(10))
SFORM = np.array([[_c, -_s, 0, 5.0], [_s, _c, 0, -30.0], [0, 0, 1, 12.0], [0, 0, 0, 1]]) @ np.diag(
    [-1.2, -0.9, 2.0, 1.0]
)

# (qform_code, qform, sform_code, sform) of the four kinds of source header
HEADERS = {
    "qform-only": (1, QFORM, 0, None),
    "sform-only": (0, None, 2, SFORM),
    "both-equal": (1, SFORM, 1, SFORM),
    "both-different": (1, QFORM, 2, SFORM),
}


def write_source(path, data, kind):
    path.parent.mkdir(parents=True, exist_ok=True)
    qcode, qform, scode, sform = HEADERS[kind]
    img = nib.Nifti1Image(data, None)
    hdr = img.header
    hdr.set_qform(qform if qform is not None else np.eye(4), code=qcode)
    hdr.set_sform(sform if sform is not None else np.eye(4), code=scode)
    nib.save(nib.Nifti1Image(data, hdr.get_best_affine(), hdr), str(path))
    return path


def sitk_geometry(path):
    """Origin, spacing and direction of the first three axes as SimpleITK (ITK) reads the file."""
    img = sitk.ReadImage(str(path))
    n = img.GetDimension()
    direction = np.array(img.GetDirection()).reshape(n, n)[:3, :3]
    return np.array(img.GetOrigin()[:3]), np.array(img.GetSpacing()[:3]), direction


def assert_same_place(source, written):
    for a, b in zip(sitk_geometry(source), sitk_geometry(written)):
        np.testing.assert_allclose(b, a, atol=1e-4)
    src, out = nib.load(str(source)).header, nib.load(str(written)).header
    for code in ("qform_code", "sform_code"):
        assert int(out[code]) == int(src[code]), code
    np.testing.assert_allclose(out.get_qform(), src.get_qform(), atol=1e-5)
    np.testing.assert_allclose(out.get_sform(), src.get_sform(), atol=1e-5)


def source_data(channels):
    rng = np.random.default_rng(0)
    shape = SHAPE if channels == 1 else (*SHAPE, channels)
    return rng.normal(100, 20, shape).astype(np.float32)


@pytest.mark.parametrize("kind", sorted(HEADERS))
@pytest.mark.parametrize("channels", [1, 2], ids=["3D", "4D"])
def test_label_and_probabilities_keep_both_transforms(tmp_path, kind, channels):
    source = write_source(tmp_path / "in.nii.gz", source_data(channels), kind)
    _, meta = load_image(source)
    labels = (np.arange(np.prod(SHAPE)).reshape(SHAPE) % 3).astype(np.uint8)
    assert_same_place(source, save_image(tmp_path / "labels.nii.gz", labels, meta))
    probabilities = np.full((3, *SHAPE), 1 / 3, dtype=np.float32)
    assert_same_place(source, save_image(tmp_path / "probs.nii.gz", probabilities, meta))


def test_the_field_case_transforms_are_what_simpleitk_and_nibabel_read(tmp_path):
    """The two readers really disagree on a both-different source: the test above is not vacuous."""
    source = write_source(tmp_path / "in.nii.gz", source_data(1), "both-different")
    origin, spacing, _ = sitk_geometry(source)
    np.testing.assert_allclose(origin, [-17.0, -25.0, -17.0], atol=1e-4)  # qform, in LPS
    np.testing.assert_allclose(spacing, [1.2, 0.9, 2.0], atol=1e-5)
    np.testing.assert_allclose(nib.load(str(source)).affine, SFORM, atol=1e-5)  # sform


@pytest.mark.parametrize("kind", sorted(HEADERS))
def test_reorientation_moves_both_transforms_with_the_grid(tmp_path, kind):
    """After a reorientation each form maps a voxel where the source's form mapped the same voxel."""
    source = write_source(tmp_path / "in.nii.gz", source_data(1), kind)
    image, meta = load_image(source)
    _, ras_meta, record = reorient_to_ras(image, meta)
    assert not record.is_identity
    src = nib.load(str(source)).header
    new = ras_meta.header
    # voxel of the reoriented grid -> voxel of the file grid
    voxel_map = np.linalg.solve(meta.affine, ras_meta.affine)
    for name, get in (("qform", "get_qform"), ("sform", "get_sform")):
        if int(src[f"{name}_code"]) == 0:
            continue
        np.testing.assert_allclose(getattr(new, get)(), getattr(src, get)() @ voxel_map, atol=1e-4)
    for code in ("qform_code", "sform_code"):
        assert int(new[code]) == int(src[code])


def test_a_source_with_no_transform_is_written_without_one(tmp_path):
    """Codes 0/0: each reader places the file by its own pixdim-only fallback (ITK: origin 0 and
    identity directions; nibabel: a centred, x-flipped grid). Writing one of those placements as a
    transform would move the prediction in the other reader, so the output keeps codes 0/0."""
    img = nib.Nifti1Image(source_data(1), None)
    img.header.set_qform(None, code=0)
    img.header.set_sform(None, code=0)
    img.header.set_zooms((1.2, 0.9, 2.0))
    nib.save(img, str(tmp_path / "in.nii"))
    _, meta = load_image(tmp_path / "in.nii")
    written = save_image(tmp_path / "out.nii.gz", np.zeros(SHAPE, np.uint8), meta)
    out = nib.load(str(written))
    assert (int(out.header["qform_code"]), int(out.header["sform_code"])) == (0, 0)
    np.testing.assert_allclose(out.affine, meta.affine, atol=1e-6)
    for a, b in zip(sitk_geometry(tmp_path / "in.nii"), sitk_geometry(written)):
        np.testing.assert_allclose(b, a, atol=1e-5)


def test_without_a_source_the_affine_goes_into_both_forms(tmp_path):
    written = save_image(tmp_path / "out.nii.gz", np.zeros(SHAPE, np.uint8), affine=SFORM)
    out = nib.load(str(written)).header
    assert (int(out["qform_code"]), int(out["sform_code"])) == (1, 1)
    np.testing.assert_allclose(out.get_sform(), SFORM, atol=1e-6)
    np.testing.assert_allclose(out.get_qform(), SFORM, atol=1e-5)


@pytest.mark.parametrize("kind", ["both-different", "qform-only", "sform-only"])
@pytest.mark.parametrize("channels", [1, 2], ids=["3D", "4D"])
def test_predict_writes_files_that_overlay_the_input_in_simpleitk(tmp_path, kind, channels):
    torch.manual_seed(0)
    model = AttentionUNet(3, channels, 2, (4, 8)).eval()
    extra = {
        "target": {"kind": "labels", "values": [0, 1], "names": ["background", "lesion"]},
        "preprocessing": {"patch_size": [16, 16, 16], "normalization": "zscore_nonzero"},
    }
    model_file = save_model(tmp_path / "model" / "model.pt", model, extra)
    source = write_source(tmp_path / "data" / "scan.nii.gz", source_data(channels), kind)
    out = tmp_path / "pred"
    argv = ["predict", str(model_file), str(source), str(out), "--quiet", "--save-probabilities"]
    assert main(argv) == 0
    assert_same_place(source, out / "scan.nii.gz")
    assert_same_place(source, out / "probabilities" / "scan.nii.gz")
