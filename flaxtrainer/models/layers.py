"""Building blocks shared by the encoder families: masks, positions, attention, post-LN layers.

BERT, RoBERTa, DistilBERT, ELECTRA and DeBERTa-v2 use the same post-LayerNorm Transformer layer
(:class:`TransformerLayer`, DeBERTa-v2 with its own attention), which reads its hyper-parameters
under BERT's names (:class:`PostLNConfig`); the families differ in embeddings and checkpoint key
names (:func:`layer_rules`). Every layer is made through one :class:`Build`.

Precision: parameters live in `param_dtype`; matmuls run in `dtype` (e.g. bfloat16); LayerNorm
statistics and the attention softmax are always computed in float32.

Attention runs through `jax.nn.dot_product_attention` (:func:`fused_attention`) unless dropout on
the attention probabilities is active; see :func:`attention`. Rotary-embedding helpers (ModernBERT)
live here too.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.nn.initializers import Initializer
from jax.typing import DTypeLike

from flaxtrainer.models.dropout import Dropout
from flaxtrainer.models.hf_weights import WeightRule
from flaxtrainer.models.hf_weights import layer_norm as layer_norm_rules
from flaxtrainer.models.hf_weights import linear as linear_rules

# Score given to disallowed query/key pairs. Finite, so a fully masked (padding) query row gets a
# uniform softmax instead of NaN.
MASKED_SCORE = -1e9

# `implementation` passed to `jax.nn.dot_product_attention`. None lets JAX choose; in jax 0.10.2
# that is always the XLA path (einsum + masked float32 softmax, fused by XLA), on every backend:
# cuDNN is only used when asked for with "cudnn", which needs bfloat16/float16 inputs and rejects
# a two-sided local window (ModernBERT's) without a causal mask.
ATTENTION_IMPLEMENTATION = None

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


def window_pairs(pairs: jax.Array, local_window: int | None) -> jax.Array:
    """`pairs` restricted to keys at most `local_window` rows from the query (`None`: unchanged).

    The distance is between row indices. Within one packed sentence (a contiguous run of the
    mask) it equals the distance between the sentence's positions, and pairs across sentences are
    already excluded by `pairs`, so the window is measured within each sentence.
    """
    if local_window is None:
        return pairs
    index = jnp.arange(pairs.shape[-1])
    band = jnp.abs(index[:, None] - index[None, :]) <= local_window
    return pairs & band


def rotary_tables(
    position_ids: jax.Array, head_dim: int, theta: float
) -> tuple[jax.Array, jax.Array]:
    """float32 `(cos, sin)` `[batch, seq, head_dim]` of the default rotary embedding (base `theta`)."""
    inv_freq = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    freqs = position_ids[..., None].astype(jnp.float32) * jnp.asarray(inv_freq, jnp.float32)
    angles = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotates `x` `[batch, seq, heads, head_dim]` (halves layout, as Hugging Face), in float32."""
    x32 = x.astype(jnp.float32)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
    return (x32 * cos[:, :, None, :] + rotated * sin[:, :, None, :]).astype(x.dtype)


# ---- attention ------------------------------------------------------------------------------------


def einsum_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    pairs: jax.Array,
    *,
    local_window: int | None = None,
    dropout: nnx.Dropout | None = None,
    deterministic: bool = True,
    rngs: nnx.Rngs | None = None,
) -> jax.Array:
    """Attention written out: scores, masked float32 softmax, dropout on the probabilities.

    `q`, `k`, `v` are `[batch, seq, heads, head_dim]`, `pairs` a boolean `[batch, 1, seq, seq]`
    (see :func:`attention_pairs`); returns `[batch, seq, heads, head_dim]`. A padding query with no
    allowed key gets a uniform softmax (finite), as in :func:`fused_attention`.
    """
    pairs = window_pairs(pairs, local_window)
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
    scores = jnp.where(pairs, scores * q.shape[-1] ** -0.5, MASKED_SCORE)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    if dropout is not None:
        probs = dropout(probs, deterministic=deterministic, rngs=rngs)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v)


