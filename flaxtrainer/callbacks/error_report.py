"""ErrorReport: the entity error report of each evaluation, written to output_dir and logged."""

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
    (``trainer.last_evaluation.error_report``, see :mod:`flaxtrainer.tasks.error_report`): write
    it to ``<output_dir>/<prefix>_error_report.json`` (``eval_error_report.json``,
    ``test_error_report.json``; process 0 only; each evaluation replaces the last one's). With
    several named evaluation sets, each set's pass (:func:`evaluation_passes`) gets its own
    (``eval_<set>_error_report.json``) where the trainer keeps every pass in
    ``trainer.last_evaluations``; otherwise only the last set is reported.

    The log gets its table (one line per entity type: gold, exact, boundary, type, missed,
    spurious, predicted) at DEBUG (``--log_level debug``). At INFO, an evaluation during
    training says nothing (the progress line has its scores); a final ``evaluate`` or
    ``predict`` gets one line (:func:`summary`): the counts and the types with most errors.

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
            prefix, step = evaluation.prefix, trainer.state.global_step
            logger.debug("Entity errors (%s, step %d):\n%s", prefix, step, report.table())
            path = None
            if is_main_process():
                path = save_error_report(trainer.args.output_dir, prefix, report.to_dict())
            if not trainer.is_training:
                where = f" ({path.name})" if path is not None else ""
                logger.info(
                    "Entity errors (%s, step %d): %s%s", prefix, step, summary(report), where
                )


def summary(report: EntityErrorReport, worst: int = 3) -> str:
    """The report in one line: ``41/158 exact, 12 boundary, 9 type, 96 missed, 20 spurious;
    most errors: person 30, geo-loc 25, company 19`` (errors of a type: its gold entities not
    found exactly plus its spurious predictions)."""
    total = report.total()
    counts = ", ".join(f"{total[f]} {f}" for f in ("boundary", "type", "missed", "spurious"))
    line = f"{total['exact']}/{total['gold']} exact, {counts}"
    errors = {name: c["gold"] - c["exact"] + c["spurious"] for name, c in report.counts.items()}
    ranked = [(n, e) for n, e in sorted(errors.items(), key=lambda item: -item[1]) if e > 0]
    if ranked:
        line += "; most errors: " + ", ".join(f"{n} {e}" for n, e in ranked[:worst])
    return line


def evaluation_passes(trainer: TrainerView) -> list[Any]:
    """The passes of the last ``evaluate`` / ``predict``: ``trainer.last_evaluations`` (one
    per named evaluation set) where the trainer keeps them, else ``[trainer.last_evaluation]``
    (only the last set's pass when there are several); empty before any evaluation."""
    passes = getattr(trainer, "last_evaluations", None)
    if passes:
        return list(passes)
    last = getattr(trainer, "last_evaluation", None)
    return [] if last is None else [last]
