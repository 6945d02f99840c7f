"""Disentangled self-attention and the bucketed relative positions it reads."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from flaxtrainer.models.dropout import Dropout
from flaxtrainer.models.families.deberta_v2_config import POS_ATT_TYPES, DebertaV2Config
from flaxtrainer.models.layers import MASKED_SCORE, Build


def log_bucket_position(relative: jax.Array, bucket_size: int, max_position: int) -> jax.Array:
    """transformers' `make_log_bucket_position`: exact within `bucket_size // 2`, log beyond.

    Computed in float32 as PyTorch does, so bucket boundaries agree.
    """
    mid = bucket_size // 2
    sign = jnp.sign(relative)
    abs_pos = jnp.where((relative < mid) & (relative > -mid), mid - 1, jnp.abs(relative))
    ratio = jnp.log(abs_pos.astype(jnp.float32) / jnp.float32(mid))
    log_pos = (
        jnp.ceil(ratio / jnp.log(jnp.float32((max_position - 1) / mid)) * jnp.float32(mid - 1))
        + mid
    )
    return jnp.where(abs_pos <= mid, relative, (log_pos * sign).astype(relative.dtype))


def relative_positions(position_ids: jax.Array, config: DebertaV2Config) -> jax.Array:
    """`[batch, query, key]` bucketed `position(query) - position(key)`.

    Taken from `position_ids` rather than from the row index, so relative positions restart with
    the position ids of every packed sentence.
    """
    positions = position_ids.astype(jnp.int32)
    relative = positions[:, :, None] - positions[:, None, :]
    if config.position_buckets > 0 and config.max_relative_distance > 0:
        relative = log_bucket_position(
            relative, config.position_buckets, config.max_relative_distance
        )
    return relative


class Relative(NamedTuple):
    """What every layer's attention reads of the relative positions of one forward pass."""

    #: `[batch, query, key]` row of the relative-embedding table for content-to-position scores.
    c2p_index: jax.Array
    #: The same for position-to-content scores (row `key` at `-relative[key, query]`).
    p2c_index: jax.Array
    #: The relative-embedding table `[2 * relative_span, hidden_size]` (normalised if so set).
    table: jax.Array


# ---- modules -------------------------------------------------------------------------------------


class DisentangledSelfAttention(nnx.Module):
    """Content-to-content plus content-to-position (c2p) and position-to-content (p2c) scores.

    The disentangled terms are a per-(query, key) score bias gathered from relative-position
    tables. `jax.nn.dot_product_attention` accepts an additive bias, but this one is itself a full
    `[batch, heads, seq, seq]` array computed from q and k, so a fused kernel would save none of
    the quadratic memory (and JAX's default XLA implementation is this same einsum). The scores are
    therefore written out here: einsum with float32 accumulation, `MASKED_SCORE` on disallowed
    pairs, float32 softmax, dropout on the probabilities.
    """

    def __init__(self, config: DebertaV2Config, build: Build):
        self.num_heads, self.head_dim = config.num_attention_heads, config.head_dim
        inner, std = self.num_heads * self.head_dim, config.initializer_range
        make = functools.partial(build.linear, config.hidden_size, inner, std=std)
        self.query, self.key, self.value = make(), make(), make()
        self.relative = config.relative_attention
        types = config.pos_att_type
        self.c2p = self.relative and "c2p" in types
        self.p2c = self.relative and "p2c" in types
        self.share_att_key = config.share_att_key
        self.pos_key: nnx.Linear | None = nnx.data(None)
        self.pos_query: nnx.Linear | None = nnx.data(None)
        if self.relative and not self.share_att_key:
            if self.c2p:
                self.pos_key = make()
            if self.p2c:
                self.pos_query = make()
        # transformers scales by sqrt(head_dim * (1 + #terms)) whether or not the terms are used.
        self.scale = float(self.head_dim * (1 + sum(t in types for t in POS_ATT_TYPES))) ** -0.5
        self.out = build.linear(inner, config.hidden_size, std=std)
        self.dropout = Dropout(config.attention_probs_dropout_prob, layout="attention")
        self.pos_dropout = Dropout(config.hidden_dropout_prob, layout="other")

    def _heads(self, x: jax.Array) -> jax.Array:
        return x.reshape(*x.shape[:-1], self.num_heads, self.head_dim)

    def __call__(
        self,
        x: jax.Array,
        pairs: jax.Array,
        relative: Relative | None,
        *,
        deterministic: bool,
        rngs: nnx.Rngs | None,
    ) -> jax.Array:
        """`relative`: the model's :class:`Relative` (None without relative attention)."""
        batch, seq, _ = x.shape
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
        if self.c2p or self.p2c:
            c2p_index, p2c_index, table = relative
            rel = self.pos_dropout(table, deterministic=deterministic, rngs=rngs)
            if self.c2p:
                pos_key = self._heads((self.key if self.share_att_key else self.pos_key)(rel))
                c2p = jnp.einsum("bqhd,rhd->bhqr", q, pos_key, preferred_element_type=jnp.float32)
                scores = scores + jnp.take_along_axis(c2p, c2p_index[:, None], axis=-1)
            if self.p2c:
                pos_query = self._heads((self.query if self.share_att_key else self.pos_query)(rel))
                p2c = jnp.einsum("bkhd,rhd->bhkr", k, pos_query, preferred_element_type=jnp.float32)
                p2c = jnp.take_along_axis(p2c, p2c_index[:, None], axis=-1)
                scores = scores + jnp.swapaxes(p2c, -1, -2)
        scores = jnp.where(pairs, scores * self.scale, MASKED_SCORE)
        probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        probs = self.dropout(probs, deterministic=deterministic, rngs=rngs)
        context = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(batch, seq, -1)
        return self.out(context)