def fused_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    pairs: jax.Array,
    *,
    local_window: int | None = None,
) -> jax.Array:
    """`jax.nn.dot_product_attention` with the segment mask and an optional two-sided window.

    Same layout and result as :func:`einsum_attention` without dropout. A query whose mask row is
    all False (padding) gets every score replaced by the same large negative number, hence a
    uniform softmax: finite, like `MASKED_SCORE` in the einsum path.
    """
    return jax.nn.dot_product_attention(
        q,
        k,
        v,
        mask=pairs,
        scale=q.shape[-1] ** -0.5,
        local_window_size=None if local_window is None else (local_window, local_window),
        implementation=ATTENTION_IMPLEMENTATION,
    )


def attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    pairs: jax.Array,
    *,
    dropout: nnx.Dropout,
    deterministic: bool,
    rngs: nnx.Rngs | None,
    local_window: int | None = None,
) -> jax.Array:
    """Self-attention `[batch, seq, heads, head_dim]`, fused unless probability dropout is on.

    The fused kernel cannot drop attention probabilities, so while training with a non-zero
    attention dropout rate the einsum path runs (the numerics and dropout masks of the written-out
    attention, consuming the same dropout keys). Otherwise (evaluation, prediction, or a rate of
    0, where `nnx.Dropout` is the identity and draws no key) the fused path runs.
    """
    if not deterministic and dropout.rate > 0:
        return einsum_attention(
            q,
            k,
            v,
            pairs,
            local_window=local_window,
            dropout=dropout,
            deterministic=deterministic,
            rngs=rngs,
        )
    return fused_attention(q, k, v, pairs, local_window=local_window)


# ---- layers ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Build:
    """What every layer of one model is made with, handed down from the model's constructor.

    `dtype` is the compute dtype (matmuls, LayerNorm outputs), `param_dtype` the parameters';
    `rngs` draws the initial parameters, and `init(std)` is how the family's Hugging Face model
    draws a kernel or an embedding table of std `std` (`EncoderConfig.kernel_init`: normal(0,
    std); ModernBERT truncates it). Biases start at zero, LayerNorm scales at one.
    """

    dtype: DTypeLike
    param_dtype: DTypeLike
    rngs: nnx.Rngs
    init: Callable[[float], Initializer] = nnx.initializers.normal

    def linear(self, n_in: int, n_out: int, *, std: float, use_bias: bool = True) -> nnx.Linear:
        return nnx.Linear(
            n_in,
            n_out,
            use_bias=use_bias,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=self.init(std),
            bias_init=nnx.initializers.zeros_init(),
            rngs=self.rngs,
        )

    def norm(self, features: int, *, epsilon: float, use_bias: bool = True) -> nnx.LayerNorm:
        """`nnx.LayerNorm` with float32 two-pass statistics (matches PyTorch, safe in bfloat16)."""
        return nnx.LayerNorm(
            features,
            epsilon=epsilon,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            use_bias=use_bias,
            use_fast_variance=False,
            rngs=self.rngs,
        )

    def embed(self, count: int, features: int, *, std: float) -> nnx.Embed:
        """A lookup table; lookups stay in `param_dtype` (no cast of whole tables)."""
        return nnx.Embed(
            count,
            features,
            param_dtype=self.param_dtype,
            embedding_init=self.init(std),
            rngs=self.rngs,
        )


class PostLNConfig(Protocol):
    """What the post-LayerNorm layers read of a config: BERT's `config.json` names.

    Every BERT-named config has them (`models.config.BertLikeConfig`: BERT, RoBERTa, ELECTRA,
    DeBERTa-v2); a DistilBERT config answers to them too (as transformers' `attribute_map`).
    """

    num_hidden_layers: int
    hidden_size: int
    num_attention_heads: int
    intermediate_size: int
    hidden_act: str
    #: Dropout after the feed-forward output (and, in every family, on the embeddings).
    hidden_dropout_prob: float
    #: Dropout on the attention probabilities.
    attention_probs_dropout_prob: float
    #: Dropout after the attention's output projection.
    attention_output_dropout: float
    layer_norm_eps: float
    initializer_range: float


