"""TerminateOnNaN: stop a run whose training loss is no longer finite."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from flaxtrainer.callbacks.base import Callback

if TYPE_CHECKING:
    from flaxtrainer.callbacks.view import TrainerView


class TerminateOnNaN(Callback):
    """Stop training when a logged training loss is NaN or infinite, without saving.

    The loss reaches the host only at logging steps (fetching it every step would stall the
    device), so the check runs in ``on_log``; lower ``logging_steps`` to detect sooner. The
    window loss is a sum over its steps, so a non-finite loss in any step of the window is
    caught. The bad state is not checkpointed: ``should_save`` and ``should_evaluate`` are
    cleared for the step that detected it. The stop is logged once, with the reason
    (``stop_reason``, also kept in ``message``).
    """

    def __init__(self) -> None:
        self.stopped_at: int | None = None
        self.message: str | None = None

    def on_log(self, trainer: TrainerView, logs: dict[str, float]) -> None:
        if "loss" not in logs or math.isfinite(logs["loss"]):
            return
        step = trainer.state.global_step
        self.stopped_at = step
        self.stop_reason = (
            f"training loss is {logs['loss']} in the logging window ending at step {step}; "
            f"this state is not saved. Lower the learning rate ({trainer.args.learning_rate}) "
            "or check the data."
        )
        self.message = f"TerminateOnNaN: {self.stop_reason}"
        control = trainer.control
        control.should_training_stop = True
        control.should_save = False
        control.should_save_at_end = False  # no final checkpoint of this state either
        control.should_evaluate = False
