"""BERT: config, encoder and checkpoint layout (also the base of RoBERTa and ELECTRA)."""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from flaxtrainer.models.config import EncoderConfig
from flaxtrainer.models.dropout import Dropout
from flaxtrainer.models.encoder import Encoder
from flaxtrainer.models.hf_weights import WeightRule, WeightTable, embedding, layer_norm, linear
from flaxtrainer.models.layers import TransformerLayer, run_layers
from flaxtrainer.models.layers import layer_norm as make_layer_norm
from flaxtrainer.models.registry import ModelFamily, register_family
from flaxtrainer.models.token_classification import EncoderForTokenClassification


@dataclasses.dataclass(frozen=True, kw_only=True)
class BertConfig(EncoderConfig):
    """BERT hyper-parameters, named as in Hugging Face `config.json`."""

    model_type: str = "bert"
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    classifier_dropout: float | None = None

    architectures: ClassVar = {"bert": "BertForTokenClassification"}

    @property
    def d_model(self) -> int:
        return self.hidden_size

    @property
    def classifier_dropout_rate(self) -> float:
        if self.classifier_dropout is None:
            return self.hidden_dropout_prob
        return self.classifier_dropout

    def problems(self) -> list[str]:
        problems = super().problems() + self._check_ranges(
            positive=(
                "vocab_size",
                "hidden_size",
                "num_hidden_layers",
                "num_attention_heads",
                "intermediate_size",
                "max_position_embeddings",
                "type_vocab_size",
            ),
            rates=("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"),
        )
        problems += self._check_heads("hidden_size", "num_attention_heads")
        problems += self._check_activations("hidden_act")
        position_type = json.loads(self.extra_json).get("position_embedding_type", "absolute")
        if position_type != "absolute":
            problems.append(
                f"position_embedding_type={position_type!r}: only absolute positions are supported"
            )
        return problems


class BertEmbeddings(nnx.Module):
    """Word + position + token-type embeddings, LayerNorm, dropout."""

    def __init__(
        self,
        config: BertConfig,
        width: int,
        *,
        dtype: DTypeLike,
        param_dtype: DTypeLike,
        rngs: nnx.Rngs,
    ):
        # Lookups stay in param_dtype (no cast of whole tables); LayerNorm outputs `dtype`.
        embed = functools.partial(
            nnx.Embed,
            features=width,
            param_dtype=param_dtype,
            embedding_init=nnx.initializers.normal(config.initializer_range),
            rngs=rngs,
        )
        self.word_embeddings = embed(config.vocab_size)
        self.position_embeddings = embed(config.max_position_embeddings)
        self.token_type_embeddings = embed(config.type_vocab_size)
        self.layer_norm = make_layer_norm(
            width, epsilon=config.layer_norm_eps, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )
        self.dropout = Dropout(config.hidden_dropout_prob)

    def __call__(
        self,
        input_ids: jax.Array,
        token_type_ids: jax.Array,
        position_ids: jax.Array,
        *,
        deterministic: bool,
        rngs: nnx.Rngs | None,
    ) -> jax.Array:
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(position_ids)
            + self.token_type_embeddings(token_type_ids)
        )
        return self.dropout(self.layer_norm(x), deterministic=deterministic, rngs=rngs)


class BertModel(Encoder):
    """The BERT encoder; returns the last hidden state `[batch, seq, hidden_size]`."""

    def __init__(
        self,
        config: BertConfig,
        *,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.pad_token_id = config.pad_token_id
        self.embeddings = BertEmbeddings(
            config, self.embedding_width(config), dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )
        self.layers = nnx.List(
            [
                TransformerLayer(
                    config.hidden_size,
                    config.num_attention_heads,
                    config.intermediate_size,
                    activation=config.hidden_act,
                    hidden_dropout=config.hidden_dropout_prob,
                    attention_dropout=config.attention_probs_dropout_prob,
                    attention_output_dropout=config.hidden_dropout_prob,
                    layer_norm_eps=config.layer_norm_eps,
                    dtype=dtype,
                    param_dtype=param_dtype,
                    init_std=config.initializer_range,
                    rngs=rngs,
                )
                for _ in range(config.num_hidden_layers)
            ]
        )

    @staticmethod
    def embedding_width(config: BertConfig) -> int:
        return config.hidden_size

    def embed(
        self,
        input_ids: jax.Array,
        token_type_ids: jax.Array,
        position_ids: jax.Array,
        *,
        deterministic: bool,
        rngs: nnx.Rngs | None,
    ) -> jax.Array:
        return self.embeddings(
            input_ids, token_type_ids, position_ids, deterministic=deterministic, rngs=rngs
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
        x = self.embed(
            input_ids, token_type_ids, position_ids, deterministic=deterministic, rngs=rngs
        )
        return run_layers(self.layers, x, attention_mask, deterministic=deterministic, rngs=rngs)


class BertForTokenClassification(EncoderForTokenClassification):
    backbone = BertModel


def bert_layer_rules(hf_layers: str = "encoder.layer") -> tuple[WeightRule, ...]:
    """Checkpoint rules for BERT-style layers (shared by RoBERTa and ELECTRA)."""
    hf, nx = f"{hf_layers}.{{layer}}", "layers.{layer}"
    return (
        *linear(f"{hf}.attention.self.query", f"{nx}.attention.query"),
        *linear(f"{hf}.attention.self.key", f"{nx}.attention.key"),
        *linear(f"{hf}.attention.self.value", f"{nx}.attention.value"),
        *linear(f"{hf}.attention.output.dense", f"{nx}.attention.out"),
        *layer_norm(f"{hf}.attention.output.LayerNorm", f"{nx}.attention_norm"),
        *linear(f"{hf}.intermediate.dense", f"{nx}.intermediate"),
        *linear(f"{hf}.output.dense", f"{nx}.output"),
        *layer_norm(f"{hf}.output.LayerNorm", f"{nx}.output_norm"),
    )


BERT_EMBEDDING_RULES = (
    *embedding("embeddings.word_embeddings", "embeddings.word_embeddings"),
    *embedding("embeddings.position_embeddings", "embeddings.position_embeddings"),
    *embedding("embeddings.token_type_embeddings", "embeddings.token_type_embeddings"),
    *layer_norm("embeddings.LayerNorm", "embeddings.layer_norm"),
)

FAMILY = register_family(
    ModelFamily(
        name="bert",
        config_cls=BertConfig,
        model_cls=BertForTokenClassification,
        weights=WeightTable("bert.", (*BERT_EMBEDDING_RULES, *bert_layer_rules())),
    )
)
