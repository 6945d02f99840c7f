"""ModernBERT: rotary positions, alternating global / sliding-window attention, GeGLU, pre-LN.

Follows transformers' `ModernBertForTokenClassification` (answerdotai/ModernBERT-base/large):

- embeddings: token table, LayerNorm, dropout (no position table: positions enter as rotary
  embeddings in every attention layer, with `global_rope_theta` in global layers and
  `local_rope_theta` in local ones);
- pre-LN layers `x + attn(attn_norm(x))`, `x + mlp(mlp_norm(x))`; layer 0 has no `attn_norm`
  (the embedding norm precedes it); the MLP is GeGLU (`Wi` gives `[input | gate]`,
  `Wo(act(input) * gate)`);
- `layer_types` (or, in older configs, every `global_attn_every_n_layers`-th layer from 0) attend
  globally, the others within a window: query i sees key j iff `|i - j| <= local_attention // 2`;
- a final LayerNorm, then the prediction head `norm(act(dense(x)))`, dropout and the classifier.

Packed rows: `position_ids` restart per sentence (the packer's `segment_position_ids`), so
rotary positions restart too (rotary scores depend on position differences only, so this gives
the same result as positions counted over the row; the segment mask keeps sentences apart). The
local window is measured on row indices (as in Hugging Face) combined with the segment mask:
inside one contiguous sentence `|i - j|` equals the distance of the positions, and keys of other
sentences are masked anyway, so each sentence sees exactly the window it would see on its own
row. The window is handed to `jax.nn.dot_product_attention` as `local_window_size`.

Not supported: rotary types other than the default, a `head_dim` other than `hidden_size /
num_attention_heads`, layer types other than full / sliding attention (the hyper-parameters and
their checks are in `modernbert_config.py`). Base-model exports (`ModernBertModel` alone, without
`head.*`) fail to load with "missing tensor head.dense.weight"; the hub checkpoints are masked-LM
ones, which carry the head.

Checkpoint layout: the encoder lives under `model.` as in Hugging Face; the prediction head
(`head.dense`, `head.norm`) sits outside that prefix but is part of every ModernBERT checkpoint
with a head (masked-LM ones included), so it is loaded like the encoder and only `classifier` is
the token-classification head that is reinitialised for new labels.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from flaxtrainer.models.dropout import Dropout
from flaxtrainer.models.encoder import Encoder
from flaxtrainer.models.families.modernbert_config import LOCAL, ModernBertConfig
from flaxtrainer.models.hf_weights import WeightTable, embedding, layer_norm, linear
from flaxtrainer.models.layers import (
    activation,
    apply_rotary,
    attention,
    attention_pairs,
    rotary_tables,
)
from flaxtrainer.models.layers import layer_norm as make_layer_norm
from flaxtrainer.models.registry import ModelFamily, register_family
from flaxtrainer.models.token_classification import EncoderForTokenClassification

# ---- modules --------------------------------------------------------------------------------------


def truncated_normal(config: ModernBertConfig, std: float) -> jax.nn.initializers.Initializer:
    """Hugging Face ModernBERT's init: normal(0, std) truncated at +-`initializer_cutoff_factor`
    std."""
    cutoff = config.initializer_cutoff_factor
    return jax.nn.initializers.truncated_normal(std, lower=-cutoff, upper=cutoff)


@dataclasses.dataclass(frozen=True)
class _Build:
    """Makes layers initialised like Hugging Face ModernBERT (:func:`truncated_normal`)."""

    config: ModernBertConfig
    dtype: DTypeLike
    param_dtype: DTypeLike
    rngs: nnx.Rngs

    def init(self, std: float) -> jax.nn.initializers.Initializer:
        return truncated_normal(self.config, std)

    @property
    def out_std(self) -> float:
        """Std of the layers writing into the residual stream."""
        return self.config.initializer_range / (2.0 * self.config.num_hidden_layers) ** 0.5

    def linear(
        self, n_in: int, n_out: int, *, use_bias: bool, std: float | None = None
    ) -> nnx.Linear:
        return nnx.Linear(
            n_in,
            n_out,
            use_bias=use_bias,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=self.init(self.config.initializer_range if std is None else std),
            bias_init=nnx.initializers.zeros_init(),
            rngs=self.rngs,
        )

    def norm(self) -> nnx.LayerNorm:
        return make_layer_norm(
            self.config.hidden_size,
            epsilon=self.config.norm_eps,
            use_bias=self.config.norm_bias,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            rngs=self.rngs,
        )


class ModernBertAttention(nnx.Module):
    """Fused q/k/v projection, rotary positions, (windowed) attention, output projection."""

    def __init__(self, build: _Build, *, local: bool):
        config, width = build.config, build.config.hidden_size
        self.num_heads, self.head_dim = config.num_attention_heads, config.head_dim
        self.local_window = config.sliding_window if local else None
        self.Wqkv = build.linear(width, 3 * width, use_bias=config.attention_bias)
        self.Wo = build.linear(width, width, use_bias=config.attention_bias, std=build.out_std)
        self.probs_dropout = Dropout(config.attention_dropout, layout="attention")
        self.out_dropout = Dropout(config.attention_dropout)

    def __call__(
        self,
        x: jax.Array,
        pairs: jax.Array,
        rotary: tuple[jax.Array, jax.Array],
        *,
        deterministic: bool,
        rngs: nnx.Rngs | None,
    ) -> jax.Array:
        batch, seq, _ = x.shape
        qkv = self.Wqkv(x).reshape(batch, seq, 3, self.num_heads, self.head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        context = attention(
            q,
            k,
            v,
            pairs,
            dropout=self.probs_dropout,
            deterministic=deterministic,
            rngs=rngs,
            local_window=self.local_window,
        )
        out = self.Wo(context.reshape(batch, seq, -1))
        return self.out_dropout(out, deterministic=deterministic, rngs=rngs)


class ModernBertMLP(nnx.Module):
    """GeGLU feed-forward: `Wo(dropout(act(input) * gate))` with `[input | gate] = Wi(x)`."""

    def __init__(self, build: _Build):
        config = build.config
        width, inner, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.Wi = build.linear(width, 2 * inner, use_bias=bias)
        self.Wo = build.linear(inner, width, use_bias=bias, std=build.out_std)
        self.dropout = Dropout(config.mlp_dropout)
        self.activation = config.hidden_activation

    def __call__(self, x: jax.Array, *, deterministic: bool, rngs: nnx.Rngs | None) -> jax.Array:
        hidden, gate = jnp.split(self.Wi(x), 2, axis=-1)
        hidden = activation(self.activation)(hidden) * gate
        return self.Wo(self.dropout(hidden, deterministic=deterministic, rngs=rngs))


class ModernBertLayer(nnx.Module):
    """Pre-LN layer; layer 0 has no attention norm (Hugging Face uses an Identity there)."""

    def __init__(self, build: _Build, index: int):
        self.attn_norm: nnx.LayerNorm | None = nnx.data(build.norm() if index > 0 else None)
        self.local = build.config.layer_types[index] == LOCAL
        self.attn = ModernBertAttention(build, local=self.local)
        self.mlp_norm = build.norm()
        self.mlp = ModernBertMLP(build)

    def __call__(
        self,
        x: jax.Array,
        pairs: jax.Array,
        rotary: tuple[jax.Array, jax.Array],
        *,
        deterministic: bool,
        rngs: nnx.Rngs | None,
    ) -> jax.Array:
        normed = x if self.attn_norm is None else self.attn_norm(x)
        x = x + self.attn(normed, pairs, rotary, deterministic=deterministic, rngs=rngs)
        return x + self.mlp(self.mlp_norm(x), deterministic=deterministic, rngs=rngs)


class ModernBertEmbeddings(nnx.Module):
    """Token embeddings, LayerNorm, dropout."""

    def __init__(self, build: _Build):
        config = build.config
        self.tok_embeddings = nnx.Embed(
            config.vocab_size,
            config.hidden_size,
            param_dtype=build.param_dtype,
            embedding_init=build.init(config.initializer_range),
            rngs=build.rngs,
        )
        self.norm = build.norm()
        self.dropout = Dropout(config.embedding_dropout)

    def __call__(
        self, input_ids: jax.Array, *, deterministic: bool, rngs: nnx.Rngs | None
    ) -> jax.Array:
        x = self.norm(self.tok_embeddings(input_ids))
        return self.dropout(x, deterministic=deterministic, rngs=rngs)


class ModernBertModel(Encoder):
    """The ModernBERT encoder; returns the last hidden state (after `final_norm`)."""

    def __init__(
        self,
        config: ModernBertConfig,
        *,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        build = _Build(config, dtype, param_dtype, rngs)
        self.head_dim = config.head_dim
        self.rope_theta = (config.global_rope_theta, config.local_rope_theta)
        self.embeddings = ModernBertEmbeddings(build)
        self.layers = nnx.List([ModernBertLayer(build, i) for i in range(config.num_hidden_layers)])
        self.final_norm = build.norm()

    def encode(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        token_type_ids: jax.Array,
        position_ids: jax.Array,
        *,
        deterministic: bool,
        rngs: nnx.Rngs | None,
    ) -> jax.Array:
        del token_type_ids  # ModernBERT has no token types
        x = self.embeddings(input_ids, deterministic=deterministic, rngs=rngs)
        pairs = attention_pairs(attention_mask)
        # (global, local) tables, indexed by `layer.local`.
        rotary = [rotary_tables(position_ids, self.head_dim, theta) for theta in self.rope_theta]
        for layer in self.layers:
            x = layer(x, pairs, rotary[layer.local], deterministic=deterministic, rngs=rngs)
        return self.final_norm(x)


class ModernBertPredictionHead(nnx.Module):
    """`norm(act(dense(x)))`, applied to every token before the classifier."""

    def __init__(
        self,
        config: ModernBertConfig,
        *,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        build = _Build(config, dtype, param_dtype, rngs)
        self.dense = build.linear(
            config.hidden_size,
            config.hidden_size,
            use_bias=config.classifier_bias,
            std=build.out_std,
        )
        self.norm = build.norm()
        self.activation = config.classifier_activation

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.norm(activation(self.activation)(self.dense(x)))


class ModernBertForTokenClassification(EncoderForTokenClassification):
    """`encoder` (the Hugging Face `model`), prediction `head`, dropout, `classifier`."""

    backbone = ModernBertModel
    prediction_head = ModernBertPredictionHead

    def hf_classifier_std(self) -> float:
        """Hugging Face's ModernBERT draws its classifier with std 1/sqrt(hidden)."""
        return self.config.d_model**-0.5

    def kernel_init(self, std: float) -> jax.nn.initializers.Initializer:
        return truncated_normal(self.config, std)


