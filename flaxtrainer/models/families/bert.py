"""BERT: config, encoder and checkpoint layout (also the base of RoBERTa, ELECTRA, DistilBERT)."""

from __future__ import annotations

import dataclasses
import json
from typing import ClassVar

import jax
from flax import nnx

from flaxtrainer.models.config import BertLikeConfig
from flaxtrainer.models.dropout import Dropout
from flaxtrainer.models.encoder import Encoder, EncoderInputs
from flaxtrainer.models.hf_weights import WeightTable, embedding, layer_norm
from flaxtrainer.models.layers import Build, layer_rules, post_ln_layers, run_layers
from flaxtrainer.models.registry import ModelFamily, register_family
from flaxtrainer.models.token_classification import EncoderForTokenClassification


@dataclasses.dataclass(frozen=True, kw_only=True)
class BertConfig(BertLikeConfig):
    """BERT hyper-parameters, named as in Hugging Face `config.json`."""

    model_type: str = "bert"
    classifier_dropout: float | None = None

    architectures: ClassVar = {"bert": "BertForTokenClassification"}

    @property
    def classifier_dropout_rate(self) -> float:
        if self.classifier_dropout is None:
            return self.hidden_dropout_prob
        return self.classifier_dropout

    def problems(self) -> list[str]:
        problems = super().problems() + self._check_ranges(
            positive=("type_vocab_size",), rates=("classifier_dropout",)
        )
        position_type = json.loads(self.extra_json).get("position_embedding_type", "absolute")
        if position_type != "absolute":
            problems.append(
                f"position_embedding_type={position_type!r}: only absolute positions are supported"
            )
        return problems


class BertEmbeddings(nnx.Module):
    """Word + position (+ token-type) embeddings, LayerNorm, dropout (`type_vocab_size` 0: no
    token types, as in DistilBERT)."""

    def __init__(self, config: BertConfig, build: Build):
        width, std = config.embedding_width, config.initializer_range
        self.word_embeddings = build.embed(config.vocab_size, width, std=std)
        # With DistilBERT's sinusoidal_pos_embds the checkpoint holds the fixed sinusoids; they
        # load like any other table (and, as in PyTorch fine-tuning scripts, are trainable here).
        self.position_embeddings = build.embed(config.max_position_embeddings, width, std=std)
        self.token_type_embeddings: nnx.Embed | None = nnx.data(None)
        if config.type_vocab_size:
            self.token_type_embeddings = build.embed(config.type_vocab_size, width, std=std)
        self.layer_norm = build.norm(width, epsilon=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def __call__(
        self, inputs: EncoderInputs, *, deterministic: bool, rngs: nnx.Rngs | None
    ) -> jax.Array:
        x = self.word_embeddings(inputs.input_ids) + self.position_embeddings(inputs.position_ids)
        if self.token_type_embeddings is not None:
            x = x + self.token_type_embeddings(inputs.token_type_ids)
        return self.dropout(self.layer_norm(x), deterministic=deterministic, rngs=rngs)


class BertModel(Encoder):
    """The BERT encoder; returns the last hidden state `[batch, seq, hidden_size]`."""

    def setup(self, config: BertConfig, build: Build) -> None:
        self.pad_token_id = config.pad_token_id
        self.embeddings = BertEmbeddings(config, build)
        self.layers = post_ln_layers(config, build)

    def embed(
        self, inputs: EncoderInputs, *, deterministic: bool, rngs: nnx.Rngs | None
    ) -> jax.Array:
        return self.embeddings(inputs, deterministic=deterministic, rngs=rngs)

    def forward(
        self, inputs: EncoderInputs, *, deterministic: bool, rngs: nnx.Rngs | None
    ) -> jax.Array:
        x = self.embed(inputs, deterministic=deterministic, rngs=rngs)
        mask = inputs.attention_mask
        return run_layers(self.layers, x, mask, deterministic=deterministic, rngs=rngs)


class BertForTokenClassification(EncoderForTokenClassification):
    backbone = BertModel


#: Hugging Face names of a layer's parameters in BERT (and RoBERTa, ELECTRA, DeBERTa-v2).
BERT_LAYER_NAMES = {
    "attention.query": "attention.self.query",
    "attention.key": "attention.self.key",
    "attention.value": "attention.self.value",
    "attention.out": "attention.output.dense",
    "attention_norm": "attention.output.LayerNorm",
    "intermediate": "intermediate.dense",
    "output": "output.dense",
    "output_norm": "output.LayerNorm",
}

#: The rules of `BertEmbeddings` (also DistilBERT's, which has no token-type table).
BERT_EMBEDDING_RULES = (
    *embedding("embeddings.word_embeddings", "embeddings.word_embeddings"),
    *embedding("embeddings.position_embeddings", "embeddings.position_embeddings"),
    *embedding("embeddings.token_type_embeddings", "embeddings.token_type_embeddings"),
    *layer_norm("embeddings.LayerNorm", "embeddings.layer_norm"),
)
BERT_RULES = (*BERT_EMBEDDING_RULES, *layer_rules("encoder.layer.{layer}", BERT_LAYER_NAMES))

FAMILY = register_family(
    ModelFamily(
        name="bert",
        config_cls=BertConfig,
        model_cls=BertForTokenClassification,
        weights=WeightTable("bert.", BERT_RULES),
    )
)
