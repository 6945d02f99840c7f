"""DistilBERT: word + position embeddings (no token types), post-LN layers under other names."""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from flaxtrainer.models.config import EncoderConfig
from flaxtrainer.models.dropout import Dropout
from flaxtrainer.models.encoder import Encoder
from flaxtrainer.models.hf_weights import WeightTable, embedding, layer_norm, linear
from flaxtrainer.models.layers import TransformerLayer, run_layers
from flaxtrainer.models.layers import layer_norm as make_layer_norm
from flaxtrainer.models.registry import ModelFamily, register_family
from flaxtrainer.models.token_classification import EncoderForTokenClassification

# DistilBERT hard-codes its LayerNorm epsilon (it is not in config.json).
_LAYER_NORM_EPS = 1e-12


@dataclasses.dataclass(frozen=True, kw_only=True)
class DistilBertConfig(EncoderConfig):
    """DistilBERT hyper-parameters, named as in Hugging Face `config.json`."""

    model_type: str = "distilbert"
    sinusoidal_pos_embds: bool = False
    n_layers: int = 6
    n_heads: int = 12
    dim: int = 768
    hidden_dim: int = 3072
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation: str = "gelu"
    qa_dropout: float = 0.1
    seq_classif_dropout: float = 0.2

    architectures: ClassVar = {"distilbert": "DistilBertForTokenClassification"}

    @property
    def d_model(self) -> int:
        return self.dim

    @property
    def classifier_dropout_rate(self) -> float:
        return self.dropout  # DistilBertForTokenClassification uses `dropout`

    def problems(self) -> list[str]:
        problems = super().problems() + self._check_ranges(
            positive=(
                "vocab_size",
                "max_position_embeddings",
                "n_layers",
                "n_heads",
                "dim",
                "hidden_dim",
            ),
            rates=("dropout", "attention_dropout"),
        )
        return (
            problems + self._check_heads("dim", "n_heads") + self._check_activations("activation")
        )


class DistilBertEmbeddings(nnx.Module):
    """Word + position embeddings, LayerNorm, dropout."""

    def __init__(
        self, config: DistilBertConfig, *, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs
    ):
        embed = functools.partial(
            nnx.Embed,
            features=config.dim,
            param_dtype=param_dtype,
            embedding_init=nnx.initializers.normal(config.initializer_range),
            rngs=rngs,
        )
        self.word_embeddings = embed(config.vocab_size)
        # With sinusoidal_pos_embds the checkpoint holds the fixed sinusoids; they load like any
        # other table (and, as in PyTorch fine-tuning scripts, are trainable here).
        self.position_embeddings = embed(config.max_position_embeddings)
        self.layer_norm = make_layer_norm(
            config.dim, epsilon=_LAYER_NORM_EPS, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )
        self.dropout = Dropout(config.dropout)

    def __call__(
        self,
        input_ids: jax.Array,
        position_ids: jax.Array,
        *,
        deterministic: bool,
        rngs: nnx.Rngs | None,
    ) -> jax.Array:
        x = self.word_embeddings(input_ids) + self.position_embeddings(position_ids)
        return self.dropout(self.layer_norm(x), deterministic=deterministic, rngs=rngs)


class DistilBertModel(Encoder):
    """The DistilBERT encoder; returns the last hidden state `[batch, seq, dim]`."""

    def __init__(
        self,
        config: DistilBertConfig,
        *,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.embeddings = DistilBertEmbeddings(
            config, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )
        self.layers = nnx.List(
            [
                TransformerLayer(
                    config.dim,
                    config.n_heads,
                    config.hidden_dim,
                    activation=config.activation,
                    hidden_dropout=config.dropout,
                    attention_dropout=config.attention_dropout,
                    attention_output_dropout=0.0,  # DistilBERT has none after out_lin
                    layer_norm_eps=_LAYER_NORM_EPS,
                    dtype=dtype,
                    param_dtype=param_dtype,
                    init_std=config.initializer_range,
                    rngs=rngs,
                )
                for _ in range(config.n_layers)
            ]
        )

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
        del token_type_ids  # DistilBERT has no token types
        x = self.embeddings(input_ids, position_ids, deterministic=deterministic, rngs=rngs)
        return run_layers(self.layers, x, attention_mask, deterministic=deterministic, rngs=rngs)


class DistilBertForTokenClassification(EncoderForTokenClassification):
    backbone = DistilBertModel


def _layer_rules() -> tuple:
    hf, nx = "transformer.layer.{layer}", "layers.{layer}"
    return (
        *linear(f"{hf}.attention.q_lin", f"{nx}.attention.query"),
        *linear(f"{hf}.attention.k_lin", f"{nx}.attention.key"),
        *linear(f"{hf}.attention.v_lin", f"{nx}.attention.value"),
        *linear(f"{hf}.attention.out_lin", f"{nx}.attention.out"),
        *layer_norm(f"{hf}.sa_layer_norm", f"{nx}.attention_norm"),
        *linear(f"{hf}.ffn.lin1", f"{nx}.intermediate"),
        *linear(f"{hf}.ffn.lin2", f"{nx}.output"),
        *layer_norm(f"{hf}.output_layer_norm", f"{nx}.output_norm"),
    )


FAMILY = register_family(
    ModelFamily(
        name="distilbert",
        config_cls=DistilBertConfig,
        model_cls=DistilBertForTokenClassification,
        weights=WeightTable(
            "distilbert.",
            (
                *embedding("embeddings.word_embeddings", "embeddings.word_embeddings"),
                *embedding("embeddings.position_embeddings", "embeddings.position_embeddings"),
                *layer_norm("embeddings.LayerNorm", "embeddings.layer_norm"),
                *_layer_rules(),
            ),
        ),
    )
)
