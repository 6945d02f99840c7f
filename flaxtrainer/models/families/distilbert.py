"""DistilBERT: BERT's encoder under other names, without token types or post-attention dropout."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from flaxtrainer.models.config import EncoderConfig, alias
from flaxtrainer.models.families.bert import BERT_EMBEDDING_RULES, BertModel
from flaxtrainer.models.hf_weights import WeightTable
from flaxtrainer.models.layers import layer_rules
from flaxtrainer.models.registry import ModelFamily, register_family
from flaxtrainer.models.token_classification import EncoderForTokenClassification


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

    # BERT's names for these hyper-parameters (transformers' `attribute_map`, completed): the
    # shared BERT embeddings and layers read them.
    hidden_size = alias("dim")
    num_hidden_layers = alias("n_layers")
    num_attention_heads = alias("n_heads")
    intermediate_size = alias("hidden_dim")
    hidden_act = alias("activation")
    hidden_dropout_prob = alias("dropout")
    attention_probs_dropout_prob = alias("attention_dropout")
    # Not in config.json: DistilBERT has no token types and no dropout after the attention
    # output (out_lin), and hard-codes its LayerNorm epsilon.
    type_vocab_size: ClassVar[int] = 0
    attention_output_dropout: ClassVar[float] = 0.0
    layer_norm_eps: ClassVar[float] = 1e-12

    @property
    def d_model(self) -> int:
        return self.dim

    @property
    def classifier_dropout_rate(self) -> float:
        return self.dropout  # DistilBertForTokenClassification uses `dropout`

    def problems(self) -> list[str]:
        sizes = (
            "vocab_size",
            "max_position_embeddings",
            "n_layers",
            "n_heads",
            "dim",
            "hidden_dim",
        )
        problems = super().problems() + self._check_ranges(
            positive=sizes, rates=("dropout", "attention_dropout")
        )
        return (
            problems + self._check_heads("dim", "n_heads") + self._check_activations("activation")
        )


class DistilBertModel(BertModel):
    """The DistilBERT encoder (BERT's, reading a `DistilBertConfig`: word and position
    embeddings only); returns the last hidden state `[batch, seq, dim]`."""


class DistilBertForTokenClassification(EncoderForTokenClassification):
    backbone = DistilBertModel


_LAYER_NAMES = {
    "attention.query": "attention.q_lin",
    "attention.key": "attention.k_lin",
    "attention.value": "attention.v_lin",
    "attention.out": "attention.out_lin",
    "attention_norm": "sa_layer_norm",
    "intermediate": "ffn.lin1",
    "output": "ffn.lin2",
    "output_norm": "output_layer_norm",
}

FAMILY = register_family(
    ModelFamily(
        name="distilbert",
        config_cls=DistilBertConfig,
        model_cls=DistilBertForTokenClassification,
        weights=WeightTable(
            "distilbert.",
            (*BERT_EMBEDDING_RULES, *layer_rules("transformer.layer.{layer}", _LAYER_NAMES)),
        ),
    )
)
