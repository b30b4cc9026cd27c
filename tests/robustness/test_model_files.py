"""Model files are not a way in: code in a file is never run, and a tampered, truncated or foreign
file (model file, training checkpoint, ONNX) gives a ModelFileError naming it; the CLI prints one
line. Model files and checkpoints load with ``torch.load(weights_only=True)`` and carry a checksum
of their weights (the zip container has none over tensor data)."""

from __future__ import annotations

import json
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest
import torch
from robustness_helpers import assert_clean_error, brain, cli, write_nifti

from attnseg.errors import ModelFileError
from attnseg.inference.predict import load_for_inference
from attnseg.models import AttentionUNet, load_model, read_model_file, save_model
from attnseg.training.checkpointing import load_checkpoint, save_checkpoint


class Payload:
    """Pickles to a call of os.mkdir(marker): if loading ever ran it, the folder would exist."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture
def model():
    torch.manual_seed(0)
    return AttentionUNet(3, 1, 2, (4, 8)).eval()


@pytest.fixture
def checkpoint(tmp_path, model):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = model(torch.randn(1, 1, 8, 8, 8)).mean()
    loss.backward()
    optimizer.step()
    return save_checkpoint(
        tmp_path / "last.pt",
        model,
        run_config={"optim": {"schedule": "poly"}},
        optimizer=optimizer,
        scaler=None,
        epoch=1,
        iteration=4,
        history=[{"epoch": 0, "loss": 0.5}],
        best={"dice": 0.1},
    )


def _member_offset(raw: bytes, path, member: str) -> int:
    """Byte offset of a zip member's data inside the file."""
    info = zipfile.ZipFile(path).getinfo(member)
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
    return info.header_offset + 30 + name_len + extra_len


def _member(path, suffix: str) -> str:
    return next(n for n in zipfile.ZipFile(path).namelist() if n.endswith(suffix))


# --- code is never run -----------------------------------------------------------------------------------
def _evil_files(tmp_path, model, checkpoint, marker):
    evil = {}
    evil["pickle.pt"] = tmp_path / "pickle.pt"
    with open(evil["pickle.pt"], "wb") as handle:  # a plain pickle, torch's legacy format
        pickle.dump({"format": "attnseg.model", "x": Payload(marker)}, handle, protocol=2)
    evil["zip.pt"] = tmp_path / "zip.pt"  # torch's zip format, the payload inside a real model file
    payload = torch.load(save_model(tmp_path / "m.pt", model), weights_only=True)
    payload["model_config"]["hook"] = Payload(marker)
    torch.save(payload, evil["zip.pt"])
    evil["checkpoint.pt"] = tmp_path / "tampered_last.pt"  # a training checkpoint with one more entry
    payload = torch.load(checkpoint, weights_only=True)
    payload["rng"]["python"]["gauss_next"] = Payload(marker)
    torch.save(payload, evil["checkpoint.pt"])
    return evil


def test_code_in_model_files_is_never_run(tmp_path, model, checkpoint, capsys):
    marker = tmp_path / "code_ran"
    for name, path in _evil_files(tmp_path, model, checkpoint, marker).items():
        for load in (read_model_file, load_model, load_checkpoint, load_for_inference):
            with pytest.raises(ModelFileError) as info:
                load(path)
            message = str(info.value)
            assert message.startswith(f"{path}: not a loadable attnseg model file"), (name, message)
            assert "mkdir" in message and "weights_only" not in message  # the reason, not torch's advice
        data = tmp_path / "data"
        write_nifti(data / "a.nii.gz", brain())
        for argv in (
            ("predict", path, data, tmp_path / "pred", "--quiet"),
            ("export", path, tmp_path / "m.onnx"),
        ):
            code, _, err = cli(capsys, *argv)
            assert code == 2
            assert_clean_error(err, str(path), "not a loadable attnseg model file")
        assert not marker.exists(), name


