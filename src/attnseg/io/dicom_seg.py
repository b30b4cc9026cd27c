"""DICOM SEG out and in, with highdicom, on the grid of the series it belongs to.

Conventions (docs/dicom.md):

- Masks are ``(S, X, Y, Z)``: one per segment, on a ``SeriesVolume``'s grid (axis 0 along a row,
  axis 1 down a column, axis 2 along the slice normal, ``attnseg.io.dicom_series``). Segment
  ``s`` of the file is ``masks[s - 1]``; segments may overlap.
- Writing: BINARY (bool masks) or FRACTIONAL (probabilities in [0, 1], stored as 0..255), one
  frame per source slice (empty frames omitted), every frame referencing its source instance (or
  frame, for an enhanced source), the series and its Frame of Reference. Of the patient and study
  attributes highdicom copies from the source, only those a SEG needs are kept (PatientName, ID,
  BirthDate, Sex and the General Study attributes); PatientAge, PatientSize, PatientWeight,
  StudyDescription and the like are removed.
- Segments are named by the model's class or region names and coded: a name pydicom's SNOMED CT
  dictionary knows (``Liver``, ``Kidney``, ``Edema``, ...) becomes the segmented property type with
  category "Anatomical Structure"; any other name is type and category "Tissue" (the label keeps
  the name). Algorithm: AUTOMATIC, family "Artificial Intelligence", name ``attnseg``.
- Reading (``read_seg``): each frame is matched to the slice of the series it references
  (SourceImageSequence); highdicom's ``ignore_spatial_locations=True`` is needed because files
  written by dcmqi leave SpatialLocationsPreserved unset. Frames a SEG omits are empty.
- highdicom looks for the pixel spacing (and orientation) of an enhanced source only in its shared
  functional groups; for a source that has them per frame, our in-memory copy of the source gets
  them in its shared groups before highdicom sees it (``_lift_to_shared``), so no library patch is
  needed and the file on disk is untouched.
"""

from __future__ import annotations

import os
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from attnseg.errors import DataError
from attnseg.io.atomic import atomic_path
from attnseg.io.dicom_series import (
    SEG_SOP_CLASS,
    SeriesVolume,
    quiet_dicom_warnings,
    read_header,
    source_datasets,
)

PathLike = str | os.PathLike

__all__ = ["SegmentMasks", "read_seg", "seg_series_uids", "segment_code", "write_seg"]


@dataclass
class SegmentMasks:
    """Segments of a SEG on a series grid: ``numbers`` (the file's segment numbers), ``names``
    (SegmentLabel), ``masks`` ``(S, X, Y, Z)`` bool (or float in [0, 1] when ``fractional``)."""

    numbers: list[int]
    names: list[str]
    masks: np.ndarray
    fractional: bool = False

    def voxel_counts(self) -> dict[str, int]:
        """Foreground voxels per segment name (overlaps counted in every segment they are in)."""
        return {
            n: int(np.count_nonzero(m >= 0.5 if self.fractional else m))
            for n, m in zip(self.names, self.masks)
        }

    def overlaps(self) -> bool:
        binary = self.masks >= 0.5 if self.fractional else self.masks.astype(bool)
        return bool(np.any(binary.sum(axis=0) > 1))

    def label_map(self) -> np.ndarray:
        """One label per voxel, the segment number; DataError when segments overlap (a label map
        would lose the voxels two segments share)."""
        binary = self.masks >= 0.5 if self.fractional else self.masks.astype(bool)
        if np.any(binary.sum(axis=0) > 1):
            shared = int(np.count_nonzero(binary.sum(axis=0) > 1))
            raise DataError(
                f"segments {self.names} overlap on {shared} voxels; a label map keeps one label per voxel "
                "(use them as separate targets, e.g. attnseg evaluate reads them as such)"
            )
        out = np.zeros(binary.shape[1:], dtype=np.uint8 if max(self.numbers, default=0) <= 255 else np.int32)
        for number, mask in zip(self.numbers, binary):
            out[mask] = number
        return out


