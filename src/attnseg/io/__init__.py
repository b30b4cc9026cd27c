"""File input and output: NIfTI, 2D images, atomic writes."""

from attnseg.io.atomic import atomic_path, atomic_write, atomic_write_text

__all__ = ["atomic_path", "atomic_write", "atomic_write_text"]
