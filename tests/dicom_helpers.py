"""Synthetic DICOM series for tests, written with pydicom (classic) and highdicom (enhanced).

Every series carries made-up patient attributes (``PATIENT_NAME``, ``PATIENT_ID``) so that tests can
assert they never reach a log line.
"""

from __future__ import annotations

from copy import deepcopy
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

PATIENT_NAME = "Zyxwv^Synthetic"
PATIENT_ID = "SYN-4711"
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def oblique_iop(degrees: float = 20.0) -> tuple[float, ...]:
    """Axial rows/columns rotated about the x axis and then about z: an oblique plane."""
    a, b = np.deg2rad(degrees), np.deg2rad(degrees / 2)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    r = rz @ rx
    return (*r[:, 0].tolist(), *r[:, 1].tolist())


def phantom(shape=(12, 10, 6), seed=0) -> np.ndarray:
    """(X=columns, Y=rows, Z=slices) uint16 values with structure in every direction."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    return (100 * x + 10 * y + z + rng.integers(0, 5, shape)).astype(np.uint16)


def _dataset(path: Path, study_uid: str, series_uid: str, frame_uid: str) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = "19010101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_uid
    ds.StudyID = "1"
    ds.StudyDate = "20240101"
    ds.StudyTime = "120000"
    ds.SeriesDate = "20240101"
    ds.SeriesTime = "120000"
    ds.ContentDate = "20240101"
    ds.ContentTime = "120000"
    ds.AcquisitionDateTime = "20240101120000"
    ds.AccessionNumber = "A1"
    ds.ReferringPhysicianName = ""
    ds.Manufacturer = "test"
    ds.Modality = "MR"
    ds.SeriesNumber = 5
    ds.SeriesDescription = "synthetic t1"
    ds.PositionReferenceIndicator = ""
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.ScanningSequence = "GR"
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.EchoTime = 2.0
    ds.RepetitionTime = 300.0
    ds.EchoTrainLength = 1
    ds.MagneticFieldStrength = 3
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.BurnedInAnnotation = "NO"
    return ds


def write_series(
    folder: Path,
    volume: np.ndarray | None = None,
    *,
    iop=AXIAL,
    origin=(-20.0, -30.0, 40.0),
    spacing=(0.8, 0.9, 2.5),
    positions=None,
    slope: float | None = None,
    intercept: float | None = None,
    series_uid: str | None = None,
    shuffle: bool = True,
    edit=None,
) -> list[Path]:
    """Write ``volume`` (X=columns, Y=rows, Z=slices) as single-frame MR files in ``folder``.

    Slice ``k`` lies at ``origin + k * spacing[2] * normal`` unless ``positions`` (LPS mm) are
    given; ``spacing`` is (column spacing, row spacing, slice step). File names and InstanceNumbers
    are shuffled (not the slice order). ``edit(k, ds)`` may change slice ``k``'s dataset.
    """
    volume = phantom() if volume is None else np.asarray(volume)
    folder.mkdir(parents=True, exist_ok=True)
    iop = np.asarray(iop, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    nz = volume.shape[2]
    if positions is None:
        positions = [np.asarray(origin) + k * spacing[2] * normal for k in range(nz)]
    study_uid, frame_uid = generate_uid(), generate_uid()
    series_uid = series_uid or generate_uid()
    order = np.random.default_rng(1).permutation(nz) if shuffle else np.arange(nz)
    paths = []
    for k in range(volume.shape[2]):
        path = folder / f"im{int(order[k]):03d}.dcm"
        ds = _dataset(path, study_uid, series_uid, frame_uid)
        ds.InstanceNumber = int(order[k]) + 1
        ds.ImageOrientationPatient = [round(float(v), 8) for v in iop]
        ds.ImagePositionPatient = [round(float(v), 6) for v in positions[k]]
        ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]
        ds.SliceThickness = float(spacing[2])
        plane = np.ascontiguousarray(volume[:, :, k].T)
        ds.Rows, ds.Columns = plane.shape
        if slope is not None:
            ds.RescaleSlope = slope
            ds.RescaleIntercept = intercept or 0.0
            ds.RescaleType = "US"
        ds.PixelData = plane.astype(np.uint16).tobytes()
        if edit is not None:
            edit(k, ds)
        ds.save_as(str(path), enforce_file_format=True)
        paths.append(path)
    return paths


def write_enhanced(
    folder: Path,
    classic_folder: Path,
    name: str = "enhanced.dcm",
    *,
    per_frame_measures: bool = False,
    edit=None,
) -> Path:
    """The classic series in ``classic_folder`` as one enhanced MR file (highdicom.legacy).

    ``per_frame_measures``: move PixelMeasuresSequence and PlaneOrientationSequence from the shared
    functional groups into every frame's (legal, and what highdicom's SEG constructor cannot read). ``edit(ds)`` may change it.
    """
    datasets = [pydicom.dcmread(str(p)) for p in sorted(classic_folder.glob("*.dcm"))]
    enhanced = hd.legacy.LegacyConvertedEnhancedMRImage(
        datasets,
        series_instance_uid=generate_uid(),
        series_number=7,
        sop_instance_uid=generate_uid(),
        instance_number=1,
    )
    if per_frame_measures:
        shared = enhanced.SharedFunctionalGroupsSequence[0]
        for sequence in ("PixelMeasuresSequence", "PlaneOrientationSequence"):
            if sequence in shared:
                value = shared[sequence]
                del shared[sequence]
                for item in enhanced.PerFrameFunctionalGroupsSequence:
                    item[sequence] = deepcopy(value)
    if edit is not None:
        edit(enhanced)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    enhanced.save_as(str(path))
    return path


def sitk_affine_ras(image: sitk.Image) -> np.ndarray:
    """SimpleITK's voxel -> world map (LPS), as RAS."""
    affine = np.eye(4)
    affine[:3, :3] = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return LPS_TO_RAS @ affine


def sitk_series(folder):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0), sitk_affine_ras(image)


def same_world_voxels(a, affine_a, b, affine_b, atol=1e-3) -> bool:
    """Whether two arrays hold the same values at the same world positions: the voxel -> voxel map
    between them is a signed permutation with integer offsets, and the values agree through it."""
    m = np.linalg.solve(affine_b, affine_a)  # voxel of a -> voxel of b
    lin = np.rint(m[:3, :3])
    if not np.allclose(m[:3, :3], lin, atol=atol) or not np.allclose(m[:3, 3], np.rint(m[:3, 3]), atol=atol):
        return False
    idx = np.indices(a.shape).reshape(3, -1)
    mapped = (lin @ idx + np.rint(m[:3, 3])[:, None]).astype(int)
    inside = np.all((mapped >= 0) & (mapped < np.array(b.shape)[:, None]), axis=0)
    return bool(inside.all() and np.array_equal(a.reshape(-1), b[tuple(mapped)]))
