"""A linear-chain CRF over word positions, in pure JAX: exact NLL, Viterbi, marginals, masks.

The functions here know nothing of models or tokenizers. They take, per batch row, emission
scores ``[B, S, L]`` (the classifier's logits) and the chains to run (:class:`CrfChains`, from
:func:`crf_chains`), which three arrays describe:

- ``positions`` ``[B, S]`` bool: the positions the chain runs over (for a token-classification
  task, the first subword of each word its window owns); every other position (continuation
  pieces, special tokens, padding, words without a gold tag in training) is skipped, so the
  chain steps from one word to the next.
- ``segments`` ``[B, S]`` int: the ``attention_mask`` of the batch. Distinct positive values in a
  row are different sentences (packing), so the chain restarts wherever the segment changes:
  each sentence is its own CRF sequence.
- ``flags`` ``[B, S]`` int (optional): :data:`CUT_BEFORE` / :data:`CUT_AFTER` bits mark a chain
  that a window cut opens or closes (a long sentence split into windows): there the sentence
  does not really start or end, so the start (end) scores and constraints are not applied.

Parameters are a dict ``{"transitions": [L, L], "start_transitions": [L],
"end_transitions": [L]}`` (``transitions[i, j]``: score of tag ``j`` right after tag ``i``; the
names of the tensors in an exported model, see :data:`PARAM_NAMES`). Transitions the tagging
scheme forbids (:func:`allowed_transitions`) are replaced by :data:`TRAIN_PENALTY` (-1e4, finite
so that gradients stay finite) in training and by :data:`DECODE_PENALTY` in decoding, so Viterbi
never returns a sequence the scheme forbids (unless no allowed sequence exists).

Everything is vectorised over the batch; the forward algorithm and Viterbi are one
``jax.lax.scan`` each over the sequence axis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

#: Feature / batch key of the per-token CRF positions and window-cut bits (int32).
WORD_STARTS = "word_starts"
#: Bits of :data:`WORD_STARTS`: a CRF position; its chain does not start / end the sentence.
WORD, CUT_BEFORE, CUT_AFTER = 1, 2, 4
#: Names of the CRF parameters (NNX attributes of the ``crf`` module and safetensors keys
#: ``crf.<name>`` in an exported model).
PARAM_NAMES = ("transitions", "start_transitions", "end_transitions")
#: Score of a forbidden transition in training (finite: gradients stay finite).
TRAIN_PENALTY = -1e4
#: Score of a forbidden transition in decoding (no emission gap can pay for it).
DECODE_PENALTY = -1e9

Params = Mapping[str, jax.Array]


class CrfMasks(NamedTuple):
    """Which transitions a tagging scheme allows: ``transitions[i, j]`` (tag i -> tag j),
    ``start[j]`` (the sentence may start with tag j), ``end[i]`` (may end with tag i)."""

    transitions: np.ndarray
    start: np.ndarray
    end: np.ndarray


class CrfTransitions(nnx.Module):
    """The learnable CRF parameters of a model: ``transitions [L, L]``, ``start_transitions
    [L]`` and ``end_transitions [L]``, zero at initialisation (the emissions decide at first)."""

    def __init__(self, num_labels: int, *, param_dtype: jnp.dtype = jnp.float32) -> None:
        self.transitions = nnx.Param(jnp.zeros((num_labels, num_labels), param_dtype))
        self.start_transitions = nnx.Param(jnp.zeros((num_labels,), param_dtype))
        self.end_transitions = nnx.Param(jnp.zeros((num_labels,), param_dtype))

    def params(self) -> dict[str, jax.Array]:
        """The parameters by :data:`PARAM_NAMES`, as float32 arrays."""
        return {name: getattr(self, name)[...].astype(jnp.float32) for name in PARAM_NAMES}


def _masked(params: Params, masks: CrfMasks, penalty: float) -> tuple[jax.Array, ...]:
    """(transitions, start, end) with forbidden entries set to ``penalty``."""
    return tuple(
        jnp.where(jnp.asarray(allowed), params[name].astype(jnp.float32), penalty)
        for name, allowed in zip(PARAM_NAMES, masks)
    )


class CrfChains(NamedTuple):
    """Where chains start and end, and the previous position of each chain position (see
    :func:`crf_chains`)."""

    scored: jax.Array  # [B, S] bool
    starts: jax.Array  # [B, S] bool: first position of a chain
    ends: jax.Array  # [B, S] bool: last position of a chain
    prev: jax.Array  # [B, S] int: index of the previous chain position (clamped to 0)
    cut_before: jax.Array  # [B, S] bool
    cut_after: jax.Array  # [B, S] bool


def crf_chains(
    positions: jax.Array, segments: jax.Array, flags: jax.Array | None = None
) -> CrfChains:
    """The chains of a batch: over ``positions``, one per sentence (``segments`` value) or
    window (``flags``); see the module docstring."""
    scored = positions.astype(bool) & (segments > 0)
    size = scored.shape[1]
    index = jnp.arange(size)
    last = jax.lax.cummax(jnp.where(scored, index, -1), axis=1)  # last scored index <= t
    prev = jnp.concatenate([jnp.full_like(last[:, :1], -1), last[:, :-1]], axis=1)
    nxt_incl = jax.lax.cummin(jnp.where(scored, index, size), axis=1, reverse=True)
    nxt = jnp.concatenate([nxt_incl[:, 1:], jnp.full_like(nxt_incl[:, :1], size)], axis=1)
    prev_c, nxt_c = jnp.maximum(prev, 0), jnp.minimum(nxt, size - 1)
    prev_seg = jnp.take_along_axis(segments, prev_c, axis=1)
    next_seg = jnp.take_along_axis(segments, nxt_c, axis=1)
    starts = scored & ((prev < 0) | (prev_seg != segments))
    ends = scored & ((nxt >= size) | (next_seg != segments))
    flags = jnp.zeros_like(segments) if flags is None else flags
    return CrfChains(
        scored,
        starts,
        ends,
        prev_c,
        (flags & CUT_BEFORE) > 0,
        (flags & CUT_AFTER) > 0,
    )


def _forward_logz(emissions: jax.Array, chains: CrfChains, trans, start, end) -> jax.Array:
    """``[B, S]``: log partition of each chain at its last position, 0 elsewhere."""

    def body(alpha, xs):
        e_t, scored, first, last, cut_b, cut_a = xs
        cont = jax.nn.logsumexp(alpha[:, :, None] + trans[None], axis=1) + e_t
        init = jnp.where(cut_b[:, None], 0.0, start[None]) + e_t
        new = jnp.where(first[:, None], init, cont)
        alpha = jnp.where(scored[:, None], new, alpha)
        final = jnp.where(cut_a[:, None], 0.0, end[None]) + alpha
        return alpha, jnp.where(last, jax.nn.logsumexp(final, axis=-1), 0.0)

    xs = (
        jnp.swapaxes(emissions, 0, 1),
        *(jnp.swapaxes(a, 0, 1) for a in (chains.scored, chains.starts, chains.ends)),
        jnp.swapaxes(chains.cut_before, 0, 1),
        jnp.swapaxes(chains.cut_after, 0, 1),
    )
    alpha0 = jnp.zeros(emissions.shape[::2], emissions.dtype)
    _, logz = jax.lax.scan(body, alpha0, xs)
    return jnp.swapaxes(logz, 0, 1)


def crf_nll(
    emissions: jax.Array, tags: jax.Array, chains: CrfChains, params: Params, masks: CrfMasks
) -> tuple[jax.Array, jax.Array]:
    """(sum of the chains' negative log-likelihoods, number of their positions) in float32.

    ``tags`` ``[B, S]`` are the gold tags at the chain positions (anything elsewhere). A chain
    whose gold sequence the scheme forbids (inconsistent data) would cost about
    -``TRAIN_PENALTY`` per forbidden step and swamp the loss; it is left out of both sums instead.
    """
    emissions = emissions.astype(jnp.float32)
    trans, start, end = _masked(params, masks, TRAIN_PENALTY)
    batch, size = tags.shape
    tags = jnp.where(chains.scored, tags, 0)
    prev_tags = jnp.take_along_axis(tags, chains.prev, axis=1)
    emit = jnp.take_along_axis(emissions, tags[..., None], axis=-1)[..., 0]
    step = jnp.where(
        chains.starts, jnp.where(chains.cut_before, 0.0, start[tags]), trans[prev_tags, tags]
    )
    final = jnp.where(chains.ends & ~chains.cut_after, end[tags], 0.0)
    gold = jnp.where(chains.scored, emit + step + final, 0.0)
    t_ok, s_ok, e_ok = (jnp.asarray(m) for m in masks)
    bad = chains.scored & (
        jnp.where(chains.starts, ~chains.cut_before & ~s_ok[tags], ~t_ok[prev_tags, tags])
        | (chains.ends & ~chains.cut_after & ~e_ok[tags])
    )
    logz = _forward_logz(emissions, chains, trans, start, end)
    # Per-chain sums: chain k of row b is segment b * S + k.
    chain_id = jnp.cumsum(chains.starts, axis=1) - 1
    ids = (jnp.arange(batch)[:, None] * size + jnp.maximum(chain_id, 0)).reshape(-1)
    n = batch * size

    def per_chain(values):
        return jax.ops.segment_sum(values.reshape(-1), ids, num_segments=n)

    valid = per_chain(bad.astype(jnp.int32)) == 0
    nll = per_chain(logz) - per_chain(gold)
    count = per_chain(chains.scored.astype(jnp.int32))
    return jnp.sum(jnp.where(valid, nll, 0.0)), jnp.sum(jnp.where(valid, count, 0))


def crf_marginals(
    emissions: jax.Array, chains: CrfChains, params: Params, masks: CrfMasks
) -> jax.Array:
    """``[B, S, L]``: each chain position's tag marginals p(y_t = j | sentence) (the gradient
    of the log partition with respect to the emissions); 0 off the chain positions."""
    trans, start, end = _masked(params, masks, TRAIN_PENALTY)
    trans, start, end = (jax.lax.stop_gradient(x) for x in (trans, start, end))

    def total_logz(e):
        return jnp.sum(_forward_logz(e, chains, trans, start, end))

    return jax.grad(total_logz)(jax.lax.stop_gradient(emissions.astype(jnp.float32)))


def crf_decode(
    emissions: jax.Array, chains: CrfChains, params: Params, masks: CrfMasks
) -> jax.Array:
    """``[B, S]`` int32 Viterbi tags at the chain positions (-1 elsewhere): each chain's best
    tag sequence, with transitions the scheme forbids scored :data:`DECODE_PENALTY`."""
    emissions = emissions.astype(jnp.float32)
    trans, start, end = _masked(params, masks, DECODE_PENALTY)

    def forward(delta, xs):
        e_t, scored, first, cut_b, cut_a = xs
        scores = delta[:, :, None] + trans[None]
        back = jnp.argmax(scores, axis=1).astype(jnp.int32)  # [B, L]: best previous tag
        cont = jnp.max(scores, axis=1) + e_t
        init = jnp.where(cut_b[:, None], 0.0, start[None]) + e_t
        new = jnp.where(first[:, None], init, cont)
        delta = jnp.where(scored[:, None], new, delta)
        best_last = jnp.argmax(delta + jnp.where(cut_a[:, None], 0.0, end[None]), axis=-1)
        return delta, (back, best_last.astype(jnp.int32))

    def swap(a):
        return jnp.swapaxes(a, 0, 1)

    xs = (
        swap(emissions),
        swap(chains.scored),
        swap(chains.starts),
        swap(chains.cut_before),
        swap(chains.cut_after),
    )
    delta0 = jnp.zeros(emissions.shape[::2], jnp.float32)
    _, (back, best_last) = jax.lax.scan(forward, delta0, xs)

    def backward(carry, xs):
        next_tag, next_back = carry
        scored, last, back_t, best_t = xs
        followed = jnp.take_along_axis(next_back, next_tag[:, None], axis=1)[:, 0]
        tag = jnp.where(last, best_t, followed)
        carry = (jnp.where(scored, tag, next_tag), jnp.where(scored[:, None], back_t, next_back))
        return carry, jnp.where(scored, tag, -1)

    batch, _, num_labels = emissions.shape
    init = (jnp.zeros(batch, jnp.int32), jnp.zeros((batch, num_labels), jnp.int32))
    _, tags = jax.lax.scan(
        backward, init, (swap(chains.scored), swap(chains.ends), back, best_last), reverse=True
    )
    return swap(tags).astype(jnp.int32)


def batch_nll(
    logits: jax.Array,
    labels: jax.Array,
    known: jax.Array,
    params: Params,
    batch: Mapping[str, jax.Array],
    masks: CrfMasks,
) -> tuple[jax.Array, jax.Array]:
    """:func:`crf_nll` of a batch: chains over the :data:`WORD_STARTS` positions whose tag is
    ``known``, one per sentence (``attention_mask`` value) or window."""
    flags = batch[WORD_STARTS]
    chains = crf_chains(((flags & WORD) > 0) & known, _segments(batch), flags)
    return crf_nll(logits, labels, chains, params, masks)


def batch_decode(
    logits: jax.Array, params: Params, batch: Mapping[str, jax.Array], masks: CrfMasks
) -> tuple[jax.Array, jax.Array]:
    """(Viterbi tags, their marginal probability) ``[B, S]`` at the :data:`WORD_STARTS`
    positions of a batch; -1 and 0 elsewhere."""
    flags = batch[WORD_STARTS]
    chains = crf_chains((flags & WORD) > 0, _segments(batch), flags)
    tags = crf_decode(logits, chains, params, masks)
    marginals = crf_marginals(logits, chains, params, masks)
    chosen = jnp.take_along_axis(marginals, jnp.maximum(tags, 0)[..., None], -1)[..., 0]
    return tags, jnp.where(tags >= 0, chosen, 0.0)


def _segments(batch: Mapping[str, jax.Array]) -> jax.Array:
    """The batch's sentence ids per token (``attention_mask``; all ones without it)."""
    mask = batch.get("attention_mask")
    return jnp.ones_like(batch[WORD_STARTS]) if mask is None else mask


