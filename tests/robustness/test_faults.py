"""Faults while running: a killed predict, a full disk, a read-only output folder, two runs at once.

Invariants checked every time: a file under its final name is complete (gzip CRC and length verified
by reading it) and equal to what the Python API predicts; the input folder is untouched (hashes and
mtimes); a rerun finishes the rest.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from robustness_helpers import (
    assert_clean_error,
    brain,
    cli,
    expected_prediction,
    tree_digest,
    visible_files,
    write_nifti,
)

from attnseg.errors import OutputError
from attnseg.inference.predict import predict_folder
from attnseg.io.atomic import atomic_write_text
from attnseg.io.nifti import load_label

N_CASES = 6


@pytest.fixture
def input_folder(tmp_path):
    folder = tmp_path / "input"
    for i in range(N_CASES):
        write_nifti(folder / f"case{i}.nii.gz", brain(seed=i))
    return folder


@pytest.fixture
def expected(model_file, input_folder):
    return {p.name: expected_prediction(model_file, p) for p in sorted(input_folder.iterdir())}


def assert_outputs_complete(out, expected):
    """Every visible output is a complete NIfTI equal to the API's prediction; return their names."""
    names = [n for n in visible_files(out) if n.endswith(".nii.gz")]
    for name in names:
        labels, _ = load_label(out / name)  # decompresses in full: a truncated file raises
        np.testing.assert_array_equal(labels, expected[name], err_msg=name)
    return names


# --- SIGKILL ----------------------------------------------------------------------------------------------
def test_sigkill_during_predict_then_rerun(tmp_path, model_file, input_folder, expected, launcher):
    """``attnseg predict`` killed twice: first at the worst moment (the third case's data are on
    disk under the temporary name, the rename has not happened), then from outside at a random
    moment after a write. Each time every visible file is complete and right; the rerun skips the
    finished cases and redoes the rest."""
    out = tmp_path / "out"
    before = tree_digest(input_folder)
    argv = ["predict", model_file, input_folder, out, "--quiet"]
    launcher.start(argv, tmp_path / "first.log", die_after_saves=3)
    assert launcher.wait(tmp_path / "first.log") == -signal.SIGKILL
    assert assert_outputs_complete(out, expected) == ["case0.nii.gz", "case1.nii.gz"]
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert len(leftovers) == 1 and leftovers[0].startswith(".case2.nii.gz.")  # hidden, never final

    # from outside, a random few ms after this run's first write
    log = tmp_path / "second.log"
    pid = launcher.start(argv, log)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and len(visible_files(out)) <= 2 and not Path(f"{log}.rc").exists():
        time.sleep(0.002)
    time.sleep(float(np.random.default_rng(0).uniform(0, 0.05)))
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:  # it finished (and was reaped) before the kill: the run below says 0
        pass
    assert launcher.wait(log) in (-signal.SIGKILL, 0)  # 0: it finished first
    finished = assert_outputs_complete(out, expected)
    assert len(finished) >= 3

    code, printed = launcher.run(argv, tmp_path / "rerun.log")
    assert code == 0, printed
    assert f"predicted {N_CASES - len(finished)} case(s)" in printed and f"skipped {len(finished)}" in printed
    assert assert_outputs_complete(out, expected) == sorted(expected)
    assert tree_digest(input_folder) == before


