"""ELECTRA (discriminator): BERT layers over narrower embeddings projected to the hidden size."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from flaxtrainer.models.families.bert import (
    BERT_EMBEDDING_RULES,
    BertConfig,
    BertModel,
    bert_layer_rules,
)
from flaxtrainer.models.hf_weights import WeightTable, linear
from flaxtrainer.models.layers import dense
from flaxtrainer.models.registry import ModelFamily, register_family
from flaxtrainer.models.token_classification import EncoderForTokenClassification


@dataclasses.dataclass(frozen=True, kw_only=True)
class ElectraConfig(BertConfig):
    """ELECTRA hyper-parameters: BERT's plus `embedding_size`."""

    model_type: str = "electra"
    embedding_size: int = 128

    architectures: ClassVar = {"electra": "ElectraForTokenClassification"}

    def problems(self) -> list[str]:
        return super().problems() + self._check_ranges(positive=("embedding_size",), rates=())


class ElectraModel(BertModel):
    """The ELECTRA encoder; returns the last hidden state `[batch, seq, hidden_size]`."""

    def __init__(
        self,
        config: ElectraConfig,
        *,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        super().__init__(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        # Hugging Face only creates the projection when the widths differ.
        self.embeddings_project: nnx.Linear | None = nnx.data(None)
        if config.embedding_size != config.hidden_size:
            self.embeddings_project = dense(
                config.embedding_size,
                config.hidden_size,
                dtype=dtype,
                param_dtype=param_dtype,
                init_std=config.initializer_range,
                rngs=rngs,
            )

    @staticmethod
    def embedding_width(config: ElectraConfig) -> int:
        return config.embedding_size

    def embed(
        self,
        input_ids: jax.Array,
        token_type_ids: jax.Array,
        position_ids: jax.Array,
        *,
        deterministic: bool,
        rngs: nnx.Rngs | None,
    ) -> jax.Array:
        x = super().embed(
            input_ids, token_type_ids, position_ids, deterministic=deterministic, rngs=rngs
        )
        return x if self.embeddings_project is None else self.embeddings_project(x)


class ElectraForTokenClassification(EncoderForTokenClassification):
    backbone = ElectraModel


FAMILY = register_family(
    ModelFamily(
        name="electra",
        config_cls=ElectraConfig,
        model_cls=ElectraForTokenClassification,
        weights=WeightTable(
            "electra.",
            (
                *BERT_EMBEDDING_RULES,
                *linear("embeddings_project", "embeddings_project"),
                *bert_layer_rules(),
            ),
        ),
    )
)