class SelfAttention(nnx.Module):
    """Multi-head self-attention with separate q/k/v projections (Hugging Face layout)."""

    def __init__(self, config: PostLNConfig, build: Build):
        width, heads = config.hidden_size, config.num_attention_heads
        if width % heads:
            raise ValueError(f"hidden size {width} is not divisible by {heads} heads")
        self.num_heads = heads
        self.head_dim = width // heads
        make = functools.partial(build.linear, width, width, std=config.initializer_range)
        self.query, self.key, self.value, self.out = make(), make(), make(), make()
        self.dropout = Dropout(config.attention_probs_dropout_prob, layout="attention")

    def __call__(
        self, x: jax.Array, pairs: jax.Array, *, deterministic: bool, rngs: nnx.Rngs | None
    ) -> jax.Array:
        batch, seq, _ = x.shape
        heads = (batch, seq, self.num_heads, self.head_dim)
        q = self.query(x).reshape(heads)
        k = self.key(x).reshape(heads)
        v = self.value(x).reshape(heads)
        context = attention(
            q, k, v, pairs, dropout=self.dropout, deterministic=deterministic, rngs=rngs
        )
        return self.out(context.reshape(batch, seq, -1))


class TransformerLayer(nnx.Module):
    """Post-LayerNorm encoder layer: attention + residual + LN, feed-forward + residual + LN.

    `attention` defaults to :class:`SelfAttention`; a family with another attention
    (DeBERTa-v2's disentangled one) passes its own. The layer hands the attention what it
    reads besides `x` (`pairs`, and DeBERTa-v2's relative positions): `attention_inputs`.
    """

    def __init__(self, config: PostLNConfig, build: Build, attention: nnx.Module | None = None):
        width, ffn, std = config.hidden_size, config.intermediate_size, config.initializer_range
        self.attention = SelfAttention(config, build) if attention is None else attention
        self.attention_dropout = Dropout(config.attention_output_dropout)
        self.attention_norm = build.norm(width, epsilon=config.layer_norm_eps)
        self.intermediate = build.linear(width, ffn, std=std)
        self.output = build.linear(ffn, width, std=std)
        self.output_dropout = Dropout(config.hidden_dropout_prob)
        self.output_norm = build.norm(width, epsilon=config.layer_norm_eps)
        self.activation = config.hidden_act

    def __call__(
        self, x: jax.Array, *attention_inputs: object, deterministic: bool, rngs: nnx.Rngs | None
    ) -> jax.Array:
        attended = self.attention(x, *attention_inputs, deterministic=deterministic, rngs=rngs)
        attended = self.attention_dropout(attended, deterministic=deterministic, rngs=rngs)
        x = self.attention_norm(attended + x)
        hidden = self.output(_ACTIVATIONS[self.activation](self.intermediate(x)))
        hidden = self.output_dropout(hidden, deterministic=deterministic, rngs=rngs)
        return self.output_norm(hidden + x)


def post_ln_layers(
    config: PostLNConfig, build: Build, attention: Callable[[], nnx.Module] | None = None
) -> nnx.List:
    """`config.num_hidden_layers` :class:`TransformerLayer`s, each with the attention that
    `attention()` makes (default: :class:`SelfAttention`)."""
    return nnx.List(
        [
            TransformerLayer(config, build, None if attention is None else attention())
            for _ in range(config.num_hidden_layers)
        ]
    )


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


#: Parameters of a :class:`TransformerLayer` that are LayerNorms (the others are linear layers).
_LAYER_NORMS = ("attention_norm", "output_norm")


def layer_rules(hf_layer: str, names: Mapping[str, str]) -> tuple[WeightRule, ...]:
    """Checkpoint rules of the stacked layers (NNX `layers.{layer}`): `names` maps each
    parameter path of a :class:`TransformerLayer` (`attention.query`, ..., `output_norm`) to
    its Hugging Face name under `hf_layer` (e.g. `"encoder.layer.{layer}"`)."""
    return tuple(
        rule
        for path, hf in names.items()
        for rule in (layer_norm_rules if path in _LAYER_NORMS else linear_rules)(
            f"{hf_layer}.{hf}", f"layers.{{layer}}.{path}"
        )
    )
