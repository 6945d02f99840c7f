"""DeBERTa-v2/v3: parity with transformers' PyTorch model, packed rows, save/load, bf16, training."""

from __future__ import annotations

import json
import logging
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from hf_reference import Batch, flax_logits, padded_batch, randomize_, torch_logits

from flaxtrainer.models import (
    DebertaV2Config,
    DebertaV2ForTokenClassification,
    ModelLoadError,
    family_for,
    from_pretrained,
    read_config,
    save_pretrained,
    segment_position_ids,
)
from flaxtrainer.models.families.deberta_v2_attention import log_bucket_position

ATOL = 1e-5
LABELS = {0: "O", 1: "B-PER", 2: "I-PER"}
TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    vocab_size=99,
    max_position_embeddings=64,
    id2label=LABELS,
    label2id={v: k for k, v in LABELS.items()},
)
# The v3 recipe (deberta-v3-*, mdeberta-v3-base) with few buckets, so that distances in a 9-token
# row reach the logarithmic buckets.
V3 = dict(
    relative_attention=True,
    pos_att_type="p2c|c2p",
    position_buckets=8,
    max_relative_positions=-1,
    share_att_key=True,
    norm_rel_ebd="layer_norm",
    position_biased_input=False,
    type_vocab_size=0,
)
CONFIGS = {
    "v3": V3,
    "v3-256-buckets": {**V3, "position_buckets": 256, "pos_att_type": ["p2c", "c2p"]},
    # v2-xlarge style: convolution after layer 0; plus the other supported switches.
    "v2-conv": {
        **V3,
        "conv_kernel_size": 3,
        "conv_act": "gelu",
        "share_att_key": False,
        "type_vocab_size": 2,
        "embedding_size": 24,
        "attention_head_size": 8,
    },
    # transformers still scales by sqrt(3 * head_dim) for the listed (unused) terms.
    "no-relative-attention": {**V3, "relative_attention": False, "norm_rel_ebd": "none"},
    "c2p-only-no-buckets": {
        **V3,
        "pos_att_type": ["c2p"],
        "position_buckets": -1,
        "max_relative_positions": 6,
        "share_att_key": False,
        "norm_rel_ebd": "none",
    },
}


def hf_config(name: str, **overrides):
    from transformers import DebertaV2Config as HFConfig

    return HFConfig(**{**TINY, **CONFIGS[name], **overrides})


def make_checkpoint(path, name: str, head: str = "token", **overrides):
    import torch
    from transformers import DebertaV2ForTokenClassification as HFToken
    from transformers import DebertaV2Model

    config = hf_config(name, **overrides)
    torch.manual_seed(0)
    model = randomize_((HFToken if head == "token" else DebertaV2Model)(config))
    model.save_pretrained(path)
    return model, config


def batch_for(config) -> Batch:
    """hf_reference's padded batch (lengths 9 / 5 / 2); all-zero token types without a table."""
    vocab = max(config.type_vocab_size, 1)
    return padded_batch(
        types.SimpleNamespace(pad_token_id=config.pad_token_id, type_vocab_size=vocab)
    )


@pytest.mark.parametrize(("bucket_size", "max_position"), [(256, 512), (8, 64), (32, 128), (4, 9)])
def test_log_buckets_match_transformers(bucket_size, max_position):
    import torch
    from transformers.models.deberta_v2.modeling_deberta_v2 import make_log_bucket_position

    relative = np.arange(-2048, 2049)
    expected = make_log_bucket_position(torch.tensor(relative), bucket_size, max_position).long()
    got = np.asarray(
        log_bucket_position(jnp.asarray(relative, jnp.int32), bucket_size, max_position)
    )
    np.testing.assert_array_equal(got, expected.numpy())
    assert len(np.unique(got)) < len(relative) // 2  # far distances really share buckets


