"""The evaluation loop of ``FlaxTrainer.evaluate`` / ``predict``, and what a split without gold
tags means for it.

Every feature is seen exactly once (the last batch is padded with rows that count nowhere),
outputs come back in feature order, and the loss is the global sum over the global count of
labelled tokens. A split without gold tags (the readers mark every tag -1; a dataset whose
labels are all -100 after ``task.prepare``) gets predictions and counts/runtime only: no loss,
no task metrics, whichever entry point asked for them.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from flaxtrainer.batching import HostBatch, PackingBatcher, balanced_plan, eval_plan
from flaxtrainer.sharded_data import global_features, num_examples, put_host_batch
from flaxtrainer.sharding import to_host

if TYPE_CHECKING:
    from flaxtrainer.trainer import FlaxTrainer

logger = logging.getLogger(__name__)

#: The column of gold tags in the readers' datasets (-1 for every token: no gold).
TAGS_COLUMN = "tags"


class EvalLoopOutput(NamedTuple):
    """One pass over a dataset: ``outputs[i]`` are ``task.predict_step`` arrays of feature ``i``
    cut to its length, as numpy. Kept as ``trainer.last_evaluation`` for callbacks."""

    dataset: Any
    features: Sequence[dict[str, Any]]
    outputs: list[dict[str, np.ndarray]]
    metrics: dict[str, float]


def has_gold_tags(dataset: Any) -> bool | None:
    """Whether ``dataset`` carries gold tags: False when it has a ``tags`` column (or key) in
    which no tag is >= 0 (the readers' "no gold" marking), True when some tag is, None when
    it has no ``tags`` at all (the task decides: its labels may come from elsewhere)."""
    column = _tags_column(dataset)
    if column is None:
        return None
    return any(isinstance(tag, str) or int(tag) >= 0 for tags in column for tag in tags)


def without_missing_gold(dataset: Any) -> Any:
    """``dataset`` without its ``tags`` when they are all -1 (see :func:`has_gold_tags`), so
    that no task maps the placeholder to a real label; otherwise ``dataset`` itself."""
    if has_gold_tags(dataset) is not False:
        return dataset
    try:
        import datasets

        if isinstance(dataset, datasets.Dataset):
            return dataset.remove_columns(TAGS_COLUMN)
    except ImportError:  # pragma: no cover - datasets is a dependency
        pass
    if isinstance(dataset, Mapping):
        return {k: v for k, v in dataset.items() if k != TAGS_COLUMN}
    return [{k: v for k, v in row.items() if k != TAGS_COLUMN} for row in dataset]


def _tags_column(dataset: Any) -> Sequence[Sequence[int]] | None:
    try:
        import datasets

        if isinstance(dataset, datasets.Dataset):
            if TAGS_COLUMN not in dataset.column_names:
                return None
            return dataset.select_columns([TAGS_COLUMN]).with_format(None)[TAGS_COLUMN]
    except ImportError:  # pragma: no cover
        pass
    if isinstance(dataset, Mapping):
        return dataset.get(TAGS_COLUMN)
    if isinstance(dataset, Sequence) and dataset and all(isinstance(r, Mapping) for r in dataset):
        if not all(TAGS_COLUMN in r for r in dataset):
            return None
        return [r[TAGS_COLUMN] for r in dataset]
    return None


def evaluation_loop(trainer: FlaxTrainer, dataset: Any, prefix: str) -> EvalLoopOutput:
    """One pass of ``trainer``'s current parameters over ``dataset``; metrics prefixed
    ``{prefix}_`` (the task's metrics and ``loss`` only when the dataset has gold labels)."""
    start = time.perf_counter()
    _, features, batcher = trainer._prepare(dataset)
    params = trainer._eval_params()
    grid = None
    if isinstance(batcher, PackingBatcher):
        plan = balanced_plan(batcher.lengths, trainer.eval_batch_size)
        grid = batcher.plan_grid(
            plan, multiple=trainer.num_devices, width_cost=trainer._width_cost()
        )
    else:
        plan = eval_plan(
            batcher.lengths, trainer.eval_batch_size, sort_by_length=len(batcher.widths) > 1
        )
    outputs: list[dict[str, np.ndarray] | None] = [None] * len(batcher.lengths)
    totals = {"loss_sum": 0.0, "count": 0}

    def collect(host: HostBatch, result: Any) -> None:
        batch_outputs, loss_sum, count = to_host(result)
        totals["loss_sum"] += float(loss_sum)
        totals["count"] += int(count)
        for index, row, first in zip(host.indices, *host.placements()):
            if index >= 0:
                end = first + batcher.lengths[index]
                outputs[index] = {k: v[row, first:end] for k, v in batch_outputs.items()}

    pending: deque[tuple[HostBatch, Any]] = deque()
    for indices in plan:
        host = trainer._collate(batcher, indices, trainer.eval_batch_size, (), grid)
        trainer._record_shape(trainer._eval_shapes, host.shape)
        device_batch = put_host_batch(host, trainer.mesh)
        pending.append((host, trainer._eval_step(params, trainer._rest, device_batch)))
        if len(pending) > 2:
            collect(*pending.popleft())
    while pending:
        collect(*pending.popleft())
    features = global_features(batcher, features)  # multi-host: every process's features

    metrics: dict[str, float] = {}
    if totals["count"] > 0:
        task_metrics = trainer.task.compute_metrics(dataset, features, outputs)
        metrics.update({_prefixed(prefix, k): v for k, v in task_metrics.items()})
        metrics[f"{prefix}_loss"] = totals["loss_sum"] / totals["count"]
    else:
        logger.warning(
            "%s: the dataset has no gold labels; only counts and runtime are reported.", prefix
        )
    runtime = time.perf_counter() - start
    samples = _num_samples(dataset, features)
    metrics[f"{prefix}_samples"] = samples
    metrics[f"{prefix}_runtime"] = runtime
    metrics[f"{prefix}_samples_per_second"] = samples / runtime if runtime > 0 else float("nan")
    return EvalLoopOutput(dataset, features, outputs, metrics)


def _num_samples(dataset: Any, features: Sequence[dict[str, Any]]) -> int:
    """Examples in ``dataset`` (a dict of columns counts its rows, not its columns)."""
    try:
        return num_examples(dataset)
    except (TypeError, ValueError):
        return len(features)


def _prefixed(prefix: str, key: str) -> str:
    return key if key.startswith(f"{prefix}_") else f"{prefix}_{key}"