# --- tampered, truncated ------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["model", "checkpoint"])
def test_a_flipped_weight_byte_is_detected(tmp_path, model, checkpoint, which):
    path = save_model(tmp_path / "model.pt", model) if which == "model" else checkpoint
    raw = bytearray(path.read_bytes())
    raw[_member_offset(raw, path, _member(path, "/data/0")) + 3] ^= 0x01  # one bit of one weight
    tampered = tmp_path / "tampered.pt"
    tampered.write_bytes(raw)
    with pytest.raises(ModelFileError, match="tampered.pt: the weights do not match the checksum"):
        load_model(tampered)
    if which == "checkpoint":
        with pytest.raises(ModelFileError, match="checksum"):
            load_checkpoint(tampered)


def test_any_flipped_byte_in_the_pickle_is_an_error_or_harmless(tmp_path, model):
    """Flip each of 60 bytes spread over the pickled structure: every load either raises
    ModelFileError or gives a model that computes exactly what the original does."""
    path = save_model(tmp_path / "model.pt", model)
    raw = bytes(path.read_bytes())
    start = _member_offset(raw, path, _member(path, "data.pkl"))
    size = zipfile.ZipFile(path).getinfo(_member(path, "data.pkl")).file_size
    x = torch.randn(1, 1, 8, 8, 8)
    with torch.no_grad():
        reference = model(x)
    outcomes = {"error": 0, "harmless": 0}
    for offset in np.linspace(0, size - 1, 60).astype(int):
        flipped = bytearray(raw)
        flipped[start + offset] ^= 0x5A
        target = tmp_path / "flipped.pt"
        target.write_bytes(flipped)
        try:
            loaded = load_model(target)
        except ModelFileError as exc:
            assert str(exc).startswith(str(target))
            outcomes["error"] += 1
            continue
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), reference, rtol=0, atol=0)
        outcomes["harmless"] += 1
    assert outcomes["error"] > 30, outcomes


def test_truncated_model_files_and_checkpoints(tmp_path, model, checkpoint, capsys):
    for source in (save_model(tmp_path / "model.pt", model), checkpoint):
        raw = source.read_bytes()
        for keep in (0, 10, len(raw) // 3, len(raw) - 30):
            cut = tmp_path / f"cut_{keep}.pt"
            cut.write_bytes(raw[:keep])
            with pytest.raises(ModelFileError, match=f"cut_{keep}.pt: not a loadable attnseg model file"):
                load_model(cut)
    data = tmp_path / "data"
    write_nifti(data / "a.nii.gz", brain())
    code, _, err = cli(
        capsys, "predict", tmp_path / f"cut_{len(raw) // 3}.pt", data, tmp_path / "pred", "--quiet"
    )
    assert code == 2
    assert_clean_error(err, "not a loadable attnseg model file")


def test_foreign_files_where_a_model_is_expected(tmp_path, model, checkpoint, capsys):
    torch.save(model.state_dict(), tmp_path / "state_dict.pt")  # the usual torch.save(model.state_dict())
    torch.jit.save(torch.jit.script(torch.nn.Conv3d(1, 2, 1)), tmp_path / "scripted.pt")
    (tmp_path / "notes.pt").write_text("not a model")
    cases = {
        "state_dict.pt": "not an attnseg model file (expected a dict with format='attnseg.model')",
        "scripted.pt": "not a loadable attnseg model file (it may be truncated, tampered with, or contain "
        "code objects, which are refused): Cannot use ``weights_only=True`` with TorchScript archives",
        "notes.pt": "not a loadable attnseg model file",
    }
    for name, expected in cases.items():
        with pytest.raises(ModelFileError) as info:
            load_model(tmp_path / name)
        assert str(info.value).startswith(f"{tmp_path / name}: {expected}")
        assert "weights_only` set to `False`" not in str(info.value)
    with pytest.raises(ModelFileError, match="model.pt: a model file, not a training checkpoint"):
        load_checkpoint(save_model(tmp_path / "model.pt", model))
    code, _, err = cli(capsys, "export", tmp_path / "state_dict.pt", tmp_path / "out.onnx")
    assert code == 2
    assert_clean_error(err, "state_dict.pt: not an attnseg model file")
    assert not (tmp_path / "out.onnx").exists()


# --- ONNX -----------------------------------------------------------------------------------------------------
def _onnx_model(metadata: str | None = None, external: str | None = None):
    """A 1x1x1 convolution (1 -> 2 channels) as ONNX, with optional attnseg metadata and an
    initializer stored as external data at ``external``."""
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1, None, None, None])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2, None, None, None])
    weight = numpy_helper.from_array(np.ones((2, 1, 1, 1, 1), np.float32), "w")
    if external is not None:
        weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2, 1, 1, 1, 1])
        weight.data_location = TensorProto.EXTERNAL
        entry = weight.external_data.add()
        entry.key, entry.value = "location", external
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "g", [x], [y], [weight])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if metadata is not None:
        prop = proto.metadata_props.add()
        prop.key, prop.value = "attnseg", metadata
    return proto


