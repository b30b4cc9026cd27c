"""Helpers for the bad-input and fault catalogue (docs/robustness.md): files, the CLI, digests."""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from attnseg.cli import main

# a 1.2 x 1.2 x 2 mm grid with an origin: outputs must keep it
AFFINE = np.array(
    [[1.2, 0.0, 0.0, -30.0], [0.0, 1.2, 0.0, -20.0], [0.0, 0.0, 2.0, 10.0], [0.0, 0.0, 0.0, 1.0]]
)
SHAPE = (12, 12, 10)


def brain(shape=SHAPE, seed=0) -> np.ndarray:
    """A bright noisy ellipsoid on a zero background (what skull-stripped MRI looks like)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    inside = (grid**2).sum(0) < 0.8
    return np.where(inside, 100 + 20 * rng.standard_normal(shape), 0).astype(np.float32)


def blob_label(shape=SHAPE) -> np.ndarray:
    """Labels 0/1/2: two boxes inside the ellipsoid."""
    label = np.zeros(shape, np.uint8)
    label[3:6, 3:9, 3:7] = 1
    label[6:9, 3:9, 3:7] = 2
    return label


def write_nifti(path, data, affine=AFFINE, dtype=np.float32) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data).astype(dtype), affine), str(path))
    return path


def write_raw_sform(path, data, affine) -> Path:
    """A float32 NIfTI-1 whose sform is exactly ``affine`` (qform off), written byte by byte:
    nibabel refuses to write a singular affine, but files in the wild have them."""
    data = np.asarray(data, np.float32)
    header = nib.Nifti1Header()
    header.set_data_shape(data.shape)
    header.set_data_dtype(np.float32)
    raw = bytearray(header.binaryblock)
    raw[108:112] = struct.pack("<f", 352.0)  # vox_offset
    raw[252:256] = struct.pack("<hh", 0, 1)  # qform_code 0, sform_code 1
    for row, offset in enumerate((280, 296, 312)):
        raw[offset : offset + 16] = struct.pack("<4f", *np.asarray(affine, float)[row])
    body = bytes(raw) + b"\0" * 4 + data.tobytes(order="F")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(body) if path.name.endswith(".gz") else body)
    return path


def tree_digest(folder) -> dict[str, tuple[str, int]]:
    """Relative path -> (sha256, mtime_ns) of every file under ``folder``: equal before/after = untouched."""
    folder = Path(folder)
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            out[str(path.relative_to(folder))] = (
                hashlib.sha256(path.read_bytes()).hexdigest(),
                path.stat().st_mtime_ns,
            )
    return out


def visible_files(folder) -> list[str]:
    """Names a user (or a glob for *.nii.gz) sees: hidden temporary files excluded."""
    return sorted(
        str(p.relative_to(folder))
        for p in Path(folder).rglob("*")
        if p.is_file() and not p.name.startswith(".")
    )


def cli(capsys, *argv) -> tuple[int, str, str]:
    """Run ``attnseg ARGV`` in this process; return (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_clean_error(err: str, *needles: str) -> str:
    """stderr holds one ``attnseg CMD: error: ...`` line (no traceback) containing every needle."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def failed_line(err: str, case_id: str) -> str:
    """The ``failed: CASE: ...`` line that ``attnseg predict`` prints for a case it could not do."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(f"failed: {case_id}: ")]
    assert len(lines) == 1, err
    return lines[0]


def run_attnseg(*argv, timeout=120, **kwargs) -> subprocess.CompletedProcess:
    """``python -m attnseg ARGV`` in a fresh process (real argv encoding, exit code, signals)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONIOENCODING="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "attnseg", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        **kwargs,
    )


def expected_prediction(model_path, image_path) -> np.ndarray:
    """What the Python API predicts for one image file (the reference for files written by the CLI)."""
    from attnseg.inference.predict import load_for_inference, predict_case
    from attnseg.io.nifti import load_image

    image, meta = load_image(image_path)
    return predict_case(load_for_inference(model_path), image, meta.spacing_mm).labels


# --- a warm launcher: real processes without paying torch's import each time ---------------------------
LAUNCHER = r"""
import json, os, sys, threading, traceback

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot  # noqa: F401  the slow imports, paid once for every run below
import torch
import torch._dynamo  # noqa: F401  (optimizer construction imports it)

import attnseg.cli
import attnseg.inference.predict  # noqa: F401
import attnseg.training.run  # noqa: F401


def reap(pid, path):
    _, status = os.waitpid(pid, 0)
    with open(path + ".tmp", "w") as handle:
        handle.write(str(os.waitstatus_to_exitcode(status)))
    os.replace(path + ".tmp", path)


def child(request):
    fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    die_after = request.get("die_after_saves")
    if die_after:  # SIGKILL once that many NIfTI files are on disk under their temporary names
        import nibabel, signal

        real_save, count = nibabel.save, [0]

        def save_then_die(img, filename):
            real_save(img, filename)
            count[0] += 1
            if count[0] == die_after:
                os.kill(os.getpid(), signal.SIGKILL)

        nibabel.save = save_then_die
    code = 1
    try:
        code = attnseg.cli.main(request["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


print("ready", flush=True)
for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        child(request)
    threading.Thread(target=reap, args=(pid, request["log"] + ".rc"), daemon=True).start()
    print(pid, flush=True)
"""


class Launcher:
    """Runs ``attnseg`` commands as separate processes forked from one warm interpreter (torch,
    matplotlib and attnseg already imported), so killing and rerunning costs no start-up time.

    ``start(argv, log)`` returns the child's pid (``os.kill`` it at will); ``wait(log)`` returns its
    exit code (negative: killed by that signal) once it has ended."""

    def __init__(self):
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONIOENCODING="utf-8")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stdout.readline().strip() == "ready"

    def start(self, argv, log, die_after_saves: int | None = None) -> int:
        import json

        request = {"argv": [str(a) for a in argv], "log": str(log), "die_after_saves": die_after_saves}
        Path(str(log) + ".rc").unlink(missing_ok=True)
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def wait(self, log, timeout: float = 120) -> int:
        import time

        done = Path(str(log) + ".rc")
        deadline = time.monotonic() + timeout
        while not done.exists():
            assert time.monotonic() < deadline, f"no exit within {timeout} s; log: {Path(log).read_text()}"
            time.sleep(0.005)
        return int(done.read_text())

    def run(self, argv, log, timeout: float = 120) -> tuple[int, str]:
        """Start, wait; return (exit code, what it printed)."""
        self.start(argv, log)
        code = self.wait(log, timeout)
        return code, Path(log).read_text(encoding="utf-8")

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.kill()  # every child has been waited for; skip the interpreter's slow teardown
        self.proc.wait(timeout=30)
