"""The weight tables map every parameter both ways; configs round-trip through config.json."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from flax import nnx

from flaxtrainer.models import (
    BertConfig,
    DistilBertConfig,
    ElectraConfig,
    RobertaConfig,
    family_for,
    from_pretrained,
    save_pretrained,
)
from flaxtrainer.models.hf_weights import export_weights

TINY = {
    "bert": BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        vocab_size=50,
        max_position_embeddings=16,
    ),
    "xlm-roberta": RobertaConfig(
        model_type="xlm-roberta",
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        vocab_size=50,
        max_position_embeddings=16,
        type_vocab_size=1,
    ),
    "distilbert": DistilBertConfig(
        dim=32, n_layers=2, n_heads=4, hidden_dim=37, vocab_size=50, max_position_embeddings=16
    ),
    "electra": ElectraConfig(
        embedding_size=16,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        vocab_size=50,
        max_position_embeddings=16,
    ),
}


def _build(config):
    family = family_for(config.model_type)
    return family, family.model_cls(config, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("model_type", TINY)
def test_table_is_a_bijection_over_parameters(model_type):
    family, model = _build(TINY[model_type])
    tensors = export_weights(model, family.weights)
    n_params = len(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    assert len(tensors) == n_params
    prefix = family.weights.prefix
    for key in tensors:
        path, _, is_head = family.weights.to_nnx(key)
        assert family.weights.to_hf(path)[0] == key
        assert is_head == key.startswith("classifier.")
        if not is_head:
            assert key.startswith(prefix)
            assert family.weights.to_nnx(key[len(prefix) :])[0] == path  # unprefixed export
    assert family.weights.to_nnx(f"{prefix}pooler.dense.weight") is None
    assert family.weights.to_nnx("lm_head.dense.weight") is None


def test_linear_weights_are_stored_in_pytorch_layout():
    family, model = _build(TINY["bert"])
    tensors = export_weights(model, family.weights)
    kernel = np.asarray(model.encoder.layers[0].intermediate.kernel[...])
    assert kernel.shape == (32, 37)
    np.testing.assert_array_equal(
        tensors["bert.encoder.layer.0.intermediate.dense.weight"], kernel.T
    )
    assert all(t.dtype == np.float32 for t in tensors.values())


def test_position_offset_and_max_length():
    assert (TINY["bert"].position_offset, TINY["bert"].max_length) == (0, 16)
    assert (TINY["xlm-roberta"].position_offset, TINY["xlm-roberta"].max_length) == (2, 14)
    assert (TINY["distilbert"].position_offset, TINY["distilbert"].max_length) == (0, 16)


def test_legacy_layer_norm_names_load():
    table = family_for("bert").weights
    assert (
        table.to_nnx("bert.embeddings.LayerNorm.gamma")[0] == "encoder.embeddings.layer_norm.scale"
    )
    assert table.to_nnx("bert.embeddings.LayerNorm.beta")[0] == "encoder.embeddings.layer_norm.bias"


@pytest.mark.parametrize("model_type", TINY)
def test_config_round_trips_through_hf_dict(model_type):
    config = dataclasses.replace(TINY[model_type], labels=("O", "B-X", "I-X"))
    hf = json.loads(json.dumps(config.to_hf_dict()))
    assert hf["model_type"] == model_type and hf["id2label"] == {"0": "O", "1": "B-X", "2": "I-X"}
    again = type(config).from_hf_dict(hf)
    assert again == config and hash(again) == hash(config)


def test_save_pretrained_saves_tokenizer_and_reloads(tmp_path):
    _, model = _build(TINY["electra"])
    saved = []

    class FakeTokenizer:
        def save_pretrained(self, directory):
            saved.append(directory)

    save_pretrained(model, tmp_path / "out", tokenizer=FakeTokenizer())
    assert saved == [str(tmp_path / "out")]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    reloaded = from_pretrained(tmp_path / "out")
    ids = np.array([[3, 4, 5, 6]])
    np.testing.assert_allclose(np.asarray(reloaded(ids)), np.asarray(model(ids)), atol=1e-6)
