"""Callback: hooks into every event of a run; CallbackList: dispatches events in order.

Order of events within ``trainer.train()``::

    on_train_begin
      (on_epoch_begin
        (on_step_begin, on_step_end, [on_log], [on_evaluate], [on_save])*
       on_epoch_end)*
    on_train_end

``on_log(logs)`` fires for every ``trainer.log`` call: training windows (keys ``loss``,
``learning_rate``, ...) and evaluation metrics (keys prefixed ``eval_``), so an evaluation
during training gives ``on_log`` then ``on_evaluate``. ``on_predict(metrics)`` follows
``trainer.predict``; ``on_exception(exc)`` fires when the training loop raises (then the
exception propagates and ``on_train_end`` does not fire).

A callback decides by setting flags on ``trainer.control`` (``should_training_stop``,
``should_evaluate``, ``should_save``, ``should_log``); the loop reads them after each event.
A callback that stops training may say why in ``stop_reason``; the first time the flag turns
on during a run, :class:`CallbackList` logs which callback set it and why, once (``Training
stopped at step 40 of 100 by EarlyStopping: eval_f1 did not improve for 3 evaluations (best
0.6100 at step 20)``).
``state_dict()`` / ``load_state_dict()`` carry a callback's state through checkpoints.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flaxtrainer.callbacks.view import TrainerView

logger = logging.getLogger(__name__)

EVENTS = (
    "on_train_begin",
    "on_train_end",
    "on_epoch_begin",
    "on_epoch_end",
    "on_step_begin",
    "on_step_end",
    "on_log",
    "on_evaluate",
    "on_save",
    "on_predict",
    "on_exception",
)


class Callback:
    """Base class: override the events you need; each gets the trainer first (the
    ``FlaxTrainer``, typed as the :class:`~flaxtrainer.callbacks.view.TrainerView` it shows).

    ``stop_reason``: set it (one line) when setting ``trainer.control.should_training_stop``;
    the stop is logged with the callback's class name and this reason.
    """

    stop_reason: str | None = None

    def on_train_begin(self, trainer: TrainerView) -> None:
        pass

    def on_train_end(self, trainer: TrainerView) -> None:
        pass

    def on_epoch_begin(self, trainer: TrainerView) -> None:
        pass

    def on_epoch_end(self, trainer: TrainerView) -> None:
        pass

    def on_step_begin(self, trainer: TrainerView) -> None:
        pass

    def on_step_end(self, trainer: TrainerView) -> None:
        pass

    def on_log(self, trainer: TrainerView, logs: dict[str, float]) -> None:
        pass

    def on_evaluate(self, trainer: TrainerView, metrics: dict[str, float]) -> None:
        pass

    def on_save(self, trainer: TrainerView, checkpoint_dir: str | None) -> None:
        pass

    def on_predict(self, trainer: TrainerView, metrics: dict[str, float]) -> None:
        pass

    def on_exception(self, trainer: TrainerView, exc: BaseException) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state saved in every checkpoint (numbers, strings, lists, dicts)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned (on resume)."""


