"""Stop a training run cleanly on SIGTERM (preemption) or SIGINT (Ctrl-C).

While ``FlaxTrainer.train()`` runs its loop, an :class:`InterruptGuard` owns both signals. The
handler only records the signal; after the current step (its log, evaluation and save, as
usual) the trainer saves a checkpoint, waits until it is on disk, prints where it is and how to
resume, and raises :class:`TrainingInterrupted`, a ``SystemExit`` with status 130 (SIGINT) or
143 (SIGTERM): a script or the command line exits non-zero without a traceback. A second
Ctrl-C raises ``KeyboardInterrupt`` at once, for when a step or a save hangs.

Multi-process runs must agree on the step to stop at, or their collective saves deadlock: there
SIGTERM is left to JAX's preemption service (installed by ``jax.distributed.initialize``) and
:meth:`InterruptGuard.should_stop` asks ``multihost_utils.reached_preemption_sync_point``,
which every process calls at every step. SIGINT keeps its default (``KeyboardInterrupt``) there.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from types import FrameType
from typing import Any

import jax

logger = logging.getLogger(__name__)

#: The signals a training run turns into "save, then stop".
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingInterrupted(SystemExit):
    """Training stopped after a SIGTERM/SIGINT; a checkpoint to resume from was saved.

    ``code`` is the shell's status for the signal (128 + signal number: 130 for SIGINT, 143
    for SIGTERM); ``step`` the last completed step; ``checkpoint`` the folder to resume from
    (None when none could be saved).
    """

    def __init__(self, signum: int, step: int, checkpoint: str | None, message: str) -> None:
        super().__init__(128 + int(signum))
        self.signum = int(signum)
        self.step = step
        self.checkpoint = checkpoint
        self.message = message

    def __str__(self) -> str:
        return self.message


class InterruptGuard:
    """Context manager: turns SIGTERM/SIGINT into a flag that the training loop polls.

    Installs handlers only in the main thread of the main interpreter (Python allows no
    other); elsewhere it is inert and the signals keep their behaviour. On exit the previous
    handlers come back; a signal that arrived after the loop's last check is then re-raised
    to them, so it is never swallowed.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        self._handled = False
        self._multiprocess = False
        self._warned_sync = False

    # -------------------------------------------------------------------- context manager
    def __enter__(self) -> InterruptGuard:
        self.signum = None
        self._handled = False
        self._multiprocess = jax.process_count() > 1
        if threading.current_thread() is not threading.main_thread():
            logger.debug("Not in the main thread: SIGTERM/SIGINT keep their handlers.")
            return self
        signals = () if self._multiprocess else HANDLED_SIGNALS
        for signum in signals:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()
        if exc_type is None and self.signum is not None and not self._handled:
            signal.raise_signal(self.signum)  # arrived after the last check: not swallowed

    # ------------------------------------------------------------------------------ query
    @property
    def requested(self) -> bool:
        """Whether SIGTERM or SIGINT arrived (this process only)."""
        return self.signum is not None

    def should_stop(self, step: int) -> bool:
        """Whether training must stop after ``step``; every process calls it at every step."""
        if self._multiprocess:
            return self._preempted(step)
        return self.requested

    def stop(self, step: int, checkpoint: str | None, output_dir: str) -> TrainingInterrupted:
        """Mark the signal handled, print where the checkpoint is and how to resume (process 0,
        stderr), and return the exception to raise."""
        self._handled = True
        signum = self.signum if self.signum is not None else int(signal.SIGTERM)
        message = interrupt_message(signum, step, checkpoint, output_dir)
        if jax.process_index() == 0:
            print(message, file=sys.stderr, flush=True)
        return TrainingInterrupted(signum, step, checkpoint, message)

    # --------------------------------------------------------------------------- internals
    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now, do not wait for the step
        first = self.signum is None
        self.signum = signum
        if first:
            again = (
                " (press Ctrl-C again to stop at once, without saving)"
                if signum == signal.SIGINT
                else ""
            )
            notice = (
                f"\nReceived {signal.Signals(signum).name}: finishing the current step, then "
                f"saving a checkpoint{again}.\n"
            )
            # A raw write: print() here could re-enter a stderr write that the signal
            # interrupted (e.g. the progress bar's) and fail with "reentrant call".
            try:
                os.write(2, notice.encode())
            except OSError:
                pass

    def _preempted(self, step: int) -> bool:
        from jax.experimental import multihost_utils

        try:
            reached = multihost_utils.reached_preemption_sync_point(step)
        except RuntimeError as err:  # the preemption service is disabled
            if not self._warned_sync:
                self._warned_sync = True
                logger.warning("SIGTERM will not stop training cleanly: %s", err)
            return False
        if reached:
            self.signum = int(signal.SIGTERM)
        return reached


def interrupt_message(signum: int, step: int, checkpoint: str | None, output_dir: str) -> str:
    """What an interrupted run prints: the signal, the step, the checkpoint and the resume flag."""
    name = signal.Signals(signum).name
    if checkpoint is None:
        return (
            f"Training interrupted by {name} after step {step}; there is no checkpoint to "
            "resume from (a callback stopped training at this step without saving): a new run "
            "starts from scratch."
        )
    return (
        f"Training interrupted by {name} after step {step}. Checkpoint to resume from: "
        f"{checkpoint}\n"
        f"To resume, run the same command with --resume_from_checkpoint latest (same "
        f"--output_dir {output_dir}), or pass resume_from_checkpoint={checkpoint!r} to "
        "TrainingArguments."
    )
