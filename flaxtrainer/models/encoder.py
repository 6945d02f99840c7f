"""The base of every family's encoder (`<Family>Model`): the inputs it takes and their defaults.

`encoder(input_ids, attention_mask=None, token_type_ids=None, position_ids=None, *,
deterministic=True, rngs=None)` returns the last hidden state `[batch, seq, d_model]`. Inputs
left out mean what they mean in Hugging Face: no padding (`attention_mask` all ones), token type
0, and the family's default positions (`0..seq-1`; RoBERTa counts from `pad_token_id + 1`).
A family writes `encode`, which receives every input filled in, and, if its positions differ,
`default_position_ids`. Families without token types ignore `token_type_ids`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from flaxtrainer.models.layers import ones_mask, sequential_position_ids


class Encoder(nnx.Module):
    """Fills the inputs a caller leaves out, then runs the family's `encode`."""

    def default_position_ids(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        """Positions when the caller passes none: `0..seq-1` in every row."""
        return sequential_position_ids(input_ids)

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
        if attention_mask is None:
            attention_mask = ones_mask(input_ids)
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        if position_ids is None:
            position_ids = self.default_position_ids(input_ids, attention_mask)
        return self.encode(
            input_ids,
            attention_mask,
            token_type_ids,
            position_ids,
            deterministic=deterministic,
            rngs=rngs,
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
        """The last hidden state `[batch, seq, d_model]` from complete inputs."""
        raise NotImplementedError
