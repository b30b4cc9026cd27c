"""Training: killed at random iterations several times, ``--resume`` ends with the weights of an
uninterrupted run; bad data is refused while loading, before any run folder is written, with one
line naming the case and file; a tampered checkpoint is refused on resume."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from robustness_helpers import assert_clean_error, blob_label, brain, cli, write_nifti
from tests.conftest import shared_dataset

from attnseg.errors import DataError, ModelFileError
from attnseg.models import read_model_file
from attnseg.training.checkpointing import load_checkpoint
from attnseg.training.run import train

SETTINGS = [
    "data.split=none",
    "model.features=[4,8]",
    "data.patch_size=[16,16]",
    "data.batch_size=2",
    "train.epochs=16",
    "train.iters_per_epoch=2",
    "train.progress=false",
    "train.threads=1",
    "optim.warmup_iters=1",
]


def disc_folder(root, n=4):
    """Paired PNG folder: noisy grey images with one bright disc, masks 0/1."""
    for i in range(n):
        rng = np.random.default_rng(i)
        yy, xx = np.mgrid[:24, :24]
        cy, cx = rng.uniform(8, 16, 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(16, 40)
        image = np.clip(60 + 120 * disc + 25 * rng.standard_normal(disc.shape), 0, 255).astype(np.uint8)
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "images" / f"case{i}.png")
        Image.fromarray(disc.astype(np.uint8)).save(root / "masks" / f"case{i}.png")
    return root


def _set(settings):
    return [arg for s in settings for arg in ("--set", s)]


def _epochs_done(run) -> int:
    path = run / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.is_file() else 0


def test_sigkill_at_random_iterations_then_resume_gives_the_same_weights(tmp_path, launcher):
    """``attnseg train`` killed three times (after 1-2 more finished epochs, then a random 0-80 ms:
    mid-epoch or mid-checkpoint), ``--resume`` each time, then to the end: the weights, the model
    file and the loss history equal those of one uninterrupted run, bit for bit."""
    data = disc_folder(tmp_path / "data")
    reference = tmp_path / "reference"
    code, printed = launcher.run(["train", data, "--out", reference, *_set(SETTINGS)], tmp_path / "ref.log")
    assert code == 0, printed

    run = tmp_path / "run"
    rng = np.random.default_rng(0)
    kills = []
    for attempt in range(3):
        argv = ["train", data, "--out", run, *_set(SETTINGS), *(["--resume"] if attempt else [])]
        wait_for = _epochs_done(run) + int(rng.integers(1, 3))
        log = tmp_path / f"killed{attempt}.log"
        pid = launcher.start(argv, log)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and _epochs_done(run) < wait_for:
            assert not Path(f"{log}.rc").exists(), log.read_text()  # ended on its own: kill it sooner
            time.sleep(0.002)
        time.sleep(float(rng.uniform(0, 0.08)))
        os.kill(pid, signal.SIGKILL)
        assert launcher.wait(log) == -signal.SIGKILL, log.read_text()
        kills.append(_epochs_done(run))
    assert kills == sorted(kills) and kills[-1] < 16, kills

    code, printed = launcher.run(["train", data, "--out", run, "--resume"], tmp_path / "resume.log")
    assert code == 0, printed
    done = read_model_file(run / "checkpoints" / "last.pt")
    expected = read_model_file(reference / "checkpoints" / "last.pt")
    assert (done["epoch"], done["iteration"]) == (16, 32)
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(done["state_dict"][name], tensor), name
    for name, tensor in read_model_file(reference / "model.pt")["state_dict"].items():
        assert torch.equal(read_model_file(run / "model.pt")["state_dict"][name], tensor), name
    losses = [json.loads(line)["train_loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    reference_losses = [
        json.loads(line)["train_loss"] for line in (reference / "metrics.jsonl").read_text().splitlines()
    ]
    assert losses == reference_losses


def test_tampered_checkpoint_is_refused_on_resume(tmp_path, capsys, launcher):
    data = disc_folder(tmp_path / "data")
    run = tmp_path / "run"
    short = [*SETTINGS, "train.epochs=1", "train.iters_per_epoch=1"]
    code, printed = launcher.run(["train", data, "--out", run, *_set(short)], tmp_path / "train.log")
    assert code == 0, printed
    last = run / "checkpoints" / "last.pt"
    payload = torch.load(last, weights_only=True)
    name = next(iter(payload["state_dict"]))
    payload["state_dict"][name] = payload["state_dict"][name] + 1  # weights edited, checksum kept
    torch.save(payload, last)
    code, _, err = cli(capsys, "train", data, "--out", run, "--resume")
    assert code == 2
    assert_clean_error(err, "last.pt: the weights do not match the checksum")
    with pytest.raises(ModelFileError, match="checksum"):
        load_checkpoint(last)  # what train(..., resume=True) reads first


def _msd(root, labels, images=None):
    images = images or {case: brain(seed=i) for i, case in enumerate(labels)}
    for case, image in images.items():
        write_nifti(root / "imagesTr" / f"{case}.nii.gz", image)
    for case, label in labels.items():
        write_nifti(root / "labelsTr" / f"{case}.nii.gz", label, dtype=np.uint8)
    entries = [
        {"image": f"./imagesTr/{c}.nii.gz", **({"label": f"./labelsTr/{c}.nii.gz"} if c in labels else {})}
        for c in images
    ]
    (root / "dataset.json").write_text(
        json.dumps({"modality": {"0": "MRI"}, "labels": {"0": "bg", "1": "a", "2": "b"}, "training": entries})
    )
    return root


def _png_with_a_volume(root):
    disc_folder(root)
    write_nifti(root / "images" / "vol.nii.gz", brain())
    write_nifti(root / "masks" / "vol.nii.gz", blob_label() > 0, dtype=np.uint8)
    return root


def _paired_with_a_repeat(root):
    """a.nii.gz and a.nii: two cases named a (data.split=none skips the k-fold split, which would
    also refuse them)."""
    for name in ("a.nii.gz", "a.nii", "b.nii.gz"):
        write_nifti(root / "images" / name, brain())
    for name in ("a.nii.gz", "b.nii.gz"):
        write_nifti(root / "labels" / name, blob_label(), dtype=np.uint8)
    return root


def _masks_as(root, quality=None, noise=False):
    """disc_folder's images with masks rewritten: 0/1 saved as JPEG at ``quality`` (30 leaves only 0s),
    or random grey values (an image saved as a mask)."""
    disc_folder(root)
    rng = np.random.default_rng(0)
    for path in sorted((root / "masks").glob("*.png")):
        mask = np.asarray(Image.open(path))
        path.unlink()
        if noise:
            Image.fromarray(rng.integers(0, 256, mask.shape, dtype=np.uint8)).save(path)
        else:
            Image.fromarray(mask).save(path.with_suffix(".jpg"), quality=quality)
    return root


def _undeclared():
    label = blob_label()
    label[0, 0, 0] = 7
    return label


BAD_TRAINING_DATA = {
    # name -> (make the dataset under ROOT, what the one error line says)
    "undeclared_label_value": (
        lambda root: _msd(root, {"a": blob_label(), "b": _undeclared()}),
        "case b: label {root}/labelsTr/b.nii.gz has value(s) [7] (7: 1 voxels); the dataset declares [0, 1, 2]",
    ),
    "nan_image": (
        lambda root: _msd(
            root,
            {"a": blob_label(), "b": blob_label()},
            {"a": brain(), "b": np.where(blob_label() > 0, np.nan, brain())},
        ),
        "case b: image has 144 NaN/inf voxel(s)",
    ),
    "no_labels": (
        lambda root: _msd(root, {}, {"a": brain(), "b": brain(seed=1)}),
        "no case has a label; training needs labelled cases",
    ),
    "2d_case_in_3d_data": (
        lambda root: _msd(
            root, {"a": blob_label(), "b": blob_label()[:, :, 5]}, {"a": brain(), "b": brain()[:, :, 5]}
        ),
        "case b: image {root}/imagesTr/b.nii.gz is 2D (shape (12, 12)); the dataset is 3D",
    ),
    "3d_case_in_2d_data": (
        lambda root: _png_with_a_volume(root),
        "case vol: image {root}/images/vol.nii.gz is 3D (shape (12, 12, 10)); the dataset is 2D",
    ),
    "duplicate_ids": (
        lambda root: _paired_with_a_repeat(root),
        "{root}: case id(s) ['a'] belong to more than one case",
    ),
    "all_background_2d_masks": (
        lambda root: _masks_as(root, quality=30),
        "{root}: every training label map decodes to background only (masks: background only",
    ),
    "mask_encoding_accident": (
        lambda root: _masks_as(root, noise=True),
        "{root}: the masks hold 256 distinct values 0..255: neither class indices",
    ),
    "label_shape": (
        lambda root: _msd(root, {"a": blob_label(), "b": blob_label((12, 12, 9))}),
        "case b: label {root}/labelsTr/b.nii.gz has shape (12, 12, 9), image has (12, 12, 10)",
    ),
}


@pytest.mark.parametrize("kind", sorted(BAD_TRAINING_DATA))
def test_training_refuses_bad_data_before_writing_a_run(tmp_path, capsys, kind):
    make, expected = BAD_TRAINING_DATA[kind]
    root = make(tmp_path / "data")
    expected = expected.format(root=root)
    settings = [s.replace("[16,16]", "[8,8,8]") for s in SETTINGS]
    with pytest.raises(DataError) as info:
        train(root, tmp_path / "api_run", overrides=settings, log=lambda _: None)
    assert expected in str(info.value)
    code, _, err = cli(capsys, "train", root, "--out", tmp_path / "run", *_set(settings))
    assert code == 2
    assert_clean_error(err, expected)
    assert not (tmp_path / "run").exists() and not (tmp_path / "api_run").exists()


def test_an_all_zero_case_trains(tmp_path, launcher):
    """Defined: an all-zero image normalises to zeros (no NaN from a zero standard deviation) and
    its all-background label gives background patches; every batch of 3 holds it once."""
    root = tmp_path / "data"
    for case in ("a", "b"):
        write_nifti(root / "images" / f"{case}.nii.gz", brain(seed=len(case)))
        write_nifti(root / "labels" / f"{case}.nii.gz", blob_label(), dtype=np.uint8)
    write_nifti(root / "images" / "zero.nii.gz", np.zeros((12, 12, 10)))
    write_nifti(root / "labels" / "zero.nii.gz", np.zeros((12, 12, 10)), dtype=np.uint8)
    settings = [
        s.replace("[16,16]", "[8,8,8]")
        .replace("batch_size=2", "batch_size=3")
        .replace("epochs=16", "epochs=2")
        for s in SETTINGS
    ]
    run = tmp_path / "run"
    code, printed = launcher.run(["train", root, "--out", run, *_set(settings)], tmp_path / "train.log")
    assert code == 0, printed
    losses = [json.loads(line)["train_loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 2 and all(np.isfinite(losses))


def test_training_on_hippocampus_broken_names_a_broken_file(tmp_path, capsys):
    root = shared_dataset("hippocampus_broken")
    code, _, err = cli(capsys, "train", root, "--out", tmp_path / "run", "--set", "data.split=none")
    assert code == 2
    line = assert_clean_error(err)
    assert ("hippocampus_143" in line and "shape" in line) or (
        "hippocampus_160" in line and "truncated" in line
    )
    assert not (tmp_path / "run").exists()


def test_training_into_a_read_only_folder(tmp_path, capsys, readonly_folder):
    data = disc_folder(tmp_path / "data")
    code, _, err = cli(capsys, "train", data, "--out", readonly_folder / "run", *_set(SETTINGS))
    assert code == 2
    assert_clean_error(err, str(readonly_folder / "run"), "cannot write: Read-only file system")
