"""ModernBERT: parity with transformers' PyTorch model, packing, checkpoints, config, training."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from flax import nnx
from hf_reference import randomize_

from flaxtrainer.models import (
    ModelLoadError,
    ModernBertConfig,
    ModernBertForTokenClassification,
    from_pretrained,
    read_config,
    save_pretrained,
    segment_position_ids,
)

ATOL = 1e-5
SEQ, LENGTHS, VOCAB = 16, (16, 11, 3), 99
LABELS = {0: "O", 1: "B-PER", 2: "I-PER"}
# Layers 0 and 2 global, layer 1 local with a window of +-2 tokens: it bites on 16 tokens.
HF_KWARGS = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=48,
    num_hidden_layers=3,
    num_attention_heads=4,
    global_attn_every_n_layers=2,
    local_attention=4,
    max_position_embeddings=64,
    global_rope_theta=1000.0,
    local_rope_theta=100.0,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    cls_token_id=1,
    sep_token_id=2,
    id2label=LABELS,
    label2id={v: k for k, v in LABELS.items()},
)


def _hf_config(**overrides):
    from transformers import ModernBertConfig as HFConfig

    return HFConfig(**{**HF_KWARGS, **overrides}, attn_implementation="eager")


@pytest.fixture
def make_checkpoint(tmp_path):
    """`make(head="token"|"mlm", **config_overrides)` -> (folder, torch model)."""

    def make(head: str = "token", **overrides):
        import torch
        from transformers import ModernBertForMaskedLM, ModernBertForTokenClassification

        cls = ModernBertForTokenClassification if head == "token" else ModernBertForMaskedLM
        torch.manual_seed(0)
        model = randomize_(cls(_hf_config(**overrides)))
        path = tmp_path / f"modernbert-{head}-{len(list(tmp_path.iterdir()))}"
        model.save_pretrained(path)
        return path, model

    return make


def _padded_batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = (np.arange(SEQ)[None, :] < np.array(LENGTHS)[:, None]).astype(np.int32)
    ids = np.where(mask == 1, rng.integers(3, VOCAB, (len(LENGTHS), SEQ)), 0)
    return ids.astype(np.int32), mask


def _torch_logits(model, ids, mask) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids).long(), attention_mask=torch.tensor(mask).long())
    return out.logits.numpy()


@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "bias"])
def test_logits_match_pytorch_with_padding(bias, make_checkpoint):
    import torch

    path, torch_model = make_checkpoint(
        norm_bias=bias, attention_bias=bias, mlp_bias=bias, classifier_bias=bias
    )
    ids, mask = _padded_batch()
    reference = _torch_logits(torch_model, ids, mask)
    model = from_pretrained(path)
    assert isinstance(model, ModernBertForTokenClassification)
    assert model.config.layer_types == ("full_attention", "sliding_attention", "full_attention")
    assert model.encoder.layers[0].attn_norm is None  # Identity in Hugging Face
    logits = np.asarray(model(ids, mask))
    real = mask == 1
    # Relative as well as absolute: logits reach ~5 here, and fp32 kernels that sum in another
    # order (XLA's vs PyTorch's, per CPU) differ by a few ulps of that (1.1e-5 seen on AMD EPYC).
    np.testing.assert_allclose(logits[real], reference[real], rtol=1e-5, atol=ATOL)
    assert np.abs(reference).max() > 0.1
    assert np.isfinite(logits).all()

    with torch.no_grad():
        hidden = torch_model.model(
            input_ids=torch.tensor(ids).long(), attention_mask=torch.tensor(mask).long()
        ).last_hidden_state.numpy()
    assert np.abs(np.asarray(model.encoder(ids, mask)) - hidden)[real].max() < ATOL


def test_local_window_changes_the_logits(make_checkpoint, tmp_path):
    """The window bites at this length (so the parity above pins its width)."""
    path, _ = make_checkpoint()
    ids, mask = _padded_batch()
    narrow = np.asarray(from_pretrained(path)(ids, mask))
    config = json.loads((path / "config.json").read_text())
    config["local_attention"] = 2 * SEQ
    (path / "config.json").write_text(json.dumps(config))
    wide = np.asarray(from_pretrained(path)(ids, mask))
    assert np.abs(narrow - wide)[0].max() > 1e-3  # the 16-token row
    np.testing.assert_allclose(narrow[2, :3], wide[2, :3], atol=ATOL)  # 3 tokens: inside


def test_packed_row_matches_sentences_run_separately(make_checkpoint):
    path, _ = make_checkpoint()
    model = from_pretrained(path)
    lengths = (5, 7, 4)
    rng = np.random.default_rng(1)
    sentences = [rng.integers(3, VOCAB, n).astype(np.int32) for n in lengths]

    packed_mask = np.concatenate([np.full(n, i + 1, np.int32) for i, n in enumerate(lengths)])
    packed_ids = np.concatenate(sentences)[None]
    positions = segment_position_ids(packed_mask[None])
    assert np.asarray(positions)[0, 5:8].tolist() == [0, 1, 2]  # rotary positions restart
    packed = np.asarray(model(packed_ids, packed_mask[None], position_ids=positions))[0]

    ids = np.zeros((len(lengths), SEQ), np.int32)
    mask = np.zeros((len(lengths), SEQ), np.int32)
    for row, sentence in enumerate(sentences):
        ids[row, : len(sentence)], mask[row, : len(sentence)] = sentence, 1
    separate = np.asarray(model(ids, mask))
    start = 0
    for row, n in enumerate(lengths):
        assert np.abs(packed[start : start + n] - separate[row, :n]).max() < ATOL
        start += n
    # Rotary attention depends on position differences only, so positions counted over the
    # whole row give the same result; the segment mask is what keeps sentences apart.
    unrestarted = np.asarray(model(packed_ids, packed_mask[None]))[0]
    assert np.abs(unrestarted[5:12] - separate[1, :7]).max() < ATOL
    one_segment = np.asarray(model(packed_ids, np.ones_like(packed_mask)[None]))[0]
    assert np.abs(one_segment[5:12] - separate[1, :7]).max() > 1e-3


def test_save_pretrained_loads_in_pytorch(make_checkpoint, tmp_path):
    from transformers import AutoModelForTokenClassification

    path, torch_model = make_checkpoint()
    ids, mask = _padded_batch(seed=2)
    reference = _torch_logits(torch_model, ids, mask)
    model = from_pretrained(path)
    out = save_pretrained(model, tmp_path / "saved")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["ModernBertForTokenClassification"]
    assert config["layer_types"] == ["full_attention", "sliding_attention", "full_attention"]

    reloaded, info = AutoModelForTokenClassification.from_pretrained(
        out, output_loading_info=True, attn_implementation="eager"
    )
    assert type(reloaded).__name__ == "ModernBertForTokenClassification"
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not info["mismatched_keys"] and not info["error_msgs"]
    assert reloaded.config.layer_types == torch_model.config.layer_types
    assert reloaded.config.rope_parameters == torch_model.config.rope_parameters
    assert reloaded.config.sliding_window == torch_model.config.sliding_window
    real = mask == 1
    assert np.abs(_torch_logits(reloaded.eval(), ids, mask) - reference)[real].max() < ATOL
    np.testing.assert_array_equal(
        np.asarray(from_pretrained(out)(ids, mask)), np.asarray(model(ids, mask))
    )


def test_masked_lm_checkpoint_keeps_its_prediction_head(make_checkpoint, caplog):
    """As in transformers: head.dense / head.norm come from the MLM checkpoint, the classifier
    is new."""
    import torch

    path, torch_model = make_checkpoint(head="mlm")
    with caplog.at_level(logging.INFO, logger="flaxtrainer"):
        model = from_pretrained(path, id2label={0: "O", 1: "B-LOC"})
    lines = [r.getMessage() for r in caplog.records if "new classifier" in r.getMessage()]
    assert len(lines) == 1 and "no token-classification head" in lines[0]
    np.testing.assert_array_equal(
        np.asarray(model.head.dense.kernel[...]), torch_model.head.dense.weight.detach().numpy().T
    )
    ids, mask = _padded_batch()
    with torch.no_grad():
        expected = torch_model.head(
            torch_model.model(
                input_ids=torch.tensor(ids).long(), attention_mask=torch.tensor(mask).long()
            ).last_hidden_state
        ).numpy()
    got = np.asarray(model.head(model.encoder(ids, mask)))
    assert np.abs(got - expected)[mask == 1].max() < ATOL
    assert model.classifier.kernel[...].shape == (64, 2)


HUB_STYLE = {  # the keys of answerdotai/ModernBERT-base's config.json (transformers 4.x)
    "model_type": "modernbert",
    "architectures": ["ModernBertForMaskedLM"],
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_hidden_layers": 7,
    "num_attention_heads": 2,
    "global_attn_every_n_layers": 3,
    "global_rope_theta": 160000.0,
    "local_rope_theta": 10000.0,
    "local_attention": 128,
    "hidden_activation": "gelu",
    "classifier_pooling": "mean",
    "position_embedding_type": "absolute",
    "norm_bias": False,
    "pad_token_id": 50283,
}


def test_config_reads_hub_and_transformers5_layouts():
    from transformers import ModernBertConfig as HFConfig

    config = ModernBertConfig.from_hf_dict(HUB_STYLE)
    global_, local = "full_attention", "sliding_attention"
    assert config.layer_types == (global_, local, local, global_, local, local, global_)
    assert (config.global_rope_theta, config.local_rope_theta) == (160000.0, 10000.0)
    assert config.sliding_window == 64

    hf = HFConfig(**config.to_hf_dict())  # what transformers reads back from our config.json
    assert hf.layer_types == list(config.layer_types)
    assert hf.rope_parameters["full_attention"]["rope_theta"] == 160000.0
    assert hf.rope_parameters["sliding_attention"]["rope_theta"] == 10000.0

    new_style = HFConfig(
        **{k: v for k, v in HUB_STYLE.items() if k not in ("model_type", "architectures")},
        layer_types=[global_, global_, local, local, global_, local, local],
        rope_parameters={
            global_: {"rope_type": "default", "rope_theta": 5000.0},
            local: {"rope_type": "default", "rope_theta": 50.0},
        },
    ).to_dict()
    config = ModernBertConfig.from_hf_dict(new_style)
    assert config.layer_types == (global_, global_, local, local, global_, local, local)
    assert (config.global_rope_theta, config.local_rope_theta) == (5000.0, 50.0)
    assert dataclasses.replace(config) == config and hash(config) == hash(
        dataclasses.replace(config)
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "rope_scaling"),
        (
            {
                "rope_parameters": {
                    "full_attention": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0}
                }
            },
            "rope_type 'default'",
        ),
        ({"layer_types": ["full_attention"] * 3}, "layer_types lists 3 layers"),
        ({"layer_types": ["full_attention"] * 6 + ["chunked"]}, "['chunked']"),
        ({"hidden_activation": "mish"}, "hidden_activation='mish'"),
        ({"num_attention_heads": 32}, "even head size"),
        ({"head_dim": 8}, "head_dim=8"),
    ],
)
def test_unsupported_options_are_refused(change, message, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({**HUB_STYLE, **change}))
    with pytest.raises(ModelLoadError, match="config.json") as error:
        read_config(tmp_path)
    assert message in str(error.value)


def _load_toy():
    spec = importlib.util.spec_from_file_location(
        "modernbert_toy", Path(__file__).parents[1] / "training" / "toy.py"
    )
    toy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(toy)
    return toy


def test_trainer_runs_a_few_steps_with_dropout(tmp_path):
    """Packed training rows, attention dropout on (the einsum path inside the jitted step)."""
    from flaxtrainer import FlaxTrainer

    toy = _load_toy()
    config = ModernBertConfig(
        vocab_size=toy.VOCAB,
        hidden_size=32,
        intermediate_size=24,
        num_hidden_layers=2,
        num_attention_heads=2,
        global_attn_every_n_layers=2,
        local_attention=4,
        attention_dropout=0.1,
        pad_token_id=0,
        labels=tuple(toy.ToyTask.id2label.values()),
    )
    model = ModernBertForTokenClassification(config, rngs=nnx.Rngs(0))
    args = toy.toy_args(str(tmp_path / "out"), max_steps=3)
    trainer = FlaxTrainer(model, toy.ToyTask(), args, train_dataset=toy.make_dataset(64))
    result = trainer.train()
    assert result.global_step == 3
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 3 and np.isfinite(losses).all() and losses[0] > 0


def test_bfloat16_compute_keeps_float32_params(make_checkpoint):
    import jax.numpy as jnp

    path, _ = make_checkpoint()
    ids, mask = _padded_batch()
    full = np.asarray(from_pretrained(path)(ids, mask))
    model = from_pretrained(path, dtype=jnp.bfloat16)
    assert model.encoder.layers[1].attn.Wqkv.kernel[...].dtype == jnp.float32
    half = np.asarray(model(ids, mask))
    assert half.dtype == np.float32 and np.isfinite(half).all()
    real = mask == 1
    # bfloat16 keeps ~3 significant digits; 3 layers of logits up to ~5 stay within 0.3.
    assert 0 < np.abs(half - full)[real].max() < 0.3


@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "bias"])
def test_weight_table_maps_every_parameter_both_ways(bias):
    from transformers import ModernBertForTokenClassification as TorchModel

    from flaxtrainer.models import family_for
    from flaxtrainer.models.hf_weights import export_weights

    kwargs = dict(norm_bias=bias, attention_bias=bias, mlp_bias=bias, classifier_bias=bias)
    torch_keys = set(TorchModel(_hf_config(**kwargs)).state_dict())
    config = ModernBertConfig.from_hf_dict(_hf_config(**kwargs).to_dict())
    model = ModernBertForTokenClassification(config, rngs=nnx.Rngs(0))
    table = family_for("modernbert").weights
    exported = export_weights(model, table)
    assert set(exported) == torch_keys
    for key in exported:
        path, _, is_head = table.to_nnx(key)
        assert table.to_hf(path)[0] == key
        assert is_head == key.startswith("classifier.")
