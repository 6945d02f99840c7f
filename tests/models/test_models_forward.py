"""The forward contract: packed segments, positions, bf16, dropout rngs, jit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hf_reference import flax_logits, padded_batch

from flaxtrainer.models import from_pretrained, segment_position_ids


def test_segment_position_ids():
    mask = jnp.array([[1, 1, 1, 2, 2, 0, 0], [1, 1, 0, 0, 0, 0, 0], [3, 3, 1, 1, 1, 1, 0]])
    expected = [[0, 1, 2, 0, 1, 0, 0], [0, 1, 0, 0, 0, 0, 0], [0, 1, 0, 1, 2, 3, 0]]
    np.testing.assert_array_equal(segment_position_ids(mask), expected)
    shifted = np.asarray(segment_position_ids(mask, start=2))
    np.testing.assert_array_equal(shifted[mask != 0], np.asarray(expected)[mask != 0] + 2)


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_packed_segments_match_separate_runs(model_type, make_checkpoint):
    ckpt = make_checkpoint(model_type)
    model = from_pretrained(ckpt.path)
    pad = ckpt.hf_config.pad_token_id
    first, second = np.array([5, 17, 42, 8]), np.array([23, 61, 9])
    ids = np.concatenate([first, second, [pad, pad]])[None]
    mask = np.array([[1, 1, 1, 1, 2, 2, 2, 0, 0]])
    positions = segment_position_ids(jnp.asarray(mask), start=model.config.position_offset)

    packed = np.asarray(model(ids, mask, position_ids=positions))[0]
    alone_first = np.asarray(model(first[None]))[0]
    alone_second = np.asarray(model(second[None]))[0]
    assert np.abs(packed[:4] - alone_first).max() < 1e-4
    assert np.abs(packed[4:7] - alone_second).max() < 1e-4

    # Sanity: without the segment mask the second sentence sees the first and differs.
    naive = np.asarray(model(ids, (mask != 0).astype(np.int32), position_ids=positions))[0]
    assert np.abs(naive[4:7] - alone_second).max() > 1e-2


def test_fully_padded_row_stays_finite(make_checkpoint):
    model = from_pretrained(make_checkpoint("bert").path)
    ids = np.array([[5, 6, 7], [0, 0, 0]])
    mask = np.array([[1, 1, 1], [0, 0, 0]])
    assert np.isfinite(np.asarray(model(ids, mask))).all()


def test_bfloat16_compute_keeps_float32_params(make_checkpoint):
    ckpt = make_checkpoint("bert")
    batch = padded_batch(ckpt.hf_config)
    reference = flax_logits(from_pretrained(ckpt.path), batch)
    model = from_pretrained(ckpt.path, dtype=jnp.bfloat16)
    params = jax.tree.leaves(nnx.state(model, nnx.Param))
    assert params and all(p.dtype == jnp.float32 for p in params)
    hidden = model.encoder(batch.input_ids, batch.attention_mask, batch.token_type_ids)
    assert hidden.dtype == jnp.bfloat16
    logits = flax_logits(model, batch)
    assert logits.dtype == np.float32 and np.isfinite(logits).all()
    error = np.abs(logits - reference)[batch.real]
    assert error.max() < 0.15 and error.mean() < 0.05, (error.max(), error.mean())


def test_dropout_uses_call_rngs_and_jit_matches_eager(make_checkpoint):
    ckpt = make_checkpoint("bert")
    batch = padded_batch(ckpt.hf_config)
    model = from_pretrained(ckpt.path)
    eval_logits = flax_logits(model, batch)  # eager, deterministic, no rngs needed

    @nnx.jit
    def step(model, ids, mask, token_types, key, other_key):
        def train_logits(model, key):
            return model(ids, mask, token_types, deterministic=False, rngs=nnx.Rngs(dropout=key))

        grads = nnx.grad(lambda model: (train_logits(model, key) ** 2).mean())(model)
        evaluated = model(ids, mask, token_types)
        return evaluated, train_logits(model, key), train_logits(model, other_key), grads

    inputs = (batch.input_ids, batch.attention_mask, batch.token_type_ids)
    jitted, train_a, train_b, grads = step(model, *inputs, jax.random.key(1), jax.random.key(2))
    np.testing.assert_allclose(np.asarray(jitted), eval_logits, atol=1e-5)
    assert np.abs(np.asarray(train_a) - eval_logits).max() > 1e-3  # dropout is active
    assert np.abs(np.asarray(train_a) - np.asarray(train_b)).max() > 1e-3  # and follows the key
    again = step(model, *inputs, jax.random.key(1), jax.random.key(3))[1]
    np.testing.assert_array_equal(np.asarray(again), np.asarray(train_a))  # same key, same mask

    grad_leaves = jax.tree.leaves(grads)
    assert len(grad_leaves) == len(jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert all(np.isfinite(np.asarray(g)).all() for g in grad_leaves)
    assert np.abs(np.asarray(grads["classifier"]["kernel"][...])).max() > 0
