"""NIfTI input and output with nibabel: arrays in file voxel order, the affine travels with them.

Conventions:

- ``load_image`` returns ``(C, *spatial)`` float32 in the file's voxel order (no transposes, no
  flips). A 4D file stores channels last on disk (MSD, ``X, Y, Z, C``); they are moved first. A
  list of paths is one file per channel (nnU-Net, BraTS) and all must share shape and affine.
- ``load_label`` returns the spatial array as integers (``uint8`` when every value fits, else
  ``int32``); stored floats must be whole numbers (BraTS 2015 stores labels as float32).
- ``ImageMeta.spacing_mm`` is the voxel size along each array axis, from the header's ``pixdim``.
- Orientation changes are explicit: ``reorient_to_ras`` / ``reorient`` return a ``Reorientation``
  record and ``undo_reorientation`` maps an array (e.g. a prediction) back onto the file's grid.
- ``save_image`` keeps the source header, affine, qform/sform codes and spacing, so a label or
  probability map written with the input's ``ImageMeta`` overlays the input in any viewer.
  Writes are atomic: a temporary file with the same ``.nii.gz`` suffix, then a rename.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations as nio

from attnseg.errors import DataError
from attnseg.io.atomic import atomic_path

PathLike = str | os.PathLike
NIFTI_SUFFIXES = (".nii.gz", ".nii")

# Affines of files that belong together (channels of a case, image and label) must agree to this
# many mm / direction-cosine units; below it the difference is float noise in the header.
AFFINE_ATOL = 1e-3


@dataclass
class ImageMeta:
    """Where an array lives in the world, and how it was stored.

    ``affine``: (4, 4) voxel index -> world (RAS+ mm, the NIfTI convention). ``spacing_mm``: voxel
    size along each spatial array axis. ``dtype``: the on-disk data type (before scaling).
    ``shape``: the spatial shape. ``header``: the nibabel header (None for 2D images).
    """

    affine: np.ndarray
    spacing_mm: tuple[float, ...]
    dtype: str
    header: object | None = None
    path: str | None = None
    shape: tuple[int, ...] = field(default_factory=tuple)

    @property
    def axcodes(self) -> tuple[str, ...]:
        """Anatomical direction each array axis points to, e.g. ``('L', 'P', 'S')``."""
        return tuple(nio.aff2axcodes(self.affine))[: len(self.shape) or 3]


def is_nifti(path: PathLike) -> bool:
    name = str(path).lower()
    return name.endswith(NIFTI_SUFFIXES)


def strip_nifti_suffix(name: str) -> str:
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


# --- reading ----------------------------------------------------------------------------------------
_GZIP_MAGIC = b"\x1f\x8b"
_NIFTI1_MAGIC = (b"n+1\x00", b"ni1\x00")  # at byte 344
_NIFTI2_MAGIC = (b"n+2\x00", b"ni2\x00")  # at byte 4


def container_problem(raw: bytes, name: str) -> str | None:
    """What is wrong with a file's first bytes as NIfTI, in words (None: nothing found).

    ``raw``: the file's bytes, or at least its first few kilobytes. Named: an empty file, a file
    that is not NIfTI at all, a gzip stream that ends inside the header, and a file compressed
    against what its name says (nibabel, like attnseg's loader, goes by the name).
    """
    if not raw:
        return "empty file (0 bytes); expected a NIfTI image"
    compressed = raw[:2] == _GZIP_MAGIC
    head = raw
    if compressed:
        try:
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(raw, 540)
        except zlib.error as exc:
            return f"truncated or corrupt data: not a valid gzip stream ({exc})"
    if head[344:348] not in _NIFTI1_MAGIC and head[4:8] not in _NIFTI2_MAGIC:
        if compressed and len(head) < 348:
            return f"truncated or corrupt data: the gzip stream ends inside the header ({len(head)} of 348 bytes)"
        what = "after gunzip" if compressed else "and not gzip-compressed"
        return f"not a NIfTI file: no NIfTI header {what} (starts {head[:12]!r})"
    named_gz = name.lower().endswith(".gz")
    if compressed and not named_gz:
        return f"gzip-compressed but named {name}; rename it to {name}.gz"
    if named_gz and not compressed:
        return f"an uncompressed NIfTI named {name}; gzip it or drop the .gz from its name"
    return None


def _image_class(head: bytes):
    """NIfTI-1 or NIfTI-2, from the magic of the (uncompressed) header."""
    return nib.Nifti2Image if head[4:8] in _NIFTI2_MAGIC else nib.Nifti1Image


def _open(path: PathLike):
    """The image with its header read (voxels not read). The file is recognised by its content, not
    its name, so ``.NII.GZ`` or ``.Nii`` read like ``.nii.gz`` and ``.nii`` (nibabel goes by name)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
        problem = container_problem(head, path.name)
        if problem:
            raise DataError(f"{path}: {problem}")
        handle.seek(0)
        compressed = head[:2] == _GZIP_MAGIC
        if compressed:
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 540)
        try:
            return _image_class(head).from_stream(gzip.GzipFile(fileobj=handle) if compressed else handle)
        except Exception as exc:  # nibabel raises many types for a foreign or damaged header
            raise DataError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from exc


