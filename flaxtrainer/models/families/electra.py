"""ELECTRA (discriminator): BERT layers over narrower embeddings projected to the hidden size."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
from flax import nnx

from flaxtrainer.models.encoder import EncoderInputs
from flaxtrainer.models.families.bert import BERT_RULES, BertConfig, BertModel
from flaxtrainer.models.hf_weights import WeightTable, linear
from flaxtrainer.models.layers import Build
from flaxtrainer.models.registry import ModelFamily, register_family
from flaxtrainer.models.token_classification import EncoderForTokenClassification


@dataclasses.dataclass(frozen=True, kw_only=True)
class ElectraConfig(BertConfig):
    """ELECTRA hyper-parameters: BERT's plus `embedding_size`."""

    model_type: str = "electra"
    embedding_size: int = 128

    architectures: ClassVar = {"electra": "ElectraForTokenClassification"}

    @property
    def embedding_width(self) -> int:
        return self.embedding_size

    def problems(self) -> list[str]:
        return super().problems() + self._check_ranges(positive=("embedding_size",), rates=())


class ElectraModel(BertModel):
    """The ELECTRA encoder; returns the last hidden state `[batch, seq, hidden_size]`."""

    def setup(self, config: ElectraConfig, build: Build) -> None:
        super().setup(config, build)
        # Hugging Face only creates the projection when the widths differ.
        self.embeddings_project: nnx.Linear | None = nnx.data(None)
        if config.embedding_size != config.hidden_size:
            self.embeddings_project = build.linear(
                config.embedding_size, config.hidden_size, std=config.initializer_range
            )

    def embed(
        self, inputs: EncoderInputs, *, deterministic: bool, rngs: nnx.Rngs | None
    ) -> jax.Array:
        x = super().embed(inputs, deterministic=deterministic, rngs=rngs)
        return x if self.embeddings_project is None else self.embeddings_project(x)


class ElectraForTokenClassification(EncoderForTokenClassification):
    backbone = ElectraModel


FAMILY = register_family(
    ModelFamily(
        name="electra",
        config_cls=ElectraConfig,
        model_cls=ElectraForTokenClassification,
        weights=WeightTable(
            "electra.", (*BERT_RULES, *linear("embeddings_project", "embeddings_project"))
        ),
    )
)
