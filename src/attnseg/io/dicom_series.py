"""DICOM image series in: find the series of a folder, check their geometry, read them as volumes.

Conventions (docs/dicom.md):

- A folder (searched recursively) may hold several series; files are grouped by
  SeriesInstanceUID, one series is one case. Non-image objects (SEG, RTSTRUCT, SR, ...) are not
  images: ``find_series`` lists SEG files apart (``DicomFolder.segs``) and skips the rest.
- The voxel order is DICOM's own, as ITK/GDCM read it: axis 0 runs along a row (the column
  index, direction ``ImageOrientationPatient[:3]``), axis 1 down a column (the row index,
  ``ImageOrientationPatient[3:]``), axis 2 across the slices, sorted along the slice normal
  ``row x column`` (never by InstanceNumber). No axis is flipped or permuted.
- DICOM positions are LPS mm; ``ImageMeta.affine`` is RAS mm like every NIfTI affine in attnseg
  (x and y negated), so the same array written as NIfTI lands where the DICOM viewer shows it.
- The slice spacing is measured from ImagePositionPatient, never SliceThickness (a gap or an
  overlap between slices is common). Oblique orientations are kept as they are.
- Refused, each with a one-line reason naming a file: gantry tilt (slice positions not along the
  normal, or GantryDetectorTilt set), uneven slice spacing beyond ``SPACING_RTOL``, mixed
  orientations, sizes or pixel spacings in one series, several echoes or time points in one
  series (differing EchoNumbers / temporal positions, or two slices at one position).
- Stored values go through the modality transform (RescaleSlope/Intercept) with pydicom.
- Enhanced (multi-frame) files read their geometry from the functional groups: per-frame first,
  then shared, as the standard says.

Identifiers: the case id (``series_case_id``) is built from Modality, SeriesNumber and
SeriesDescription, never from a patient attribute; nothing here logs a header value.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset as DicomDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut

from attnseg.errors import DataError
from attnseg.io.nifti import ImageMeta
from attnseg.progress import quiet_loggers

PathLike = str | os.PathLike

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
# Relative tolerance on the slice-to-slice steps: a step differing from the median by more than
# 1 % of it is a missing or extra slice (or a variable-spacing acquisition), refused.
SPACING_RTOL = 1e-2
# Direction cosines of two slices that agree to this are one orientation.
ORIENTATION_ATOL = 1e-4
# A slice origin off the line along the normal by more than this (mm, plus 1e-4 of the stack
# length) means the stack is sheared: gantry tilt.
TILT_ATOL_MM = 1e-2
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


# --- pure geometry ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class StackGeometry:
    """Where a stack of slices lies: ``order`` sorts the given slices along the normal (axis 2),
    ``affine_lps`` maps voxel (column, row, slice) to LPS mm, ``spacing_mm`` per axis."""

    order: np.ndarray
    affine_lps: np.ndarray
    spacing_mm: tuple[float, float, float]

    @property
    def affine_ras(self) -> np.ndarray:
        return LPS_TO_RAS @ self.affine_lps


def stack_geometry(
    positions_lps: np.ndarray,
    orientation: np.ndarray,
    pixel_spacing: tuple[float, float],
    *,
    slice_thickness_mm: float | None = None,
    spacing_rtol: float = SPACING_RTOL,
) -> StackGeometry:
    """Geometry of slices of one orientation from their ImagePositionPatient (``(n, 3)``, LPS mm).

    ``orientation``: ImageOrientationPatient (6 values: row direction, column direction).
    ``pixel_spacing``: PixelSpacing (between rows, between columns), mm. Slices are sorted by
    their position along the normal ``row x column``; the slice spacing is the median step.
    One slice gets ``slice_thickness_mm`` (else 1) as its spacing. ValueError says why a stack is
    not a regular volume: two slices at one position, a shear (gantry tilt), uneven steps.

    Example: three axial slices at z = 2, 0, 1 with IOP (1,0,0,0,1,0) give ``order`` [1, 2, 0]
    and an affine whose third column is (0, 0, 1).
    """
    positions = np.asarray(positions_lps, dtype=np.float64).reshape(-1, 3)
    iop = np.asarray(orientation, dtype=np.float64).reshape(6)
    row, col = iop[:3], iop[3:]
    if not (np.isclose(np.linalg.norm(row), 1, atol=1e-3) and np.isclose(np.linalg.norm(col), 1, atol=1e-3)):
        raise ValueError(f"ImageOrientationPatient {iop.tolist()} is not two unit vectors")
    if abs(float(row @ col)) > 1e-3:
        raise ValueError(
            f"ImageOrientationPatient {iop.tolist()}: the row and column directions are not perpendicular"
        )
    normal = np.cross(row, col)
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    positions, along = positions[order], along[order]
    dy, dx = (float(v) for v in pixel_spacing)
    if len(positions) == 1:
        dz = float(slice_thickness_mm) if slice_thickness_mm else 1.0
    else:
        steps = np.diff(along)
        if np.any(steps < 1e-3):
            k = int(np.argmin(steps))
            raise ValueError(
                f"{int(np.sum(steps < 1e-3))} of {len(positions)} slices repeat the position of another "
                f"(e.g. {np.round(positions[k], 3).tolist()}): several echoes, time points or acquisitions "
                "in one series; split them into one series each"
            )
        dz = float(np.median(steps))
        offsets = positions - positions[0] - np.outer(along - along[0], normal)
        sheer = float(np.abs(offsets).max())
        if sheer > TILT_ATOL_MM + 1e-4 * (along[-1] - along[0]):
            raise ValueError(
                f"the slices are not stacked along their normal (off by up to {sheer:.3g} mm): gantry tilt "
                "or a sheared stack; resample it to an orthogonal grid first"
            )
        uneven = np.abs(steps - dz) > spacing_rtol * dz
        if np.any(uneven):
            k = int(np.argmax(np.abs(steps - dz)))
            raise ValueError(
                f"uneven slice spacing: step {steps[k]:.4g} mm between slices {k} and {k + 1} (sorted along "
                f"the normal), median {dz:.4g} mm, tolerance {100 * spacing_rtol:g} %: a missing slice or "
                "variable spacing"
            )
    affine = np.eye(4)
    affine[:3, 0] = row * dx
    affine[:3, 1] = col * dy
    affine[:3, 2] = normal * dz
    affine[:3, 3] = positions[0]
    return StackGeometry(order=order, affine_lps=affine, spacing_mm=(dx, dy, dz))


# --- reading headers --------------------------------------------------------------------------------
def is_dicom_file(path: PathLike) -> bool:
    """A file with the DICOM preamble (``DICM`` at byte 128); hidden files are not."""
    path = Path(path)
    if path.name.startswith(".") or not path.is_file():
        return False
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def dicom_files(folder: PathLike) -> list[Path]:
    """Every DICOM file under ``folder`` (recursively), sorted by path."""
    folder = Path(folder)
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if is_dicom_file(path):
                found.append(path)
    return found


def has_dicom(folder: PathLike, limit: int = 200) -> bool:
    """Whether ``folder`` holds a DICOM file among its first ``limit`` files (recursively)."""
    seen = 0
    for dirpath, dirnames, filenames in os.walk(Path(folder)):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if is_dicom_file(Path(dirpath) / name):
                return True
            seen += 1
            if seen >= limit:
                return False
    return False


def read_header(path: PathLike) -> DicomDataset:
    """The header of a DICOM file (no pixel data); DataError naming the file when it is not one."""
    try:
        with quiet_dicom_warnings():
            return pydicom.dcmread(str(path), stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: not a readable DICOM file ({type(exc).__name__}: {exc})") from exc


def _read_full(path: PathLike) -> DicomDataset:
    try:
        with quiet_dicom_warnings():
            return pydicom.dcmread(str(path))
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: not a readable DICOM file ({type(exc).__name__}: {exc})") from exc


def _pixels(ds: DicomDataset, path: PathLike) -> np.ndarray:
    try:
        with quiet_dicom_warnings():
            return ds.pixel_array
    except Exception as exc:  # pydicom raises many types for a missing decoder or damaged data
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", syntax)
        raise DataError(
            f"{path}: cannot decode the pixel data (transfer syntax {name}): {type(exc).__name__}: {exc}"
        ) from exc


def _is_image(ds: DicomDataset) -> bool:
    return "Rows" in ds and "Columns" in ds and str(ds.get("SOPClassUID", "")) != SEG_SOP_CLASS


def _frames(ds: DicomDataset) -> int:
    return int(ds.get("NumberOfFrames", 1) or 1)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:40]


def series_case_id(ds: DicomDataset) -> str:
    """A readable case id from Modality, SeriesNumber and SeriesDescription (no patient data),
    e.g. ``MR_s003_t1_fl2d_sag``."""
    parts = [_slug(str(ds.get("Modality", "") or "")) or "DICOM"]
    number = ds.get("SeriesNumber")
    if number not in (None, ""):
        parts.append(f"s{int(number):03d}")
    description = _slug(str(ds.get("SeriesDescription", "") or ""))
    if description:
        parts.append(description)
    return "_".join(parts)


def _uid_tag(uid: str) -> str:
    return hashlib.sha1(uid.encode()).hexdigest()[:8]


@dataclass
class DicomSeries:
    """One image series: its files (unsorted as found), its UID and a readable case id."""

    uid: str
    case_id: str
    files: list[Path]
    frame_of_reference: str = ""

    @property
    def folder(self) -> Path:
        return self.files[0].parent


@dataclass
class DicomFolder:
    """What ``find_series`` found: image series, SEG files, and files it could not read."""

    series: list[DicomSeries] = field(default_factory=list)
    segs: list[Path] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


def find_series(folder: PathLike) -> DicomFolder:
    """The image series and SEG objects under ``folder`` (recursively), series sorted by case id.

    Case ids that two series would share get ``_<8 hex of the SeriesInstanceUID's sha1>`` added.
    """
    folder = Path(folder)
    result = DicomFolder()
    by_uid: dict[str, DicomSeries] = {}
    first: dict[str, DicomDataset] = {}
    for path in dicom_files(folder):
        try:
            ds = read_header(path)
        except DataError as exc:
            result.unreadable.append(str(exc))
            continue
        if str(ds.get("SOPClassUID", "")) == SEG_SOP_CLASS:
            result.segs.append(path)
            continue
        if not _is_image(ds):
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        if not uid:
            result.unreadable.append(f"{path}: no SeriesInstanceUID; cannot tell which series it belongs to")
            continue
        if uid not in by_uid:
            by_uid[uid] = DicomSeries(
                uid, series_case_id(ds), [], str(ds.get("FrameOfReferenceUID", "") or "")
            )
            first[uid] = ds
        by_uid[uid].files.append(path)
    counts: dict[str, int] = {}
    for s in by_uid.values():
        counts[s.case_id] = counts.get(s.case_id, 0) + 1
    for s in by_uid.values():
        if counts[s.case_id] > 1:
            s.case_id = f"{s.case_id}_{_uid_tag(s.uid)}"
    result.series = sorted(by_uid.values(), key=lambda s: s.case_id)
    return result


# --- one series as a volume -------------------------------------------------------------------------
@dataclass
class SeriesVolume:
    """A series read as a volume: ``image`` (1, X, Y, Z) float32 in the voxel order of the module
    docstring, ``meta`` (RAS affine), and the slice sources in axis-2 order: ``slice_files[k]``
    and, for an enhanced file, ``slice_frames[k]`` (0-based frame index; None for classic)."""

    image: np.ndarray
    meta: ImageMeta
    geometry: StackGeometry
    slice_files: list[Path]
    slice_frames: list[int] | None
    enhanced: bool


def _floats(value, n: int, what: str, path) -> np.ndarray:
    if value is None:
        raise DataError(f"{path}: no {what}; cannot place the slice in the world")
    array = np.asarray([float(v) for v in value], dtype=np.float64)
    if array.size != n:
        raise DataError(f"{path}: {what} has {array.size} values; expected {n}")
    return array


def _distinct(values) -> list:
    return sorted({v for v in values if v is not None}, key=str)


def _classic_geometry(headers: list[DicomDataset], files: list[Path], spacing_rtol: float) -> StackGeometry:
    ref, ref_path = headers[0], files[0]
    size = (int(ref.Rows), int(ref.Columns))
    iop = _floats(ref.get("ImageOrientationPatient"), 6, "ImageOrientationPatient", ref_path)
    spacing = _floats(ref.get("PixelSpacing"), 2, "PixelSpacing", ref_path)
    for ds, path in zip(headers, files):
        if (int(ds.Rows), int(ds.Columns)) != size:
            raise DataError(
                f"{path}: {int(ds.Rows)}x{int(ds.Columns)} pixels, {ref_path.name} has {size[0]}x{size[1]}: "
                "mixed image sizes in one series"
            )
        other = _floats(ds.get("ImageOrientationPatient"), 6, "ImageOrientationPatient", path)
        if not np.allclose(other, iop, atol=ORIENTATION_ATOL):
            raise DataError(
                f"{path}: ImageOrientationPatient {np.round(other, 4).tolist()}, {ref_path.name} has "
                f"{np.round(iop, 4).tolist()}: mixed orientations in one series (e.g. a localizer); split them"
            )
        if not np.allclose(
            _floats(ds.get("PixelSpacing"), 2, "PixelSpacing", path), spacing, rtol=1e-4, atol=1e-6
        ):
            raise DataError(
                f"{path}: PixelSpacing differs from that of {ref_path.name}: mixed pixel sizes in one series"
            )
        tilt = ds.get("GantryDetectorTilt")
        if tilt not in (None, "") and abs(float(tilt)) > 1e-3:
            raise DataError(
                f"{path}: GantryDetectorTilt {float(tilt):g} degrees: a tilted acquisition is not a regular "
                "volume; resample it to an orthogonal grid first"
            )
    echoes = _distinct(
        str(ds.get("EchoNumbers")) if ds.get("EchoNumbers") is not None else None for ds in headers
    )
    if len(echoes) > 1:
        raise DataError(
            f"{ref_path.parent}: series holds {len(echoes)} echoes (EchoNumbers {', '.join(echoes)}); "
            "split them into one series each"
        )
    times = _distinct(ds.get("TemporalPositionIdentifier") for ds in headers)
    if len(times) > 1:
        raise DataError(
            f"{ref_path.parent}: series holds {len(times)} time points (TemporalPositionIdentifier); "
            "split them into one series each"
        )
    positions = np.stack(
        [
            _floats(ds.get("ImagePositionPatient"), 3, "ImagePositionPatient", p)
            for ds, p in zip(headers, files)
        ]
    )
    thickness = ref.get("SliceThickness")
    try:
        return stack_geometry(
            positions,
            iop,
            (float(spacing[0]), float(spacing[1])),
            slice_thickness_mm=float(thickness) if thickness not in (None, "") else None,
            spacing_rtol=spacing_rtol,
        )
    except ValueError as exc:
        raise DataError(
            f"{ref_path.parent} (series of {len(files)} files, e.g. {ref_path.name}): {exc}"
        ) from exc


def _group(ds: DicomDataset, frame: int, sequence: str):
    """A functional group item of ``frame``: per-frame first, then shared (PS3.3 C.7.6.16)."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and frame < len(per_frame) and sequence in per_frame[frame]:
        return per_frame[frame][sequence][0]
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared and sequence in shared[0]:
        return shared[0][sequence][0]
    return None


