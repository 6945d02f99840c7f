"""Numerical parity with transformers' PyTorch models, and round trips through save_pretrained."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from hf_reference import MODEL_TYPES, flax_logits, padded_batch, torch_logits

from flaxtrainer.models import EncoderForTokenClassification, from_pretrained, save_pretrained

ATOL = 1e-4


def _head_log_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "new classifier" in r.getMessage()]


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_token_classification_parity_and_round_trip(model_type, make_checkpoint, tmp_path, caplog):
    from transformers import AutoModelForTokenClassification

    ckpt = make_checkpoint(model_type)
    batch = padded_batch(ckpt.hf_config)
    reference = torch_logits(ckpt.torch_model, batch, model_type)

    with caplog.at_level(logging.INFO, logger="flaxtrainer"):
        model = from_pretrained(ckpt.path)
    assert isinstance(model, EncoderForTokenClassification)
    assert _head_log_lines(caplog) == []  # the checkpoint's head is used
    assert model.config.model_type == model_type
    assert model.config.id2label == {0: "O", 1: "B-PER", 2: "I-PER"}
    logits = flax_logits(model, batch)
    assert logits.shape == (*batch.input_ids.shape, 3) and logits.dtype == np.float32
    assert np.abs(logits - reference)[batch.real].max() < ATOL
    assert np.abs(reference).max() > 0.1  # the comparison is not between near-zero outputs

    out = save_pretrained(model, tmp_path / "saved")
    config = json.loads((out / "config.json").read_text())
    # The weights get the mode of every other output (safetensors alone would make them 0600).
    mode = (out / "model.safetensors").stat().st_mode & 0o777
    assert mode == (out / "config.json").stat().st_mode & 0o777 and mode & 0o044
    assert config["model_type"] == model_type
    assert config["architectures"] == [type(ckpt.torch_model).__name__]
    assert config["id2label"] == {"0": "O", "1": "B-PER", "2": "I-PER"}

    reloaded, info = AutoModelForTokenClassification.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not info["mismatched_keys"] and not info["error_msgs"]
    assert (
        np.abs(torch_logits(reloaded.eval(), batch, model_type) - reference)[batch.real].max()
        < ATOL
    )

    again = flax_logits(from_pretrained(out), batch)
    np.testing.assert_allclose(again, logits, atol=1e-6)


@pytest.mark.parametrize(
    ("model_type", "head"), [("bert", "base"), ("roberta", "base"), ("distilbert", "mlm")]
)
def test_base_checkpoint_gets_new_head_and_one_log_line(model_type, head, make_checkpoint, caplog):
    ckpt = make_checkpoint(model_type, head=head)
    keys = _checkpoint_keys(ckpt.path)
    prefix = {"bert": "bert.", "roberta": "roberta.", "distilbert": "distilbert."}[model_type]
    # AutoModel saves unprefixed keys, the MLM model prefixed ones plus an unused LM head.
    assert any(k.startswith(prefix) for k in keys) == (head == "mlm")

    with caplog.at_level(logging.DEBUG, logger="flaxtrainer"):
        model = from_pretrained(ckpt.path, id2label={0: "O", 1: "B-LOC"})
    lines = _head_log_lines(caplog)
    assert len(lines) == 1 and "no token-classification head" in lines[0]
    ignored = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert len(ignored) == 1 and ignored[0].endswith(
        "(pooler.*)" if head == "base" else "vocab_transform.*)"
    )
    assert model.config.num_labels == 2
    assert model.classifier.kernel[...].shape == (32, 2)

    # The encoder itself matches the PyTorch encoder.
    batch = padded_batch(ckpt.hf_config)
    encoder = ckpt.torch_model if head == "base" else ckpt.torch_model.base_model
    import torch

    with torch.no_grad():
        expected = encoder(
            **batch.torch_kwargs(model_type != "distilbert")
        ).last_hidden_state.numpy()
    hidden = np.asarray(model.encoder(batch.input_ids, batch.attention_mask, batch.token_type_ids))
    assert np.abs(hidden - expected)[batch.real].max() < ATOL
    assert np.isfinite(flax_logits(model, batch)).all()


def test_sharded_checkpoint_loads(make_checkpoint):
    ckpt = make_checkpoint("bert", save_kwargs={"max_shard_size": "40KB"})
    shards = sorted(p.name for p in ckpt.path.glob("model-*.safetensors"))
    assert len(shards) > 1 and (ckpt.path / "model.safetensors.index.json").is_file()
    assert not (ckpt.path / "model.safetensors").exists()
    batch = padded_batch(ckpt.hf_config)
    logits = flax_logits(from_pretrained(ckpt.path), batch)
    reference = torch_logits(ckpt.torch_model, batch, "bert")
    assert np.abs(logits - reference)[batch.real].max() < ATOL


def _checkpoint_keys(path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path / "model.safetensors"), "np") as f:
        return list(f.keys())
