"""Multi-host data: each process prepares only its shard of a dataset, batches stay global.

With several processes, each one tokenizes (``task.prepare``) only a contiguous slice of the
examples, ``[p * N // P, (p + 1) * N // P)``. Features are numbered globally in dataset order
(process 0's, then process 1's, ...), which is exactly the single-process numbering, and every
process learns all feature lengths (one small all-gather). The sampler and evaluation plans
are pure functions of those lengths, so every process computes the same *global* batches as a
single process would, row for row.

A process fills only the rows it owns: for each global batch it sends its own features as a
block of ``C`` rows; a jitted gather (:func:`flaxtrainer.sharding.assemble_rows`) puts every
row at its single-process position on the devices. The train and eval steps therefore see the
very batch a single process would give them, including row order, so dropout masks (drawn per
global position), losses and metrics do not depend on the number of processes. ``C`` is the
largest count any process owns in the batch, rounded up to a few levels (``capacity_levels``)
so the gather compiles for few shapes; the train step itself compiles exactly the
single-process shapes.

Evaluation gathers every process's features and outputs, so ``task.compute_metrics`` sees the
whole dataset once on every process, and decisions made from metrics (best checkpoint, early
stopping) agree everywhere.
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

from flaxtrainer.batching import LABELS, Batcher, HostBatch
from flaxtrainer.distributed import allgather_objects
from flaxtrainer.sharding import assemble_rows, mesh_processes, process_rows, put_batch

#: Feature key that holds the index of the feature's example; shifted from shard-local to
#: dataset-wide indices after ``task.prepare`` of a shard (the trainer reads no other metadata).
EXAMPLE_INDEX = "example_index"


def shard_bounds(num_examples: int, num_shards: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, stop)`` of each shard; sizes differ by at most one."""
    return [
        (num_examples * i // num_shards, num_examples * (i + 1) // num_shards)
        for i in range(num_shards)
    ]


def num_examples(dataset: Any) -> int:
    """Examples in a ``datasets.Dataset``, a sequence, or a mapping of equal-length columns."""
    if isinstance(dataset, Mapping):
        lengths = {len(column) for column in dataset.values()}
        if len(lengths) != 1:
            raise ValueError(f"Dataset columns have different lengths: {sorted(lengths)}.")
        return lengths.pop()
    if not hasattr(dataset, "__len__"):
        raise TypeError(
            f"Multi-host runs shard datasets by index, so they need a sized dataset (a "
            f"datasets.Dataset, a list, or a dict of columns); got {type(dataset).__name__}."
        )
    return len(dataset)


def shard_dataset(dataset: Any, start: int, stop: int) -> Any:
    """Examples ``[start, stop)`` of ``dataset``, of the same kind (no copy of a ``Dataset``)."""
    if hasattr(dataset, "select") and hasattr(dataset, "column_names"):  # datasets.Dataset
        return dataset.select(range(start, stop))
    if isinstance(dataset, Mapping):
        return {name: column[start:stop] for name, column in dataset.items()}
    return dataset[start:stop]


@dataclass(frozen=True)
class ShardedHostBatch(HostBatch):
    """This process's rows of one global batch.

    ``arrays``: ``[*leading, C, width]``, this process's features and padding rows;
    ``indices`` / ``real_tokens`` / ``shape`` / ``computed_tokens`` describe the *global* batch
    (the same values as on a single process); ``source_rows`` ``[*leading, rows]`` maps each
    global row to a row of the stacked process blocks (-1: padding); ``pad_values`` fill
    padding rows.
    """

    source_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    global_shape: tuple[int, ...] = ()
    pad_values: Mapping[str, int] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.global_shape


def put_host_batch(batch: HostBatch, mesh: Mesh, batch_axis: int = 0) -> dict[str, jax.Array]:
    """A host batch on the mesh: assembled from every process's rows if it is a
    :class:`ShardedHostBatch` (a collective), else transferred whole (:func:`put_batch`)."""
    if isinstance(batch, ShardedHostBatch):
        return assemble_rows(batch.arrays, batch.source_rows, mesh, batch_axis, batch.pad_values)
    return put_batch(batch.arrays, mesh, batch_axis)


def capacity_levels(share: int, unit: int, limit: int) -> list[int]:
    """Block sizes a process may send: multiples of ``unit`` (its device count) from the even
    ``share`` of a batch up to ``limit`` (the whole batch), about 1, 1.5, 2, 3, 4, 6... shares."""
    levels, factor = set(), 1.0
    while True:
        for step in (1.0, 1.5):
            level = min(limit, unit * math.ceil(share * factor * step / unit))
            levels.add(level)
            if level >= limit:
                return sorted(levels)
        factor *= 2


class ShardedBatcher:
    """The multi-host counterpart of :class:`~flaxtrainer.batching.Batcher`.

    Same interface (``lengths``, ``widths``, ``batch``), over *global* feature indices, while
    holding only this process's features. Build it with :meth:`prepare` (a collective).
    """

    def __init__(
        self,
        local: Batcher,
        lengths: np.ndarray,
        counts: Sequence[int],
        *,
        process_index: int,
        local_devices: int,
        row_positions: Callable[[int], Sequence[np.ndarray]],
    ) -> None:
        """``local``: this process's Batcher; ``lengths``: every feature's length in global
        order; ``counts``: features per process; ``row_positions(n)``: for each process, the
        rows of an ``n``-row global array its devices hold (:func:`process_rows`)."""
        self.local = local
        self.lengths = lengths
        self.widths = local.widths
        self.num_processes = len(counts)
        self.process_index = process_index
        self.local_devices = local_devices
        self.row_positions = row_positions
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.owner = np.repeat(np.arange(self.num_processes), counts)
        self._all_features: list[dict[str, Any]] | None = None

    @property
    def features(self) -> Sequence[dict[str, Any]]:
        """This process's features (their ``example_index`` already dataset-wide)."""
        return self.local.features

    @classmethod
    def prepare(
        cls,
        task: Any,
        dataset: Any,
        input_names: Sequence[str],
        widths_for: Callable[[np.ndarray], tuple[int, ...]],
        pad_values: Mapping[str, int],
        mesh: Mesh,
    ) -> ShardedBatcher:
        """``task.prepare`` on this process's shard; learn all lengths; pick global widths.

        A collective: every process calls it with the same dataset. If any process fails, every
        process raises (the failing one its own error), rather than the others hanging.
        """
        processes = mesh_processes(mesh)
        if processes != jax.process_count():
            raise ValueError(
                f"The trainer's mesh spans {processes} of the {jax.process_count()} processes; "
                "a multi-host run needs a mesh over every process's devices (the default)."
            )
        total = num_examples(dataset)
        start, stop = shard_bounds(total, processes)[jax.process_index()]

        def local_features() -> list[dict[str, Any]]:
            features = task.prepare(shard_dataset(dataset, start, stop))
            return [_shift_example_index(f, start) for f in features]

        features = _together(local_features, "preparing its shard of the dataset")
        all_lengths = allgather_objects(np.array([len(f[LABELS]) for f in features], np.int64))
        counts = [len(x) for x in all_lengths]
        empty = [p for p, n in enumerate(counts) if n == 0]
        if empty:
            raise ValueError(
                f"Process {empty[0]}'s shard of a {total}-example dataset produced no features; "
                f"each of the {processes} processes needs at least one example of every split "
                "(use a larger dataset or fewer processes)."
            )
        global_lengths = np.concatenate(all_lengths)
        widths = widths_for(global_lengths)
        local = _together(
            lambda: Batcher(features, input_names, widths, pad_values), "collating its features"
        )
        return cls(
            local,
            global_lengths,
            counts,
            process_index=jax.process_index(),
            local_devices=mesh.devices.size // processes,
            row_positions=functools.partial(process_rows, mesh),
        )

    def width_for(self, length: int) -> int:
        return self.local.width_for(length)

    def batch(self, indices: np.ndarray, rows: int, leading: tuple[int, ...] = ()) -> HostBatch:
        """This process's block of the global batch ``indices`` (``Batcher.batch`` semantics:
        ``rows`` rows in row-major ``[*leading, rows / prod(leading)]`` order, padded)."""
        indices = np.asarray(indices, np.int64)
        leading = tuple(leading)
        groups = math.prod(leading)
        flat = np.full(rows, -1, np.int64)
        flat[: len(indices)] = indices
        grid = flat.reshape(groups, rows // groups)
        source, mine, capacity = self._plan(grid)
        width = self.width_for(int(self.lengths[indices].max()))
        arrays = self._collate(mine, groups, capacity, width)
        return ShardedHostBatch(
            arrays={k: v.reshape(*leading, capacity, width) for k, v in arrays.items()},
            indices=flat,
            real_tokens=int(self.lengths[indices].sum()),
            source_rows=source.reshape(*leading, grid.shape[1]),
            global_shape=(*leading, grid.shape[1], width),
            pad_values=dict(self.local.pad_values),
        )

    def _plan(self, grid: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], int]:
        """For global rows ``grid`` ``[groups, rows]`` (feature indices, -1 padding): where each
        row comes from in the stacked process blocks, this process's local feature indices per
        group, and the blocks' rows per group (the same on every process)."""
        owners = np.where(grid >= 0, self.owner[np.maximum(grid, 0)], -1)
        most = max(int((owners == p).sum(axis=1).max()) for p in range(self.num_processes))
        share = grid.shape[1] // self.num_processes
        levels = capacity_levels(share, self.local_devices, grid.shape[1])
        capacity = next(c for c in levels if c >= most)
        positions = self.row_positions(self.num_processes * capacity)
        source = np.full(grid.shape, -1, np.int32)
        mine = []
        for g in range(grid.shape[0]):
            for p in range(self.num_processes):
                owned = np.flatnonzero(owners[g] == p)
                source[g, owned] = positions[p][: len(owned)]
                if p == self.process_index:
                    mine.append(grid[g, owned] - self.offsets[p])
        return source, mine, capacity

    def _collate(
        self, mine: list[np.ndarray], groups: int, capacity: int, width: int
    ) -> dict[str, np.ndarray]:
        """``[groups, capacity, width]`` arrays: this process's features of each group first,
        then padding rows."""
        arrays = {
            name: np.full((groups, capacity, width), self.local.pad_values.get(name, 0), np.int32)
            for name in self.local.array_names
        }
        local_indices = np.concatenate(mine)
        if local_indices.size == 0:
            return arrays
        block = self.local.batch(local_indices, local_indices.size)
        start = 0
        for g, ix in enumerate(mine):
            for name, array in block.arrays.items():
                part = array[start : start + ix.size]
                arrays[name][g, : ix.size, : part.shape[1]] = part
            start += ix.size
        return arrays

    def all_features(self) -> list[dict[str, Any]]:
        """Every process's features in global order (a collective the first time; cached)."""
        if self._all_features is None:
            parts = allgather_objects(list(self.local.features))
            self._all_features = [f for part in parts for f in part]
        return self._all_features


def global_features(batcher: Any, features: Sequence[dict[str, Any]]) -> Sequence[dict[str, Any]]:
    """The features of the whole dataset: ``features`` itself on one process, every process's
    features (a collective) with a :class:`ShardedBatcher`."""
    if isinstance(batcher, ShardedBatcher):
        return batcher.all_features()
    return features


def _shift_example_index(feature: dict[str, Any], offset: int) -> dict[str, Any]:
    index = feature.get(EXAMPLE_INDEX)
    if offset == 0 or index is None or isinstance(index, bool):
        return feature
    return {**feature, EXAMPLE_INDEX: int(index) + offset}


def _together(fn: Callable[[], Any], what: str) -> Any:
    """Run ``fn`` on every process; if it fails anywhere, raise everywhere."""
    try:
        result, error = fn(), None
    except Exception as err:  # noqa: BLE001 - re-raised below, after telling the others
        result, error = None, err
    errors = allgather_objects(None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    failed = [(p, e) for p, e in enumerate(errors) if e is not None]
    if failed:
        process, message = failed[0]
        raise RuntimeError(f"Process {process} failed {what}: {message}")
    return result