def frame_geometry(ds: DicomDataset, path: PathLike) -> dict[str, np.ndarray]:
    """Per-frame positions (n, 3), orientations (n, 6), pixel spacings (n, 2) of an enhanced file,
    and the rescale slope/intercept (n,) of each frame (1/0 where none is given)."""
    n = _frames(ds)
    positions, orientations, spacings, slopes, intercepts = [], [], [], [], []
    for f in range(n):
        where = f"{path} frame {f + 1}"
        position = _group(ds, f, "PlanePositionSequence")
        orientation = _group(ds, f, "PlaneOrientationSequence")
        measures = _group(ds, f, "PixelMeasuresSequence")
        positions.append(
            _floats(getattr(position, "ImagePositionPatient", None), 3, "ImagePositionPatient", where)
        )
        orientations.append(
            _floats(
                getattr(orientation, "ImageOrientationPatient", None), 6, "ImageOrientationPatient", where
            )
        )
        spacings.append(_floats(getattr(measures, "PixelSpacing", None), 2, "PixelSpacing", where))
        transform = _group(ds, f, "PixelValueTransformationSequence")
        slopes.append(
            float(getattr(transform, "RescaleSlope", 1) or 1)
            if transform is not None
            else float(ds.get("RescaleSlope", 1) or 1)
        )
        intercepts.append(
            float(getattr(transform, "RescaleIntercept", 0) or 0)
            if transform is not None
            else float(ds.get("RescaleIntercept", 0) or 0)
        )
    return {
        "positions": np.stack(positions),
        "orientations": np.stack(orientations),
        "spacings": np.stack(spacings),
        "slopes": np.asarray(slopes),
        "intercepts": np.asarray(intercepts),
    }