def read_nifti(path: PathLike):
    """Header and voxels of one NIfTI file: ``(nibabel image, voxels as stored after scaling)``.

    The one reader of NIfTI voxels, for the loaders and ``attnseg check`` alike. The file is read
    once and a gzip stream is decompressed in full once, so gzip verifies its length and CRC: a
    truncated or corrupt file is found here, never later. The format is recognised by content, not
    by the letter case of the name. Every failure is a DataError that names the file and says what
    is wrong (``container_problem``'s words for a file that is not what its name says).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    raw = path.read_bytes()
    problem = container_problem(raw, path.name)
    if problem:
        raise DataError(f"{path}: {problem}")
    try:
        if raw[:2] == _GZIP_MAGIC:
            raw = gzip.decompress(raw)
        img = _image_class(raw).from_bytes(raw)
        return img, np.asanyarray(img.dataobj)
    except (EOFError, zlib.error, OSError, ValueError) as exc:
        raise DataError(
            f"{path}: truncated or corrupt data, cannot read the voxels ({type(exc).__name__}: {exc})"
        ) from exc
    except Exception as exc:  # nibabel raises many types for a foreign or damaged header
        raise DataError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from exc


def _spatial_ndim(shape: tuple[int, ...]) -> int:
    # 4D = 3 spatial + channels; 5D with a singleton 4th axis = NIfTI "vector" images (X, Y, Z, 1, C)
    return min(len(shape), 3)


def affine_problem(affine: np.ndarray, n_spatial: int) -> str | None:
    """Why ``affine`` cannot place the voxels of an ``n_spatial``-D image in the world, or None.

    Refused: NaN or infinite entries, and spatial columns that do not span ``n_spatial`` dimensions
    (a zero or repeated direction: a "singular" affine). Oblique and sheared (non-orthogonal)
    affines are fine: they are kept as they are and written back unchanged.
    """
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4) or not np.all(np.isfinite(a)):
        return "its affine (voxel -> world mm) has NaN or infinite entries"
    columns = a[:3, :n_spatial]
    scale = max(float(np.abs(columns).max()), 1e-12)
    if np.linalg.matrix_rank(columns / scale, tol=1e-6) < n_spatial:
        return (
            "its affine (voxel -> world mm) is singular: the voxel axes "
            f"{np.round(columns.T, 4).tolist()} do not span {n_spatial}D space, so the voxels cannot be "
            "placed in the world; repair the header's sform/qform"
        )
    return None


def _meta(img, path: PathLike, spatial_shape: tuple[int, ...]) -> ImageMeta:
    hdr = img.header
    problem = affine_problem(img.affine, len(spatial_shape))
    if problem:
        raise DataError(f"{path}: {problem}")
    zooms = tuple(float(z) for z in hdr.get_zooms()[: len(spatial_shape)])
    return ImageMeta(
        affine=np.array(img.affine, dtype=np.float64),
        spacing_mm=zooms,
        dtype=str(hdr.get_data_dtype()),
        header=hdr,
        path=str(path),
        shape=tuple(int(s) for s in spatial_shape),
    )


def _to_channels_first(data: np.ndarray, path: PathLike) -> np.ndarray:
    if data.ndim <= 3:
        return data[None]
    if data.ndim == 4:
        return np.moveaxis(data, 3, 0)
    if data.ndim == 5 and data.shape[3] == 1:
        return np.moveaxis(data[:, :, :, 0, :], 3, 0)
    raise DataError(f"{path}: image has shape {data.shape}; expected 2D, 3D or 4D (channels last)")


def read_header(path: PathLike) -> ImageMeta:
    """Shape, affine, spacing and dtype from the header only (no voxel data is decompressed).

    ``shape`` is the spatial shape; a 4D file's channel count is ``channels_in_file(meta)``.
    """
    img = _open(path)
    full = tuple(int(s) for s in img.shape)
    meta = _meta(img, path, full[: _spatial_ndim(full)])
    return meta


def channels_in_file(meta: ImageMeta) -> int:
    """Number of channels stored in the file that ``meta`` describes (1 for a 3D file)."""
    full = tuple(int(s) for s in meta.header.get_data_shape()) if meta.header is not None else meta.shape
    if len(full) <= 3:
        return 1
    return int(full[-1])


def load_image(paths: PathLike | Sequence[PathLike]) -> tuple[np.ndarray, ImageMeta]:
    """Read one file (3D, or 4D with channels last) or one file per channel into ``(C, *spatial)`` float32.

    The returned meta describes the first file; every other channel file must have the same
    spatial shape and affine (within ``AFFINE_ATOL``).
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    paths = list(paths)
    if not paths:
        raise DataError("load_image: no image files given")
    channels: list[np.ndarray] = []
    meta: ImageMeta | None = None
    for path in paths:
        img, raw = read_nifti(path)
        data, file_meta = image_voxels(img, raw, path)
        spatial = file_meta.shape
        if meta is None:
            meta = file_meta
        else:
            if spatial != meta.shape:
                raise DataError(
                    f"{path}: shape {spatial} differs from {meta.shape} of {meta.path} (same case)"
                )
            if not np.allclose(img.affine, meta.affine, atol=AFFINE_ATOL, rtol=0):
                raise DataError(
                    f"{path}: affine differs from that of {meta.path} (same case); the channels are "
                    f"not on one voxel grid:\n{np.round(img.affine, 4)}\nvs\n{np.round(meta.affine, 4)}"
                )
        channels.append(data.astype(np.float32, copy=False))
    image = channels[0] if len(channels) == 1 else np.concatenate(channels, axis=0)
    return np.ascontiguousarray(image, dtype=np.float32), meta


