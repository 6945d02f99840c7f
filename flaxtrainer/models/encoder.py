"""The base of every family's encoder (`<Family>Model`) and of the token-classification model.

Both are built the same way, `Model(config, *, dtype=float32, param_dtype=float32, rngs)`, and
called with the same inputs, `model(input_ids, attention_mask=None, token_type_ids=None,
position_ids=None, *, deterministic=True, rngs=None, example_ids=None)`. Inputs left out mean
what they mean in Hugging Face: no padding (`attention_mask` all ones), token type 0, and the
family's default positions (`0..seq-1`; RoBERTa counts from `pad_token_id + 1`).

A subclass writes `setup(config, build)`, which makes its layers through `build`
(:class:`~flaxtrainer.models.layers.Build`), and `forward(inputs, *, deterministic, rngs)`, which
receives every input filled in (:class:`EncoderInputs`); an encoder whose positions differ also
writes `default_position_ids`. Families without token types ignore `token_type_ids`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from flaxtrainer.models.config import EncoderConfig
from flaxtrainer.models.dropout import token_ids
from flaxtrainer.models.layers import Build, ones_mask, sequential_position_ids


class EncoderInputs(NamedTuple):
    """The inputs of a forward pass, every one filled in: int `[batch, seq]` each."""

    input_ids: jax.Array
    attention_mask: jax.Array
    token_type_ids: jax.Array
    position_ids: jax.Array


class SequenceModel(nnx.Module):
    """Builds the layers from a config, fills the inputs a caller leaves out, runs `forward`."""

    def __init__(
        self,
        config: EncoderConfig,
        *,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.setup(config, Build(dtype, param_dtype, rngs, config.kernel_init))

    def setup(self, config: EncoderConfig, build: Build) -> None:
        """Makes the module's layers for `config`, each through `build`."""
        raise NotImplementedError

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
        example_ids: jax.Array | None = None,
    ) -> jax.Array:
        """`forward` of the inputs, the ones left out filled in.

        `attention_mask`: int `[batch, seq]`, 0 = padding, equal non-zero ids attend to each other
        (packed sentences). With `deterministic=False` pass `rngs=nnx.Rngs(dropout=key)`.
        `example_ids` (int `[batch, seq]`, one id per example, e.g. its global feature index; -1
        on padding), used only with dropout on and a hash-PRNG key: every dropout mask is keyed
        by (example, position in the example) instead of the element's place in the batch, so a
        padded and a packed layout draw the same masks (`flaxtrainer.models.dropout`).
        """
        if attention_mask is None:
            attention_mask = ones_mask(input_ids)
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        if position_ids is None:
            position_ids = self.default_position_ids(input_ids, attention_mask)
        inputs = EncoderInputs(input_ids, attention_mask, token_type_ids, position_ids)
        with token_ids(None if deterministic else example_ids, attention_mask):
            return self.forward(inputs, deterministic=deterministic, rngs=rngs)

    def forward(
        self, inputs: EncoderInputs, *, deterministic: bool, rngs: nnx.Rngs | None
    ) -> jax.Array:
        raise NotImplementedError


class Encoder(SequenceModel):
    """A family's encoder: `forward` returns the last hidden state `[batch, seq, d_model]`."""
