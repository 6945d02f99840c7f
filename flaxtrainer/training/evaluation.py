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

from flaxtrainer.batching.input_pipeline import PlacedBatch
from flaxtrainer.batching.sharded_data import num_examples
from flaxtrainer.checkpointing.best_metric import metric_key
from flaxtrainer.errors import UserError
from flaxtrainer.runtime.sharding import to_host

if TYPE_CHECKING:
    from flaxtrainer.config.training_args import TrainingArguments
    from flaxtrainer.training.trainer import FlaxTrainer

logger = logging.getLogger(__name__)

#: The column of gold tags in the readers' datasets (-1 for every token: no gold).
TAGS_COLUMN = "tags"


class PredictionOutput(NamedTuple):
    """``predictions``: ``task.decode`` output (word-level tags per example); ``label_ids``: each
    feature's token labels (unpadded, -100 where no label); ``metrics``: prefixed metrics."""

    predictions: Any
    label_ids: list[np.ndarray]
    metrics: dict[str, float]


class EvalLoopOutput(NamedTuple):
    """One pass over a dataset: ``outputs[i]`` are ``task.predict_step`` arrays of feature ``i``
    cut to its length, as numpy. Kept as ``trainer.last_evaluation`` for callbacks (the last
    pass of ``evaluate`` or ``predict``). ``error_report``: the task's entity error report
    (``task.error_report``; None without one or without gold); ``prefix``: the metric prefix."""

    dataset: Any
    features: Sequence[dict[str, Any]]
    outputs: list[dict[str, np.ndarray]]
    metrics: dict[str, float]
    error_report: Any = None
    prefix: str = "eval"


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