def _enhanced_checks(ds: DicomDataset, path: Path, frames: dict[str, np.ndarray]) -> None:
    iop = frames["orientations"][0]
    bad = np.flatnonzero(~np.all(np.isclose(frames["orientations"], iop, atol=ORIENTATION_ATOL), axis=1))
    if bad.size:
        raise DataError(
            f"{path}: frame {int(bad[0]) + 1} has ImageOrientationPatient "
            f"{np.round(frames['orientations'][bad[0]], 4).tolist()}, frame 1 has {np.round(iop, 4).tolist()}: "
            "mixed orientations in one series"
        )
    if not np.allclose(frames["spacings"], frames["spacings"][0], rtol=1e-4, atol=1e-6):
        raise DataError(f"{path}: the frames have different PixelSpacing: mixed pixel sizes in one series")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    temporal, echoes, stacks = set(), set(), set()
    for item in per_frame:
        content = item.get("FrameContentSequence")
        if content:
            c = content[0]
            if c.get("TemporalPositionIndex") is not None:
                temporal.add(int(c.TemporalPositionIndex))
            if c.get("StackID") is not None:
                stacks.add(str(c.StackID))
        echo = item.get("MREchoSequence")
        if echo and echo[0].get("EffectiveEchoTime") is not None:
            echoes.add(float(echo[0].EffectiveEchoTime))
    if len(temporal) > 1:
        raise DataError(
            f"{path}: {len(temporal)} time points (TemporalPositionIndex) in one file; split them first"
        )
    if len(echoes) > 1:
        raise DataError(f"{path}: {len(echoes)} echoes (EffectiveEchoTime) in one file; split them first")
    if len(stacks) > 1:
        raise DataError(f"{path}: {len(stacks)} stacks (StackID) in one file; split them first")