# --- disk full, read-only ----------------------------------------------------------------------------------
def test_disk_full_mid_write_is_one_line_and_leaves_nothing(
    tmp_path, model_file, input_folder, expected, capsys, monkeypatch
):
    """ENOSPC while the second case is being written: a clear error naming the file, the first case
    intact, no partial or temporary file, the input untouched."""
    import attnseg.io.nifti as nifti

    real_save = nib.save
    calls = [0]

    def save_until_full(img, filename):
        calls[0] += 1
        if calls[0] == 2:
            with open(filename, "wb") as handle:
                handle.write(b"\x1f\x8b" + b"\0" * 100)  # part of the file made it to disk
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(img, filename)

    monkeypatch.setattr(nifti.nib, "save", save_until_full)
    out = tmp_path / "out"
    before = tree_digest(input_folder)
    code, _, err = cli(capsys, "predict", model_file, input_folder, out, "--quiet")
    assert code == 2
    line = assert_clean_error(err, str(out / "case1.nii.gz"), "No space left on device", "free some space")
    assert ".tmp" not in line  # the final name, not the temporary one
    assert sorted(p.name for p in out.iterdir()) == ["case0.nii.gz"]
    assert_outputs_complete(out, expected)
    assert tree_digest(input_folder) == before

    calls[0] = 0
    with pytest.raises(OutputError) as info:  # the Python API raises the same error
        predict_folder(model_file, input_folder, tmp_path / "out2", progress=False)
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)


@contextlib.contextmanager
def file_size_limit(max_bytes: int):
    """``ulimit -f``: the kernel refuses to grow any file past ``max_bytes`` (EFBIG; Python ignores
    SIGXFSZ). Only the soft limit changes, so it can be lifted again."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_file_size_limit_is_a_real_write_failure(tmp_path, model_file, input_folder, capsys):
    """A real OS refusal, no simulation: one line, exit 2, no partial or temporary file."""
    out = tmp_path / "out"
    out.mkdir()
    before = tree_digest(input_folder)
    with file_size_limit(200):
        code, _, err = cli(capsys, "predict", model_file, input_folder, out, "--quiet")
    assert code == 2
    assert_clean_error(err, str(out / "case0.nii.gz"), "cannot write", "File too large")
    assert list(out.iterdir()) == []
    assert tree_digest(input_folder) == before


@pytest.mark.parametrize("where", ["folder", "subfolder"])
def test_read_only_output_folder_fails_before_predicting(
    model_file, input_folder, readonly_folder, capsys, monkeypatch, where
):
    out = readonly_folder if where == "folder" else readonly_folder / "predictions"
    before = tree_digest(input_folder)
    predicted = []
    import attnseg.inference.predict as predict

    real = predict.predict_case
    monkeypatch.setattr(predict, "predict_case", lambda *a, **k: predicted.append(1) or real(*a, **k))
    code, _, err = cli(capsys, "predict", model_file, input_folder, out, "--quiet")
    assert code == 2
    assert_clean_error(err, str(out), "cannot write")
    assert predicted == []  # refused up front, not after the first (possibly long) case
    assert tree_digest(input_folder) == before


def test_read_only_folder_for_evaluate_and_check_json(tmp_path, readonly_folder, capsys):
    truth = tmp_path / "truth"
    write_nifti(truth / "a.nii.gz", np.ones((4, 4, 4)), dtype=np.uint8)
    code, _, err = cli(capsys, "evaluate", truth, truth, "--out", readonly_folder / "metrics")
    assert code == 2
    assert_clean_error(err, str(readonly_folder / "metrics" / "metrics_per_case.csv"), "cannot write")
    with pytest.raises(OutputError, match="cannot write"):
        atomic_write_text(readonly_folder / "x.txt", "x")


# --- two runs into one folder ------------------------------------------------------------------------------
def test_two_predict_runs_into_the_same_folder(tmp_path, model_file, input_folder, expected, launcher):
    """Both runs write every case they find missing (one with --overwrite: every case); each write
    is a rename of a complete file, so however they interleave, every output is complete and right
    and nothing is left over."""
    out = tmp_path / "out"
    before = tree_digest(input_folder)
    argv = ["predict", model_file, input_folder, out, "--quiet"]
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    launcher.start(argv, logs[0])
    launcher.start([*argv, "--overwrite"], logs[1])
    assert [launcher.wait(log) for log in logs] == [0, 0], [log.read_text() for log in logs]
    assert assert_outputs_complete(out, expected) == sorted(expected)
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)  # no temporary file left
    assert tree_digest(input_folder) == before