class MetricForBestModelError(UserError, ValueError):
    """``metric_for_best_model`` names no metric of the evaluation (or, with several evaluation
    sets, no set): a ValueError for the API, a one-line error plus hint on the command line."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "give --metric_for_best_model one of the keys named above")


def named_eval_sets(dataset: Any) -> dict[str, Any] | None:
    """The named evaluation sets of ``dataset`` when it is a dict of datasets
    (``{"dev": ds1, "ood": ds2}``, what Hugging Face's Trainer takes as ``eval_dataset``), else
    None (one dataset). A dict of columns is one dataset: a mapping counts as named sets only
    when every value is a dataset itself (a ``datasets.Dataset``, a dict of columns, or a list
    of example dicts). An empty dict, or a set name that is not a non-empty string, is refused."""
    if not isinstance(dataset, Mapping) or not all(map(_is_dataset, dataset.values())):
        return None
    bad = [name for name in dataset if not isinstance(name, str) or not name]
    if not dataset or bad:
        raise ValueError(
            f"eval_dataset as a dict needs one or more sets named by non-empty strings "
            f"(their metrics are eval_<name>_*), got names {list(dataset)!r}."
        )
    return dict(dataset)


def _is_dataset(value: Any) -> bool:
    if isinstance(value, Mapping) or hasattr(value, "column_names"):  # columns, datasets.Dataset
        return True
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) > 0
        and all(isinstance(row, Mapping) for row in value)
    )


def evaluate_sets(
    trainer: FlaxTrainer, dataset: Any, prefix: str
) -> tuple[EvalLoopOutput, dict[str, float]]:
    """Evaluate ``dataset``, or each of its named sets (:func:`named_eval_sets`) in order with
    the prefix ``{prefix}_{name}`` (Hugging Face: ``metric_key_prefix=f"eval_{name}"``).

    Returns the last pass (``trainer.last_evaluation``) and every pass's metrics merged, so
    that one log entry and one ``on_evaluate`` carry them all: early stopping, best-model
    selection and the trackers see every set at once. During training, the key
    ``metric_for_best_model`` names must be among them (:func:`check_best_metric`).
    """
    sets = named_eval_sets(dataset)
    if sets is None:
        result = trainer._evaluation_loop(dataset, prefix)
        metrics = dict(result.metrics)
        passes = [result]
    else:
        metrics, passes = {}, []
        for name, data in sets.items():
            result = trainer._evaluation_loop(data, f"{prefix}_{name}")
            metrics.update(result.metrics)
            passes.append(result)
    trainer.last_evaluations = tuple(passes)  # every set's pass, for the error report
    if trainer.is_training:
        check_best_metric(trainer.args, metrics)
    return result, metrics


def check_eval_sets(args: TrainingArguments, eval_dataset: Any) -> None:
    """Before training: with several named evaluation sets, ``metric_for_best_model`` must name
    one of them, as Hugging Face requires (``eval_dev_f1`` or ``dev_f1``; a bare ``f1`` is
    ambiguous). Raises :class:`MetricForBestModelError` naming the keys to choose from."""
    sets = named_eval_sets(eval_dataset)
    key = args.best_metric_key
    if sets is None or key is None or any(key.startswith(f"eval_{name}_") for name in sets):
        return
    metric = key.removeprefix("eval_")
    examples = ", ".join(f"eval_{name}_{metric}" for name in sets)
    raise MetricForBestModelError(
        f"metric_for_best_model={args.metric_for_best_model!r} names no evaluation set: with "
        f"several ({', '.join(sets)}) each one's metrics are eval_<set>_<metric>. Give the full "
        f"key of the set that selects the best model: {examples}, ..."
    )


#: Evaluation counters that no one selects a model by.
_BOOKKEEPING = ("_samples", "_runtime", "_samples_per_second")


def check_best_metric(args: TrainingArguments, metrics: Mapping[str, Any]) -> None:
    """The metric ``metric_for_best_model`` names must be in an evaluation's ``metrics`` (best
    checkpoint, ``load_best_model_at_end`` and the best-metric state read it); otherwise
    :class:`MetricForBestModelError` naming the metrics there are (Hugging Face: a KeyError)."""
    key = args.best_metric_key
    if key is None or metric_key(metrics, args.metric_for_best_model) is not None:
        return  # found as every ranking finds it (flaxtrainer.checkpointing.best_metric)
    available = ", ".join(k for k in metrics if not k.endswith(_BOOKKEEPING))
    raise MetricForBestModelError(
        f"metric_for_best_model={args.metric_for_best_model!r}: the evaluation has no metric "
        f"{key!r}; its metrics: {available}."
    )


def evaluation_loop(
    trainer: FlaxTrainer, dataset: Any, prefix: str, expect_gold: bool = True
) -> EvalLoopOutput:
    """One pass of ``trainer``'s current parameters over ``dataset``; metrics prefixed
    ``{prefix}_`` (the task's metrics and ``loss`` only when the dataset has gold labels; a
    warning says so when it has none, unless ``expect_gold`` is False: raw-text prediction)."""
    start = time.perf_counter()
    data = trainer.inputs.prepare(dataset)
    params = trainer._eval_params()
    plan, grid = data.eval_plan(
        trainer.eval_batch_size, multiple=trainer.num_devices, grid=trainer._train_grid
    )
    slots = max([trainer.eval_batch_size, *(len(b) for b in plan)])  # a filled grid: more
    outputs: list[dict[str, np.ndarray] | None] = [None] * len(data.lengths)
    totals = {"loss_sum": 0.0, "count": 0}

    def collect(host: PlacedBatch, result: Any) -> None:
        batch_outputs, loss_sum, count = to_host(result)
        totals["loss_sum"] += float(loss_sum)
        totals["count"] += int(count)
        for index, row, first in zip(host.indices, *host.placements()):
            if index >= 0:
                end = first + data.lengths[index]
                outputs[index] = {k: v[row, first:end] for k, v in batch_outputs.items()}

    pending: deque[tuple[PlacedBatch, Any]] = deque()
    for indices in plan:
        host = data.batch(indices, slots, (), grid)
        trainer._record_shape(trainer._eval_shapes, host.shape)
        device_batch = host.put(trainer.mesh)
        pending.append((host, trainer._eval_step(params, trainer._rest, device_batch)))
        if len(pending) > 2:
            collect(*pending.popleft())
    while pending:
        collect(*pending.popleft())
    features = data.all_features()  # multi-host: every process's features

    metrics: dict[str, float] = {}
    report = None
    if totals["count"] > 0:
        task_metrics = trainer.task.compute_metrics(dataset, features, outputs)
        report = _error_report(trainer.task, dataset, features, outputs)
        metrics.update({_prefixed(prefix, k): v for k, v in task_metrics.items()})
        metrics[f"{prefix}_loss"] = totals["loss_sum"] / totals["count"]
    elif expect_gold:
        logger.warning(
            "%s: the dataset has no gold labels; only counts and runtime are reported.", prefix
        )
    runtime = time.perf_counter() - start
    samples = _num_samples(dataset, features)
    metrics[f"{prefix}_samples"] = samples
    metrics[f"{prefix}_runtime"] = runtime
    metrics[f"{prefix}_samples_per_second"] = samples / runtime if runtime > 0 else float("nan")
    trainer.last_evaluation = EvalLoopOutput(dataset, features, outputs, metrics, report, prefix)
    return trainer.last_evaluation


def _error_report(task: Any, dataset: Any, features: Any, outputs: Any) -> Any:
    """``task.error_report(dataset, features, outputs)`` (an entity error report, see
    ``flaxtrainer.tasks.error_report``), None for a task without that method; a failure is logged,
    never fatal: the report must not end a training run."""
    error_report = getattr(task, "error_report", None)
    if error_report is None:
        return None
    try:
        return error_report(dataset, features, outputs)
    except Exception:  # noqa: BLE001
        logger.exception("task.error_report failed; no entity error report for this pass")
        return None


def _num_samples(dataset: Any, features: Sequence[dict[str, Any]]) -> int:
    """Examples in ``dataset`` (a dict of columns counts its rows, not its columns)."""
    try:
        return num_examples(dataset)
    except (TypeError, ValueError):
        return len(features)


def _prefixed(prefix: str, key: str) -> str:
    return key if key.startswith(f"{prefix}_") else f"{prefix}_{key}"


class TrainerEvaluation:
    """``FlaxTrainer.evaluate`` / ``predict``: a base class of the trainer, whose loop is
    :func:`evaluation_loop` (override these methods in a trainer subclass as usual)."""

    def evaluate(self, dataset: Any = None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Metrics of the current parameters on ``dataset`` (default ``eval_dataset``).

        Returns the task's metrics plus ``loss``, ``samples`` (examples), ``runtime`` and
        ``samples_per_second``, each prefixed ``{metric_key_prefix}_``; logs them and fires
        ``on_evaluate``. A dict of named sets gives each set's metrics prefixed
        ``{metric_key_prefix}_{name}_``, merged into one log and one ``on_evaluate``
        (``flaxtrainer.training.evaluation.evaluate_sets``).
        """
        dataset = self.eval_dataset if dataset is None else dataset
        if dataset is None:
            raise ValueError(
                "FlaxTrainer.evaluate() needs a dataset: pass one, or eval_dataset to FlaxTrainer."
            )
        result, metrics = evaluate_sets(self, dataset, metric_key_prefix)
        self.last_evaluation = result
        self.log(metrics)
        self.callbacks.on_evaluate(self, metrics)
        return metrics

    def predict(self, dataset: Any, metric_key_prefix: str = "test") -> PredictionOutput:
        """Word-level predictions (``task.decode``) for ``dataset``, with metrics when it has labels.

        A split without gold tags (a ``tags`` column of -1 only, as the readers give it, or
        labels all -100 after ``task.prepare``) gets no loss and no task metrics: only
        ``{prefix}_samples``, ``_runtime`` and ``_samples_per_second``.
        """
        result = self._evaluation_loop(dataset, metric_key_prefix)
        self.last_evaluations = (result,)
        predictions = self.task.decode(result.dataset, result.features, result.outputs)
        label_ids = [np.asarray(f["labels"]) for f in result.features]
        self.callbacks.on_predict(self, result.metrics)
        return PredictionOutput(predictions, label_ids, result.metrics)

    def _evaluation_loop(self, dataset: Any, prefix: str) -> EvalLoopOutput:
        """Every feature once; see ``flaxtrainer.training.evaluation``. A split whose gold tags are all
        -1 (no gold) loses them first, so that it gets no made-up loss or metrics."""
        cached = self._gold_free.get(id(dataset))
        if cached is None or cached[0] is not dataset:
            cached = (dataset, without_missing_gold(dataset))
            self._gold_free[id(dataset)] = cached
        return evaluation_loop(self, cached[1], prefix)
