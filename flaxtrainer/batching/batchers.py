"""From task features to host batches: packing or length buckets, the sampler, eval plans.

Features (see ``Task.prepare``) are unpadded 1-D int arrays. Two layouts keep compute on real
tokens while compiling few shapes:

- *packing* (:class:`PackingBatcher`): the sentences of a batch are laid end to end in rows,
  first-fit decreasing; ``attention_mask`` numbers the sentences of a row (1, 2, ...) so each
  attends only to itself, and ``position_ids`` restart at each sentence. A batch still holds
  ``batch_size`` sentences; the sampler deals them so that every batch has about the same
  number of tokens, and one grid (rows x width, ``layouts.plan_packed_grid``) planned
  before training holds every batch of the run: one compiled shape, ~95% real tokens on
  short-sentence corpora.
- *length buckets* (:class:`Batcher`): each batch is padded to the smallest of a few fixed
  widths that fits its longest row; batches group rows of similar length. One compiled shape
  per width used.

The training order is a pure function of ``(seed, epoch)``, and a position inside an epoch is
just a batch index, so a run can resume exactly where it stopped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from flaxtrainer.batching.batch_format import (
    ATTENTION_MASK,
    DEFAULT_PAD_VALUES,
    EXAMPLE_IDS,
    LABELS,
    POSITION_IDS,
    ZERO_PADDED_WHEN_PACKED,
)
from flaxtrainer.runtime.sharding import pad_rows

#: Every padded width is a multiple of this (or the task's max_seq_length): length buckets,
#: packed rows and the evaluation grids, so few shapes compile.
WIDTH_MULTIPLE = 16


def bucket_widths(
    max_length: int, max_buckets: int = 8, multiple: int = WIDTH_MULTIPLE
) -> tuple[int, ...]:
    """A small fixed set of row widths up to ``max_length`` (which is always the last one).

    Multiples of ``multiple`` while at most ``max_buckets`` of them fit; otherwise roughly
    geometric spacing (dense where sentences are, at short lengths), rounded up to ``multiple``.
    E.g. 128 -> 16, 32, ..., 128; 512 -> 16, 32, 48, 80, 112, 192, 304, 512.
    """
    if max_length < 1 or max_buckets < 1:
        raise ValueError(
            f"bucket_widths: need max_length >= 1 and max_buckets >= 1, got {max_length}, {max_buckets}."
        )
    linear = list(range(multiple, max_length, multiple)) + [max_length]
    if len(linear) <= max_buckets:
        return tuple(linear)
    if max_buckets == 1:
        return (max_length,)
    raw = np.geomspace(min(multiple, max_length), max_length, max_buckets)
    widths = sorted({min(max_length, int(math.ceil(w / multiple) * multiple)) for w in raw[:-1]})
    return tuple(w for w in widths if w < max_length) + (max_length,)


@dataclass(frozen=True)
class HostBatch:
    """A padded batch on the host.

    ``arrays``: name -> int32 array ``[*leading, rows, width]``; ``indices``: the feature index
    of every row in row-major order (packed batches: of every sentence slot, see
    :meth:`placements`), ``-1`` for padding; ``real_tokens``: unpadded tokens.
    """

    arrays: dict[str, np.ndarray]
    indices: np.ndarray
    real_tokens: int

    @property
    def computed_tokens(self) -> int:
        """Tokens the model computes on, padding included."""
        return math.prod(self.shape)

    @property
    def shape(self) -> tuple[int, ...]:
        return next(iter(self.arrays.values())).shape

    def placements(self) -> tuple[np.ndarray, np.ndarray]:
        """``(row, start)`` of each entry of ``indices`` in the batch flattened to
        ``[rows, width]``: one feature per row, at its start."""
        return np.arange(self.indices.size), np.zeros(self.indices.size, np.int64)


class Batcher:
    """Pads task features into fixed-shape batches.

    ``input_names``: the model inputs to collate (those of ``task.model_input_names`` present in
    the features; ``attention_mask`` is synthesised as 1/0 when the task names it but the
    features lack it). ``labels`` are always collated. Other feature keys are host metadata and
    are not batched. ``widths`` are the allowed padded widths (one width = ``pad_to_max_length``).
    """

    def __init__(
        self,
        features: Sequence[Mapping[str, Any]],
        model_input_names: Sequence[str],
        widths: Sequence[int],
        pad_values: Mapping[str, int] | None = None,
    ) -> None:
        if len(features) == 0:
            raise ValueError("Batcher: the task produced no features (is the dataset empty?).")
        self.features = features
        first = features[0]
        self.input_names = tuple(n for n in model_input_names if n in first)
        if not self.input_names:
            raise ValueError(
                f"Batcher: features have none of the model inputs {tuple(model_input_names)}; "
                f"feature 0 has keys {sorted(first)}. Task.prepare must return them."
            )
        self.synth_attention_mask = (
            ATTENTION_MASK in model_input_names and ATTENTION_MASK not in first
        )
        self.pad_values = {**DEFAULT_PAD_VALUES, **(pad_values or {})}
        #: Added to local feature indices to give ``example_ids`` their global value (a
        #: process's first feature index when it holds a shard of the features).
        self.example_id_offset = 0
        self.lengths = self._check_features()
        self.widths = tuple(sorted(widths))
        longest = int(self.lengths.max())
        if longest > self.widths[-1]:
            row = int(self.lengths.argmax())
            raise ValueError(
                f"Batcher: feature {row} has {longest} tokens, more than the largest padded width "
                f"{self.widths[-1]}. Raise the task's max_seq_length / bucket_widths, or let the "
                "task split long inputs into windows."
            )

    def _check_features(self) -> np.ndarray:
        names = (*self.input_names, LABELS)
        lengths = np.empty(len(self.features), dtype=np.int64)
        for i, feature in enumerate(self.features):
            try:
                sizes = {n: len(feature[n]) for n in names}
            except KeyError as err:
                raise ValueError(
                    f"Batcher: feature {i} lacks {err.args[0]!r} (has {sorted(feature)}); every "
                    f"feature needs {list(names)}."
                ) from None
            if len(set(sizes.values())) != 1:
                raise ValueError(f"Batcher: feature {i} has arrays of unequal lengths {sizes}.")
            lengths[i] = sizes[LABELS]
        if lengths.min() < 1:
            raise ValueError(f"Batcher: feature {int(lengths.argmin())} is empty.")
        return lengths

    @property
    def array_names(self) -> tuple[str, ...]:
        extra = (ATTENTION_MASK,) if self.synth_attention_mask else ()
        return (*self.input_names, *extra, LABELS, EXAMPLE_IDS)

    def pad_value(self, name: str) -> int:
        """What padded positions and padded rows of the array ``name`` hold."""
        return self.pad_values.get(name, 0)

    def width_for(self, length: int) -> int:
        return self.widths[int(np.searchsorted(self.widths, length))]

    def batch(self, indices: np.ndarray, rows: int, leading: tuple[int, ...] = ()) -> HostBatch:
        """Collate ``indices`` into ``rows`` rows (extra rows are padding), reshaped to
        ``[*leading, rows / prod(leading), width]``; the width fits the longest feature."""
        indices = np.asarray(indices, dtype=np.int64)
        lengths = self.lengths[indices]
        width = self.width_for(int(lengths.max()))
        arrays = {}
        for name in self.input_names + (LABELS,):
            out = np.full((len(indices), width), self.pad_value(name), dtype=np.int32)
            for row, index in enumerate(indices):
                out[row, : lengths[row]] = self.features[index][name]
            arrays[name] = out
        if self.synth_attention_mask:
            arrays[ATTENTION_MASK] = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int32)
        real = np.arange(width)[None, :] < lengths[:, None]
        ids = (indices + self.example_id_offset).astype(np.int32)[:, None]
        arrays[EXAMPLE_IDS] = np.where(real, ids, -1).astype(np.int32)
        arrays = pad_rows(arrays, rows, self.pad_values)
        all_indices = np.full(rows, -1, dtype=np.int64)
        all_indices[: len(indices)] = indices
        if leading:
            arrays = {k: v.reshape(*leading, -1, width) for k, v in arrays.items()}
        return HostBatch(arrays, all_indices, int(lengths.sum()))


def first_fit_decreasing(lengths: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Lay items of ``lengths`` end to end in rows of ``width``: longest first, each into the
    first row with room. Returns each item's ``(row, start)`` and the number of rows."""
    rows = np.empty(len(lengths), np.int64)
    starts = np.empty(len(lengths), np.int64)
    free: list[int] = []
    for item in np.argsort(-np.asarray(lengths), kind="stable"):
        size = int(lengths[item])
        if size > width:
            raise ValueError(f"first_fit_decreasing: an item of {size} exceeds the width {width}.")
        row = next((r for r, room in enumerate(free) if room >= size), len(free))
        if row == len(free):
            free.append(width)
        rows[item], starts[item] = row, width - free[row]
        free[row] -= size
    return rows, starts, len(free)