def as_label_array(data: np.ndarray, where: str) -> np.ndarray:
    """Whole-number array -> uint8 when all values fit, else int32. Non-integer values raise."""
    if data.dtype.kind == "b":
        return data.astype(np.uint8)
    if data.dtype.kind == "f":
        finite = np.isfinite(data)
        if not finite.all():
            bad = int(finite.size - np.count_nonzero(finite))
            raise DataError(f"{where}: label map has {bad} NaN/inf voxels")
        rounded = np.rint(data)
        if not np.array_equal(rounded, data):
            bad = np.unique(data[rounded != data])[:5]
            raise DataError(f"{where}: label map has non-integer values, e.g. {bad.tolist()}")
        data = rounded
    elif data.dtype.kind not in "iu":
        raise DataError(f"{where}: label map has data type {data.dtype}; expected integers")
    if data.size == 0:
        return data.astype(np.uint8)
    lo, hi = data.min(), data.max()
    if lo >= 0 and hi <= 255:
        return data.astype(np.uint8, copy=False)
    if lo < np.iinfo(np.int32).min or hi > np.iinfo(np.int32).max:
        raise DataError(f"{where}: label values {lo}..{hi} do not fit in int32")
    return data.astype(np.int32, copy=False)


def image_voxels(img, data: np.ndarray, path: PathLike) -> tuple[np.ndarray, ImageMeta]:
    """One image file's voxels ``(C, *spatial)`` as stored (not yet float32) and its meta.

    What ``load_image`` requires of every file, for ``attnseg check`` to require the same: 2D, 3D or
    4D (channels last) voxels of numbers and an affine that places them in the world.
    """
    data = _to_channels_first(data, path)
    if data.dtype.kind not in "biuf":
        raise DataError(f"{path}: voxels of data type {data.dtype}; expected numbers (one value per voxel)")
    return data, _meta(img, path, tuple(int(s) for s in data.shape[1:]))