GOOD_METADATA = json.dumps(
    {"model_config": {"spatial_dims": 3, "in_channels": 1, "out_channels": 2}, "patch_size": [8, 8, 8]}
)


def test_onnx_files(tmp_path, model, capsys):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    onnx.save(_onnx_model(GOOD_METADATA), tmp_path / "good.onnx")
    loaded = load_for_inference(tmp_path / "good.onnx")  # the reference: a well-formed file works
    np.testing.assert_array_equal(loaded.predictor(np.full((1, 1, 2, 2, 2), 3.0, np.float32)), 3.0)

    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.full(2, 7.0, np.float32).tobytes())
    (tmp_path / "inner").mkdir()
    files = {
        "foreign.onnx": (_onnx_model(), "no 'attnseg' metadata; export it with `attnseg export`"),
        "bad_json.onnx": (_onnx_model("{model_config"), "its 'attnseg' metadata is not valid JSON"),
        "no_config.onnx": (_onnx_model("{}"), "its 'attnseg' metadata has no model_config"),
        "wrong_patch.onnx": (
            _onnx_model(GOOD_METADATA.replace("[8, 8, 8]", "[8, 8]")),
            "patch_size [8, 8] does not fit a 3D model",
        ),
        "inner/escape.onnx": (_onnx_model(GOOD_METADATA, external="../secret.bin"), "External data path"),
        "absolute.onnx": (_onnx_model(GOOD_METADATA, external=str(secret)), "External data path"),
    }
    for name, (proto, _) in files.items():
        onnx.save(proto, tmp_path / name)
    raw = (tmp_path / "good.onnx").read_bytes()
    (tmp_path / "truncated.onnx").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "empty.onnx").write_bytes(b"")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "torch_file.onnx")
    files["truncated.onnx"] = (None, "not a readable ONNX file")
    files["empty.onnx"] = (None, "not an ONNX model (no graph; the file has 0 bytes)")
    files["torch_file.onnx"] = (None, "not a readable ONNX file")
    for name, (_, expected) in files.items():
        with pytest.raises(ModelFileError) as info:
            load_for_inference(tmp_path / name)
        assert str(info.value).startswith(str(tmp_path / name)) and expected in str(info.value), str(
            info.value
        )

    # an ONNX file where a .pt is expected and the other way round
    (tmp_path / "renamed.pt").write_bytes(raw)
    with pytest.raises(ModelFileError, match="renamed.pt: not a loadable attnseg model file"):
        load_for_inference(tmp_path / "renamed.pt")
    data = tmp_path / "data"
    write_nifti(data / "a.nii.gz", brain())
    code, _, err = cli(
        capsys, "predict", tmp_path / "inner" / "escape.onnx", data, tmp_path / "pred", "--quiet"
    )
    assert code == 2
    assert_clean_error(err, "escape.onnx: onnxruntime cannot load it", "External data path")
