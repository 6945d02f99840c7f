"""EarlyStopping: stop training when an evaluation metric stops improving."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from flaxtrainer.callbacks.base import Callback
from flaxtrainer.checkpointing.best_metric import BestMetric, metric_key

if TYPE_CHECKING:
    from flaxtrainer.callbacks.view import TrainerView


class EarlyStopping(Callback):
    """Stop after ``patience`` evaluations in a row without improvement.

    An evaluation improves when ``metric`` beats the best value so far by more than
    ``threshold`` (above it for ``mode="max"``, below for ``"min"``; a NaN never improves).
    ``metric`` is looked up as given, then with the ``eval_`` prefix (``"f1"`` finds
    ``eval_f1``). This is the rule of :mod:`flaxtrainer.checkpointing.best_metric`, so with the same metric
    and direction the best step here is the trainer's and the checkpointer's best. The best
    value and the patience counter are in ``state_dict()``, so a resumed run stops where the
    original would. The stop is logged once, with the reason in ``stop_reason`` (``eval_f1 did
    not improve for 3 evaluations (best 0.6100 at step 20)``).
    """

    def __init__(
        self,
        metric: str,
        patience: int = 3,
        threshold: float = 0.0,
        mode: Literal["max", "min"] = "max",
    ) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"EarlyStopping: mode must be 'max' or 'min', got {mode!r}.")
        if patience < 1:
            raise ValueError(f"EarlyStopping: patience must be >= 1, got {patience}.")
        if threshold < 0:
            raise ValueError(f"EarlyStopping: threshold must be >= 0, got {threshold}.")
        self.metric = metric
        self.patience = patience
        self.threshold = threshold
        self.mode = mode
        self.rule = BestMetric(metric, greater_is_better=mode == "max", threshold=threshold)
        self.best: float | None = None
        self.best_step: int | None = None
        self.counter = 0
        self.stopped_at: int | None = None

    def on_evaluate(self, trainer: TrainerView, metrics: dict[str, float]) -> None:
        if not trainer.is_training:
            return  # a stand-alone evaluate() is no signal for an early stop
        value = self.rule.value(metrics)
        if value is None:
            raise KeyError(
                f"EarlyStopping: metric {self.metric!r} is not among the evaluation metrics "
                f"{sorted(metrics)}; pass one of them."
            )
        if self.rule.improves(value, self.best):
            self.best = value
            self.best_step = trainer.state.global_step
            self.counter = 0
            return
        self.counter += 1
        if self.counter >= self.patience:
            self.stopped_at = trainer.state.global_step
            self.stop_reason = self._reason(metrics)
            trainer.control.should_training_stop = True

    def _reason(self, metrics: dict[str, float]) -> str:
        key = metric_key(metrics, self.metric) or self.metric
        threshold = f" by more than {self.threshold:g}" if self.threshold else ""
        evaluations = "evaluation" if self.counter == 1 else "evaluations"
        best = "none" if self.best is None else f"{self.best:.4f}"
        if self.best_step is not None:
            best += f" at step {self.best_step}"
        return f"{key} did not improve{threshold} for {self.counter} {evaluations} (best {best})"

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "best_step": self.best_step,
            "counter": self.counter,
            "stopped_at": self.stopped_at,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state.get("best")
        self.best_step = state.get("best_step")
        self.counter = int(state.get("counter", 0))
        self.stopped_at = state.get("stopped_at")
