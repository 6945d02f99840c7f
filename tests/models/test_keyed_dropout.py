"""Dropout keyed by (example, position in the example): the same mask in any row, at any offset."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flaxtrainer.models import BertConfig, BertForTokenClassification, segment_position_ids
from flaxtrainer.models.dropout import Dropout, example_positions, token_ids
from flaxtrainer.models.dropout_rng import dropout_key

WIDTH, FEATURES, HEADS = 12, 6, 2


def _padded_and_packed() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Example 7 (5 tokens) alone in row 1 of a padded batch, and second in row 0 of a packed
    batch (after example 3, 4 tokens), with example 9 behind it."""
    padded = {
        "attention_mask": np.zeros((2, WIDTH), np.int32),
        "example_ids": np.full((2, WIDTH), -1, np.int32),
    }
    padded["attention_mask"][0, :4], padded["example_ids"][0, :4] = 1, 3
    padded["attention_mask"][1, :5], padded["example_ids"][1, :5] = 1, 7
    packed = {
        "attention_mask": np.zeros((1, WIDTH), np.int32),
        "example_ids": np.full((1, WIDTH), -1, np.int32),
    }
    for segment, (start, end, example) in enumerate([(0, 4, 3), (4, 9, 7), (9, 12, 9)], 1):
        packed["attention_mask"][0, start:end] = segment
        packed["example_ids"][0, start:end] = example
    return padded, packed


def _mask(layer: Dropout, shape: tuple[int, ...], batch: dict[str, np.ndarray], key) -> np.ndarray:
    ids, mask = jnp.asarray(batch["example_ids"]), jnp.asarray(batch["attention_mask"])
    with token_ids(ids, mask):
        out = layer(jnp.ones(shape), deterministic=False, rngs=nnx.Rngs(dropout=key))
    return np.asarray(out) != 0


def test_example_positions_restart_per_example():
    padded, packed = _padded_and_packed()
    np.testing.assert_array_equal(
        example_positions(jnp.asarray(packed["attention_mask"]), (1, WIDTH))[0],
        [0, 1, 2, 3, 0, 1, 2, 3, 4, 0, 1, 2],
    )
    np.testing.assert_array_equal(
        example_positions(jnp.asarray(padded["attention_mask"]), (2, WIDTH)),
        segment_position_ids(jnp.asarray(padded["attention_mask"])),
    )


def test_token_mask_follows_the_example_not_the_row():
    padded, packed = _padded_and_packed()
    key = dropout_key(0)
    layer = Dropout(0.5)
    a = _mask(layer, (2, WIDTH, FEATURES), padded, key)
    b = _mask(layer, (1, WIDTH, FEATURES), packed, key)
    np.testing.assert_array_equal(a[1, :5], b[0, 4:9])  # example 7, at column 0 and at 4
    np.testing.assert_array_equal(a[0, :4], b[0, :4])  # example 3
    assert not np.array_equal(a[0, :4], a[1, :4])  # examples 3 and 7 differ
    assert not np.array_equal(b[0, 9:12], a[1, :3])  # example 9 differs from 7
    assert 0.35 < a[:, :5].mean() < 0.65  # about half kept
    assert not np.array_equal(a, _mask(layer, (2, WIDTH, FEATURES), padded, dropout_key(1)))


def test_attention_mask_follows_the_example_not_the_row():
    padded, packed = _padded_and_packed()
    key = dropout_key(3)
    layer = Dropout(0.5, layout="attention")
    a = _mask(layer, (2, HEADS, WIDTH, WIDTH), padded, key)
    b = _mask(layer, (1, HEADS, WIDTH, WIDTH), packed, key)
    np.testing.assert_array_equal(a[1, :, :5, :5], b[0, :, 4:9, 4:9])  # example 7's block
    np.testing.assert_array_equal(a[0, :, :4, :4], b[0, :, :4, :4])  # example 3's block
    assert not np.array_equal(a[1, 0, :5, :5], a[1, 1, :5, :5])  # heads differ
    assert not np.array_equal(a[0, :, :4, :4], a[1, :, :4, :4])  # examples differ


def test_without_ids_or_with_threefry_it_is_nnx_dropout():
    padded, _ = _padded_and_packed()
    x = jax.random.normal(jax.random.key(0), (2, WIDTH, FEATURES))
    ours, theirs = Dropout(0.3), nnx.Dropout(0.3)
    for key in (dropout_key(5), dropout_key(5, "threefry")):
        expected = theirs(x, deterministic=False, rngs=nnx.Rngs(dropout=key))
        np.testing.assert_array_equal(
            ours(x, deterministic=False, rngs=nnx.Rngs(dropout=key)), expected
        )
    threefry = dropout_key(5, "threefry")
    with token_ids(jnp.asarray(padded["example_ids"]), jnp.asarray(padded["attention_mask"])):
        np.testing.assert_array_equal(
            ours(x, deterministic=False, rngs=nnx.Rngs(dropout=threefry)),
            theirs(x, deterministic=False, rngs=nnx.Rngs(dropout=threefry)),
        )
        np.testing.assert_array_equal(ours(x, deterministic=True), x)
    with pytest.raises(ValueError, match="layout"):
        Dropout(0.1, layout="rows")  # type: ignore[arg-type]


def test_model_logits_of_an_example_agree_padded_and_packed():
    """A whole BERT with dropout on: example 7's logits are the same alone in a padded row and
    packed behind another sentence (same key), and differ from its deterministic logits."""
    config = BertConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        labels=("A", "B", "C"),
        hidden_dropout_prob=0.2,
        attention_probs_dropout_prob=0.2,
    )
    model = BertForTokenClassification(config, rngs=nnx.Rngs(0))
    padded, packed = _padded_and_packed()
    tokens = np.random.default_rng(0).integers(1, 40, size=12).astype(np.int32)
    padded_ids = np.zeros((2, WIDTH), np.int32)
    padded_ids[0, :4], padded_ids[1, :5] = tokens[:4], tokens[4:9]
    packed_ids = tokens[None, :].copy()
    key = dropout_key(11)

    def logits(ids, batch, position_ids=None, deterministic=False):
        return np.asarray(
            model(
                jnp.asarray(ids),
                jnp.asarray(batch["attention_mask"]),
                position_ids=position_ids,
                deterministic=deterministic,
                rngs=nnx.Rngs(dropout=key),
                example_ids=jnp.asarray(batch["example_ids"]),
            )
        )

    a = logits(padded_ids, padded)
    b = logits(packed_ids, packed, segment_position_ids(jnp.asarray(packed["attention_mask"])))
    np.testing.assert_allclose(a[1, :5], b[0, 4:9], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a[0, :4], b[0, :4], rtol=1e-5, atol=1e-5)
    plain = logits(padded_ids, padded, deterministic=True)
    assert np.abs(plain[1, :5] - a[1, :5]).max() > 1e-3