def label_voxels(img, data: np.ndarray, path: PathLike) -> tuple[np.ndarray, ImageMeta]:
    """A label file's spatial voxels as stored and its meta: the shape ``load_label`` requires
    (a 4D file with one volume counts as 3D); the values are ``as_label_array``'s part."""
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim > 3:
        raise DataError(f"{path}: label map has shape {data.shape}; expected a 2D or 3D array")
    return data, _meta(img, path, tuple(int(s) for s in data.shape))


def load_label(path: PathLike) -> tuple[np.ndarray, ImageMeta]:
    """Read a label map: spatial array of integers (uint8 if values fit in 0..255, else int32)."""
    data, meta = label_voxels(*read_nifti(path), path)
    return np.ascontiguousarray(as_label_array(data, str(path))), meta


# --- writing ----------------------------------------------------------------------------------------
def _default_dtype(array: np.ndarray) -> np.dtype:
    kind, dt = array.dtype.kind, array.dtype
    if kind == "b":
        return np.dtype(np.uint8)
    if kind == "f":
        return np.dtype(np.float32) if dt.itemsize != 4 else dt
    if kind in "iu":
        if dt.itemsize <= 2:
            return dt
        if array.size == 0:
            return np.dtype(np.uint8)
        lo, hi = int(array.min()), int(array.max())
        for candidate in (np.uint8, np.int16, np.int32):
            info = np.iinfo(candidate)
            if info.min <= lo and hi <= info.max:
                return np.dtype(candidate)
        raise DataError(f"cannot store integer values {lo}..{hi} in NIfTI int32")
    raise DataError(f"cannot store an array of data type {dt} in NIfTI")


def _spacing_from_affine(affine: np.ndarray, n: int) -> tuple[float, ...]:
    return tuple(float(v) for v in np.sqrt((affine[:3, :n] ** 2).sum(axis=0)))


def _make_header(
    base, data_shape: tuple[int, ...], affine: np.ndarray, spacing_mm: Sequence[float], dtype
) -> nib.Nifti1Header:
    """A header for ``data_shape`` (file order) whose best transform is ``affine``, derived from ``base``.

    Kept from ``base``: units, description, both qform/sform codes and both transforms. A source
    whose qform and sform differ (e.g. scanner vs aligned space) keeps both, each moved with the
    grid: when ``affine`` describes another voxel grid than ``base`` (a reorientation, a resampling),
    the voxel -> voxel map ``M = inv(best(base)) @ affine`` is applied to each, ``qform @ M`` and
    ``sform @ M``. A source with neither form set (codes 0/0) is written with neither too, so every
    reader falls back to the same pixdim-only placement it used for the source (ITK: origin 0,
    identity directions; nibabel: its centred fallback); on another grid it gets ``affine`` as an
    aligned sform. Without a source, ``affine`` goes into both forms, code 1 (scanner).
    """
    hdr = base.copy() if isinstance(base, nib.Nifti1Header) else nib.Nifti1Header()
    if dtype is not None:
        hdr.set_data_dtype(dtype)
    hdr.set_data_shape(data_shape)
    spacing = tuple(float(s) for s in spacing_mm)
    hdr.set_zooms(spacing + (1.0,) * (len(data_shape) - len(spacing)))
    _carry_transforms(hdr, base if isinstance(base, nib.Nifti1Header) else None, np.asarray(affine, float))
    # The data are written as they are: no intensity scaling, no display window from the source.
    hdr.set_slope_inter(np.nan, np.nan)
    hdr["cal_min"] = 0
    hdr["cal_max"] = 0
    if not hdr["xyzt_units"]:
        hdr.set_xyzt_units("mm")
    return hdr


