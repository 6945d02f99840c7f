"""Evaluation: one pass of given parameters over a dataset (:class:`Evaluator`), and the named
evaluation sets that ``FlaxTrainer.evaluate`` takes (:func:`evaluate_sets`).

Every feature is seen exactly once (the last batch is padded with rows that count nowhere),
outputs come back in feature order, and the loss is the global sum over the global count of
labelled tokens. A dataset whose labels are all -100 after ``task.prepare`` gets predictions
and counts/runtime only (a split without gold tags: ``flaxtrainer.training.gold``).

The :class:`Evaluator` is built by the trainer with what never changes (the compiled eval
step, the model's constant state, the mesh, the input pipeline, the task, the batch size) and
called with what does: the parameters to evaluate and the training grid to fill.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from flaxtrainer.batching.input_pipeline import PlacedBatch
from flaxtrainer.batching.sharded_data import num_examples
from flaxtrainer.checkpointing.best_metric import metric_key
from flaxtrainer.errors import MetricForBestModelError
from flaxtrainer.runtime.sharding import to_host

if TYPE_CHECKING:
    from jax.sharding import Mesh

    from flaxtrainer.batching.batchers import PackingGrid
    from flaxtrainer.batching.input_pipeline import InputPipeline
    from flaxtrainer.config.training_args import TrainingArguments

logger = logging.getLogger(__name__)


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
    run_pass: Callable[[Any, str], EvalLoopOutput], dataset: Any, prefix: str
) -> tuple[tuple[EvalLoopOutput, ...], dict[str, float]]:
    """Evaluate ``dataset`` with ``run_pass(dataset, prefix)``, or each of its named sets
    (:func:`named_eval_sets`) in order with the prefix ``{prefix}_{name}`` (Hugging Face:
    ``metric_key_prefix=f"eval_{name}"``).

    Returns every pass (the last one is ``trainer.last_evaluation``) and their metrics merged,
    so that one log entry and one ``on_evaluate`` carry them all: early stopping, best-model
    selection and the trackers see every set at once.
    """
    sets = named_eval_sets(dataset)
    if sets is None:
        result = run_pass(dataset, prefix)
        return (result,), dict(result.metrics)
    metrics, passes = {}, []
    for name, data in sets.items():
        result = run_pass(data, f"{prefix}_{name}")
        metrics.update(result.metrics)
        passes.append(result)
    return tuple(passes), metrics


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


@dataclass(eq=False)
class Evaluator:
    """Runs the compiled evaluation step over datasets (see the module docstring).

    Args:
        eval_step: the jitted ``(params, rest, batch) -> (outputs, loss_sum, count)``
            (``steps.jit_eval_step``).
        rest: the model's non-parameter state, placed on ``mesh`` (constant).
        mesh: the device mesh the batches are placed on.
        inputs: the input pipeline: dataset -> features -> layout (``InputPipeline``).
        task: gives ``compute_metrics`` (and, optionally, ``error_report``).
        batch_size: global sentences per batch.
        multiple: batches are planned in rows divisible by this (the data-parallel size).

    ``batch_shapes`` collects the distinct batch shapes given to ``eval_step``: its
    compilations.
    """

    eval_step: Callable[..., Any]
    _: KW_ONLY
    rest: Any
    mesh: Mesh
    inputs: InputPipeline
    task: Any
    batch_size: int
    multiple: int
    batch_shapes: set[tuple[int, ...]] = field(default_factory=set)

    def run(
        self,
        dataset: Any,
        prefix: str,
        params: Any,
        *,
        grid: PackingGrid | None = None,
        expect_gold: bool = True,
    ) -> EvalLoopOutput:
        """One pass of ``params`` (placed on the mesh) over ``dataset``; metrics prefixed
        ``{prefix}_`` (the task's metrics and ``loss`` only when the dataset has gold labels; a
        warning says so when it has none, unless ``expect_gold`` is False: raw-text
        prediction). With packing, ``grid`` (the training grid) is filled instead of planning
        one for this dataset, so evaluation runs in the training shape."""
        start = time.perf_counter()
        data = self.inputs.prepare(dataset)
        plan, grid = data.eval_plan(self.batch_size, multiple=self.multiple, grid=grid)
        slots = max([self.batch_size, *(len(b) for b in plan)])  # a filled grid: more
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
            self.batch_shapes.add(tuple(host.shape))
            device_batch = host.put(self.mesh)
            pending.append((host, self.eval_step(params, self.rest, device_batch)))
            if len(pending) > 2:
                collect(*pending.popleft())
        while pending:
            collect(*pending.popleft())
        features = data.all_features()  # multi-host: every process's features

        metrics: dict[str, float] = {}
        report = None
        if totals["count"] > 0:
            task_metrics = self.task.compute_metrics(dataset, features, outputs)
            report = _error_report(self.task, dataset, features, outputs)
            metrics.update({_prefixed(prefix, k): v for k, v in task_metrics.items()})
            metrics[f"{prefix}_loss"] = totals["loss_sum"] / totals["count"]
        elif expect_gold:
            logger.warning(
                "%s: the dataset has no gold labels; only counts and runtime are reported.",
                prefix,
            )
        runtime = time.perf_counter() - start
        samples = _num_samples(dataset, features)
        metrics[f"{prefix}_samples"] = samples
        metrics[f"{prefix}_runtime"] = runtime
        metrics[f"{prefix}_samples_per_second"] = samples / runtime if runtime > 0 else float("nan")
        return EvalLoopOutput(dataset, features, outputs, metrics, report, prefix)


@dataclass(frozen=True)
class FinalEvaluation:
    """The evaluation that training ran at its last step, kept so that the ``evaluate()``
    which usually follows ``train()`` (``--do_eval``) does not run it again: same sets, same
    prefix, same step, and the parameters training ended with (``load_best_model_at_end``
    from another step drops it)."""

    dataset: Any
    prefix: str
    step: int
    metrics: Mapping[str, float]

    def answers(self, dataset: Any, prefix: str, state: Any) -> bool:
        """Whether ``evaluate(dataset, prefix)`` now would compute exactly these metrics."""
        return (
            prefix == self.prefix
            and state.global_step == self.step
            and _same_sets(dataset, self.dataset)
        )


def _same_sets(a: Any, b: Any) -> bool:
    """The same dataset object, or dicts of named sets holding the same objects."""
    if a is b:
        return True
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(a[k] is b[k] for k in a)
    return False


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
