"""2D images (PNG, JPEG, TIFF, BMP) and masks for 2D datasets.

Conventions:

- ``load_image2d`` returns ``(C, H, W)`` float32 in the file's pixel order (row = H): grey images
  have one channel, RGB three; an alpha channel is dropped; palette images are expanded to RGB.
  Values are the stored values (0..255 for 8-bit, 0..65535 for 16-bit); normalisation is a later step.
- ``load_mask2d`` returns ``(H, W)`` uint8 class indices. How stored values encode classes (0/1,
  0/255, 0/65535, class indices, JPEG noise, resized edges) is decided once per dataset from the
  value histogram of all its masks (``attnseg.io.mask_encoding``, rules in its docstring) and passed
  as ``encoding=``; a file read alone gets the same rules applied to its own histogram. A colour mask
  whose three channels are equal is read as grey (a JPEG's channels are averaged); true colour
  masks are refused. Palette PNGs give the palette index.
- The meta of a 2D image is an ``ImageMeta`` with a (4, 4) identity affine, spacing (1, 1) in pixel
  units (photos carry no physical spacing) and no header.
- Writes are atomic and use PNG (lossless) for masks.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from attnseg.errors import DataError
from attnseg.io.atomic import atomic_write
from attnseg.io.mask_encoding import (
    Histogram,
    MaskEncoding,
    MaskSetEncoding,
    classify,
    decide_set,
    decode,
    value_histogram,
)
from attnseg.io.nifti import ImageMeta

PathLike = str | os.PathLike
IMAGE2D_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
LOSSY_SUFFIXES = (".jpg", ".jpeg")


def is_image2d(path: PathLike) -> bool:
    return str(path).lower().endswith(IMAGE2D_SUFFIXES)


def _is_tiff(path: Path) -> bool:
    return path.suffix.lower() in (".tif", ".tiff")


def _read_tiff(path: Path) -> np.ndarray:
    """A single-page TIFF as (H, W) or (H, W, S), whatever the planar configuration on disk."""
    with tifffile.TiffFile(str(path)) as tif:
        series = tif.series[0]
        axes = series.axes
        data = series.asarray()
    if "S" in axes and axes.index("S") != len(axes) - 1:  # planar-separate samples: (S, H, W)
        data = np.moveaxis(data, axes.index("S"), -1)
        axes = axes.replace("S", "") + "S"
    spatial = [a for a in axes if a != "S"]
    if len(spatial) != 2:
        raise DataError(
            f"{path}: TIFF has axes {axes!r} and shape {data.shape}; expected one 2D page (grey or RGB)"
        )
    return data


def _read_pillow(path: Path, *, keep_palette: bool) -> np.ndarray:

    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode == "P" and not keep_palette:
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            elif mode in ("LA", "PA"):
                img = img.convert("L") if mode == "LA" else img.convert("RGB")
            elif mode == "CMYK" or mode == "YCbCr":
                img = img.convert("RGB")
            elif mode == "1":
                img = img.convert("L")
            data = np.asarray(img)
    except UnidentifiedImageError as exc:
        raise DataError(f"{path}: not a readable image file ({exc})") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: truncated or corrupt image ({type(exc).__name__}: {exc})") from exc
    return data


def _read_raw(path: PathLike, *, keep_palette: bool = False) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if _is_tiff(path):
        try:
            return _read_tiff(path)
        except DataError:
            raise
        except Exception as exc:  # tifffile raises various types for damaged files
            raise DataError(f"{path}: truncated or corrupt TIFF ({type(exc).__name__}: {exc})") from exc
    return _read_pillow(path, keep_palette=keep_palette)


def _meta2d(path: PathLike, shape: tuple[int, int], dtype: np.dtype) -> ImageMeta:
    return ImageMeta(
        affine=np.eye(4),
        spacing_mm=(1.0, 1.0),
        dtype=str(dtype),
        header=None,
        path=str(path),
        shape=(int(shape[0]), int(shape[1])),
    )


def load_image2d(path: PathLike) -> tuple[np.ndarray, ImageMeta]:
    """Read a 2D image as ``(C, H, W)`` float32 (grey: C=1, RGB: C=3; alpha dropped)."""
    data = _read_raw(path)
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3:
        raise DataError(f"{path}: image has shape {data.shape}; expected (H, W) or (H, W, channels)")
    if data.shape[-1] in (2, 4):  # grey + alpha, RGB + alpha
        data = data[..., :-1]
    meta = _meta2d(path, data.shape[:2], data.dtype)
    return np.ascontiguousarray(np.moveaxis(data, -1, 0), dtype=np.float32), meta


def _grey_mask(data: np.ndarray, *, lossy: bool, where: str) -> np.ndarray:
    """(H, W) or (H, W, channels) stored values -> (H, W): equal channels are grey; a JPEG's are averaged."""
    if data.ndim == 3:
        if data.shape[-1] in (2, 4):
            data = data[..., :-1]
        if data.shape[-1] == 1 or np.all(data == data[..., :1]):
            data = data[..., 0]
        elif lossy:  # JPEG chroma noise: the rounded mean of the channels
            data = np.rint(data.mean(axis=-1)).astype(np.int64)
        else:
            raise DataError(
                f"{where}: colour mask with differing channels; expected a grey mask of class indices "
                "or 0/255 values"
            )
    return data


