"""A cache of decoded (and preprocessed) volumes, so ``.nii.gz`` is decoded once per run, not per patch.

Entries are keyed by the source files' resolved path, size and modification time (plus a string
naming the preprocessing), so an edited file is decoded again. An entry is a dict of named arrays
plus a small JSON-able ``meta`` dict. Entries stay in memory while they fit in ``memory_bytes``;
beyond that they are written once, uncompressed, as ``<cache_dir>/<key>/<name>.npy`` and read back
as copy-on-write memory maps (the OS page cache then shares them between DataLoader workers, and a
later run starts warm). Writes are atomic; ``meta.json`` is written last and marks an entry complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attnseg.errors import DataError
from attnseg.io.atomic import atomic_write, atomic_write_text

Entry = dict[str, Any]


def file_key(paths: Sequence[str | os.PathLike], extra: str = "") -> str:
    """Cache key of a set of files: sha1 of (resolved path, size, mtime_ns) of each, plus ``extra``."""
    h = hashlib.sha1()
    for p in paths:
        path = Path(p)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise DataError(f"{path}: file not found") from None
        h.update(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    h.update(extra.encode())
    return h.hexdigest()[:24]


def _nbytes(entry: Entry) -> int:
    return sum(v.nbytes for v in entry.values() if isinstance(v, np.ndarray))


class VolumeCache:
    """Decoded volumes in memory while they fit, else as ``.npy`` memory maps in ``cache_dir``.

    ``mode``: ``"auto"`` (memory first, then disk), ``"memory"`` (never disk; entries beyond the
    budget are recomputed each time), ``"disk"`` (always disk: best with several DataLoader
    workers, which then share one copy through the page cache). ``cache_dir=None`` means no disk.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike | None = None,
        memory_bytes: int = 2 * 2**30,
        mode: str = "auto",
    ) -> None:
        if mode not in ("auto", "memory", "disk"):
            raise ValueError(f"mode must be 'auto', 'memory' or 'disk', got {mode!r}")
        if mode == "disk" and cache_dir is None:
            raise ValueError("mode='disk' needs a cache_dir")
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.memory_bytes = int(memory_bytes)
        self.mode = mode
        self._memory: dict[str, Entry] = {}
        self._used = 0
        self._lock = threading.Lock()
        self.stats = {"memory_hits": 0, "disk_hits": 0, "misses": 0}

    def __contains__(self, key: str) -> bool:
        return key in self._memory or self._disk_complete(key)

    @property
    def memory_used_bytes(self) -> int:
        return self._used

    def _entry_dir(self, key: str) -> Path:
        assert self.cache_dir is not None
        return self.cache_dir / key

    def _disk_complete(self, key: str) -> bool:
        return self.cache_dir is not None and (self._entry_dir(key) / "meta.json").is_file()

    def _read_disk(self, key: str) -> Entry:
        folder = self._entry_dir(key)
        record = json.loads((folder / "meta.json").read_text())
        entry: Entry = {"meta": record["meta"]}
        for name in record["arrays"]:
            # "c": copy-on-write, so the array is writeable (torch.from_numpy accepts it) and no
            # change ever reaches the file
            entry[name] = np.load(folder / f"{name}.npy", mmap_mode="c")
        return entry

    def _write_disk(self, key: str, entry: Entry) -> None:
        folder = self._entry_dir(key)
        folder.mkdir(parents=True, exist_ok=True)
        names = []
        for name, value in entry.items():
            if name == "meta":
                continue
            if not isinstance(value, np.ndarray):
                raise TypeError(f"cache entry {name!r} must be a numpy array, got {type(value).__name__}")
            with atomic_write(folder / f"{name}.npy", "wb") as handle:
                np.save(handle, np.ascontiguousarray(value), allow_pickle=False)
            names.append(name)
        atomic_write_text(folder / "meta.json", json.dumps({"arrays": names, "meta": entry.get("meta", {})}))

    def get(self, key: str, produce: Callable[[], Entry]) -> Entry:
        """The entry for ``key``; on a miss ``produce()`` makes it (decode + preprocess) once."""
        with self._lock:
            hit = self._memory.get(key)
        if hit is not None:
            self.stats["memory_hits"] += 1
            return hit
        if self._disk_complete(key):
            self.stats["disk_hits"] += 1
            return self._read_disk(key)
        self.stats["misses"] += 1
        entry = produce()
        size = _nbytes(entry)
        if self.mode != "disk":
            with self._lock:
                if self._used + size <= self.memory_bytes:
                    self._memory[key] = entry
                    self._used += size
                    return entry
        if self.mode == "memory" or self.cache_dir is None:
            return entry
        self._write_disk(key, entry)
        return self._read_disk(key)

    def clear_memory(self) -> None:
        with self._lock:
            self._memory.clear()
            self._used = 0
