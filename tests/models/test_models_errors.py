"""Unusable folders, configs and checkpoints give one clear error naming the file."""

from __future__ import annotations

import json
import re

import pytest

from flaxtrainer.models import ModelLoadError, from_pretrained, load_config


def _edit_config(path, **changes):
    config_file = path / "config.json"
    config = json.loads(config_file.read_text())
    config.update(changes)
    config_file.write_text(json.dumps(config))


def test_folder_without_config(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match=re.escape(f"{tmp_path}: no config.json")):
        from_pretrained(tmp_path)


def test_missing_local_folder(tmp_path):
    with pytest.raises(ModelLoadError, match="no such folder"):
        from_pretrained(tmp_path / "nope")
    with pytest.raises(ModelLoadError, match="is a file"):
        (tmp_path / "file.txt").write_text("x")
        from_pretrained(tmp_path / "file.txt")


def test_invalid_config_json_names_the_line(tmp_path):
    (tmp_path / "config.json").write_text('{\n  "model_type": "bert",\n  "hidden_size": ,\n}')
    with pytest.raises(ModelLoadError, match=r"config\.json: invalid JSON at line 3"):
        load_config(tmp_path)


def test_unsupported_model_type_lists_supported(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    expected = "model_type 'gpt2' is not supported; supported model types: bert, camembert, deberta-v2, distilbert, electra, modernbert, roberta, xlm-roberta"
    with pytest.raises(ModelLoadError, match=re.escape(expected)):
        from_pretrained(tmp_path)


def test_invalid_hyperparameters_are_listed(make_checkpoint):
    ckpt = make_checkpoint("bert")
    _edit_config(ckpt.path, hidden_size="32", hidden_act="mish", num_attention_heads=5)
    with pytest.raises(ModelLoadError, match=r"config\.json: invalid values: hidden_size='32'"):
        from_pretrained(ckpt.path)
    _edit_config(ckpt.path, hidden_size=32)
    with pytest.raises(
        ModelLoadError,
        match=r"not divisible by num_attention_heads=5; hidden_act='mish' is not supported",
    ):
        from_pretrained(ckpt.path)


def test_pytorch_bin_only_explains_conversion(make_checkpoint):
    ckpt = make_checkpoint("bert")
    (ckpt.path / "model.safetensors").unlink()
    (ckpt.path / "pytorch_model.bin").write_bytes(b"not really")
    with pytest.raises(ModelLoadError) as excinfo:
        from_pretrained(ckpt.path)
    message = str(excinfo.value)
    assert f"{ckpt.path}: no model.safetensors" in message
    assert "only pytorch_model.bin" in message and "reads safetensors weights only" in message
    assert "from transformers import BertForTokenClassification as M" in message
    assert f".save_pretrained('{ckpt.path}')" in message


def test_folder_without_any_weights(make_checkpoint):
    ckpt = make_checkpoint("bert")
    (ckpt.path / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="holds no model weights"):
        from_pretrained(ckpt.path)


def test_all_shape_mismatches_in_one_message(make_checkpoint):
    ckpt = make_checkpoint("bert")
    _edit_config(ckpt.path, intermediate_size=40)
    with pytest.raises(ModelLoadError) as excinfo:
        from_pretrained(ckpt.path)
    message = str(excinfo.value)
    assert message.startswith(f"{ckpt.path / 'model.safetensors'}: 6 problem(s) loading weights")
    for layer in (0, 1):
        assert (
            f"bert.encoder.layer.{layer}.intermediate.dense.weight: checkpoint shape (37, 32), model expects (40, 32)"
            in message
        )
        assert (
            f"bert.encoder.layer.{layer}.intermediate.dense.bias: checkpoint shape (37,)" in message
        )
        assert (
            f"bert.encoder.layer.{layer}.output.dense.weight: checkpoint shape (32, 37), model expects (32, 40)"
            in message
        )


def test_missing_and_surplus_layers_are_reported(make_checkpoint):
    ckpt = make_checkpoint("bert")
    _edit_config(ckpt.path, num_hidden_layers=1)
    with pytest.raises(
        ModelLoadError,
        match=r"bert\.encoder\.layer\.1\.attention\.self\.query\.weight: no such parameter",
    ):
        from_pretrained(ckpt.path)
    _edit_config(ckpt.path, num_hidden_layers=3)
    with pytest.raises(
        ModelLoadError,
        match=r"(?s)16 problem\(s\).*missing tensor bert\.encoder\.layer\.2\.attention\.output\.LayerNorm\.bias",
    ):
        from_pretrained(ckpt.path)


def test_hub_id_while_offline(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(
        ModelLoadError, match=r"'someone/no-such-model': .*offline.*pass a local folder"
    ):
        from_pretrained("someone/no-such-model")


def test_hub_unreachable(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(
        ModelLoadError, match=r"'someone/no-such-model': .*cannot be reached.*pass a local folder"
    ):
        from_pretrained("someone/no-such-model")
