"""Atomic writes: write to a temporary file in the destination folder, fsync, then rename.

A reader never sees a half-written file under its final name, and a crash leaves at most a
``.tmp`` file that the next write replaces. A write that fails for lack of space or permission
(``ENOSPC``, ``EACCES``, ``EROFS``, ...) removes its temporary file and raises ``OutputError``
naming the final path and the reason, so the CLI prints one line instead of a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from attnseg.errors import AttnsegError, OutputError

_HINTS = {
    errno.ENOSPC: "free some space or write somewhere else",
    errno.EDQUOT: "the disk quota is used up; free some space or write somewhere else",
    errno.EACCES: "no permission to write there; pick another output folder",
    errno.EPERM: "no permission to write there; pick another output folder",
    errno.EROFS: "the file system is read-only; pick another output folder",
    errno.EFBIG: "the file size limit (ulimit -f) or the file system's maximum is reached",
}


def output_error(path: str | os.PathLike, exc: OSError) -> OutputError:
    """An ``OutputError`` naming ``path`` (the final name, not the temporary one) and the reason."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    hint = _HINTS.get(exc.errno)
    error = OutputError(f"{path}: cannot write: {reason}" + (f" ({hint})" if hint else ""))
    error.errno = exc.errno
    return error


def _umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask is not thread-safe)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _publish(tmp: str, path: Path) -> None:
    """Give the temporary file ordinary permissions (mkstemp makes it 0600), then rename it."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


def check_writable(folder: str | os.PathLike) -> None:
    """Raise ``OutputError`` now if ``folder`` could not be created or written (read-only file
    system, no permission), without creating anything: call it before long work (loading a dataset,
    training) so that the failure does not come at the end."""
    folder = Path(folder).absolute()
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"{folder}: cannot write: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        code = errno.EROFS if os.statvfs(probe).f_flag & os.ST_RDONLY else errno.EACCES
        raise output_error(folder, OSError(code, os.strerror(code)))


@contextlib.contextmanager
def _output_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except AttnsegError:
        raise
    except OSError as exc:
        raise output_error(path, exc) from exc


@contextlib.contextmanager
def _published_or_removed(tmp: str, path: Path) -> Iterator[None]:
    """Run the block that fills ``tmp``; then rename it to ``path``, or remove it if the block failed."""
    try:
        yield
        _publish(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", suffix: str | None = None) -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success rename it to ``path``.

    ``suffix`` keeps the real extension on the temporary name (nibabel and friends infer the
    format from it); by default the full suffix chain of ``path`` is kept.
    """
    path = Path(path)
    with _output_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix is None:
            suffix = "".join(path.suffixes)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
        with _published_or_removed(tmp, path):
            with os.fdopen(fd, mode) as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` for writers that want a file name, not a handle.

    The temporary name keeps the suffix chain of ``path`` (``.nii.gz`` stays ``.nii.gz``).
    """
    path = Path(path)
    with _output_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        suffix = "".join(path.suffixes)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
        os.close(fd)
        with _published_or_removed(tmp, path):
            yield Path(tmp)
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as handle:
        handle.write(text)