@pytest.mark.parametrize("name", list(CONFIGS))
def test_parity_save_and_pytorch_reload(name, tmp_path, caplog):
    from transformers import AutoModelForTokenClassification

    torch_model, config = make_checkpoint(tmp_path / "hf", name)
    batch = batch_for(config)
    reference = torch_logits(torch_model, batch, "deberta-v2")

    with caplog.at_level(logging.INFO, logger="flaxtrainer"):
        model = from_pretrained(tmp_path / "hf")
    assert not [r for r in caplog.records if "new classifier" in r.getMessage()]
    assert isinstance(model, DebertaV2ForTokenClassification)
    assert model.config.pos_att_type == tuple(config.pos_att_type)
    logits = flax_logits(model, batch)
    assert logits.shape == (3, 9, 3) and logits.dtype == np.float32
    diff = np.abs(logits - reference)[batch.real].max()
    assert diff < ATOL, diff
    assert np.abs(reference).max() > 0.1

    out = save_pretrained(model, tmp_path / "saved")
    saved = json.loads((out / "config.json").read_text())
    assert saved["architectures"] == ["DebertaV2ForTokenClassification"]
    for key in ("position_buckets", "share_att_key", "norm_rel_ebd", "conv_kernel_size"):
        assert saved[key] == getattr(config, key, saved[key])
    assert ("embedding_size" in saved) == ("embedding_size" in CONFIGS[name])
    reloaded, info = AutoModelForTokenClassification.from_pretrained(out, output_loading_info=True)
    assert type(reloaded).__name__ == "DebertaV2ForTokenClassification"
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not info["mismatched_keys"] and not info["error_msgs"]
    again = torch_logits(reloaded.eval(), batch, "deberta-v2")
    assert np.abs(again - reference)[batch.real].max() < ATOL
    np.testing.assert_allclose(flax_logits(from_pretrained(out), batch), logits, atol=1e-6)


def test_weight_table_is_a_bijection_over_parameters():
    family = family_for("deberta-v2")
    for name in CONFIGS:
        config = DebertaV2Config.from_hf_dict(hf_config(name).to_dict())
        assert DebertaV2Config.from_hf_dict(config.to_hf_dict()) == config
        model = nnx.eval_shape(
            lambda c=config: DebertaV2ForTokenClassification(c, rngs=nnx.Rngs(0))
        )
        paths = [
            ".".join(map(str, p)) for p, n in nnx.iter_graph(model) if isinstance(n, nnx.Param)
        ]
        keys = [family.weights.to_hf(p)[0] for p in paths]
        assert len(set(keys)) == len(paths)
        assert all(family.weights.to_nnx(k)[0] == p for k, p in zip(keys, paths))


# The architecture keys of the released checkpoints' config.json (as published on the hub).
DEBERTA_V3_BASE = dict(
    model_type="deberta-v2",
    attention_probs_dropout_prob=0.1,
    hidden_act="gelu",
    hidden_dropout_prob=0.1,
    hidden_size=768,
    initializer_range=0.02,
    intermediate_size=3072,
    max_position_embeddings=512,
    relative_attention=True,
    position_buckets=256,
    norm_rel_ebd="layer_norm",
    share_att_key=True,
    pos_att_type="p2c|c2p",
    layer_norm_eps=1e-7,
    max_relative_positions=-1,
    position_biased_input=False,
    num_attention_heads=12,
    num_hidden_layers=12,
    type_vocab_size=0,
    vocab_size=128100,
)
RELEASED = {
    "deberta-v3-base": DEBERTA_V3_BASE,
    "mdeberta-v3-base": {**DEBERTA_V3_BASE, "vocab_size": 251000},
    "deberta-v3-large": {
        **DEBERTA_V3_BASE,
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_attention_heads": 16,
        "num_hidden_layers": 24,
    },
    "deberta-v2-xlarge": {
        **DEBERTA_V3_BASE,
        "attention_head_size": 64,
        "conv_act": "gelu",
        "conv_kernel_size": 3,
        "hidden_size": 1536,
        "intermediate_size": 6144,
        "num_attention_heads": 24,
        "num_hidden_layers": 24,
        "pos_att_type": ["p2c", "c2p"],
        "pooler_hidden_size": 1536,
    },
}


@pytest.mark.parametrize("name", list(RELEASED))
def test_released_configs_have_the_pytorch_state_dict(name):
    """Every tensor of transformers' model for the real config, with its shape, and no other
    (built abstractly on both sides: nothing is allocated)."""
    import torch
    from transformers import DebertaV2Config as HFConfig
    from transformers import DebertaV2ForTokenClassification as HFToken

    data = RELEASED[name]
    config = DebertaV2Config.from_hf_dict({**data, "num_labels": 9})
    model = nnx.eval_shape(lambda: DebertaV2ForTokenClassification(config, rngs=nnx.Rngs(0)))
    table = family_for("deberta-v2").weights
    ours = {}
    for path, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Param):
            key, transform = table.to_hf(".".join(map(str, path)))
            ours[key] = tuple(transform.nnx_shape(tuple(node.get_value().shape)))
    with torch.device("meta"):
        reference = HFToken(
            HFConfig(**{k: v for k, v in data.items() if k != "model_type"}, num_labels=9)
        )
    expected = {key: tuple(t.shape) for key, t in reference.state_dict().items()}
    assert ours == expected


