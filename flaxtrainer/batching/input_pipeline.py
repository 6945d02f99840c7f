"""From a dataset to batches on the devices: the sampler, the layout, the placement.

Three pieces, each answering one question, the same on one process and on several:

- **sampler** (:class:`flaxtrainer.batching.batchers.LengthGroupedSampler`, built by the trainer): which
  features form each batch, as *global* feature indices; a pure function of ``(seed, epoch)``
  and the global lengths.
- **layout** (the :class:`Layout` protocol): how a batch's features become rows of one compiled
  shape. :class:`PaddedLayout` gives every feature a row, padded to a few bucket widths
  (``batching.Batcher``); :class:`PackedLayout` lays several features end to end in each row,
  first-fit decreasing, with segment ids and restarting position ids
  (``batching.PackingBatcher``), in one grid planned for the whole run (``layouts.py``).
- **placement** (:class:`Placement`): which process builds which rows. Every process holds only
  the features of its contiguous slice of the dataset (``sharded_data``). The layout arranges
  a micro-batch from the global lengths alone, so the rows are those of a single-process run;
  each process builds, for every row that holds any of its features, a partial row with its
  own features in place, and a jitted gather (``sharding.assemble_rows``) merges the partial
  rows of a row (token by token, by segment id) at its global position. One process owns every
  feature, builds every row and transfers the batch whole: the same code with ``P = 1``.

The grid is planned from the global lengths, which every process knows (gathered once per
dataset), so every process compiles the same shapes, and 2 processes pad no more than 1.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from flaxtrainer.batching.batch_format import ATTENTION_MASK, INPUT_IDS, LABELS
from flaxtrainer.batching.batchers import (
    Batcher,
    PackingBatcher,
    PackingGrid,
    RowPlacement,
    bucket_widths,
    segment_numbers,
)
from flaxtrainer.batching.layouts import Layout, PackedLayout, PaddedLayout
from flaxtrainer.batching.sharded_data import (
    capacity_levels,
    num_examples,
    shard_bounds,
    shard_dataset,
    shift_example_index,
    together,
)
from flaxtrainer.runtime.distributed import allgather_objects
from flaxtrainer.runtime.sharding import assemble_rows, mesh_processes, process_rows
from flaxtrainer.runtime.sharding import put_batch as put_whole_batch


@dataclass(frozen=True)
class Placement:
    """Which process owns each feature, and where each process's rows land on the devices.

    ``lengths``: every feature's length, global order; ``counts``: features per process (process
    ``p`` owns a contiguous run); ``row_positions(n)``: for each process, the rows of an ``n``-row
    array sharded on the mesh that its devices hold (:func:`flaxtrainer.runtime.sharding.process_rows`).
    """

    lengths: np.ndarray
    counts: tuple[int, ...]
    process_index: int = 0
    local_devices: int = 1
    row_positions: Callable[[int], Sequence[np.ndarray]] | None = None

    @classmethod
    def single(cls, lengths: np.ndarray) -> Placement:
        return cls(np.asarray(lengths, np.int64), (len(lengths),))

    @property
    def num_processes(self) -> int:
        return len(self.counts)

    @functools.cached_property
    def owner(self) -> np.ndarray:
        return np.repeat(np.arange(self.num_processes), self.counts)

    @functools.cached_property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)

    def capacity(self, most: int, height: int) -> int:
        """Rows of each process's block: the whole batch on one process, else the smallest of
        a few levels (:func:`capacity_levels`) that holds ``most`` rows, so few gathers compile."""
        if self.num_processes == 1:
            return height
        unit = self.local_devices
        share = max(1, height // self.num_processes)
        limit = -(-max(height, most, 1) // unit) * unit
        levels = capacity_levels(share, unit, limit)
        return next(c for c in levels if c >= most)


@dataclass(frozen=True)
class PlacedBatch:
    """This process's rows of one global batch.

    ``arrays``: name -> int32 ``[*leading, C, width]``, the rows this process built (one
    process: ``C`` is the batch's rows, the whole batch); ``indices``: the global feature index
    of every slot (-1: padding); ``rows`` / ``starts``: where each slot's feature lies in the
    global batch flattened to ``[rows, width]``; ``shape``: the global batch's shape;
    ``source_rows`` ``[*leading, rows, P]`` (several processes): for each global row and each
    process, the process's partial row in the stacked process blocks (-1: none).
    ``real_tokens``: unpadded tokens of the global batch; ``segment_name``: the array whose
    nonzero tokens a partial row holds (packed rows; None: rows are never shared).
    """

    arrays: dict[str, np.ndarray]
    indices: np.ndarray
    real_tokens: int
    shape: tuple[int, ...]
    rows: np.ndarray
    starts: np.ndarray
    source_rows: np.ndarray | None = None
    pad_values: Mapping[str, int] = field(default_factory=dict)
    segment_name: str | None = None

    @property
    def computed_tokens(self) -> int:
        """Tokens the model computes on, padding included."""
        return math.prod(self.shape)

    def placements(self) -> tuple[np.ndarray, np.ndarray]:
        """``(row, start)`` of each entry of ``indices`` in the batch flattened to
        ``[rows, width]``."""
        return self.rows, self.starts

    def put(self, mesh: Mesh, batch_axis: int = 0) -> dict[str, jax.Array]:
        """The global batch on ``mesh``, rows split over ``"data"`` along ``batch_axis``:
        assembled from every process's rows (a collective), or transferred whole."""
        if self.source_rows is None:
            return put_whole_batch(self.arrays, mesh, batch_axis)
        return assemble_rows(
            self.arrays,
            self.source_rows,
            mesh,
            batch_axis,
            pad_values=self.pad_values,
            segment_name=self.segment_name,
        )


class PreparedData:
    """One dataset, prepared: this process's ``features``, its ``layout`` and the ``placement``.

    ``lengths`` are global (every process's features), so plans and batches are the same on
    every process; :meth:`batch` builds only this process's rows.
    """

    def __init__(
        self, features: Sequence[dict[str, Any]], layout: Layout, placement: Placement
    ) -> None:
        self.features = features
        self.layout = layout
        self.placement = placement
        self.lengths = placement.lengths
        self._all_features: Sequence[dict[str, Any]] | None = None
        self._eval_plans: dict[tuple, tuple[list[np.ndarray], PackingGrid | None]] = {}

    @property
    def widths(self) -> tuple[int, ...]:
        return self.layout.widths

    @property
    def packed(self) -> bool:
        return self.layout.packed

    def plan(
        self, batches: Sequence[np.ndarray], micro_size: int | None = None, multiple: int = 1
    ) -> PackingGrid | None:
        """The grid for ``batches`` (None: the layout needs none)."""
        return self.layout.plan(batches, self.lengths, micro_size=micro_size, multiple=multiple)

    def eval_plan(
        self, batch_size: int, multiple: int = 1, grid: PackingGrid | None = None
    ) -> tuple[list[np.ndarray], PackingGrid | None]:
        """Evaluation batches (every feature once) and their grid: ``grid`` (the training
        grid) when the layout fills it, else one planned for these batches. Kept per
        arguments: every evaluation of a run asks again."""
        key = (batch_size, multiple, grid)
        if key not in self._eval_plans:
            batches, used = self.layout.eval_batches(self.lengths, batch_size, grid)
            self._eval_plans[key] = (batches, used or self.plan(batches, multiple=multiple))
        return self._eval_plans[key]

    def batch(
        self,
        indices: np.ndarray,
        rows: int,
        leading: tuple[int, ...] = (),
        grid: PackingGrid | None = None,
    ) -> PlacedBatch:
        """The global batch of ``indices`` (at most ``rows`` slots, cut into ``prod(leading)``
        equal micro-batches in order), shaped ``[*leading, height, width]``; this process
        builds its rows of it."""
        indices = np.asarray(indices, np.int64)
        leading = tuple(leading)
        if indices.size > rows:
            raise ValueError(f"PreparedData.batch: {indices.size} features for {rows} slots.")
        groups = math.prod(leading)
        per = rows // groups
        slots = np.full(rows, -1, np.int64)
        slots[: indices.size] = indices
        layout, place = self.layout, self.placement
        width = layout.width(self.lengths[indices], grid)
        arranged = []
        for part in slots.reshape(groups, per):
            real = part[part >= 0]
            arranged.append((real, *layout.arrange(self.lengths[real], width)))
        height = layout.height(per, max(n for *_, n in arranged), grid)
        owned = [  # per group and process: the rows it owns, ascending
            [np.unique(r[place.owner[real] == p]) for p in range(place.num_processes)]
            for real, r, _, _ in arranged
        ]
        most = max((x.size for group in owned for x in group), default=0)
        capacity = place.capacity(most, height)
        arrays = {
            name: np.full((groups, capacity, width), layout.pad_value(name), np.int32)
            for name in layout.array_names
        }
        many = place.num_processes > 1
        processes = place.num_processes
        source = np.full((groups, height, processes), -1, np.int32) if many else None
        positions = place.row_positions(place.num_processes * capacity) if many else None
        flat_rows = np.full(rows, -1, np.int64)
        flat_starts = np.full(rows, -1, np.int64)
        for g, (real, part_rows, part_starts, _) in enumerate(arranged):
            for p, mine in enumerate(owned[g]):
                if mine.size == 0:
                    continue
                if source is not None:
                    source[g, mine, p] = positions[p][: mine.size]
                if p == place.process_index:
                    ours = place.owner[real] == p
                    placement = RowPlacement(
                        indices=real[ours] - place.offsets[p],
                        rows=np.searchsorted(mine, part_rows[ours]),
                        starts=part_starts[ours],
                        segments=segment_numbers(part_rows, part_starts)[ours],
                        num_rows=mine.size,
                        width=width,
                    )
                    built = layout.build(placement)
                    block_rows = mine if source is None else np.arange(mine.size)
                    for name, array in built.items():
                        arrays[name][g, block_rows, : array.shape[1]] = array
            slot = g * per + np.arange(real.size)
            flat_rows[slot] = g * height + part_rows
            flat_starts[slot] = part_starts
        arrays = {k: v.reshape(*leading, capacity, width) for k, v in arrays.items()}
        if source is not None:
            source = source.reshape(*leading, height, processes)
        return PlacedBatch(
            arrays=arrays,
            indices=slots,
            real_tokens=int(self.lengths[indices].sum()),
            shape=(*leading, height, width),
            rows=flat_rows,
            starts=flat_starts,
            source_rows=source,
            pad_values={name: layout.pad_value(name) for name in layout.array_names},
            segment_name=ATTENTION_MASK if layout.packed else None,
        )

    def all_features(self) -> Sequence[dict[str, Any]]:
        """Every process's features in global order (several processes: a collective the first
        time; cached)."""
        if self.placement.num_processes == 1:
            return self.features
        if self._all_features is None:
            parts = allgather_objects(list(self.features))
            self._all_features = [f for part in parts for f in part]
        return self._all_features


def packing_supported(args: Any, model: Any, input_names: Sequence[str]) -> bool:
    """Whether batches are packed (``args.packing``; unset: whenever it is supported), on one
    process or several alike.

    Packing needs the model to read ``attention_mask`` values as segment ids and to take
    ``position_ids`` (flaxtrainer's encoders, recognised by ``config.position_offset``) and the
    task to feed ``attention_mask``.
    """
    if args.packing is False or args.pad_to_max_length or args.bucket_widths:
        return False
    offset = getattr(getattr(model, "config", None), "position_offset", None)
    problems = []
    if not isinstance(offset, int):
        problems.append("the model has no config.position_offset (not a flaxtrainer encoder)")
    if ATTENTION_MASK not in input_names:
        problems.append("the task's model_input_names lack attention_mask")
    if problems and args.packing:
        raise ValueError("packing=True: " + "; ".join(problems) + ". Set packing=False.")
    return not problems


class InputPipeline:
    """The trainer's input path: ``prepare(dataset)`` -> :class:`PreparedData` (cached per
    dataset object), with the layout chosen once from the arguments, model and task."""

    def __init__(self, task: Any, model: Any, args: Any, mesh: Mesh, tokenizer: Any = None) -> None:
        self.task = task
        self.args = args
        self.mesh = mesh
        self.input_names = tuple(task.model_input_names)
        self.packing = packing_supported(args, model, self.input_names)
        config = getattr(model, "config", None)
        self.position_offset = getattr(config, "position_offset", 0)
        #: Row width at which attention costs about as much as the rest of a layer.
        self.width_cost: float | None = getattr(config, "d_model", None)
        pad_id = getattr(task, "pad_token_id", None)
        if pad_id is None and tokenizer is not None:
            pad_id = getattr(tokenizer, "pad_token_id", None)
        self.pad_values = {INPUT_IDS: int(pad_id or 0)}
        self._prepared: dict[int, tuple[Any, PreparedData]] = {}

    def prepare(self, dataset: Any) -> PreparedData:
        """``task.prepare`` once per dataset object (each process: its shard), the global
        lengths (several processes: gathered once), and the layout over them."""
        cached = self._prepared.get(id(dataset))
        if cached is not None and cached[0] is dataset:
            return cached[1]
        prepared = self._prepare(dataset)
        self._prepared[id(dataset)] = (dataset, prepared)
        return prepared

    def forget(self, dataset: Any) -> None:
        """Drop what :meth:`prepare` keeps for ``dataset`` (a one-off dataset, e.g. a
        prediction request: the cache would otherwise hold every one)."""
        self._prepared.pop(id(dataset), None)

    def _prepare(self, dataset: Any) -> PreparedData:
        processes = mesh_processes(self.mesh)
        if processes != jax.process_count():
            raise ValueError(
                f"The trainer's mesh spans {processes} of the {jax.process_count()} processes; "
                "a multi-host run needs a mesh over every process's devices (the default)."
            )
        if processes == 1:
            features = self.task.prepare(dataset)
            lengths = np.array([len(f[LABELS]) for f in features], np.int64)
            placement = Placement.single(lengths)
            return PreparedData(features, self._layout(features, lengths), placement)
        total = num_examples(dataset)
        start, stop = shard_bounds(total, processes)[jax.process_index()]

        def local_features() -> list[dict[str, Any]]:
            features = self.task.prepare(shard_dataset(dataset, start, stop))
            return [shift_example_index(f, start) for f in features]

        features = together(local_features, "preparing its shard of the dataset")
        all_lengths = allgather_objects(np.array([len(f[LABELS]) for f in features], np.int64))
        counts = tuple(len(x) for x in all_lengths)
        empty = [p for p, n in enumerate(counts) if n == 0]
        if empty:
            raise ValueError(
                f"Process {empty[0]}'s shard of a {total}-example dataset produced no features; "
                f"each of the {processes} processes needs at least one example of every split "
                "(use a larger dataset or fewer processes)."
            )
        lengths = np.concatenate(all_lengths).astype(np.int64)
        offset = sum(counts[: jax.process_index()])
        layout = together(lambda: self._layout(features, lengths, offset), "collating its features")
        placement = Placement(
            lengths,
            counts,
            process_index=jax.process_index(),
            local_devices=self.mesh.devices.size // processes,
            row_positions=functools.partial(process_rows, self.mesh),
        )
        return PreparedData(features, layout, placement)

    def _layout(
        self, features: Sequence[dict[str, Any]], lengths: np.ndarray, offset: int = 0
    ) -> Layout:
        """The layout over this process's ``features`` (global indices from ``offset`` on), its
        widths from the global ``lengths``."""
        widths = self.widths(lengths)
        if self.packing:
            batcher = PackingBatcher(
                features,
                self.input_names,
                widths[-1],
                self.pad_values,
                position_offset=self.position_offset,
            )
            layout: Layout = PackedLayout(batcher, self.width_cost)
        else:
            batcher = Batcher(features, self.input_names, widths, self.pad_values)
            layout = PaddedLayout(batcher)
        batcher.example_id_offset = offset  # per-token example_ids are global indices
        return layout

    def widths(self, lengths: np.ndarray) -> tuple[int, ...]:
        """Padded widths: one (the task's ``max_seq_length``) for packing and
        ``pad_to_max_length``, else ``bucket_widths`` or a few buckets up to it."""
        max_length = getattr(self.task, "max_seq_length", None)
        if max_length is None:
            max_length = int(lengths.max()) if lengths.size else 1
        if self.args.pad_to_max_length or self.packing:
            return (int(max_length),)
        if self.args.bucket_widths:
            return tuple(self.args.bucket_widths)
        return bucket_widths(int(max_length), self.args.max_buckets)


__all__ = [
    "InputPipeline",
    "Layout",
    "PackedLayout",
    "PaddedLayout",
    "Placement",
    "PlacedBatch",
    "PreparedData",
    "packing_supported",
]