def read_series(series: DicomSeries, *, spacing_rtol: float = SPACING_RTOL) -> SeriesVolume:
    """Read a series as one volume (see the module docstring for the voxel order and refusals)."""
    headers = [read_header(p) for p in series.files]
    multi = [
        p
        for ds, p in zip(headers, series.files)
        if _frames(ds) > 1 or "PerFrameFunctionalGroupsSequence" in ds
    ]
    if multi:
        if len(series.files) > 1:
            raise DataError(
                f"{multi[0]}: a multi-frame file and {len(series.files) - 1} other file(s) in one series; "
                "expected one enhanced file or single-frame files"
            )
        return _read_enhanced(series.files[0], spacing_rtol)
    geometry = _classic_geometry(headers, series.files, spacing_rtol)
    slice_files = [series.files[i] for i in geometry.order]
    planes = []
    dtype = ""
    for path in slice_files:
        ds = _read_full(path)
        stored = _pixels(ds, path)
        if stored.ndim != 2:
            raise DataError(f"{path}: pixel data of shape {stored.shape}; expected one grey-level slice")
        dtype = dtype or str(stored.dtype)
        planes.append(np.asarray(apply_modality_lut(stored, ds), dtype=np.float32))
    return _volume(planes, geometry, slice_files, None, dtype, series.folder, enhanced=False)


