"""RoBERTa, XLM-RoBERTa and CamemBERT: BERT layers, positions counted from `pad_token_id + 1`."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from flaxtrainer.models.families.bert import BERT_RULES, BertConfig, BertModel
from flaxtrainer.models.hf_weights import WeightTable
from flaxtrainer.models.registry import ModelFamily, register_family
from flaxtrainer.models.token_classification import EncoderForTokenClassification


@dataclasses.dataclass(frozen=True, kw_only=True)
class RobertaConfig(BertConfig):
    """RoBERTa hyper-parameters (the same names as BERT; padding id 1 by default)."""

    model_type: str = "roberta"
    pad_token_id: int = 1

    architectures: ClassVar = {
        "roberta": "RobertaForTokenClassification",
        "xlm-roberta": "XLMRobertaForTokenClassification",
        "camembert": "CamembertForTokenClassification",
    }

    @property
    def position_offset(self) -> int:
        return self.pad_token_id + 1


class RobertaModel(BertModel):
    """The RoBERTa encoder; returns the last hidden state `[batch, seq, hidden_size]`."""

    def default_position_ids(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        """`pad_token_id + 1, + 2, ...` over real tokens, `pad_token_id` on padding (as fairseq)."""
        real = (attention_mask != 0).astype(jnp.int32)
        return jnp.cumsum(real, axis=1, dtype=jnp.int32) * real + self.pad_token_id


class RobertaForTokenClassification(EncoderForTokenClassification):
    backbone = RobertaModel


FAMILY = register_family(
    ModelFamily(
        name="roberta",
        config_cls=RobertaConfig,
        model_cls=RobertaForTokenClassification,
        weights=WeightTable("roberta.", BERT_RULES),
    )
)