@pytest.mark.parametrize("name", ["v3", "v2-conv"])
def test_packed_row_equals_separate_sentences(name, tmp_path):
    make_checkpoint(tmp_path, name)
    model = from_pretrained(tmp_path)
    rng = np.random.default_rng(1)
    sentences = [rng.integers(3, 99, n) for n in (7, 2, 6)]  # 7 and 6 reach the log buckets
    ids = np.concatenate([*sentences, [0, 0, 0]])[None].astype(np.int32)
    mask = np.repeat([1, 2, 3, 0], [7, 2, 6, 3])[None].astype(np.int32)
    alone = [np.asarray(model(s[None].astype(np.int32)))[0] for s in sentences]
    starts = np.cumsum([0, 7, 2])

    def check(logits):
        for start, expected in zip(starts, alone):
            got = logits[0, start : start + len(expected)]
            assert np.abs(got - expected).max() < ATOL, np.abs(got - expected).max()

    check(np.asarray(model(ids, mask, position_ids=segment_position_ids(jnp.asarray(mask)))))
    # Relative positions only depend on differences: row indices as positions agree too.
    check(np.asarray(model(ids, mask)))
    # Sanity: without segment ids the later sentences see the earlier ones and change.
    naive = np.asarray(model(ids, (mask != 0).astype(np.int32)))
    assert np.abs(naive[0, 9:15] - alone[2]).max() > 1e-2


def test_checkpoint_extras_are_ignored_and_shards_load(tmp_path, caplog):
    """Original DeBERTa checkpoints carry an unused absolute-position table and MLM/RTD heads."""
    from safetensors.numpy import load_file, save_file

    torch_model, config = make_checkpoint(tmp_path / "hf", "v3")
    tensors = load_file(str(tmp_path / "hf" / "model.safetensors"))
    tensors["deberta.embeddings.position_embeddings.weight"] = np.ones((64, 32), np.float32)
    tensors["mask_predictions.dense.weight"] = np.ones((32, 32), np.float32)
    save_file(tensors, str(tmp_path / "hf" / "model.safetensors"), metadata={"format": "pt"})
    batch = batch_for(config)
    reference = torch_logits(torch_model, batch, "deberta-v2")
    with caplog.at_level(logging.DEBUG, logger="flaxtrainer"):
        logits = flax_logits(from_pretrained(tmp_path / "hf"), batch)
    assert np.abs(logits - reference)[batch.real].max() < ATOL
    assert any("ignored 2 tensors" in r.getMessage() for r in caplog.records)

    torch_model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert len(list((tmp_path / "sharded").glob("model-*.safetensors"))) > 1
    logits = flax_logits(from_pretrained(tmp_path / "sharded"), batch)
    assert np.abs(logits - reference)[batch.real].max() < ATOL


def test_base_model_checkpoint_gets_a_new_head(tmp_path, caplog):
    import torch

    torch_model, config = make_checkpoint(tmp_path, "v3", head="base")
    with caplog.at_level(logging.INFO, logger="flaxtrainer"):
        model = from_pretrained(tmp_path, id2label={0: "O", 1: "B-LOC"})
    assert any("no token-classification head" in r.getMessage() for r in caplog.records)
    assert model.config.num_labels == 2
    batch = batch_for(config)
    with torch.no_grad():
        kwargs = batch.torch_kwargs(with_token_types=False)
        expected = torch_model(**kwargs).last_hidden_state.numpy()
    hidden = np.asarray(model.encoder(batch.input_ids, batch.attention_mask))
    assert np.abs(hidden - expected)[batch.real].max() < ATOL


def test_unsupported_options_are_listed_in_one_error(tmp_path):
    config = hf_config("v3").to_dict()
    config.update(
        position_biased_input=True,
        pos_att_type="p2c|p2p",
        norm_rel_ebd="batch_norm",
        conv_kernel_size=3,
        conv_groups=2,
        hidden_act="mish",
        attention_head_size=6,
    )
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError) as error:
        read_config(tmp_path)
    message = str(error.value)
    assert message.startswith(str(tmp_path / "config.json"))
    for part in (
        "hidden_act='mish' is not supported",
        "pos_att_type ['p2p'] is not supported",
        "norm_rel_ebd='batch_norm' is not supported",
        "position_biased_input=true (absolute position embeddings) is not supported",
        "conv_groups=2: only 1 is supported",
        "attention_head_size=6: only hidden_size / num_attention_heads = 8 is supported",
    ):
        assert part in message, message
    # transformers' defaults (absolute positions on) are refused too, not silently changed.
    del config["position_biased_input"]
    config.update(
        pos_att_type=["c2p"],
        norm_rel_ebd="none",
        conv_groups=1,
        hidden_act="gelu",
        attention_head_size=8,
    )
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="position_biased_input=true"):
        read_config(tmp_path)


