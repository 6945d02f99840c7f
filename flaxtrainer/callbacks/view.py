"""TrainerView: what a callback may read of the trainer, as a ``typing.Protocol``.

Callbacks receive the ``FlaxTrainer`` itself, but they see it through this view, so the
callbacks room never imports training/ (which imports the callbacks: that would be a circle).
``FlaxTrainer`` satisfies it structurally, with no base class; a user callback keeps writing
``def on_step_end(self, trainer): ...``. Members are read-only here: a callback decides by
setting flags on ``trainer.control``, not by replacing the trainer's attributes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from flaxtrainer.callbacks.state import TrainerControl, TrainerState
    from flaxtrainer.config.training_args import TrainingArguments
    from flaxtrainer.tasks import Task


@runtime_checkable
class TrainerView(Protocol):
    """The trainer as its callbacks see it.

    An evaluation pass (``last_evaluation``, each of ``last_evaluations``) is typed ``Any``:
    its class lives in training/; callbacks read its ``prefix``, ``metrics``, ``error_report``,
    ``dataset``, ``features`` and ``outputs``.
    """

    @property
    def args(self) -> TrainingArguments: ...  # output/logging dirs, cadence, to_dict() for trackers

    @property
    def state(self) -> TrainerState: ...  # global_step, max_steps, log_history

    @property
    def control(self) -> TrainerControl: ...  # the flags a callback sets (should_training_stop...)

    @property
    def model(self) -> Any: ...  # the nnx.Module: parameter overview, config for trackers

    @property
    def task(self) -> Task: ...  # format_examples, hyper-parameters for TensorBoard

    @property
    def callbacks(self) -> Iterable[Any]: ...  # the run's callbacks (a TensorBoard writer to share)

    @property
    def is_training(self) -> bool: ...  # inside train(), or a stand-alone evaluate/predict

    @property
    def last_evaluation(self) -> Any: ...  # the last pass of evaluate/predict, None before any

    @property
    def last_evaluations(self) -> Sequence[Any]: ...  # every named set's pass of the last call

    def learning_rate_at(self, updates_done: int) -> float:
        """Learning rate of the update applied after ``updates_done`` updates (host-side)."""
        ...

    def log(self, logs: dict[str, float]) -> None:
        """Record ``logs`` in ``state.log_history`` and fire ``on_log`` on every callback."""
        ...


__all__ = ["TrainerView"]
