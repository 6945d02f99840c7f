"""TerminateOnNaN: stop a run whose training loss is no longer finite."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from flaxtrainer.callbacks.base import Callback

if TYPE_CHECKING:
    from flaxtrainer.callbacks.view import TrainerView

logger = logging.getLogger(__name__)


class TerminateOnNaN(Callback):
    """Stop training when a logged training loss is NaN or infinite, without saving.

    The loss reaches the host only at logging steps (fetching it every step would stall the
    device), so the check runs in ``on_log``; lower ``logging_steps`` to detect sooner. The
    window loss is a sum over its steps, so a non-finite loss in any step of the window is
    caught. The bad state is not checkpointed: ``should_save`` and ``should_evaluate`` are
    cleared for the step that detected it.
    """

    def __init__(self) -> None:
        self.stopped_at: int | None = None
        self.message: str | None = None

    def on_log(self, trainer: TrainerView, logs: dict[str, float]) -> None:
        if "loss" not in logs or math.isfinite(logs["loss"]):
            return
        step = trainer.state.global_step
        self.stopped_at = step
        self.message = (
            f"TerminateOnNaN: training loss is {logs['loss']} in the logging window ending at "
            f"step {step}; stopping without saving this state. Lower the learning rate "
            f"({trainer.args.learning_rate}) or check the data."
        )
        logger.error(self.message)
        control = trainer.control
        control.should_training_stop = True
        control.should_save = False
        control.should_save_at_end = False  # no final checkpoint of this state either
        control.should_evaluate = False
