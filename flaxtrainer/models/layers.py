"""Building blocks shared by the encoder families: masks, positions, attention, post-LN layers.

All four families (BERT, RoBERTa, DistilBERT, ELECTRA) use the same post-LayerNorm Transformer
layer; they differ only in embeddings, hyper-parameter names and checkpoint key names.

Precision: parameters live in `param_dtype`; matmuls run in `dtype` (e.g. bfloat16); LayerNorm
statistics and the attention softmax are always computed in float32.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

# Score given to disallowed query/key pairs. Finite, so a fully masked (padding) query row gets a
# uniform softmax instead of NaN.
MASKED_SCORE = -1e9

_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_python": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_fast": functools.partial(jax.nn.gelu, approximate=True),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
}
SUPPORTED_ACTIVATIONS = tuple(sorted(_ACTIVATIONS))


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """The activation Hugging Face calls `name` (`"gelu"` is the exact erf form)."""
    return _ACTIVATIONS[name]


# ---- masks and positions -------------------------------------------------------------------------


def ones_mask(input_ids: jax.Array) -> jax.Array:
    return jnp.ones(input_ids.shape, jnp.int32)


def attention_pairs(attention_mask: jax.Array) -> jax.Array:
    """Boolean `[batch, 1, seq, seq]`: query i may attend key j iff both carry the same non-zero id.

    A 1/0 mask gives Hugging Face padding behaviour; distinct positive ids per packed sentence give
    block-diagonal attention.
    """
    query = attention_mask[:, :, None]
    key = attention_mask[:, None, :]
    return ((query == key) & (key != 0))[:, None, :, :]


def sequential_position_ids(input_ids: jax.Array) -> jax.Array:
    """`0..seq-1` in every row (BERT, ELECTRA, DistilBERT default)."""
    batch, seq = input_ids.shape
    return jnp.broadcast_to(jnp.arange(seq, dtype=jnp.int32), (batch, seq))


def segment_position_ids(attention_mask: jax.Array, start: int = 0) -> jax.Array:
    """Position of each token within its packed sentence, plus `start`; 0 on padding.

    Sentences are contiguous runs of equal non-zero `attention_mask` values. Pass
    `start=model.config.position_offset` to get the ids a packer feeds as `position_ids`.
    """
    seq = attention_mask.shape[-1]
    index = jnp.arange(seq, dtype=jnp.int32)
    previous = jnp.pad(attention_mask[..., :-1], ((0, 0), (1, 0)), constant_values=-1)
    run_start = jax.lax.cummax(jnp.where(attention_mask != previous, index, 0), axis=1)
    return jnp.where(attention_mask != 0, index - run_start + start, 0).astype(jnp.int32)


# ---- layers ---------------------------------------------------------------------------------------


def dense(
    in_features: int,
    out_features: int,
    *,
    dtype: DTypeLike,
    param_dtype: DTypeLike,
    init_std: float,
    rngs: nnx.Rngs,
) -> nnx.Linear:
    """`nnx.Linear` initialised like Hugging Face (normal(init_std) kernel, zero bias)."""
    return nnx.Linear(
        in_features,
        out_features,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=nnx.initializers.normal(init_std),
        bias_init=nnx.initializers.zeros_init(),
        rngs=rngs,
    )


def layer_norm(
    features: int, *, epsilon: float, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs
) -> nnx.LayerNorm:
    """`nnx.LayerNorm` with float32 two-pass statistics (matches PyTorch, safe in bfloat16)."""
    return nnx.LayerNorm(
        features,
        epsilon=epsilon,
        dtype=dtype,
        param_dtype=param_dtype,
        use_fast_variance=False,
        rngs=rngs,
    )


class SelfAttention(nnx.Module):
    """Multi-head self-attention with separate q/k/v projections (Hugging Face layout)."""

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        *,
        dropout_rate: float,
        dtype: DTypeLike,
        param_dtype: DTypeLike,
        init_std: float,
        rngs: nnx.Rngs,
    ):
        if d_model % num_heads:
            raise ValueError(f"hidden size {d_model} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        make = functools.partial(
            dense,
            d_model,
            d_model,
            dtype=dtype,
            param_dtype=param_dtype,
            init_std=init_std,
            rngs=rngs,
        )
        self.query, self.key, self.value, self.out = make(), make(), make(), make()
        self.dropout = nnx.Dropout(dropout_rate)

    def __call__(
        self,
        x: jax.Array,
        pairs: jax.Array,
        *,
        deterministic: bool,
        rngs: nnx.Rngs | None,
    ) -> jax.Array:
        batch, seq, _ = x.shape
        heads = (batch, seq, self.num_heads, self.head_dim)
        q = self.query(x).reshape(heads)
        k = self.key(x).reshape(heads)
        v = self.value(x).reshape(heads)
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
        scores = jnp.where(pairs, scores * self.head_dim**-0.5, MASKED_SCORE)
        probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        probs = self.dropout(probs, deterministic=deterministic, rngs=rngs)
        context = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(batch, seq, -1)
        return self.out(context)


class TransformerLayer(nnx.Module):
    """Post-LayerNorm encoder layer: attention + residual + LN, feed-forward + residual + LN."""

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        ffn_size: int,
        *,
        activation: str,
        hidden_dropout: float,
        attention_dropout: float,
        attention_output_dropout: float,
        layer_norm_eps: float,
        dtype: DTypeLike,
        param_dtype: DTypeLike,
        init_std: float,
        rngs: nnx.Rngs,
    ):
        common = dict(dtype=dtype, param_dtype=param_dtype)
        self.attention = SelfAttention(
            d_model,
            num_heads,
            dropout_rate=attention_dropout,
            init_std=init_std,
            rngs=rngs,
            **common,
        )
        self.attention_dropout = nnx.Dropout(attention_output_dropout)
        self.attention_norm = layer_norm(d_model, epsilon=layer_norm_eps, rngs=rngs, **common)
        self.intermediate = dense(d_model, ffn_size, init_std=init_std, rngs=rngs, **common)
        self.output = dense(ffn_size, d_model, init_std=init_std, rngs=rngs, **common)
        self.output_dropout = nnx.Dropout(hidden_dropout)
        self.output_norm = layer_norm(d_model, epsilon=layer_norm_eps, rngs=rngs, **common)
        self.activation = activation

    def __call__(
        self,
        x: jax.Array,
        pairs: jax.Array,
        *,
        deterministic: bool,
        rngs: nnx.Rngs | None,
    ) -> jax.Array:
        attended = self.attention(x, pairs, deterministic=deterministic, rngs=rngs)
        attended = self.attention_dropout(attended, deterministic=deterministic, rngs=rngs)
        x = self.attention_norm(attended + x)
        hidden = self.output(_ACTIVATIONS[self.activation](self.intermediate(x)))
        hidden = self.output_dropout(hidden, deterministic=deterministic, rngs=rngs)
        return self.output_norm(hidden + x)


def run_layers(
    layers: nnx.List,
    x: jax.Array,
    attention_mask: jax.Array,
    *,
    deterministic: bool,
    rngs: nnx.Rngs | None,
) -> jax.Array:
    """Applies the stacked layers with the segment mask built once for all of them."""
    pairs = attention_pairs(attention_mask)
    for layer in layers:
        x = layer(x, pairs, deterministic=deterministic, rngs=rngs)
    return x
