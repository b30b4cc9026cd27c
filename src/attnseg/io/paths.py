"""Small path rules shared by every command: image names without their suffix, and containment.

- ``strip_image_suffix("Case_01.NII.GZ") == "Case_01"``: the NIfTI or 2D-image suffix, in any
  letter case, is dropped; other names are kept whole.
- ``is_inside(child, parent)``: ``child`` is ``parent`` or lies below it, after resolving links
  (used to refuse writing into an input folder, whatever way the two paths were spelt).
"""

from __future__ import annotations

import os
from pathlib import Path

from attnseg.io.images2d import is_image2d
from attnseg.io.nifti import is_nifti, strip_nifti_suffix


def strip_image_suffix(name: str) -> str:
    if is_nifti(name):
        return strip_nifti_suffix(name)
    if is_image2d(name):
        return name.rsplit(".", 1)[0]
    return name


def is_inside(child: str | os.PathLike, parent: str | os.PathLike) -> bool:
    child, parent = Path(child).resolve(), Path(parent).resolve()
    return child == parent or parent in child.parents
