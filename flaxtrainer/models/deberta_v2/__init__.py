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
"""

from __future__ import annotations

import numpy as np

from flaxtrainer.models.deberta_v2.attention import (
    DisentangledSelfAttention,
    log_bucket_position,
    relative_positions,
)
from flaxtrainer.models.deberta_v2.config import DebertaV2Config
from flaxtrainer.models.deberta_v2.model import (
    DebertaV2Embeddings,
    DebertaV2ForTokenClassification,
    DebertaV2Layer,
    DebertaV2Model,
    SegmentConv,
)
from flaxtrainer.models.hf_weights import (
    TRANSPOSE,
    Transform,
    WeightRule,
    WeightTable,
    embedding,
    layer_norm,
    linear,
)
from flaxtrainer.models.registry import ModelFamily, register_family

__all__ = [
    "DebertaV2Config",
    "DebertaV2Embeddings",
    "DebertaV2ForTokenClassification",
    "DebertaV2Layer",
    "DebertaV2Model",
    "DisentangledSelfAttention",
    "SegmentConv",
    "log_bucket_position",
    "relative_positions",
]

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
