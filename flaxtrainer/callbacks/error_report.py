"""ErrorReport: the entity error report of each evaluation, logged and written to output_dir."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from flaxtrainer.callbacks.base import Callback
from flaxtrainer.outputs.results import save_error_report
from flaxtrainer.runtime.distributed import is_main_process

if TYPE_CHECKING:
    from flaxtrainer.callbacks.view import TrainerView
    from flaxtrainer.tasks.error_report import EntityErrorReport

logger = logging.getLogger(__name__)


class ErrorReport(Callback):
    """After each ``evaluate`` and ``predict`` whose task gave an entity error report
    (``trainer.last_evaluation.error_report``, see :mod:`flaxtrainer.tasks.error_report`): log its
    table (one line per entity type: gold, exact, boundary, type, missed, spurious, predicted)
    and write it to ``<output_dir>/<prefix>_error_report.json`` (``eval_error_report.json``,
    ``test_error_report.json``; process 0 only; each evaluation replaces the last one's). With
    several named evaluation sets, each set's pass (:func:`evaluation_passes`) gets its own
    (``eval_<set>_error_report.json``) where the trainer keeps every pass in
    ``trainer.last_evaluations``; otherwise only the last set is reported.

    The trainer adds it by default when the task has an ``error_report`` method; a task
    without entities (POS tagging) returns None there and nothing is logged or written.
    TensorBoard's part (the table as text, the confusion matrix as an image) is written by the
    ``TensorBoard`` callback, which owns the event file.
    """

    def on_evaluate(self, trainer: TrainerView, metrics: dict[str, float]) -> None:
        self._report(trainer)

    def on_predict(self, trainer: TrainerView, metrics: dict[str, float]) -> None:
        self._report(trainer)

    def _report(self, trainer: TrainerView) -> None:
        for evaluation in evaluation_passes(trainer):
            report: EntityErrorReport | None = evaluation.error_report
            if report is None:
                continue
            logger.info(
                "Entity errors (%s, step %d):\n%s",
                evaluation.prefix,
                trainer.state.global_step,
                report.table(),
            )
            if is_main_process():
                save_error_report(trainer.args.output_dir, evaluation.prefix, report.to_dict())


def evaluation_passes(trainer: TrainerView) -> list[Any]:
    """The passes of the last ``evaluate`` / ``predict``: ``trainer.last_evaluations`` (one
    per named evaluation set) where the trainer keeps them, else ``[trainer.last_evaluation]``
    (only the last set's pass when there are several); empty before any evaluation."""
    passes = getattr(trainer, "last_evaluations", None)
    if passes:
        return list(passes)
    last = getattr(trainer, "last_evaluation", None)
    return [] if last is None else [last]
