"""LRMonitor: record the learning rate and gradient norm of a run."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from flaxtrainer.callbacks.base import Callback

if TYPE_CHECKING:
    from flaxtrainer.callbacks.view import TrainerView

logger = logging.getLogger(__name__)


class LRMonitor(Callback):
    """Keep ``history``: one ``{"step", "learning_rate", "grad_norm"}`` record per training log.

    ``learning_rate`` is the rate of the window's last update and ``grad_norm`` the mean global
    gradient norm (before clipping) over the window, both as logged by the trainer (so no extra
    device sync). With ``every_step=True`` the learning rate of every update is recorded too,
    from the host-side schedule (still no sync). Each record goes to the Python logger at INFO;
    when the gradient norm exceeds ``max_grad_norm`` the record notes that clipping was active.
    """

    def __init__(self, every_step: bool = False) -> None:
        self.every_step = every_step
        self.history: list[dict[str, float]] = []
        self.step_learning_rates: list[tuple[int, float]] = []

    def on_step_end(self, trainer: TrainerView) -> None:
        if self.every_step:
            step = trainer.state.global_step
            self.step_learning_rates.append((step, trainer.learning_rate_at(step - 1)))

    def on_log(self, trainer: TrainerView, logs: dict[str, float]) -> None:
        if "learning_rate" not in logs:
            return
        record = {"step": trainer.state.global_step, "learning_rate": logs["learning_rate"]}
        if "grad_norm" in logs:
            record["grad_norm"] = logs["grad_norm"]
        self.history.append(record)
        clip = trainer.args.max_grad_norm
        clipped = clip > 0 and record.get("grad_norm", 0.0) > clip
        logger.info(
            "step %d: learning_rate=%.3e grad_norm=%s%s",
            record["step"],
            record["learning_rate"],
            record.get("grad_norm"),
            f" (clipped to {clip})" if clipped else "",
        )

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = list(state.get("history", []))
