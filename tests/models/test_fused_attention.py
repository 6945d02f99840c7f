"""The fused attention (`jax.nn.dot_product_attention`) against the written-out einsum path."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flaxtrainer.models.layers import (
    attention,
    attention_pairs,
    einsum_attention,
    fused_attention,
)

BATCH, SEQ, HEADS, HEAD_DIM = 3, 12, 4, 16

# Row 0: full; row 1: 7 tokens then padding; row 2: all padding (every query row fully masked).
PADDED = np.array([[1] * 12, [1] * 7 + [0] * 5, [0] * 12], np.int32)
# Packed sentences of 3, 4 and 2 tokens, then padding; a full row; two sentences filling a row.
PACKED = np.array(
    [[1, 1, 1, 2, 2, 2, 2, 3, 3, 0, 0, 0], [1] * 12, [1] * 5 + [2] * 7],
    np.int32,
)


def _qkv(dtype, seed: int = 0):
    keys = jax.random.split(jax.random.key(seed), 3)
    shape = (BATCH, SEQ, HEADS, HEAD_DIM)
    return [jax.random.normal(k, shape, jnp.float32).astype(dtype) for k in keys]


def _numpy_attention(q, k, v, mask, window):
    """float64 reference for the rows with at least one allowed key."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    index = np.arange(SEQ)
    allowed = (mask[:, :, None] == mask[:, None, :]) & (mask[:, None, :] != 0)
    if window is not None:
        allowed &= np.abs(index[:, None] - index[None, :]) <= window
    scores = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(HEAD_DIM)
    scores = np.where(allowed[:, None], scores, -np.inf)
    with np.errstate(invalid="ignore"):  # fully masked rows become NaN; callers skip them
        scores -= scores.max(-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", probs, v)


@pytest.mark.parametrize("window", [None, 2])
@pytest.mark.parametrize("mask", [PADDED, PACKED], ids=["padded", "packed"])
def test_fused_matches_einsum_float32(mask, window):
    q, k, v = _qkv(jnp.float32)
    pairs = attention_pairs(jnp.asarray(mask))
    fused = np.asarray(fused_attention(q, k, v, pairs, local_window=window))
    written = np.asarray(einsum_attention(q, k, v, pairs, local_window=window))
    assert fused.shape == (BATCH, SEQ, HEADS, HEAD_DIM)
    assert np.isfinite(fused).all() and np.isfinite(written).all()
    # Every row, padding included (both give a padding query a uniform softmax).
    assert np.abs(fused - written).max() < 1e-5
    real = mask != 0
    expected = _numpy_attention(q, k, v, mask, window)
    assert np.abs(fused - expected)[real].max() < 1e-5
    assert np.abs(expected[real]).max() > 0.1  # not a comparison of near-zero outputs


def test_window_changes_the_result():
    """The window is really applied (and by both paths): |i - j| <= window within a sentence."""
    q, k, v = _qkv(jnp.float32, seed=1)
    pairs = attention_pairs(jnp.asarray(PACKED))
    wide = np.asarray(fused_attention(q, k, v, pairs))
    narrow = np.asarray(fused_attention(q, k, v, pairs, local_window=1))
    # Row 1 is one 12-token sentence: a window of 1 differs from global attention...
    assert np.abs(wide[1] - narrow[1]).max() > 1e-2
    # ...and a window as wide as the row does not.
    np.testing.assert_allclose(
        np.asarray(fused_attention(q, k, v, pairs, local_window=SEQ)), wide, atol=1e-6
    )


@pytest.mark.parametrize("mask", [PADDED, PACKED], ids=["padded", "packed"])
def test_fused_matches_einsum_bfloat16(mask):
    q, k, v = _qkv(jnp.bfloat16)
    pairs = attention_pairs(jnp.asarray(mask))
    fused = fused_attention(q, k, v, pairs, local_window=3)
    written = einsum_attention(q, k, v, pairs, local_window=3)
    assert fused.dtype == written.dtype == jnp.bfloat16
    fused, written = np.asarray(fused, np.float32), np.asarray(written, np.float32)
    assert np.isfinite(fused).all()
    # Same float32 scores and softmax, probabilities rounded to bfloat16 in both: at most
    # a bfloat16 rounding step apart.
    assert np.abs(fused - written).max() < 2e-2
    expected = _numpy_attention(
        np.asarray(q, np.float32), np.asarray(k, np.float32), np.asarray(v, np.float32), mask, 3
    )
    real = mask != 0
    assert np.abs(fused - expected)[real].max() < 5e-2


def test_all_padding_rows_are_finite_with_gradients():
    q, k, v = _qkv(jnp.float32)
    pairs = attention_pairs(jnp.zeros((BATCH, SEQ), jnp.int32))

    def loss(q, k, v):
        return jnp.sum(fused_attention(q, k, v, pairs, local_window=2) ** 2)

    value, grads = jax.value_and_grad(loss, argnums=(0, 1, 2))(q, k, v)
    assert np.isfinite(float(value))
    assert all(np.isfinite(np.asarray(g)).all() for g in grads)


def test_dispatch_keeps_einsum_numerics_when_probabilities_drop():
    q, k, v = _qkv(jnp.float32)
    pairs = attention_pairs(jnp.asarray(PACKED))
    dropout = nnx.Dropout(0.5)
    fused = np.asarray(fused_attention(q, k, v, pairs))

    def run(deterministic, rate=0.5):
        return np.asarray(
            attention(
                q,
                k,
                v,
                pairs,
                dropout=nnx.Dropout(rate),
                deterministic=deterministic,
                rngs=nnx.Rngs(dropout=7),
            )
        )

    # Training with attention dropout: the einsum path, with the same dropout draw.
    expected = np.asarray(
        einsum_attention(
            q, k, v, pairs, dropout=dropout, deterministic=False, rngs=nnx.Rngs(dropout=7)
        )
    )
    trained = run(False)
    np.testing.assert_array_equal(trained, expected)
    assert np.abs(trained - fused).max() > 1e-2  # dropout was applied
    # Evaluation, or a rate of 0: the fused path.
    np.testing.assert_array_equal(run(True), fused)
    np.testing.assert_array_equal(run(False, rate=0.0), fused)
