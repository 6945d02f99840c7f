"""The token-classification model shared by all families: encoder, dropout, linear head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from flaxtrainer.models.config import EncoderConfig
from flaxtrainer.models.layers import dense


class EncoderForTokenClassification(nnx.Module):
    """`encoder` (a family backbone) + dropout + `classifier`; returns float32 logits.

    Subclasses set `backbone` to the family's encoder class. `model.encoder(...)` takes the same
    inputs as the model and returns the last hidden state `[batch, seq, d_model]`.
    """

    backbone: ClassVar[type[nnx.Module]]

    def __init__(
        self,
        config: EncoderConfig,
        *,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.config = config
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.encoder = self.backbone(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.dropout = nnx.Dropout(config.classifier_dropout_rate)
        self.classifier = self._new_classifier(rngs)

    def _new_classifier(self, rngs: nnx.Rngs) -> nnx.Linear:
        return dense(
            self.config.d_model,
            self.config.num_labels,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            init_std=self.config.initializer_range,
            rngs=rngs,
        )

    def reset_classifier(self, labels: Sequence[str] | None = None, *, rngs: nnx.Rngs) -> None:
        """Replaces the head with a newly initialised one (for `labels`, if given)."""
        if labels is not None:
            self.config = self.config.with_labels(tuple(labels))
        self.classifier = self._new_classifier(rngs)

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array | None = None,
        token_type_ids: jax.Array | None = None,
        position_ids: jax.Array | None = None,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> jax.Array:
        """Logits `[batch, seq, num_labels]` in float32.

        `attention_mask`: int `[batch, seq]`, 0 = padding, equal non-zero ids attend to each other
        (packed sentences). With `deterministic=False` pass `rngs=nnx.Rngs(dropout=key)`.
        """
        hidden = self.encoder(
            input_ids,
            attention_mask,
            token_type_ids,
            position_ids,
            deterministic=deterministic,
            rngs=rngs,
        )
        hidden = self.dropout(hidden, deterministic=deterministic, rngs=rngs)
        return self.classifier(hidden).astype(jnp.float32)