def _carry_transforms(hdr: nib.Nifti1Header, base: nib.Nifti1Header | None, affine: np.ndarray) -> None:
    """Write qform and sform into ``hdr`` so that both place the new grid where ``base``'s placed theirs."""
    if base is None:
        hdr.set_qform(affine, code=1)  # scanner coordinates: a viewer needs one form to place the image
        hdr.set_sform(affine, code=1)
        return
    qcode, scode = int(base["qform_code"]), int(base["sform_code"])
    voxel_map = np.linalg.solve(base.get_best_affine(), affine)
    same_grid = np.allclose(voxel_map, np.eye(4), atol=1e-6)
    if qcode == 0 and scode == 0:
        if not same_grid:  # the fallback placement cannot express a moved grid: say where it is
            hdr.set_sform(affine, code=2)
        return
    if same_grid:
        # Same grid: the copied header already holds both transforms bit for bit, and set_zooms left
        # pixdim as it was (``spacing_mm`` came from it), so the quaternion is untouched.
        return
    if qcode > 0:
        hdr.set_qform(base.get_qform() @ voxel_map, code=qcode)
    else:
        hdr.set_qform(affine, code=0)
    if scode > 0:
        hdr.set_sform(base.get_sform() @ voxel_map, code=scode)
    else:
        hdr.set_sform(affine, code=0)


def save_image(
    path: PathLike,
    array: np.ndarray,
    meta: ImageMeta | None = None,
    *,
    affine: np.ndarray | None = None,
    dtype=None,
) -> Path:
    """Write ``array`` as NIfTI (``.nii`` or ``.nii.gz``) atomically; return the path.

    ``array`` is spatial (a label map) or ``(C, *spatial)`` (e.g. probabilities), written with the
    channels last on disk. With ``meta``, its header, affine, spacing and qform/sform codes are
    kept, so the result overlays the source image; ``affine`` overrides the affine (spacing is
    then derived from it). Without ``meta``, a 4D array is ``(C, X, Y, Z)`` and a 2D/3D array
    is spatial. ``dtype`` defaults to the array's (bool -> uint8, float64 -> float32, wide
    integers -> the smallest of uint8/int16/int32 that holds the values).
    """
    path = Path(path)
    if not is_nifti(path):
        raise DataError(f"{path}: NIfTI output needs a .nii or .nii.gz name")
    array = np.asarray(array)
    if meta is not None and meta.shape:
        n_spatial = len(meta.shape)
        if array.ndim == n_spatial + 1:
            spatial = array.shape[1:]
        elif array.ndim == n_spatial:
            spatial = array.shape
        else:
            raise DataError(
                f"{path}: array of shape {array.shape} does not match the source's spatial shape "
                f"{meta.shape} (expected {meta.shape} or (C, *{meta.shape}))"
            )
        if tuple(spatial) != tuple(meta.shape):
            raise DataError(
                f"{path}: array spatial shape {tuple(spatial)} differs from the source's {meta.shape}; "
                "it would not overlay the source image"
            )
        channels_first = array.ndim == n_spatial + 1
    else:
        channels_first = array.ndim == 4
        n_spatial = array.ndim - 1 if channels_first else array.ndim
    if channels_first:
        data = np.moveaxis(array, 0, -1)
        if data.shape[-1] == 1:
            data = data[..., 0]
    else:
        data = array
    out_dtype = np.dtype(dtype) if dtype is not None else _default_dtype(data)
    if affine is not None:
        aff = np.asarray(affine, dtype=np.float64)
        spacing = _spacing_from_affine(aff, n_spatial)
    elif meta is not None:
        aff = np.asarray(meta.affine, dtype=np.float64)
        spacing = tuple(meta.spacing_mm) if meta.spacing_mm else _spacing_from_affine(aff, n_spatial)
    else:
        aff = np.eye(4)
        spacing = (1.0,) * n_spatial
    if aff.shape != (4, 4):
        raise DataError(f"{path}: affine must be 4x4, got {aff.shape}")
    data = np.ascontiguousarray(data.astype(out_dtype, copy=False))
    header = _make_header(meta.header if meta is not None else None, data.shape, aff, spacing, out_dtype)
    # The header's own best transform (== ``aff`` to float precision), so nibabel keeps both forms
    # as set instead of overwriting the qform when the quaternion round trip differs in the last bit.
    img = nib.Nifti1Image(data, header.get_best_affine(), header)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path