def segment_numbers(rows: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Each item's number within its row, 1, 2, ... from the row's start: the segment ids of
    packed rows (``attention_mask``), the same whichever process builds the row."""
    order = np.lexsort((starts, rows))  # by row, then by start
    rank = np.arange(len(order))
    sorted_rows = np.asarray(rows)[order]
    first = np.concatenate([[True], sorted_rows[1:] != sorted_rows[:-1]])
    numbers = np.empty(len(order), np.int32)
    numbers[order] = rank - np.maximum.accumulate(np.where(first, rank, 0)) + 1
    return numbers


@dataclass(frozen=True)
class RowPlacement:
    """Where features go in ``[num_rows, width]`` rows decided elsewhere: feature
    ``indices[i]`` at ``(rows[i], starts[i])``, numbered ``segments[i]`` (1, 2, ... from its
    row's start) among the features of its row."""

    indices: np.ndarray
    rows: np.ndarray
    starts: np.ndarray
    segments: np.ndarray
    num_rows: int
    width: int


@dataclass(frozen=True)
class PackingGrid:
    """The fixed layout of packed micro-batches: ``rows`` rows of ``width`` tokens."""

    rows: int
    width: int


class PackingBatcher(Batcher):
    """Packs features into fixed ``[rows, width]`` grids (:class:`PackingGrid`), several per row.

    ``attention_mask`` holds each row's sentence number (1, 2, ...; 0 on padding), which the
    encoders read as block-diagonal attention, and ``position_ids`` restart at
    ``position_offset`` (the model's ``config.position_offset``) for every sentence, so each
    sentence is encoded as if it were alone (up to float rounding). The task must name
    ``attention_mask`` among its model inputs, and the model must read it as segment ids
    (docs/internals.md). Rows are at most ``max_width`` wide; ``layouts.plan_packed_grid`` picks
    the grid. :meth:`place` builds rows from a packing decided elsewhere (several processes
    share a packing; each places its own features).
    """

    def __init__(
        self,
        features: Sequence[Mapping[str, Any]],
        model_input_names: Sequence[str],
        max_width: int,
        pad_values: Mapping[str, int] | None = None,
        position_offset: int = 0,
    ) -> None:
        if ATTENTION_MASK not in model_input_names:
            raise ValueError(
                "PackingBatcher: packing separates sentences through attention_mask, but the "
                f"task's model inputs {tuple(model_input_names)} do not include it; turn "
                "packing off (TrainingArguments(packing=False))."
            )
        super().__init__(features, model_input_names, (max_width,), pad_values)
        self.max_width = int(max_width)
        self.position_offset = int(position_offset)
        self.packed_names = tuple(
            n for n in self.input_names if n not in (ATTENTION_MASK, POSITION_IDS)
        )

    @property
    def array_names(self) -> tuple[str, ...]:
        return (*self.packed_names, ATTENTION_MASK, POSITION_IDS, LABELS, EXAMPLE_IDS)

    def batch(self, *args: Any, **kwargs: Any) -> HostBatch:
        """Packed batches are built for a whole micro-batch at once, possibly by several
        processes: ``input_pipeline.PreparedData.batch`` with :meth:`place`."""
        raise NotImplementedError(
            "PackingBatcher.batch: build packed batches with "
            "flaxtrainer.batching.input_pipeline.PreparedData(features, PackedLayout(batcher), placement)"
            ".batch(...)"
        )

    def place(self, placement: RowPlacement) -> dict[str, np.ndarray]:
        """``[num_rows, width]`` arrays with every feature of ``placement`` at its row and
        start, numbered by its segment in ``attention_mask``, its positions restarting at
        ``position_offset``; padding elsewhere. The packing itself is the caller's."""
        num_rows, width = placement.num_rows, placement.width
        arrays = {
            name: np.full((num_rows, width), self.pad_value(name), np.int32)
            for name in self.array_names
        }
        where = zip(placement.indices, placement.rows, placement.starts, placement.segments)
        for feature_index, row, start, segment in where:
            feature = self.features[feature_index]
            end = start + int(self.lengths[feature_index])
            for name in (*self.packed_names, LABELS):
                arrays[name][row, start:end] = feature[name]
            arrays[ATTENTION_MASK][row, start:end] = segment
            arrays[POSITION_IDS][row, start:end] = np.arange(
                self.position_offset, self.position_offset + end - start
            )
            arrays[EXAMPLE_IDS][row, start:end] = feature_index + self.example_id_offset
        return arrays

    def pad_value(self, name: str) -> int:
        """Segment ids and positions pad with 0, whatever the task's pad values."""
        return 0 if name in ZERO_PADDED_WHEN_PACKED else super().pad_value(name)
