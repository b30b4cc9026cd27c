from __future__ import annotations

import pickle

import pytest
import torch

from attnseg.errors import ModelFileError
from attnseg.models import AttentionUNet, UNet, load_model, read_model_file, save_model


@pytest.mark.parametrize("cls", [AttentionUNet, UNet])
def test_round_trip_identical_outputs(tmp_path, cls):
    model = cls(3, 2, 3, (4, 8, 16), gating="decoder", norm="batch", deep_supervision=True).eval()
    path = save_model(tmp_path / "m.pt", model)
    loaded = load_model(path)
    assert type(loaded) is cls and loaded.config == model.config
    x = torch.randn(1, 2, 20, 16, 12)
    with torch.no_grad():
        torch.testing.assert_close(model(x), loaded(x), rtol=0, atol=0)
    payload = read_model_file(path)
    from attnseg import __version__

    assert payload["attnseg_version"] == __version__
    assert payload["model_config"]["features"] == [4, 8, 16]


def test_missing_or_wrong_config(tmp_path):
    model = AttentionUNet(2, 1, 2, (4, 8))
    path = save_model(tmp_path / "m.pt", model)
    payload = torch.load(path, weights_only=True)

    del payload["model_config"]
    torch.save(payload, tmp_path / "noconfig.pt")
    with pytest.raises(ModelFileError, match="noconfig.pt: the file has no 'model_config'"):
        load_model(tmp_path / "noconfig.pt")

    payload = torch.load(path, weights_only=True)
    payload["model_config"]["features"] = [8, 16]
    torch.save(payload, tmp_path / "wrong.pt")
    with pytest.raises(ModelFileError, match="wrong.pt: weights do not match"):
        load_model(tmp_path / "wrong.pt")

    payload["model_config"]["spatial_dims"] = 5
    torch.save(payload, tmp_path / "invalid.pt")
    with pytest.raises(ModelFileError, match="model_config is invalid"):
        load_model(tmp_path / "invalid.pt")


def test_foreign_truncated_and_code_files_are_refused(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(ModelFileError, match="not an attnseg model file"):
        load_model(tmp_path / "foreign.pt")

    good = save_model(tmp_path / "m.pt", AttentionUNet(2, 1, 2, (4, 8)))
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:200])
    with pytest.raises(ModelFileError, match="cut.pt: not a loadable"):
        load_model(tmp_path / "cut.pt")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "evil.pt", "wb") as handle:
        pickle.dump({"format": "attnseg.model", "x": Evil()}, handle)
    with pytest.raises(ModelFileError, match="evil.pt"):
        load_model(tmp_path / "evil.pt")

    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "absent.pt")


def test_the_former_module_name_still_imports():
    """Scripts of earlier releases import ``attnseg.models.checkpoint`` (field case 13 does)."""
    from attnseg.models import checkpoint, model_file

    assert checkpoint.read_model_file is model_file.read_model_file
    assert checkpoint.save_model is model_file.save_model