class CallbackList:
    """The callbacks of a trainer, called in order for each event."""

    def __init__(self, callbacks: Iterable[Callback] = ()) -> None:
        self.callbacks: list[Callback] = []
        for callback in callbacks:
            self.add(callback)

    def add(self, callback: Callback | type[Callback]) -> None:
        """Append a callback (an instance, or a class to instantiate with no arguments)."""
        if isinstance(callback, type):
            callback = callback()
        if not isinstance(callback, Callback):
            raise TypeError(
                f"Callbacks must subclass flaxtrainer.callbacks.Callback, got {type(callback).__name__}."
            )
        self.callbacks.append(callback)

    def remove(self, callback: Callback | type[Callback]) -> Callback | None:
        """Remove and return a callback instance, or the first instance of a class."""
        for i, existing in enumerate(self.callbacks):
            if existing is callback or (
                isinstance(callback, type) and isinstance(existing, callback)
            ):
                return self.callbacks.pop(i)
        return None

    def __iter__(self) -> Iterator[Callback]:
        return iter(self.callbacks)

    def __len__(self) -> int:
        return len(self.callbacks)

    def call(self, event: str, trainer: TrainerView, *payload: Any) -> None:
        """Call ``event`` on every callback, in order; log the callback that stops training."""
        control = getattr(trainer, "control", None)
        for callback in self.callbacks:
            stopped = control is not None and control.should_training_stop
            getattr(callback, event)(trainer, *payload)
            if control is not None and not stopped and control.should_training_stop:
                log_stop(trainer, callback)

    def on_train_begin(self, trainer: TrainerView) -> None:
        self.call("on_train_begin", trainer)

    def on_train_end(self, trainer: TrainerView) -> None:
        self.call("on_train_end", trainer)

    def on_epoch_begin(self, trainer: TrainerView) -> None:
        self.call("on_epoch_begin", trainer)

    def on_epoch_end(self, trainer: TrainerView) -> None:
        self.call("on_epoch_end", trainer)

    def on_step_begin(self, trainer: TrainerView) -> None:
        self.call("on_step_begin", trainer)

    def on_step_end(self, trainer: TrainerView) -> None:
        self.call("on_step_end", trainer)

    def on_log(self, trainer: TrainerView, logs: dict[str, float]) -> None:
        self.call("on_log", trainer, logs)

    def on_evaluate(self, trainer: TrainerView, metrics: dict[str, float]) -> None:
        self.call("on_evaluate", trainer, metrics)

    def on_save(self, trainer: TrainerView, checkpoint_dir: str | None) -> None:
        self.call("on_save", trainer, checkpoint_dir)

    def on_predict(self, trainer: TrainerView, metrics: dict[str, float]) -> None:
        self.call("on_predict", trainer, metrics)

    def on_exception(self, trainer: TrainerView, exc: BaseException) -> None:
        """Tell every callback; a callback failing here is logged, never hides ``exc``."""
        for callback in self.callbacks:
            try:
                callback.on_exception(trainer, exc)
            except Exception:  # noqa: BLE001 - the original exception matters more
                logger.exception("%s.on_exception failed", type(callback).__name__)

    def _keys(self) -> list[str]:
        """Stable names: the class name, with ``_1``, ``_2``... for repeated classes."""
        seen: dict[str, int] = {}
        keys = []
        for callback in self.callbacks:
            name = type(callback).__name__
            count = seen.get(name, 0)
            seen[name] = count + 1
            keys.append(name if count == 0 else f"{name}_{count}")
        return keys

    def state_dict(self) -> dict[str, dict[str, Any]]:
        """Every callback's ``state_dict()``, keyed by class name (for checkpoints)."""
        return {key: cb.state_dict() for key, cb in zip(self._keys(), self.callbacks)}

    def load_state_dict(self, state: dict[str, dict[str, Any]]) -> None:
        """Give each callback its saved state; callbacks absent from ``state`` keep theirs."""
        keys = self._keys()
        for key, callback in zip(keys, self.callbacks):
            if key in state:
                callback.load_state_dict(state[key])
        unknown = sorted(set(state) - set(keys))
        if unknown:
            logger.warning(
                "Checkpoint holds state for callbacks not attached to this trainer: %s", unknown
            )


def stop_message(trainer: TrainerView, callback: Callback) -> str:
    """``Training stopped at step 40 of 100 by EarlyStopping: <its stop_reason>``."""
    state = getattr(trainer, "state", None)
    step, max_steps = getattr(state, "global_step", 0), getattr(state, "max_steps", 0)
    at = f" at step {step}" + (f" of {max_steps}" if max_steps else "")
    reason = getattr(callback, "stop_reason", None)
    return f"Training stopped{at} by {type(callback).__name__}" + (f": {reason}" if reason else "")


def log_stop(trainer: TrainerView, callback: Callback) -> None:
    """Log (WARNING) that ``callback`` stopped training, during ``train()`` only."""
    if getattr(trainer, "is_training", True):
        logger.warning(stop_message(trainer, callback))