def segment_code(name: str) -> tuple[pydicom.sr.coding.Code, pydicom.sr.coding.Code]:
    """(segmented property category, type) of a segment named ``name`` (see the module docstring)."""
    keyword = "".join(part.capitalize() for part in str(name).replace("_", " ").replace("-", " ").split())
    try:
        return codes.SCT.AnatomicalStructure, getattr(codes.SCT, keyword)
    except AttributeError:
        return codes.SCT.Tissue, codes.SCT.Tissue


def _descriptions(names: list[str], version: str) -> list[hd.seg.SegmentDescription]:
    algorithm = hd.AlgorithmIdentificationSequence(
        name="attnseg", family=codes.cid7162.ArtificialIntelligence, version=version
    )
    out = []
    for number, name in enumerate(names, start=1):
        category, kind = segment_code(name)
        out.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=str(name)[:64],
                segmented_property_category=category,
                segmented_property_type=kind,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
            )
        )
    return out


def _lift_to_shared(ds) -> None:
    """Put the pixel measures and plane orientation of an enhanced source into its shared functional
    groups when the file has them per frame (legal DICOM; highdicom's SEG constructor reads them only
    from the shared groups). ``ds`` is our in-memory copy, never written back; the reader has checked
    that every frame has the same values, so the first frame's stand for all."""
    shared = ds.SharedFunctionalGroupsSequence[0]
    first = ds.PerFrameFunctionalGroupsSequence[0]
    for sequence in ("PixelMeasuresSequence", "PlaneOrientationSequence"):
        if sequence not in shared and sequence in first:
            shared[sequence] = deepcopy(first[sequence])


# What a SEG must carry of the patient and the study (PS3.3 Patient and General Study modules, the
# type 1 and 2 attributes); highdicom copies more (age, size, weight, study description), dropped.
PATIENT_KEEP = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex")
STUDY_DROP = (
    "StudyDescription",
    "PhysiciansOfRecord",
    "NameOfPhysiciansReadingStudy",
    "AdmittingDiagnosesDescription",
)


def _keep_needed_patient_study(seg) -> None:
    """Remove the patient attributes a SEG does not need (group 0010 beyond ``PATIENT_KEEP``) and
    the optional study attributes ``STUDY_DROP``."""
    for element in list(seg):
        if element.tag.group == 0x0010 and element.keyword not in PATIENT_KEEP:
            del seg[element.tag]
    for keyword in STUDY_DROP:
        if keyword in seg:
            delattr(seg, keyword)


