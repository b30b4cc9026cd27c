"""The model card: one reader for every source a model file's settings come from (issue 14, item 3)."""

from __future__ import annotations

import shutil

import pytest
import torch

from attnseg import __version__
from attnseg.config import PreprocessConfig, RunConfig, save_yaml, to_dict
from attnseg.errors import ModelFileError
from attnseg.models import AttentionUNet, read_model_card, save_model, training_card
from attnseg.training.checkpointing import save_checkpoint

REGIONS = {
    "kind": "regions",
    "values": [0, 1, 2, 3],
    "names": ["whole", "core", "enhancing"],
    "regions": [[1, 2, 3], [2, 3], [3]],
    "paint_order": [["whole", 1], ["core", 2], ["enhancing", 3]],
}


def _run_config(**changes) -> dict:
    run = to_dict(RunConfig())
    run["model"].update(spatial_dims=3, in_channels=1, out_channels=3, features=[4, 8])
    run["data"]["patch_size"] = [16, 16, 12]
    run["preprocess"] = {
        "normalization": "zscore",
        "clip_percentiles": [0.5, 99.5],
        "target_spacing_mm": None,
    }
    run["augment"].update(flip_axes=[0, 2], p_flip=0.5)
    for key, value in changes.items():
        run[key] = value
    return run


@pytest.fixture
def model():
    torch.manual_seed(0)
    return AttentionUNet(3, 1, 3, (4, 8)).eval()


def test_training_card_is_complete():
    card = training_card(_run_config(), REGIONS, ["MRI"])
    assert card == {
        "target": REGIONS,
        "patch_size": [16, 16, 12],
        "preprocess": {"normalization": "zscore", "clip_percentiles": [0.5, 99.5], "target_spacing_mm": None},
        "spacing_mm": None,
        "channel_names": ["MRI"],
        "mirror_axes": [0, 2],
    }
    never = training_card(_run_config(augment={"flip_axes": [0], "p_flip": 0.0}), REGIONS)
    assert never["mirror_axes"] == [] and never["channel_names"] is None


def test_a_model_file_copied_away_from_its_run_folder_gives_the_same_card(tmp_path, model):
    run = _run_config()
    save_yaml(tmp_path / "run" / "config.yaml", run)
    in_place = save_model(tmp_path / "run" / "model.pt", model, training_card(run, REGIONS, ["MRI"]))
    away = tmp_path / "shipped" / "model.pt"
    away.parent.mkdir()
    shutil.copy(in_place, away)

    here, there = read_model_card(in_place), read_model_card(away)
    assert here == there
    assert there.patch_size == (16, 16, 12)
    assert there.preprocess == PreprocessConfig("zscore", (0.5, 99.5), None)
    assert there.label_scheme.to_dict() == REGIONS  # paint_order kept
    assert there.channel_names == ("MRI",) and there.mirror_axes == (0, 2)
    assert there.version == __version__ and there.spatial_dims == 3 and there.out_channels == 3
    assert set(there.sources.values()) == {"model file"} and there.defaulted == ()


def test_a_complete_card_wins_over_a_stale_run_folder(tmp_path, model):
    """The file's own card beats a config.yaml beside it (e.g. a run folder re-used for another run)."""
    save_yaml(tmp_path / "config.yaml", _run_config(data={"patch_size": [64, 64, 64]}))
    path = save_model(tmp_path / "model.pt", model, training_card(_run_config(), REGIONS))
    card = read_model_card(path)
    assert card.patch_size == (16, 16, 12) and card.sources["patch_size"] == "model file"


# --- model files of earlier releases ------------------------------------------------------------------------
def test_earlier_release_file_with_only_a_run_config_inside(tmp_path, model):
    """A training checkpoint (``run_config`` embedded, no card keys) copied away from its run."""
    path = save_checkpoint(
        tmp_path / "elsewhere" / "last.pt",
        model,
        run_config=_run_config(),
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        scaler=None,
        epoch=1,
        iteration=2,
        history=[],
        best={},
    )
    card = read_model_card(path)
    assert card.patch_size == (16, 16, 12) and card.mirror_axes == (0, 2)
    assert card.preprocess == PreprocessConfig("zscore", (0.5, 99.5), None)
    assert card.label_scheme.values == (0, 1, 2) and card.label_scheme.kind == "labels"  # none: default
    assert card.sources["patch_size"] == "run_config" and card.sources["mirror_axes"] == "run_config"
    assert card.defaulted == ("target",)


def test_earlier_release_file_with_only_a_preprocessing_block(tmp_path, model):
    explicit = {
        "normalization": "none",
        "spacing_mm": [1.0, 1.0, 2.0],
        "patch_size": [8, 8, 8],
        "labels": {"background": 0, "a": 1, "b": 4},
        "channel_names": ["CT"],
    }
    path = save_model(tmp_path / "model.pt", model, {"preprocessing": explicit})
    card = read_model_card(path)
    assert card.patch_size == (8, 8, 8) and card.channel_names == ("CT",)
    assert card.preprocess == PreprocessConfig("none", None, (1.0, 1.0, 2.0)) and card.spacing_mm == (1, 1, 2)
    assert card.label_scheme.to_dict() == {
        "kind": "labels",
        "values": [0, 1, 4],
        "names": ["background", "a", "b"],
        "regions": [],
    }
    assert card.mirror_axes is None and card.sources["target"] == "preprocessing"


def test_earlier_release_bare_file_and_first_training_card(tmp_path, model):
    bare = read_model_card(save_model(tmp_path / "bare.pt", model))
    assert bare.patch_size == (128, 128, 128) and bare.preprocess == PreprocessConfig()
    assert bare.label_scheme.names == ("background", "label_1", "label_2") and bare.mirror_axes is None
    assert set(bare.defaulted) == {"patch_size", "preprocess", "target"}
    # what training wrote before the card (field case 13): target, patch, preprocess, no flips; in
    # its run folder the flips come from config.yaml, away from it they are not known
    old = {
        "target": {"kind": "labels", "values": [0, 1, 2], "names": ["bg", "a", "p"], "regions": []},
        "patch_size": [32, 32, 32],
        "preprocess": {"normalization": "zscore", "clip_percentiles": [0.5, 99.5], "target_spacing_mm": None},
    }
    save_yaml(tmp_path / "run" / "config.yaml", _run_config())
    path = save_model(tmp_path / "run" / "model.pt", model, old)
    card = read_model_card(path)
    assert card.patch_size == (32, 32, 32) and card.mirror_axes == (0, 2)
    assert card.sources["mirror_axes"] == str(tmp_path / "run" / "config.yaml")
    assert read_model_card(path, use_run_folder=False).mirror_axes is None


def test_a_card_that_contradicts_the_model_names_the_file(tmp_path, model):
    bad = {**REGIONS, "paint_order": [["necrosis", 1]]}
    path = save_model(tmp_path / "m.pt", model, {"target": bad})
    with pytest.raises(ModelFileError, match=r"m.pt: paint_order names regions \['necrosis'\]"):
        read_model_card(path)
    with pytest.raises(ModelFileError, match="m2.pt: training flip axes"):
        read_model_card(save_model(tmp_path / "m2.pt", model, {"mirror_axes": [0, 3]}))
