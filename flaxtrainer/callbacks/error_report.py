"""ErrorReport: the entity error report of each evaluation, logged and written to output_dir."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from flaxtrainer.callbacks.base import Callback
from flaxtrainer.distributed import is_main_process
from flaxtrainer.outputs import save_error_report

if TYPE_CHECKING:
    from flaxtrainer.error_report import EntityErrorReport
    from flaxtrainer.trainer import FlaxTrainer

logger = logging.getLogger(__name__)


class ErrorReport(Callback):
    """After each ``evaluate`` and ``predict`` whose task gave an entity error report
    (``trainer.last_evaluation.error_report``, see :mod:`flaxtrainer.error_report`): log its
    table (one line per entity type: gold, exact, boundary, type, missed, spurious, predicted)
    and write it to ``<output_dir>/<prefix>_error_report.json`` (``eval_error_report.json``,
    ``test_error_report.json``; process 0 only; each evaluation replaces the last one's).

    The trainer adds it by default when the task has an ``error_report`` method; a task
    without entities (POS tagging) returns None there and nothing is logged or written.
    TensorBoard's part (the table as text, the confusion matrix as an image) is written by the
    ``TensorBoard`` callback, which owns the event file.
    """

    def on_evaluate(self, trainer: FlaxTrainer, metrics: dict[str, float]) -> None:
        self._report(trainer)

    def on_predict(self, trainer: FlaxTrainer, metrics: dict[str, float]) -> None:
        self._report(trainer)

    def _report(self, trainer: FlaxTrainer) -> None:
        evaluation = trainer.last_evaluation
        report: EntityErrorReport | None = None if evaluation is None else evaluation.error_report
        if report is None:
            return
        logger.info(
            "Entity errors (%s, step %d):\n%s",
            evaluation.prefix,
            trainer.state.global_step,
            report.table(),
        )
        if is_main_process():
            save_error_report(trainer.args.output_dir, evaluation.prefix, report.to_dict())
