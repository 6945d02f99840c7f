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

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flaxtrainer.models.dropout import Dropout
from flaxtrainer.models.encoder import Encoder, EncoderInputs
from flaxtrainer.models.families.bert import BERT_LAYER_NAMES
from flaxtrainer.models.families.deberta_v2_attention import (
    DisentangledSelfAttention,
    Relative,
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
)
from flaxtrainer.models.layers import (
    Build,
    activation,
    attention_pairs,
    layer_rules,
    post_ln_layers,
)
from flaxtrainer.models.registry import ModelFamily, register_family
from flaxtrainer.models.token_classification import EncoderForTokenClassification


class SegmentConv(nnx.Module):
    """transformers' DeBERTa-v2 `ConvLayer`, blind to tokens of other packed sentences.

    Applied to the embeddings after the first layer: `LayerNorm(layer_out + act(conv(emb)))`. The
    convolution is a sum over kernel offsets of shifted inputs, each zeroed where the neighbour
    is padding or belongs to another sentence, which is what each sentence sees on its own.
    """

    def __init__(self, config: DebertaV2Config, build: Build):
        width, size = config.hidden_size, config.conv_kernel_size
        # [kernel, in, out], as nnx.Conv stores it (PyTorch Conv1d: [out, in, kernel]).
        self.kernel = nnx.Param(
            build.init(config.initializer_range)(
                build.rngs.params(), (size, width, width), build.param_dtype
            )
        )
        self.bias = nnx.Param(jnp.zeros((width,), build.param_dtype))
        self.layer_norm = build.norm(width, epsilon=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.activation = config.conv_act
        self.dtype = build.dtype

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

    def __init__(self, config: DebertaV2Config, build: Build):
        width, std = config.embedding_width, config.initializer_range
        self.word_embeddings = build.embed(config.vocab_size, width, std=std)
        self.token_type_embeddings: nnx.Embed | None = nnx.data(None)
        if config.type_vocab_size > 0:
            self.token_type_embeddings = build.embed(config.type_vocab_size, width, std=std)
        self.embed_proj: nnx.Linear | None = nnx.data(None)
        if width != config.hidden_size:
            self.embed_proj = build.linear(width, config.hidden_size, std=std, use_bias=False)
        self.layer_norm = build.norm(config.hidden_size, epsilon=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def __call__(
        self, inputs: EncoderInputs, *, deterministic: bool, rngs: nnx.Rngs | None
    ) -> jax.Array:
        x = self.word_embeddings(inputs.input_ids)
        if self.token_type_embeddings is not None:
            x = x + self.token_type_embeddings(inputs.token_type_ids)
        if self.embed_proj is not None:
            x = self.embed_proj(x)
        x = self.layer_norm(x)
        real = inputs.attention_mask != 0
        x = x * real[..., None].astype(x.dtype)  # padding embeds to zero (as HF)
        return self.dropout(x, deterministic=deterministic, rngs=rngs)


class DebertaV2Model(Encoder):
    """The DeBERTa-v2 encoder; returns the last hidden state `[batch, seq, hidden_size]`."""

    def setup(self, config: DebertaV2Config, build: Build) -> None:
        self.config = config
        self.embeddings = DebertaV2Embeddings(config, build)
        self.layers = post_ln_layers(
            config, build, lambda: DisentangledSelfAttention(config, build)
        )
        self.rel_embeddings: nnx.Embed | None = nnx.data(None)
        self.rel_norm: nnx.LayerNorm | None = nnx.data(None)
        if config.relative_attention:
            self.rel_embeddings = build.embed(
                2 * config.relative_span, config.hidden_size, std=config.initializer_range
            )
            if config.normalize_rel_embeddings:
                self.rel_norm = build.norm(config.hidden_size, epsilon=config.layer_norm_eps)
        self.conv: SegmentConv | None = nnx.data(None)
        if config.conv_kernel_size > 0:
            self.conv = SegmentConv(config, build)

    def _relative(self, position_ids: jax.Array) -> Relative | None:
        """What the layers' attention reads of the relative positions (None without them)."""
        if self.rel_embeddings is None:
            return None
        span = self.config.relative_span
        relative = relative_positions(position_ids, self.config)
        c2p_index = jnp.clip(relative + span, 0, 2 * span - 1)
        # p2c reads row `key` at -relative[key, query] (transformers transposes after gathering).
        p2c_index = jnp.clip(-relative + span, 0, 2 * span - 1)
        table = self.rel_embeddings.embedding[...]
        if self.rel_norm is not None:
            table = self.rel_norm(table)
        return Relative(c2p_index, p2c_index, table)

    def forward(
        self, inputs: EncoderInputs, *, deterministic: bool, rngs: nnx.Rngs | None
    ) -> jax.Array:
        embedded = self.embeddings(inputs, deterministic=deterministic, rngs=rngs)
        pairs = attention_pairs(inputs.attention_mask)
        relative = self._relative(inputs.position_ids)
        x = embedded
        for i, layer in enumerate(self.layers):
            x = layer(x, pairs, relative, deterministic=deterministic, rngs=rngs)
            if i == 0 and self.conv is not None:
                x = self.conv(
                    embedded, x, inputs.attention_mask, deterministic=deterministic, rngs=rngs
                )
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
    layer_names = {
        **BERT_LAYER_NAMES,
        "attention.query": "attention.self.query_proj",
        "attention.key": "attention.self.key_proj",
        "attention.value": "attention.self.value_proj",
        "attention.pos_key": "attention.self.pos_key_proj",
        "attention.pos_query": "attention.self.pos_query_proj",
    }
    return (
        *embedding("embeddings.word_embeddings", "embeddings.word_embeddings"),
        *embedding("embeddings.token_type_embeddings", "embeddings.token_type_embeddings"),
        WeightRule("embeddings.embed_proj.weight", "embeddings.embed_proj.kernel", TRANSPOSE),
        *layer_norm("embeddings.LayerNorm", "embeddings.layer_norm"),
        *layer_rules("encoder.layer.{layer}", layer_names),
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