# ---- checkpoint layout ----------------------------------------------------------------------------


_LAYER = "layers.{layer}"
# Linear layers and LayerNorms with optional biases: a rule for a bias the model does not have
# never matches a parameter, and a checkpoint bias without a parameter is reported as unexpected.
_ENCODER_RULES = (
    *embedding("embeddings.tok_embeddings", "embeddings.tok_embeddings"),
    *layer_norm("embeddings.norm", "embeddings.norm"),
    *layer_norm(f"{_LAYER}.attn_norm", f"{_LAYER}.attn_norm"),
    *linear(f"{_LAYER}.attn.Wqkv", f"{_LAYER}.attn.Wqkv"),
    *linear(f"{_LAYER}.attn.Wo", f"{_LAYER}.attn.Wo"),
    *layer_norm(f"{_LAYER}.mlp_norm", f"{_LAYER}.mlp_norm"),
    *linear(f"{_LAYER}.mlp.Wi", f"{_LAYER}.mlp.Wi"),
    *linear(f"{_LAYER}.mlp.Wo", f"{_LAYER}.mlp.Wo"),
    *layer_norm("final_norm", "final_norm"),
)

FAMILY = register_family(
    ModelFamily(
        name="modernbert",
        config_cls=ModernBertConfig,
        model_cls=ModernBertForTokenClassification,
        weights=WeightTable(
            "model.",
            _ENCODER_RULES,
            outside=(*linear("head.dense", "head.dense"), *layer_norm("head.norm", "head.norm")),
        ),
    )
)
