"""Multi-host data: each process prepares only its shard of a dataset.

With several processes, each one tokenizes (``task.prepare``) only a contiguous slice of the
examples, ``[p * N // P, (p + 1) * N // P)``. Features are numbered globally in dataset order
(process 0's, then process 1's, ...), which is exactly the single-process numbering, and every
process learns all feature lengths (one small all-gather, ``input_pipeline.InputPipeline``).
Which process builds which rows of a batch, and how they reach the devices, is the
*placement* (``input_pipeline.Placement``): the same for padded and packed batches.

Evaluation gathers every process's features and outputs, so ``task.compute_metrics`` sees the
whole dataset once on every process, and decisions made from metrics (best checkpoint, early
stopping) agree everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from flaxtrainer.runtime.distributed import allgather_objects

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


def shift_example_index(feature: dict[str, Any], offset: int) -> dict[str, Any]:
    index = feature.get(EXAMPLE_INDEX)
    if offset == 0 or index is None or isinstance(index, bool):
        return feature
    return {**feature, EXAMPLE_INDEX: int(index) + offset}


def together(fn: Callable[[], Any], what: str) -> Any:
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
