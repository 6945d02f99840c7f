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

import jax
import jax.numpy as jnp
from flax import nnx

from flaxtrainer.models.dropout import Dropout
from flaxtrainer.models.encoder import Encoder, EncoderInputs
from flaxtrainer.models.families.modernbert_config import LOCAL, ModernBertConfig
from flaxtrainer.models.hf_weights import WeightTable, embedding, layer_norm, linear
from flaxtrainer.models.layers import (
    Build,
    activation,
    apply_rotary,
    attention,
    attention_pairs,
    rotary_tables,
)
from flaxtrainer.models.registry import ModelFamily, register_family
from flaxtrainer.models.token_classification import EncoderForTokenClassification

# ---- modules --------------------------------------------------------------------------------------


def _norm(config: ModernBertConfig, build: Build) -> nnx.LayerNorm:
    return build.norm(config.hidden_size, epsilon=config.norm_eps, use_bias=config.norm_bias)


class ModernBertAttention(nnx.Module):
    """Fused q/k/v projection, rotary positions, (windowed) attention, output projection."""

    def __init__(self, config: ModernBertConfig, build: Build, *, local: bool):
        width, bias = config.hidden_size, config.attention_bias
        self.num_heads, self.head_dim = config.num_attention_heads, config.head_dim
        self.local_window = config.sliding_window if local else None
        self.Wqkv = build.linear(width, 3 * width, use_bias=bias, std=config.initializer_range)
        self.Wo = build.linear(width, width, use_bias=bias, std=config.residual_std)
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

    def __init__(self, config: ModernBertConfig, build: Build):
        width, inner, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.Wi = build.linear(width, 2 * inner, use_bias=bias, std=config.initializer_range)
        self.Wo = build.linear(inner, width, use_bias=bias, std=config.residual_std)
        self.dropout = Dropout(config.mlp_dropout)
        self.activation = config.hidden_activation

    def __call__(self, x: jax.Array, *, deterministic: bool, rngs: nnx.Rngs | None) -> jax.Array:
        hidden, gate = jnp.split(self.Wi(x), 2, axis=-1)
        hidden = activation(self.activation)(hidden) * gate
        return self.Wo(self.dropout(hidden, deterministic=deterministic, rngs=rngs))


class ModernBertLayer(nnx.Module):
    """Pre-LN layer; layer 0 has no attention norm (Hugging Face uses an Identity there)."""

    def __init__(self, config: ModernBertConfig, build: Build, index: int):
        self.attn_norm: nnx.LayerNorm | None = nnx.data(_norm(config, build) if index else None)
        self.local = config.layer_types[index] == LOCAL
        self.attn = ModernBertAttention(config, build, local=self.local)
        self.mlp_norm = _norm(config, build)
        self.mlp = ModernBertMLP(config, build)

    def __call__(
        self, x: jax.Array, *attention_inputs: object, deterministic: bool, rngs: nnx.Rngs | None
    ) -> jax.Array:
        """`attention_inputs`: what the attention reads besides `x` (`pairs`, `rotary`)."""
        normed = x if self.attn_norm is None else self.attn_norm(x)
        x = x + self.attn(normed, *attention_inputs, deterministic=deterministic, rngs=rngs)
        return x + self.mlp(self.mlp_norm(x), deterministic=deterministic, rngs=rngs)


class ModernBertEmbeddings(nnx.Module):
    """Token embeddings, LayerNorm, dropout."""

    def __init__(self, config: ModernBertConfig, build: Build):
        self.tok_embeddings = build.embed(
            config.vocab_size, config.hidden_size, std=config.initializer_range
        )
        self.norm = _norm(config, build)
        self.dropout = Dropout(config.embedding_dropout)

    def __call__(
        self, input_ids: jax.Array, *, deterministic: bool, rngs: nnx.Rngs | None
    ) -> jax.Array:
        x = self.norm(self.tok_embeddings(input_ids))
        return self.dropout(x, deterministic=deterministic, rngs=rngs)


class ModernBertModel(Encoder):
    """The ModernBERT encoder; returns the last hidden state (after `final_norm`)."""

    def setup(self, config: ModernBertConfig, build: Build) -> None:
        self.head_dim = config.head_dim
        self.rope_theta = (config.global_rope_theta, config.local_rope_theta)
        self.embeddings = ModernBertEmbeddings(config, build)
        self.layers = nnx.List(
            [ModernBertLayer(config, build, i) for i in range(config.num_hidden_layers)]
        )
        self.final_norm = _norm(config, build)

    def forward(
        self, inputs: EncoderInputs, *, deterministic: bool, rngs: nnx.Rngs | None
    ) -> jax.Array:
        x = self.embeddings(inputs.input_ids, deterministic=deterministic, rngs=rngs)
        pairs = attention_pairs(inputs.attention_mask)
        # (global, local) tables, indexed by `layer.local`.
        rotary = [
            rotary_tables(inputs.position_ids, self.head_dim, theta) for theta in self.rope_theta
        ]
        for layer in self.layers:
            x = layer(x, pairs, rotary[layer.local], deterministic=deterministic, rngs=rngs)
        return self.final_norm(x)


class ModernBertPredictionHead(nnx.Module):
    """`norm(act(dense(x)))`, applied to every token before the classifier."""

    def __init__(self, config: ModernBertConfig, build: Build):
        width = config.hidden_size
        self.dense = build.linear(
            width, width, use_bias=config.classifier_bias, std=config.residual_std
        )
        self.norm = _norm(config, build)
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