def test_bfloat16_compute_stays_close(tmp_path):
    make_checkpoint(tmp_path, "v3")
    config = hf_config("v3")
    batch = batch_for(config)
    reference = flax_logits(from_pretrained(tmp_path), batch)
    model = from_pretrained(tmp_path, dtype=jnp.bfloat16)
    params = jax.tree.leaves(nnx.state(model, nnx.Param))
    assert params and all(p.dtype == jnp.float32 for p in params)
    assert model.encoder(batch.input_ids, batch.attention_mask).dtype == jnp.bfloat16
    logits = flax_logits(model, batch)
    assert logits.dtype == np.float32 and np.isfinite(logits).all()
    error = np.abs(logits - reference)[batch.real]
    assert error.max() < 0.15 and error.mean() < 0.05, (error.max(), error.mean())
    assert error.max() > 0  # bf16 really ran


def tiny_model(dropout: float = 0.1, seed: int = 0) -> DebertaV2ForTokenClassification:
    config = DebertaV2Config.from_hf_dict(
        hf_config("v3", hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout).to_dict()
    )
    return DebertaV2ForTokenClassification(config, rngs=nnx.Rngs(seed))


def test_dropout_follows_the_call_rngs_under_jit():
    model = tiny_model()
    ids = np.arange(3, 21, dtype=np.int32).reshape(2, 9)
    mask = np.ones_like(ids)

    @nnx.jit
    def run(model, key):
        return model(ids, mask, deterministic=False, rngs=nnx.Rngs(dropout=key))

    evaluated = np.asarray(model(ids, mask))
    a, b = np.asarray(run(model, jax.random.key(1))), np.asarray(run(model, jax.random.key(2)))
    assert np.abs(a - evaluated).max() > 1e-3 and np.abs(a - b).max() > 1e-3
    np.testing.assert_array_equal(np.asarray(run(model, jax.random.key(1))), a)


class _Task:
    """The Task contract, minimal: each token's label is its id mod 3."""

    model_input_names = ("input_ids", "attention_mask")
    num_labels = 3
    id2label = LABELS
    max_seq_length = 16

    def prepare(self, dataset):
        return [
            {
                "input_ids": np.asarray(ids, np.int32),
                "attention_mask": np.ones(len(ids), np.int32),
                "labels": (np.asarray(ids) % 3).astype(np.int32),
            }
            for ids in dataset
        ]

    def loss(self, logits, labels):
        keep = labels != -100
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(keep, labels, 0))
        return jnp.sum(jnp.where(keep, losses, 0.0)), jnp.sum(keep)

    def predict_step(self, logits):
        return {"predictions": jnp.argmax(logits, -1)}

    def compute_metrics(self, dataset, features, outputs):
        return {}

    def decode(self, dataset, features, outputs):
        return [[LABELS[int(p)] for p in out["predictions"]] for out in outputs]


def test_flaxtrainer_steps_a_tiny_deberta(tmp_path):
    from flaxtrainer import FlaxTrainer, TrainingArguments

    rng = np.random.default_rng(0)
    data = [rng.integers(3, 99, int(n)).tolist() for n in rng.integers(3, 15, 32)]
    model = tiny_model(dropout=0.1)
    before = [np.asarray(x).copy() for x in jax.tree.leaves(nnx.state(model, nnx.Param))]
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        learning_rate=1e-2,
        max_steps=3,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )
    trainer = FlaxTrainer(model, _Task(), args, train_dataset=data, devices=jax.devices()[:1])
    out = trainer.train()
    assert trainer.packing  # the DeBERTa model takes segment ids and position ids
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert out.global_step == 3 and len(losses) == 3 and np.isfinite(losses).all()
    assert losses[-1] < losses[0], losses
    after = jax.tree.leaves(nnx.state(trainer.model, nnx.Param))
    changed = [not np.allclose(a, np.asarray(b)) for a, b in zip(before, after)]
    assert all(changed), f"{sum(changed)}/{len(changed)} parameters changed"