def _read_enhanced(path: Path, spacing_rtol: float) -> SeriesVolume:
    ds = _read_full(path)
    frames = frame_geometry(ds, path)
    _enhanced_checks(ds, path, frames)
    try:
        geometry = stack_geometry(
            frames["positions"],
            frames["orientations"][0],
            tuple(frames["spacings"][0]),
            spacing_rtol=spacing_rtol,
        )
    except ValueError as exc:
        raise DataError(f"{path} ({_frames(ds)} frames): {exc}") from exc
    stored = _pixels(ds, path)
    if stored.ndim == 2:
        stored = stored[None]
    if stored.ndim != 3:
        raise DataError(f"{path}: pixel data of shape {stored.shape}; expected grey-level frames")
    order = [int(i) for i in geometry.order]
    planes = [
        (stored[f].astype(np.float32) * frames["slopes"][f] + frames["intercepts"][f]).astype(np.float32)
        for f in order
    ]
    return _volume(planes, geometry, [path] * len(order), order, str(stored.dtype), path, enhanced=True)


def _volume(
    planes, geometry: StackGeometry, slice_files, slice_frames, dtype: str, where: Path, *, enhanced: bool
):
    # a plane is (rows, columns); the volume is (column, row, slice): axis 0 along a row
    volume = np.ascontiguousarray(np.stack(planes, axis=-1).transpose(1, 0, 2), dtype=np.float32)
    meta = ImageMeta(
        affine=geometry.affine_ras,
        spacing_mm=geometry.spacing_mm,
        dtype=dtype,
        header=None,
        path=str(where),
        shape=tuple(int(s) for s in volume.shape),
    )
    return SeriesVolume(volume[None], meta, geometry, list(slice_files), slice_frames, enhanced)


def source_datasets(volume: SeriesVolume) -> list[DicomDataset]:
    """The source instances in axis-2 order (one per slice; one dataset for an enhanced file)."""
    if volume.enhanced:
        return [_read_full(volume.slice_files[0])]
    return [_read_full(p) for p in volume.slice_files]


@contextlib.contextmanager
def quiet_dicom_warnings() -> Iterator[None]:
    """Silence pydicom/highdicom warnings and log records below ERROR inside: some quote header
    values (highdicom's warning about a PatientName of one component quotes the name; pydicom's
    validation warnings quote the invalid value), and attnseg logs no patient data."""
    with warnings.catch_warnings(), quiet_loggers("pydicom", "highdicom"):
        warnings.simplefilter("ignore")
        yield