def write_seg(
    path: PathLike,
    masks: np.ndarray,
    volume: SeriesVolume,
    names: list[str],
    *,
    fractional: bool = False,
    series_description: str = "attnseg segmentation",
    software_version: str = "0",
) -> Path:
    """Write ``masks`` ``(S, X, Y, Z)`` on ``volume``'s grid as a DICOM SEG at ``path`` (atomic).

    ``names``: one per segment. BINARY from bool/0-1 masks; ``fractional=True``: probabilities in
    [0, 1] (FRACTIONAL, PROBABILITY, 0..255). Returns the path.
    """
    path = Path(path)
    masks = np.asarray(masks)
    if masks.ndim != 4 or tuple(masks.shape[1:]) != tuple(volume.meta.shape):
        raise DataError(
            f"{path}: masks of shape {masks.shape}; expected (segments, *{volume.meta.shape}) on the series grid"
        )
    if len(names) != masks.shape[0]:
        raise DataError(f"{path}: {len(names)} segment names for {masks.shape[0]} masks")
    if fractional:
        pixels = np.clip(masks.astype(np.float32), 0.0, 1.0)
    else:
        pixels = masks.astype(bool)
    # (S, X, Y, Z) -> frames in axis-2 order, (Z, rows=Y, columns=X, S)
    pixels = np.ascontiguousarray(pixels.transpose(3, 2, 1, 0))
    with quiet_dicom_warnings():
        sources = source_datasets(volume)
        for ds in sources:  # in-memory copies: an empty SpecificCharacterSet (default repertoire)
            if "SpecificCharacterSet" in ds and not ds.SpecificCharacterSet:  # is one highdicom refuses
                del ds.SpecificCharacterSet
        if volume.enhanced:
            frame_pixels = np.empty_like(pixels)
            frame_pixels[np.asarray(volume.slice_frames)] = pixels
            pixels = frame_pixels
            _lift_to_shared(sources[0])
        try:
            seg = hd.seg.Segmentation(
                source_images=sources,
                pixel_array=pixels,
                segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL
                if fractional
                else hd.seg.SegmentationTypeValues.BINARY,
                segment_descriptions=_descriptions(list(names), software_version),
                series_instance_uid=hd.UID(),
                series_number=int(sources[0].get("SeriesNumber", 0) or 0) + 1000,
                sop_instance_uid=hd.UID(),
                instance_number=1,
                manufacturer="attnseg",
                manufacturer_model_name="attnseg",
                software_versions=software_version,
                device_serial_number="0",
                series_description=series_description,
                omit_empty_frames=True,
            )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:  # what highdicom raises on a source
            raise DataError(
                f"{path}: highdicom cannot build a SEG on the series of {volume.slice_files[0]} "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        _keep_needed_patient_study(seg)
        with atomic_path(path) as tmp:
            seg.save_as(str(tmp))
    return path


def seg_series_uids(path: PathLike) -> set[str]:
    """The SeriesInstanceUIDs a SEG file references (ReferencedSeriesSequence)."""
    ds = read_header(path)
    if str(ds.get("SOPClassUID", "")) != SEG_SOP_CLASS:
        raise DataError(f"{path}: not a DICOM SEG (SOP class {ds.get('SOPClassUID', 'missing')})")
    return {
        str(item.SeriesInstanceUID)
        for item in ds.get("ReferencedSeriesSequence", [])
        if "SeriesInstanceUID" in item
    }


def read_seg(path: PathLike, volume: SeriesVolume, series_uid: str | None = None) -> SegmentMasks:
    """The segments of the SEG at ``path`` on ``volume``'s grid (see the module docstring).

    ``series_uid``: when given, the SEG must reference that series (DataError otherwise).
    """
    path = Path(path)
    if series_uid is not None and series_uid not in seg_series_uids(path):
        raise DataError(f"{path}: this SEG does not reference the series it was matched to")
    with quiet_dicom_warnings():
        try:
            seg = hd.seg.segread(str(path))
        except Exception as exc:  # highdicom raises many types for a damaged or foreign file
            raise DataError(f"{path}: not a readable DICOM SEG ({type(exc).__name__}: {exc})") from exc
        numbers = [int(n) for n in seg.segment_numbers]
        names = [str(seg.get_segment_description(n).segment_label) for n in numbers]
        fractional = seg.segmentation_type == hd.seg.SegmentationTypeValues.FRACTIONAL
        options = dict(
            segment_numbers=numbers,
            ignore_spatial_locations=True,
            assert_missing_frames_are_empty=True,
            skip_overlap_checks=True,
            dtype=np.float32 if fractional else np.uint8,
        )
        try:
            if volume.enhanced:
                uid = str(read_header(volume.slice_files[0]).SOPInstanceUID)
                frames = seg.get_pixels_by_source_frame(
                    uid, source_frame_numbers=[f + 1 for f in volume.slice_frames], **options
                )
            else:
                uids = [str(read_header(p).SOPInstanceUID) for p in volume.slice_files]
                frames = seg.get_pixels_by_source_instance(uids, **options)
        except (ValueError, KeyError, AttributeError) as exc:
            raise DataError(f"{path}: its frames cannot be placed on the series ({exc})") from exc
    masks = np.ascontiguousarray(frames.transpose(3, 2, 1, 0))
    if not fractional:
        masks = masks.astype(bool)
    return SegmentMasks(numbers, names, masks, fractional)