# --- orientation ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Reorientation:
    """What ``reorient`` did: a nibabel orientation transform from the file grid to the target grid.

    ``transform[i] = (j, flip)``: file axis ``i`` became axis ``j``, reversed when ``flip == -1``.
    ``source`` is the meta of the file grid, so ``undo_reorientation`` restores it exactly.
    """

    transform: np.ndarray
    source: ImageMeta
    target_axcodes: tuple[str, ...]

    @property
    def is_identity(self) -> bool:
        n = self.transform.shape[0]
        return bool(np.array_equal(self.transform, np.column_stack([np.arange(n), np.ones(n)])))


def _apply_ornt(array: np.ndarray, ornt: np.ndarray, n_spatial: int) -> np.ndarray:
    channels = array.ndim == n_spatial + 1
    if channels:
        array = np.moveaxis(array, 0, -1)
    out = nio.apply_orientation(array, ornt)
    if channels:
        out = np.moveaxis(out, -1, 0)
    # apply_orientation returns flipped views; torch.from_numpy refuses negative strides
    return np.ascontiguousarray(out)


def _inverse_ornt(ornt: np.ndarray) -> np.ndarray:
    inverse = np.empty_like(ornt)
    for i, (j, flip) in enumerate(ornt):
        inverse[int(j)] = (i, flip)
    return inverse


def reorient(
    array: np.ndarray, meta: ImageMeta, axcodes: str | Sequence[str] = "RAS"
) -> tuple[np.ndarray, ImageMeta, Reorientation]:
    """Permute/flip the spatial axes so they point along ``axcodes`` (closest canonical for oblique).

    ``array`` is spatial or ``(C, *spatial)``. The returned meta has the matching affine (same
    world positions: a voxel keeps its world coordinate), permuted spacing and shape.
    """
    n = len(meta.shape)
    if n != 3:
        raise DataError(f"{meta.path}: reorientation needs a 3D image, got spatial shape {meta.shape}")
    codes = tuple(axcodes)
    source = nio.io_orientation(meta.affine)
    target = nio.axcodes2ornt(codes)
    transform = nio.ornt_transform(source, target)
    out = _apply_ornt(np.asarray(array), transform, n)
    new_affine = meta.affine @ nio.inv_ornt_aff(transform, meta.shape)
    new_shape = [0] * n
    new_spacing = [0.0] * n
    for i, (j, _flip) in enumerate(transform):
        new_shape[int(j)] = meta.shape[i]
        new_spacing[int(j)] = meta.spacing_mm[i]
    new_meta = replace(
        meta,
        affine=new_affine,
        spacing_mm=tuple(new_spacing),
        shape=tuple(new_shape),
        header=_make_header(meta.header, tuple(new_shape), new_affine, new_spacing, None)
        if meta.header is not None
        else None,
    )
    return out, new_meta, Reorientation(transform=transform, source=meta, target_axcodes=codes)


def reorient_to_ras(array: np.ndarray, meta: ImageMeta) -> tuple[np.ndarray, ImageMeta, Reorientation]:
    """``reorient(array, meta, "RAS")``: axes point Right, Anterior, Superior (nibabel's canonical)."""
    return reorient(array, meta, "RAS")


def undo_reorientation(array: np.ndarray, reorientation: Reorientation) -> tuple[np.ndarray, ImageMeta]:
    """Map an array on the reoriented grid (spatial or ``(C, *spatial)``) back to the file grid.

    Returns the array in file voxel order and the source meta, ready for ``save_image``.
    """
    n = reorientation.transform.shape[0]
    back = _apply_ornt(np.asarray(array), _inverse_ornt(reorientation.transform), n)
    return back, reorientation.source
