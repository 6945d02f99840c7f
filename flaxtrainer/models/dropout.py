"""Dropout keyed by token: a mask that follows the example, not the row it lands in.

`nnx.Dropout` with the hash PRNG (`flaxtrainer.models.dropout_rng`) draws each element's bit from its
position in the *global* array, so a token's mask depends on the row and column it occupies:
a sentence packed beside others and the same sentence alone in a padded row see different
masks. :class:`Dropout` (a drop-in for `nnx.Dropout`: same constructor, same call, no state)
keys the mask instead by what the element *is*:

- hidden states `[batch, seq, *features]` (``layout="tokens"``): (per-call key, example id,
  position in the example, feature index);
- attention probabilities `[batch, heads, query, key]` (``layout="attention"``): (per-call key,
  example id of the query, head, query position, key position, both within the example).
  Keys of another example get probability 0 whatever the mask (block-diagonal attention), so
  the query's example id is enough.

The per-token ids come from :func:`token_ids`, a context the top-level model sets for the
duration of its ``__call__`` from an ``example_ids`` input (the trainer passes the global
feature index, -1 on padding) and ``attention_mask`` (the position within the example is the
index within its run of equal mask values, as :func:`flaxtrainer.models.layers.segment_position_ids`
computes, so padded and packed rows agree). The per-call key is still drawn from ``rngs`` (one
``rngs.dropout()`` per layer call, as `nnx.Dropout`), so masks depend on ``(seed, step, layer
call, example, position[, feature])`` only: the same in a padded row, in a packed row at any
offset, on any number of devices, in any micro-batch.

Keyed masks need a :data:`flaxtrainer.models.dropout_rng.HASH_PRNG` key; they stay two `lowbias32`
rounds per element (plus a per-token hash), fused into the consumer like the flat-index hash.
Without ids (a plain model call, the PyTorch parity tests), with another key type (threefry),
or with ``layout="other"`` (DeBERTa's relative-position table, which has no tokens), the layer
is exactly `nnx.Dropout`.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flaxtrainer.models.dropout_rng import GOLDEN, HASH_PRNG, flat_index, mix

DropoutLayout = Literal["tokens", "attention", "other"]

#: ``(example_ids, positions)``, both int `[batch, seq]`, while a model call keys dropout.
_TOKEN_IDS: contextvars.ContextVar[tuple[jax.Array, jax.Array] | None] = contextvars.ContextVar(
    "flaxtrainer_dropout_token_ids", default=None
)

_C_POSITION = np.uint32(0x2545F491)
_C_FEATURE = np.uint32(0x9E485565)
_C_HEAD = np.uint32(0xEF1D6B47)


def example_positions(attention_mask: jax.Array | None, shape: tuple[int, ...]) -> jax.Array:
    """Index of each token within its example: within its run of equal ``attention_mask``
    values (a padded row's one example, or each sentence of a packed row); ``0..seq-1`` when
    there is no mask. Padding gets 0 (its example id is -1)."""
    batch, seq = shape
    index = jnp.arange(seq, dtype=jnp.int32)
    if attention_mask is None:
        return jnp.broadcast_to(index, (batch, seq))
    previous = jnp.pad(attention_mask[..., :-1], ((0, 0), (1, 0)), constant_values=-1)
    run_start = jax.lax.cummax(jnp.where(attention_mask != previous, index, 0), axis=1)
    return jnp.where(attention_mask != 0, index - run_start, 0).astype(jnp.int32)


@contextlib.contextmanager
def token_ids(
    example_ids: jax.Array | None, attention_mask: jax.Array | None = None
) -> Iterator[None]:
    """Within the block, :class:`Dropout` layers key their masks by ``example_ids`` (int
    `[batch, seq]`, the same id for every token of one example, e.g. the global feature index)
    and the position within the example (from ``attention_mask``, see
    :func:`example_positions`). ``example_ids=None``: no change (today's flat-index masks)."""
    if example_ids is None:
        yield
        return
    positions = example_positions(attention_mask, tuple(example_ids.shape))
    token = _TOKEN_IDS.set((example_ids, positions))
    try:
        yield
    finally:
        _TOKEN_IDS.reset(token)


def _token_hash(k0: jax.Array, example_ids: jax.Array, positions: jax.Array) -> jax.Array:
    """A keyed uint32 per (example, position): bijective in the example id for a fixed key,
    then mixed with the position."""
    word = mix(example_ids.astype(jnp.uint32) * GOLDEN + k0)
    return mix(word ^ mix(positions.astype(jnp.uint32) * GOLDEN + _C_POSITION))


def keyed_bits(
    key_data: jax.Array,
    example_ids: jax.Array,
    positions: jax.Array,
    shape: tuple[int, ...],
    layout: DropoutLayout,
) -> jax.Array:
    """uint32 bits of ``shape`` keyed by token (see the module docstring).

    ``key_data``: the raw ``uint32[2]`` key; ``example_ids`` / ``positions``: `[batch, seq]`.
    ``"tokens"``: ``shape`` is `[batch, seq, *features]`; ``"attention"``:
    `[batch, heads, seq, seq]`.
    """
    k0, k1 = key_data[0], key_data[1]
    batch, seq = example_ids.shape
    token = _token_hash(k0, example_ids, positions)
    if layout == "tokens":
        if tuple(shape[:2]) != (batch, seq):
            raise ValueError(f"Dropout: input {shape} does not start with the ids' {(batch, seq)}.")
        features = tuple(shape[2:])
        token = token.reshape(batch, seq, *(1,) * len(features))
        index = flat_index(features).reshape(1, 1, *features) if features else np.uint32(0)
        word = token ^ (index * GOLDEN + _C_FEATURE)
    elif layout == "attention":
        if len(shape) != 4 or (shape[0], shape[2], shape[3]) != (batch, seq, seq):
            raise ValueError(
                f"Dropout: attention input {shape} is not [batch, heads, seq, seq] for ids "
                f"{(batch, seq)}."
            )
        heads = mix(jnp.arange(shape[1], dtype=jnp.uint32) * GOLDEN + _C_HEAD)
        query = token[:, None, :, None] ^ heads[None, :, None, None]
        key_position = positions.astype(jnp.uint32)[:, None, None, :]
        word = query + key_position * GOLDEN
    else:
        raise ValueError(f"Dropout: no keyed bits for layout {layout!r}.")
    return mix(mix(word) ^ k1)


class Dropout(nnx.Dropout):
    """`nnx.Dropout` whose mask, inside :func:`token_ids` and with a hash-PRNG key, is keyed by
    (example, position in the example[, feature / head and key position]) instead of the
    element's place in the array. ``layout``: ``"tokens"`` (`[batch, seq, ...]`, default),
    ``"attention"`` (`[batch, heads, query, key]`) or ``"other"`` (never keyed)."""

    def __init__(self, rate: float, *, layout: DropoutLayout = "tokens", **kwargs: Any) -> None:
        super().__init__(rate, **kwargs)
        if layout not in ("tokens", "attention", "other"):
            raise ValueError(f"Dropout: layout must be tokens, attention or other, got {layout!r}.")
        self.layout = layout

    def __call__(
        self,
        inputs: jax.Array,
        *,
        deterministic: bool | None = None,
        rngs: nnx.Rngs | nnx.RngStream | jax.Array | None = None,
    ) -> jax.Array:
        ids = _TOKEN_IDS.get()
        deterministic = self.deterministic if deterministic is None else deterministic
        if (
            ids is None
            or self.layout == "other"
            or deterministic is not False
            or self.rate in (0.0, 1.0)
            or self.broadcast_dims
        ):
            return super().__call__(inputs, deterministic=deterministic, rngs=rngs)
        rngs = self.rngs if rngs is None else rngs
        if isinstance(rngs, nnx.Rngs):
            key = rngs[self.rng_collection]()
        elif isinstance(rngs, nnx.RngStream):
            key = rngs()
        else:
            key = rngs
        typed = isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
        if not typed or jax.random.key_impl(key) != HASH_PRNG:
            return super().__call__(inputs, deterministic=False, rngs=key)
        keep = 1.0 - self.rate
        bits = keyed_bits(jax.random.key_data(key), *ids, tuple(inputs.shape), self.layout)
        threshold = np.uint32(min(math.floor(keep * 2.0**32), 2**32 - 1))
        return jax.lax.select(bits < threshold, inputs / keep, jnp.zeros_like(inputs))
