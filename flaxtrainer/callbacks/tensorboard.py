"""TensorBoard: training curves, evaluation metrics, hyper-parameters and example predictions."""

from __future__ import annotations

import logging
import numbers
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flaxtrainer.callbacks.base import Callback
from flaxtrainer.callbacks.writers import MetricWriter, create_writer

if TYPE_CHECKING:
    from flaxtrainer.callbacks.view import TrainerView

logger = logging.getLogger(__name__)

#: Task attributes written with the hyper-parameters when the task has them.
TASK_HPARAMS = ("crf", "context_size")


class TensorBoard(Callback):
    """Write TensorBoard events under ``log_dir`` (default ``args.logging_dir``), process 0 only.

    The event file is open from ``on_train_begin`` to ``on_train_end``; an ``evaluate`` or
    ``predict`` outside training writes to a file of its own, closed right away. A resumed run
    (``on_train_begin`` past step 0) writes a new file that hides what the earlier run logged
    after the checkpoint (``purge_step``), so no step shows twice; its hyper-parameters are not
    written again. At each checkpoint the file is closed (the next event opens a new one):
    tensorboardX writes from a background queue that a killed process loses, and closing is
    its only way to put every event up to the checkpoint on disk, so a resumed curve has no gap.
    A new run with ``overwrite_output_dir`` starts clean: ``train()`` deletes the old
    ``logging_dir`` first when it lies inside ``output_dir`` (``flaxtrainer.outputs.output_dir``), so
    two runs' curves never mix; a resumed run appends to it.

    - training logs -> ``train/<key>`` (``train/loss``, ``train/learning_rate``,
      ``train/grad_norm``, ``train/tokens_per_second``, ``train/epoch``, ...) at the global step;
    - evaluation metrics ``<prefix>_<name>`` -> ``<prefix>/<name>`` (``eval/f1``, ``eval/loss``);
    - prediction metrics -> ``test/...`` likewise;
    - hyper-parameters once (HPARAMS tab plus the full arguments as text): the
      ``TrainingArguments``, the task's settings that change what is trained
      (:data:`TASK_HPARAMS`: ``crf``, ``context_size``, when the task has them) and the
      ``hparams`` given here (the command line adds ``classifier_init``);
    - at each evaluation, if the task has ``format_examples(dataset, features, outputs, n)``
      returning markdown, a text summary of ``num_examples`` predicted sentences;
    - at each evaluation and prediction with an entity error report (NER, chunking), its table
      as text (``eval/entity_errors``) and its confusion matrix as an image
      (``eval/entity_confusion``; ``test/...`` for ``predict``).
    """

    def __init__(
        self,
        log_dir: str | None = None,
        num_examples: int = 3,
        hparams: Mapping[str, Any] | None = None,
    ) -> None:
        self.log_dir = log_dir
        self.num_examples = num_examples
        self.hparams: dict[str, Any] = dict(hparams or {})
        self.writer: MetricWriter | None = None
        self._hparams_written = False

    def _writer(self, trainer: TrainerView, purge_step: int | None = None) -> MetricWriter:
        if self.writer is None:
            self.writer = create_writer(
                self.log_dir or trainer.args.logging_dir, purge_step=purge_step
            )
        return self.writer

    def on_train_begin(self, trainer: TrainerView) -> None:
        resumed_at = trainer.state.global_step
        if resumed_at > 0:
            self._close()  # the resumed run's events go to a file that starts with the purge
            self._hparams_written = True  # the run's first file has them
        writer = self._writer(trainer, purge_step=resumed_at + 1 if resumed_at > 0 else None)
        if not self._hparams_written:
            tags = ["train/loss"]
            if trainer.args.eval_strategy != "no":
                tags.append("eval/loss")
            writer.write_hparams(self.run_hparams(trainer), tuple(tags))
            self._hparams_written = True

    def run_hparams(self, trainer: TrainerView) -> dict[str, Any]:
        """What the HPARAMS tab shows: the arguments, the task's :data:`TASK_HPARAMS`, then
        this callback's ``hparams`` (which win on a clash)."""
        hparams = dict(trainer.args.to_dict())
        for name in TASK_HPARAMS:
            if hasattr(trainer.task, name):
                hparams[name] = getattr(trainer.task, name)
        hparams.update(self.hparams)
        return hparams

    def on_log(self, trainer: TrainerView, logs: dict[str, float]) -> None:
        if "loss" not in logs:
            return  # evaluation metrics are written by on_evaluate
        scalars = {f"train/{k}": v for k, v in logs.items() if _is_number(v)}
        self._writer(trainer).write_scalars(trainer.state.global_step, scalars)

    def on_evaluate(self, trainer: TrainerView, metrics: dict[str, float]) -> None:
        writer = self._writer(trainer)
        step = trainer.state.global_step
        writer.write_scalars(step, _by_prefix(metrics))
        text = self._examples(trainer)
        if text:
            writer.write_text(step, "eval/examples", text)
        self._error_report(trainer, writer, step)
        self._end_of_event(trainer)

    def on_save(self, trainer: TrainerView, checkpoint_dir: str | None) -> None:
        self._close()

    def on_predict(self, trainer: TrainerView, metrics: dict[str, float]) -> None:
        writer = self._writer(trainer)
        writer.write_scalars(trainer.state.global_step, _by_prefix(metrics))
        self._error_report(trainer, writer, trainer.state.global_step)
        self._end_of_event(trainer)

    def _error_report(self, trainer: TrainerView, writer: MetricWriter, step: int) -> None:
        """Each pass's entity error report, if any (``evaluation_passes``: every named set's
        where the trainer keeps them): its table as text (``<prefix>/entity_errors``) and its
        confusion matrix as an image (``<prefix>/entity_confusion``); see
        ``flaxtrainer.tasks.error_report``."""
        from flaxtrainer.callbacks.error_report import evaluation_passes

        for evaluation in evaluation_passes(trainer):
            report = evaluation.error_report
            if report is None:
                continue
            from flaxtrainer.tasks.error_report import confusion_image

            prefix = evaluation.prefix
            writer.write_text(step, f"{prefix}/entity_errors", report.markdown())
            writer.write_image(step, f"{prefix}/entity_confusion", confusion_image(report))

    def _end_of_event(self, trainer: TrainerView) -> None:
        """Flush during training; outside it, close, so that the events are surely on disk."""
        if trainer.is_training:
            self.writer.flush()
        else:
            self._close()

    def _examples(self, trainer: TrainerView) -> str | None:
        format_examples = getattr(trainer.task, "format_examples", None)
        evaluation = trainer.last_evaluation
        if format_examples is None or evaluation is None or self.num_examples < 1:
            return None
        try:
            return format_examples(
                evaluation.dataset, evaluation.features, evaluation.outputs, n=self.num_examples
            )
        except Exception:  # noqa: BLE001 - a summary must never kill a training run
            logger.exception("task.format_examples failed; no example predictions written")
            return None

    def _close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def on_train_end(self, trainer: TrainerView) -> None:
        self._close()

    def on_exception(self, trainer: TrainerView, exc: BaseException) -> None:
        self._close()


def with_hparams(callbacks: list[Any], report_to: Any, hparams: Mapping[str, Any]) -> list[Any]:
    """``callbacks`` whose TensorBoard callback also writes ``hparams``: the user's own
    ``TensorBoard`` instance gets them, else, when ``report_to`` names TensorBoard, a new one
    is put first (the trainer then adds no default one)."""
    boards = [c for c in callbacks if isinstance(c, TensorBoard)]
    for board in boards:
        board.hparams = {**hparams, **board.hparams}
    if not boards and "tensorboard" in report_to:
        return [TensorBoard(hparams=hparams), *callbacks]
    return callbacks


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _by_prefix(metrics: dict[str, Any]) -> dict[str, float]:
    """``eval_f1`` -> ``eval/f1``: TensorBoard groups tags by the part before ``/``."""
    out = {}
    for key, value in metrics.items():
        if _is_number(value):
            prefix, _, name = key.partition("_")
            out[f"{prefix}/{name}" if name else key] = value
    return out