def mask_to_indices(
    data: np.ndarray,
    *,
    lossy: bool,
    where: str = "mask",
    encoding: MaskEncoding | None = None,
    palette: bool = False,
) -> np.ndarray:
    """Stored mask values -> class indices, by ``encoding`` or else by the rules on this array's histogram."""
    data = _grey_mask(np.asarray(data), lossy=lossy, where=where)
    if encoding is None:
        try:
            encoding = classify(value_histogram(data, lossy=lossy, palette=palette))
        except DataError as exc:
            raise DataError(f"{where}: {exc}") from exc
    return decode(data, encoding, where=where)


def _is_palette(path: Path) -> bool:
    if _is_tiff(path):
        return False

    try:
        with Image.open(path) as img:
            return img.mode == "P"
    except OSError:
        return False


def _read_mask(path: PathLike) -> tuple[np.ndarray, bool, bool, np.dtype]:
    """(grey stored values, lossy, palette, on-disk dtype) of a 2D mask file."""
    path = Path(path)
    raw = _read_raw(path, keep_palette=True)
    lossy = path.suffix.lower() in LOSSY_SUFFIXES
    data = _grey_mask(raw, lossy=lossy, where=str(path))
    if data.ndim != 2:
        raise DataError(f"{path}: mask has shape {data.shape}; expected (H, W)")
    return data, lossy, _is_palette(path), raw.dtype


def read_mask_histogram(path: PathLike) -> Histogram:
    """The value histogram of a 2D mask file (for ``decide_set``)."""
    data, lossy, palette, _ = _read_mask(path)
    try:
        return value_histogram(data, lossy=lossy, palette=palette)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from exc


def mask_set_encoding(paths: Iterable[PathLike], declared: Iterable[int] | None = None) -> MaskSetEncoding:
    """The encoding of a set of 2D mask files (a dataset's, a folder of predictions), keyed by ``str(path)``.

    Unreadable files are left out (``attnseg check`` reports them; loading one raises).
    """
    histograms: dict[str, Histogram] = {}
    for path in paths:
        try:
            histograms[str(path)] = read_mask_histogram(path)
        except DataError:
            continue
    return decide_set(histograms, declared)


def load_mask2d(path: PathLike, encoding: MaskEncoding | None = None) -> tuple[np.ndarray, ImageMeta]:
    """Read a 2D mask as ``(H, W)`` uint8 class indices.

    ``encoding``: the dataset's decision for this file (``MaskSetEncoding.encoding_for``); without
    it the rules are applied to this file's own histogram (see ``attnseg.io.mask_encoding``).
    """
    path = Path(path)
    data, lossy, palette, dtype = _read_mask(path)
    mask = mask_to_indices(data, lossy=lossy, where=str(path), encoding=encoding, palette=palette)
    return np.ascontiguousarray(mask), _meta2d(path, mask.shape, dtype)


def read_size2d(path: PathLike) -> tuple[tuple[int, int], int]:
    """``((H, W), channels)`` from the file header, without decoding the pixels when possible."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if _is_tiff(path):
        try:
            with tifffile.TiffFile(str(path)) as tif:
                series = tif.series[0]
                shape, axes = series.shape, series.axes
        except Exception as exc:
            raise DataError(f"{path}: not a readable TIFF ({type(exc).__name__}: {exc})") from exc
        channels = shape[axes.index("S")] if "S" in axes else 1
        hw = tuple(s for s, a in zip(shape, axes) if a != "S")
        return (int(hw[0]), int(hw[1])), int(channels)

    try:
        with Image.open(path) as img:
            width, height = img.size
            bands = len(img.getbands())
            mode = img.mode
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: not a readable image file ({exc})") from exc
    channels = {"P": 3, "LA": 1, "PA": 3, "RGBA": 3, "1": 1, "CMYK": 3, "YCbCr": 3}.get(mode, bands)
    return (int(height), int(width)), int(channels)


def _save_png(path: PathLike, data: np.ndarray) -> Path:

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise DataError(f"{path}: 2D output is written as PNG (lossless); use a .png name")
    img = Image.fromarray(np.ascontiguousarray(data))
    with atomic_write(path, "wb") as handle:
        img.save(handle, format="PNG")
    return path


def save_mask2d(path: PathLike, mask: np.ndarray, *, binary_as_255: bool = True) -> Path:
    """Write an (H, W) class-index mask as an 8-bit PNG, atomically.

    A binary mask (values in {0, 1}) is written as 0/255 by default, so it is visible in any image
    viewer; ``load_mask2d`` reads it back as 0/1.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise DataError(f"{path}: mask must be (H, W), got {mask.shape}")
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise DataError(f"{path}: mask values {mask.min()}..{mask.max()} do not fit in 8 bits")
    data = mask.astype(np.uint8)
    if binary_as_255 and data.size and data.max() <= 1:
        data = data * np.uint8(255)
    return _save_png(path, data)


def save_image2d(path: PathLike, image: np.ndarray) -> Path:
    """Write a ``(C, H, W)`` (C = 1 or 3) or ``(H, W)`` uint8/uint16 image as PNG, atomically."""
    image = np.asarray(image)
    if image.ndim == 3:
        if image.shape[0] not in (1, 3):
            raise DataError(f"{path}: image must have 1 or 3 channels, got shape {image.shape}")
        image = image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1)
    if image.dtype not in (np.uint8, np.uint16) or (image.ndim == 3 and image.dtype != np.uint8):
        raise DataError(f"{path}: PNG output needs uint8 (or uint16 grey) data, got {image.dtype}")
    return _save_png(path, image)
