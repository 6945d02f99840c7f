"""DeBERTa-v2 / v3 (`model_type` `deberta-v2`): disentangled attention over bucketed relative positions.

Covers microsoft/deberta-v3-{xsmall,small,base,large}, mdeberta-v3-base and the v2 models
(`conv_kernel_size` convolution, separate position projections when `share_att_key` is false,
`embedding_size` projection). Absolute position embeddings (`position_biased_input`, which no
released v2/v3 model uses) and grouped convolutions are refused with a `ModelLoadError`. The
enhanced mask decoder is a pre-training head and is not built.

Relative positions come from `position_ids` (default `0..seq-1`, as Hugging Face), so a packed
row whose `position_ids` restart per sentence (`segment_position_ids`) gives every sentence the
relative positions it has alone; attention across sentences is masked as in every family, and
the v2 convolution does not look across a sentence boundary either.

This file: the encoder (embeddings, layers, the v2 convolution), the token-classification model
and the checkpoint layout. The hyper-parameters are in `deberta_v2_config.py`, the disentangled
attention in `deberta_v2_attention.py`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import DTypeLike

from flaxtrainer.models.dropout import Dropout
from flaxtrainer.models.encoder import Encoder
from flaxtrainer.models.families.deberta_v2_attention import (
    DisentangledSelfAttention,
    relative_positions,
)
from flaxtrainer.models.families.deberta_v2_config import DebertaV2Config
from flaxtrainer.models.hf_weights import (
    TRANSPOSE,
    Transform,
    WeightRule,
    WeightTable,
    embedding,
    layer_norm,
    linear,
)
from flaxtrainer.models.layers import (
    activation,
    attention_pairs,
    dense,
)
from flaxtrainer.models.layers import layer_norm as make_layer_norm
from flaxtrainer.models.registry import ModelFamily, register_family
from flaxtrainer.models.token_classification import EncoderForTokenClassification


class DebertaV2Layer(nnx.Module):
    """Post-LayerNorm layer around disentangled attention (the BERT layout otherwise)."""

    def __init__(
        self, config: DebertaV2Config, *, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs
    ):
        common = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        width, eps = config.hidden_size, config.layer_norm_eps
        init = config.initializer_range
        self.attention = DisentangledSelfAttention(config, **common)
        self.attention_dropout = Dropout(config.hidden_dropout_prob)
        self.attention_norm = make_layer_norm(width, epsilon=eps, **common)
        self.intermediate = dense(width, config.intermediate_size, init_std=init, **common)
        self.output = dense(config.intermediate_size, width, init_std=init, **common)
        self.output_dropout = Dropout(config.hidden_dropout_prob)
        self.output_norm = make_layer_norm(width, epsilon=eps, **common)
        self.activation = config.hidden_act

    def __call__(
        self,
        x: jax.Array,
        pairs: jax.Array,
        c2p_index: jax.Array | None,
        p2c_index: jax.Array | None,
        rel_embeddings: jax.Array | None,
        *,
        deterministic: bool,
        rngs: nnx.Rngs | None,
    ) -> jax.Array:
        attended = self.attention(
            x, pairs, c2p_index, p2c_index, rel_embeddings, deterministic=deterministic, rngs=rngs
        )
        attended = self.attention_dropout(attended, deterministic=deterministic, rngs=rngs)
        x = self.attention_norm(attended + x)
        hidden = self.output(activation(self.activation)(self.intermediate(x)))
        hidden = self.output_dropout(hidden, deterministic=deterministic, rngs=rngs)
        return self.output_norm(hidden + x)


class SegmentConv(nnx.Module):
    """transformers' DeBERTa-v2 `ConvLayer`, blind to tokens of other packed sentences.

    Applied to the embeddings after the first layer: `LayerNorm(layer_out + act(conv(emb)))`. The
    convolution is a sum over kernel offsets of shifted inputs, each zeroed where the neighbour
    is padding or belongs to another sentence, which is what each sentence sees on its own.
    """

    def __init__(
        self, config: DebertaV2Config, *, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs
    ):
        width, size = config.hidden_size, config.conv_kernel_size
        # [kernel, in, out], as nnx.Conv stores it (PyTorch Conv1d: [out, in, kernel]).
        self.kernel = nnx.Param(
            nnx.initializers.normal(config.initializer_range)(
                rngs.params(), (size, width, width), param_dtype
            )
        )
        self.bias = nnx.Param(jnp.zeros((width,), param_dtype))
        self.layer_norm = make_layer_norm(
            width, epsilon=config.layer_norm_eps, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.activation = config.conv_act
        self.dtype = dtype

    def __call__(
        self,
        embedded: jax.Array,
        residual: jax.Array,
        attention_mask: jax.Array,
        *,
        deterministic: bool,
        rngs: nnx.Rngs | None,
    ) -> jax.Array:
        size, seq = self.kernel[...].shape[0], embedded.shape[1]
        half = (size - 1) // 2
        x = embedded.astype(self.dtype)
        kernel = self.kernel[...].astype(self.dtype)
        padded_x = jnp.pad(x, ((0, 0), (half, half), (0, 0)))
        padded_mask = jnp.pad(attention_mask, ((0, 0), (half, half)))
        out = self.bias[...].astype(self.dtype)
        for j in range(size):  # neighbour at offset j - half
            same = (padded_mask[:, j : j + seq] == attention_mask)[..., None]
            out = out + jnp.where(same, padded_x[:, j : j + seq], 0) @ kernel[j]
        real = (attention_mask != 0)[..., None]
        out = jnp.where(real, out, 0)
        out = activation(self.activation)(self.dropout(out, deterministic=deterministic, rngs=rngs))
        normed = self.layer_norm(residual + out)
        return normed * real.astype(normed.dtype)


class DebertaV2Embeddings(nnx.Module):
    """Word (+ token type) embeddings, projection, LayerNorm, dropout (no absolute positions)."""

    def __init__(
        self, config: DebertaV2Config, *, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs
    ):
        embed = functools.partial(
            nnx.Embed,
            features=config.embedding_width,
            param_dtype=param_dtype,
            embedding_init=nnx.initializers.normal(config.initializer_range),
            rngs=rngs,
        )
        self.word_embeddings = embed(config.vocab_size)
        self.token_type_embeddings: nnx.Embed | None = nnx.data(None)
        if config.type_vocab_size > 0:
            self.token_type_embeddings = embed(config.type_vocab_size)
        self.embed_proj: nnx.Linear | None = nnx.data(None)
        if config.embedding_width != config.hidden_size:
            self.embed_proj = nnx.Linear(
                config.embedding_width,
                config.hidden_size,
                use_bias=False,
                dtype=dtype,
                param_dtype=param_dtype,
                kernel_init=nnx.initializers.normal(config.initializer_range),
                rngs=rngs,
            )
        self.layer_norm = make_layer_norm(
            config.hidden_size,
            epsilon=config.layer_norm_eps,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.dropout = Dropout(config.hidden_dropout_prob)

    def __call__(
        self,
        input_ids: jax.Array,
        token_type_ids: jax.Array,
        attention_mask: jax.Array,
        *,
        deterministic: bool,
        rngs: nnx.Rngs | None,
    ) -> jax.Array:
        x = self.word_embeddings(input_ids)
        if self.token_type_embeddings is not None:
            x = x + self.token_type_embeddings(token_type_ids)
        if self.embed_proj is not None:
            x = self.embed_proj(x)
        x = self.layer_norm(x)
        x = x * (attention_mask != 0)[..., None].astype(x.dtype)  # padding embeds to zero (as HF)
        return self.dropout(x, deterministic=deterministic, rngs=rngs)


class DebertaV2Model(Encoder):
    """The DeBERTa-v2 encoder; returns the last hidden state `[batch, seq, hidden_size]`."""

    def __init__(
        self,
        config: DebertaV2Config,
        *,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.config = config
        common = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.embeddings = DebertaV2Embeddings(config, **common)
        self.layers = nnx.List(
            [DebertaV2Layer(config, **common) for _ in range(config.num_hidden_layers)]
        )
        self.rel_embeddings: nnx.Embed | None = nnx.data(None)
        self.rel_norm: nnx.LayerNorm | None = nnx.data(None)
        if config.relative_attention:
            self.rel_embeddings = nnx.Embed(
                2 * config.relative_span,
                config.hidden_size,
                param_dtype=param_dtype,
                embedding_init=nnx.initializers.normal(config.initializer_range),
                rngs=rngs,
            )
            if config.normalize_rel_embeddings:
                self.rel_norm = make_layer_norm(
                    config.hidden_size, epsilon=config.layer_norm_eps, **common
                )
        self.conv: SegmentConv | None = nnx.data(None)
        if config.conv_kernel_size > 0:
            self.conv = SegmentConv(config, **common)

    def _relative_inputs(
        self, position_ids: jax.Array
    ) -> tuple[jax.Array | None, jax.Array | None, jax.Array | None]:
        """Gather indices into the relative-embedding table (c2p, p2c) and the table itself."""
        if self.rel_embeddings is None:
            return None, None, None
        span = self.config.relative_span
        relative = relative_positions(position_ids, self.config)
        c2p_index = jnp.clip(relative + span, 0, 2 * span - 1)
        # p2c reads row `key` at -relative[key, query] (transformers transposes after gathering).
        p2c_index = jnp.clip(-relative + span, 0, 2 * span - 1)
        table = self.rel_embeddings.embedding[...]
        if self.rel_norm is not None:
            table = self.rel_norm(table)
        return c2p_index, p2c_index, table

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
        embedded = self.embeddings(
            input_ids, token_type_ids, attention_mask, deterministic=deterministic, rngs=rngs
        )
        pairs = attention_pairs(attention_mask)
        c2p_index, p2c_index, rel_embeddings = self._relative_inputs(position_ids)
        x = embedded
        for i, layer in enumerate(self.layers):
            x = layer(
                x,
                pairs,
                c2p_index,
                p2c_index,
                rel_embeddings,
                deterministic=deterministic,
                rngs=rngs,
            )
            if i == 0 and self.conv is not None:
                x = self.conv(embedded, x, attention_mask, deterministic=deterministic, rngs=rngs)
        return x


class DebertaV2ForTokenClassification(EncoderForTokenClassification):
    backbone = DebertaV2Model


# ---- checkpoint layout ----------------------------------------------------------------------------

CONV1D = Transform(
    "conv1d",
    lambda a: np.transpose(a, (2, 1, 0)),
    lambda a: np.transpose(a, (2, 1, 0)),
    lambda s: tuple(s[::-1]),
)


def _deberta_rules() -> tuple[WeightRule, ...]:
    """No rule for `embeddings.position_embeddings`: checkpoints may carry that unused table."""
    hf, nx = "encoder.layer.{layer}", "layers.{layer}"
    return (
        *embedding("embeddings.word_embeddings", "embeddings.word_embeddings"),
        *embedding("embeddings.token_type_embeddings", "embeddings.token_type_embeddings"),
        WeightRule("embeddings.embed_proj.weight", "embeddings.embed_proj.kernel", TRANSPOSE),
        *layer_norm("embeddings.LayerNorm", "embeddings.layer_norm"),
        *linear(f"{hf}.attention.self.query_proj", f"{nx}.attention.query"),
        *linear(f"{hf}.attention.self.key_proj", f"{nx}.attention.key"),
        *linear(f"{hf}.attention.self.value_proj", f"{nx}.attention.value"),
        *linear(f"{hf}.attention.self.pos_key_proj", f"{nx}.attention.pos_key"),
        *linear(f"{hf}.attention.self.pos_query_proj", f"{nx}.attention.pos_query"),
        *linear(f"{hf}.attention.output.dense", f"{nx}.attention.out"),
        *layer_norm(f"{hf}.attention.output.LayerNorm", f"{nx}.attention_norm"),
        *linear(f"{hf}.intermediate.dense", f"{nx}.intermediate"),
        *linear(f"{hf}.output.dense", f"{nx}.output"),
        *layer_norm(f"{hf}.output.LayerNorm", f"{nx}.output_norm"),
        *embedding("encoder.rel_embeddings", "rel_embeddings"),
        *layer_norm("encoder.LayerNorm", "rel_norm"),
        WeightRule("encoder.conv.conv.weight", "conv.kernel", CONV1D),
        WeightRule("encoder.conv.conv.bias", "conv.bias"),
        *layer_norm("encoder.conv.LayerNorm", "conv.layer_norm"),
    )


FAMILY = register_family(
    ModelFamily(
        name="deberta-v2",
        config_cls=DebertaV2Config,
        model_cls=DebertaV2ForTokenClassification,
        weights=WeightTable("deberta.", _deberta_rules()),
    )
)
