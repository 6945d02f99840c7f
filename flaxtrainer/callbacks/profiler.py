"""Profiler: a JAX profiler trace of a range of training steps, next to the TensorBoard curves."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import jax

from flaxtrainer.callbacks.base import Callback

if TYPE_CHECKING:
    from flaxtrainer.callbacks.view import TrainerView

logger = logging.getLogger(__name__)


class Profiler(Callback):
    """Trace training steps ``first`` to ``last`` (global steps, 1-based, inclusive) with
    ``jax.profiler`` into ``log_dir`` (default ``args.logging_dir``).

    ``jax.profiler.start_trace(log_dir)`` writes ``<log_dir>/plugins/profile/<run>/<host>.xplane.pb``,
    the layout TensorBoard's Profile tab (tensorboard-plugin-profile) and xprof read, so the
    trace sits next to the training curves. The trace starts before step ``first`` is dispatched
    and stops once step ``last`` has finished on the device (the host otherwise runs up to two
    steps ahead). Evaluations and saves on those steps are traced too. Every process traces its
    own devices (one file per host). A resumed run past ``first`` traces what is left of the range.
    """

    def __init__(self, first: int, last: int, log_dir: str | None = None) -> None:
        if not 1 <= first <= last:
            raise ValueError(f"Profiler: needs 1 <= first <= last, got {first}, {last}.")
        self.first = first
        self.last = last
        self.log_dir = log_dir
        self.active = False
        self.trace_dir: str | None = None

    def on_step_begin(self, trainer: TrainerView) -> None:
        step = trainer.state.global_step + 1  # the step about to run
        if not self.active and self.first <= step <= self.last:
            self._start(trainer)

    def on_step_end(self, trainer: TrainerView) -> None:
        if self.active and trainer.state.global_step >= self.last:
            self._wait_for_device(trainer)
            self._stop()

    def on_train_end(self, trainer: TrainerView) -> None:
        self._stop()

    def on_exception(self, trainer: TrainerView, exc: BaseException) -> None:
        self._stop()

    def _start(self, trainer: TrainerView) -> None:
        self.trace_dir = self.log_dir or trainer.args.logging_dir or trainer.args.output_dir
        try:
            jax.profiler.start_trace(self.trace_dir)
        except RuntimeError as exc:  # another trace is running (one per process at a time)
            logger.warning("Profiler: not tracing steps %d-%d: %s", self.first, self.last, exc)
            self.first = self.last + 1  # do not try again at every step
            return
        self.active = True
        logger.info(
            "Profiling steps %d-%d into %s/plugins/profile.", self.first, self.last, self.trace_dir
        )

    def _stop(self) -> None:
        if not self.active:
            return
        self.active = False
        jax.profiler.stop_trace()
        logger.info("Profiler trace written under %s/plugins/profile.", self.trace_dir)

    @staticmethod
    def _wait_for_device(trainer: TrainerView) -> None:
        """Block until the last dispatched step is done, so the trace holds all of it."""
        # Not part of TrainerView: the trainer has no public way yet to wait for its steps.
        state: Any = getattr(trainer, "_train_state", None)
        if state is not None:
            jax.block_until_ready(state)
