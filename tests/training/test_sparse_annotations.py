"""Training on sparse annotations: the ignore label through patches, loss, validation and a tiny run."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from torch import nn

from attnseg.cli import main
from attnseg.config import AugmentConfig, LossConfig
from attnseg.datasets.label_scheme import LabelScheme
from attnseg.models.card import read_model_card
from attnseg.training.amp import make_precision
from attnseg.training.loop import build_training_loss
from attnseg.training.validation import validate
from attnseg.transforms.loader import PatchDataset, PreparedCase

SCHEME = LabelScheme.from_labels({"background": 0, "ball": 1, "ignore": 2})
SHAPE = (16, 16, 16)


def ball_label(i: int) -> np.ndarray:
    """A ball of label 1 in a 16^3 volume; only every third axial slice annotated, the rest 2."""
    rng = np.random.default_rng(i)
    zz, yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    c = rng.uniform(6, 10, 3)
    dense = (((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) < rng.uniform(9, 20)).astype(np.uint8)
    sparse = np.full(SHAPE, 2, np.uint8)
    sparse[:, :, ::3] = dense[:, :, ::3]
    return dense, sparse


def test_patches_of_a_sparse_case_carry_the_ignore_index_and_centre_on_the_class():
    dense, sparse = ball_label(0)
    case = PreparedCase("c0", dense[None].astype(np.float32), sparse.astype(np.int64), (1.0, 1.0, 1.0))
    dataset = PatchDataset(
        [case],
        AugmentConfig(fg_fraction=1.0, p_rotate=0.5, rotate_deg=15.0, p_elastic=0.0),
        seed=0,
        classes=SCHEME.file_values,
        encode=SCHEME.encode,
        ignore_label=SCHEME.ignore_label,
    )
    keys = [(0, 0, i, (8, 8, 8)) for i in range(40)]
    assert {dataset.params_for(k).forced_class for k in keys} == {1}  # the ball, never the ignore label
    targets = [dataset[k][1] for k in keys]
    assert set(torch.cat([t.flatten() for t in targets]).unique().tolist()) == {0, 1, SCHEME.ignore_index}


def test_the_training_loss_gets_the_schemes_ignore_index():
    loss = build_training_loss(LossConfig(name="dice_ce"), SCHEME, deep_supervision=True)
    assert {name: t.ignore_index for name, t in loss.loss.terms.items()} == {"dice": 2, "ce": 2}
    plain = build_training_loss(
        LossConfig(name="dice_focal"), LabelScheme.from_labels({"b": 0, "a": 1}), False
    )
    assert {t.ignore_index for t in plain.terms.values()} == {None}


class ConstantBall(nn.Module):
    """Logits that say "ball" wherever the image is > 0.5, background elsewhere."""

    def forward(self, x):
        on = (x[:, :1] > 0.5).float()
        return torch.cat([1.0 - on, on], 1) * 4.0 - 2.0


def test_validation_dice_leaves_the_ignored_voxels_out():
    dense, sparse = ball_label(1)
    image = dense.astype(np.float32)
    image[:, :, 1::3] = 1.0  # wrong "ball" everywhere on the unannotated slices
    case = PreparedCase("c1", image[None], sparse.astype(np.int64), (1.0, 1.0, 1.0))
    precision = make_precision("fp32", torch.device("cpu"))
    sparse_result = validate(ConstantBall(), [case], SCHEME, (16, 16, 16), precision)
    assert sparse_result["dice"]["ball"] == pytest.approx(1.0)
    dense_scheme = LabelScheme.from_labels({"background": 0, "ball": 1})
    dense_case = PreparedCase("c1", image[None], dense.astype(np.int64), (1.0, 1.0, 1.0))
    assert validate(ConstantBall(), [dense_case], dense_scheme, (16, 16, 16), precision)["dice"]["ball"] < 0.9


@pytest.fixture
def sparse_nnunet(tmp_path):
    """An nnU-Net v2 dataset of 6 balls, annotated on every third slice ("ignore": 2)."""
    root = tmp_path / "Dataset010_Sparse"
    for i in range(6):
        dense, sparse = ball_label(10 + i)
        noise = np.random.default_rng(i).normal(0, 0.2, SHAPE)
        (root / "imagesTr").mkdir(parents=True, exist_ok=True)
        (root / "labelsTr").mkdir(parents=True, exist_ok=True)
        nib.save(
            nib.Nifti1Image((dense + noise).astype(np.float32), np.eye(4)),
            root / "imagesTr" / f"b{i}_0000.nii.gz",
        )
        nib.save(nib.Nifti1Image(sparse, np.eye(4)), root / "labelsTr" / f"b{i}.nii.gz")
    meta = {
        "channel_names": {"0": "MR"},
        "labels": {"background": 0, "ball": 1, "ignore": 2},
        "numTraining": 6,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


TINY = [
    "--set", "model.features=[4,8,16]",
    "--set", "data.folds=3",
    "--set", "data.patch_size=[16,16,16]",
    "--set", "data.batch_size=2",
    "--set", "train.epochs=3",
    "--set", "train.iters_per_epoch=4",
    "--set", "train.val_every=3",
    "--set", "train.progress=false",
    "--set", "train.threads=2",
    "--set", "optim.lr=0.01",
    "--set", "optim.warmup_iters=2",
    "--set", "augment.p_elastic=0",
]  # fmt: skip


def test_a_tiny_run_trains_on_sparse_annotations(tmp_path, sparse_nnunet, capsys):
    run = tmp_path / "run"
    assert main(["train", str(sparse_nnunet), "--out", str(run), *TINY]) == 0
    printed = capsys.readouterr().out
    assert "out_channels=2, target=labels (ball), ignore_label=2" in printed  # no class, no channel
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["train_loss"]) for r in history)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert 0.0 <= history[-1]["val_dice"]["ball"] <= 1.0
    card = read_model_card(run / "model.pt")
    assert card.label_scheme.ignore_label == 2 and card.label_scheme.out_channels == 2
    # the same data with data.ignore_label set explicitly: the same scheme; a conflicting value is refused
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["data"]["ignore_label"] is None
    args = [
        "train",
        str(sparse_nnunet),
        "--out",
        str(tmp_path / "bad"),
        *TINY,
        "--set",
        "data.ignore_label=3",
    ]
    assert main(args) == 2
    assert "data.ignore_label=3 but the dataset declares 'ignore' = 2" in capsys.readouterr().err