def chain_flags(prediction_masks: Sequence[np.ndarray]) -> list[np.ndarray]:
    """:data:`WORD_STARTS` of the windows of one sentence, from each window's prediction mask
    (the first pieces of the words it owns): :data:`WORD` there, plus :data:`CUT_BEFORE` on the
    first owned word of every window but the first and :data:`CUT_AFTER` on the last owned
    word of every window but the last."""
    out = []
    last = len(prediction_masks) - 1
    for k, mask in enumerate(prediction_masks):
        flags = np.asarray(mask, bool).astype(np.int32) * WORD
        owned = np.flatnonzero(flags)
        if owned.size and k > 0:
            flags[owned[0]] |= CUT_BEFORE
        if owned.size and k < last:
            flags[owned[-1]] |= CUT_AFTER
        out.append(flags)
    return out


def add_word_starts(features: Sequence[dict]) -> None:
    """Adds :data:`WORD_STARTS` (int32, per token) to a task's features, in place: the
    :func:`chain_flags` of each sentence's windows. Features are a token-classification task's
    (``example_index``, ``prediction_mask``), one sentence's windows consecutive and in order."""
    start = 0
    while start < len(features):
        end = start + 1
        index = features[start]["example_index"]
        while end < len(features) and features[end]["example_index"] == index:
            end += 1
        window = features[start:end]
        for feature, flags in zip(window, chain_flags([f["prediction_mask"] for f in window])):
            feature[WORD_STARTS] = flags
        start = end
