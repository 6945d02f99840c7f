"""From task features to padded host batches: length buckets, the training sampler, eval plans.

Features (see ``Task.prepare``) are unpadded 1-D int arrays. Each batch is padded to the
smallest of a few fixed *bucket widths* that fits its longest row, so the number of compiled
shapes stays bounded (at most one per width) while little compute is spent on padding.
Training batches group rows of similar length; the order is a pure function of
``(seed, epoch)``, and a position inside an epoch is just a batch index, so a run can resume
exactly where it stopped.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from flaxtrainer.sharding import DEFAULT_PAD_VALUES, pad_rows

LABELS = "labels"
BUCKET_MULTIPLE = 16


def bucket_widths(
    max_length: int, max_buckets: int = 8, multiple: int = BUCKET_MULTIPLE
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
    of every row in row-major order, ``-1`` for padding rows; ``real_tokens``: unpadded tokens.
    """

    arrays: dict[str, np.ndarray]
    indices: np.ndarray
    real_tokens: int

    @property
    def computed_tokens(self) -> int:
        """Tokens the model computes on, padding included."""
        return int(self.indices.size * next(iter(self.arrays.values())).shape[-1])

    @property
    def shape(self) -> tuple[int, ...]:
        return next(iter(self.arrays.values())).shape


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
            "attention_mask" in model_input_names and "attention_mask" not in first
        )
        self.pad_values = {**DEFAULT_PAD_VALUES, **(pad_values or {})}
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
        extra = ("attention_mask",) if self.synth_attention_mask else ()
        return (*self.input_names, *extra, LABELS)

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
            out = np.full((len(indices), width), self.pad_values.get(name, 0), dtype=np.int32)
            for row, index in enumerate(indices):
                out[row, : lengths[row]] = self.features[index][name]
            arrays[name] = out
        if self.synth_attention_mask:
            arrays["attention_mask"] = (np.arange(width)[None, :] < lengths[:, None]).astype(
                np.int32
            )
        arrays = pad_rows(arrays, rows, self.pad_values)
        all_indices = np.full(rows, -1, dtype=np.int64)
        all_indices[: len(indices)] = indices
        if leading:
            arrays = {k: v.reshape(*leading, -1, width) for k, v in arrays.items()}
        return HostBatch(arrays, all_indices, int(lengths.sum()))


class LengthGroupedSampler:
    """Training order: which features form each batch of an epoch.

    A pure function of ``(seed, epoch)``: shuffle all features with
    ``np.random.default_rng((seed, epoch))``; if ``group_by_length``, sort each mega-chunk of
    ``mega_batches`` batches by length (longest first) and cut it into batches, then shuffle the
    batch order, so rows in a batch have similar lengths. The last batch may be partial; it is
    padded with rows that count nowhere. A position in an epoch is a batch index.
    """

    def __init__(
        self,
        lengths: np.ndarray,
        batch_size: int,
        seed: int,
        group_by_length: bool = True,
        mega_batches: int = 50,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"LengthGroupedSampler: batch_size must be >= 1, got {batch_size}.")
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.group_by_length = group_by_length
        self.mega_batches = mega_batches

    def __len__(self) -> int:
        """Batches per epoch."""
        return -(-len(self.lengths) // self.batch_size)

    def epoch(self, epoch: int) -> list[np.ndarray]:
        """The batches (arrays of feature indices) of ``epoch``, in order."""
        rng = np.random.default_rng((self.seed, epoch))
        order = rng.permutation(len(self.lengths))
        if not self.group_by_length:
            return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        chunk = self.batch_size * self.mega_batches
        batches = []
        for start in range(0, len(order), chunk):
            part = order[start : start + chunk]
            part = part[np.argsort(-self.lengths[part], kind="stable")]
            batches += [part[i : i + self.batch_size] for i in range(0, len(part), self.batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def iter_epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        """``(position, indices)`` for the batches of ``epoch`` from position ``start``."""
        batches = self.epoch(epoch)
        for position in range(start, len(batches)):
            yield position, batches[position]


def eval_plan(lengths: np.ndarray, batch_size: int, sort_by_length: bool) -> list[np.ndarray]:
    """Evaluation batches covering every feature exactly once.

    With ``sort_by_length`` rows are grouped by length (less padding); the caller puts outputs
    back in feature order through ``HostBatch.indices``.
    """
    order = np.argsort(lengths, kind="stable") if sort_by_length else np.arange(len(lengths))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
