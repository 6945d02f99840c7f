"""Console output: ProgressBar (a tqdm bar) and LogPrinter (plain lines, for --disable_tqdm).

Both print one short line per evaluation with its headline numbers in a fixed order (loss, the
metric that picks the best model, F1, precision, recall (accuracy without F1), samples/s;
``flaxtrainer.outputs.results.evaluation_lines``); every metric stays in the log history, the
results files and the trackers. ``ParameterOverview`` lives in ``callbacks/parameters.py``.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TextIO

import jax
from tqdm.auto import tqdm

from flaxtrainer.callbacks.base import Callback
from flaxtrainer.callbacks.parameters import ParameterOverview
from flaxtrainer.outputs.results import evaluation_lines, format_number, format_rate

if TYPE_CHECKING:
    from flaxtrainer.callbacks.view import TrainerView

logger = logging.getLogger(__name__)


def where(trainer: TrainerView) -> str:
    """``step 40/100`` (``step 40`` without a step budget; empty before any step of a run)."""
    state = trainer.state
    if state.max_steps > 0:
        return f"step {state.global_step}/{state.max_steps}"
    return f"step {state.global_step}" if state.global_step else ""


def eval_lines(trainer: TrainerView, metrics: dict[str, float]) -> list[str]:
    """The headline line of each evaluation pass in ``metrics``, e.g. ``eval step 40/100 |
    loss 0.2315 | f1 0.6123 | precision 0.6012 | recall 0.6238 | 512 samples/s``."""
    best = getattr(trainer.args, "metric_for_best_model", None)
    return evaluation_lines(metrics, where(trainer), best)


def train_line(trainer: TrainerView, logs: dict[str, Any]) -> str:
    """A training window in one line: ``train step 40/100 | loss 0.4123 | lr 5.0e-05 |
    grad_norm 0.8123 | 1,234 tok/s | epoch 0.67``."""
    parts = [f"train {where(trainer)}".rstrip(), f"loss {format_number(logs['loss'])}"]
    if "learning_rate" in logs:
        parts.append(f"lr {float(logs['learning_rate']):.1e}")
    if "grad_norm" in logs:
        parts.append(f"grad_norm {format_number(logs['grad_norm'])}")
    if "tokens_per_second" in logs:
        parts.append(format_rate(logs["tokens_per_second"], "tok/s"))
    if "epoch" in logs:
        parts.append(f"epoch {float(logs['epoch']):.2f}")
    return " | ".join(parts)


@contextlib.contextmanager
def console_logging_through_tqdm() -> Iterator[None]:
    """While a bar is open: the plain console handlers (``logging.StreamHandler`` on stdout or
    stderr, what ``logging.basicConfig`` installs) of the root and ``flaxtrainer`` loggers
    write through ``tqdm.write``, which lifts the bar, prints the line and redraws the bar, so a
    log line never lands glued onto it. Handlers of other kinds (files, the command line's own,
    which writes through tqdm already) are left alone; everything is restored afterwards."""
    swapped: list[tuple[logging.Logger, list[logging.Handler]]] = []
    try:
        for name in (None, "flaxtrainer"):
            log = logging.getLogger(name)
            replaced = [_through_tqdm(h) if _is_plain_console(h) else h for h in log.handlers]
            if any(new is not old for new, old in zip(replaced, log.handlers)):
                swapped.append((log, log.handlers))
                log.handlers = replaced
        yield
    finally:
        for log, handlers in swapped:
            log.handlers = handlers


def _is_plain_console(handler: logging.Handler) -> bool:
    return type(handler) is logging.StreamHandler and handler.stream in (sys.stdout, sys.stderr)


class _TqdmHandler(logging.StreamHandler):
    """Writes each record with ``tqdm.write`` (as ``tqdm.contrib.logging`` does)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:  # noqa: BLE001 - logging's rule: report, never raise
            self.handleError(record)


def _through_tqdm(handler: logging.StreamHandler) -> logging.Handler:
    new = _TqdmHandler(handler.stream)
    new.setFormatter(handler.formatter)
    new.setLevel(handler.level)
    for log_filter in handler.filters:
        new.addFilter(log_filter)
    return new


class ProgressBar(Callback):
    """One bar over ``state.max_steps`` updates (process 0 only).

    Advancing the bar needs no device sync: the host runs at most two steps ahead of the device
    (the trainer bounds it), so the rate and ETA are honest. The loss shown is the one of the
    last logging step, since fetching it every step would stall the device. Each evaluation
    prints one line per evaluation set with its headline numbers (:func:`eval_lines`) above the
    bar. While the bar is open, console log lines go through ``tqdm.write``
    (:func:`console_logging_through_tqdm`), so none is glued onto the bar.
    """

    def __init__(self, leave: bool = True) -> None:
        self.leave = leave
        self.bar: tqdm | None = None
        self._logging: contextlib.ExitStack | None = None

    def on_train_begin(self, trainer: TrainerView) -> None:
        self._close()
        self.bar = tqdm(
            total=trainer.state.max_steps,
            initial=trainer.state.global_step,
            desc="train",
            unit="step",
            dynamic_ncols=True,
            leave=self.leave,
            disable=jax.process_index() != 0,
        )
        self._logging = contextlib.ExitStack()
        self._logging.enter_context(console_logging_through_tqdm())

    def on_step_end(self, trainer: TrainerView) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def on_log(self, trainer: TrainerView, logs: dict[str, float]) -> None:
        if self.bar is None or "loss" not in logs:
            return
        postfix = {"loss": f"{logs['loss']:.4f}"}
        if "tokens_per_second" in logs:
            postfix["tok/s"] = f"{logs['tokens_per_second']:.0f}"
        self.bar.set_postfix(postfix, refresh=False)

    def on_evaluate(self, trainer: TrainerView, metrics: dict[str, float]) -> None:
        if self.bar is None or self.bar.disable:
            return
        for line in eval_lines(trainer, metrics):
            self.bar.write(line)

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self._logging is not None:
            self._logging.close()
            self._logging = None

    def on_train_end(self, trainer: TrainerView) -> None:
        self._close()

    def on_exception(self, trainer: TrainerView, exc: BaseException) -> None:
        self._close()


class LogPrinter(Callback):
    """Plain lines on process 0 instead of the bar (``--disable_tqdm``, as Hugging Face's
    PrinterCallback): one per training window (:func:`train_line`: ``train step 40/100 | loss
    0.4123 | lr 5.0e-05 | grad_norm 0.8123 | 1,234 tok/s | epoch 0.67``) and one per
    evaluation or prediction pass (:func:`eval_lines`: ``eval step 40/100 | loss 0.2315 | f1
    0.6123 | precision 0.6012 | recall 0.6238 | 512 samples/s``). Any other log (a callback's
    own ``trainer.log``) prints as ``step 40/100 | name value | ...``."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    def _print(self, lines: list[str]) -> None:
        if jax.process_index() != 0:
            return
        for line in lines:
            print(line, file=self.stream or sys.stdout, flush=True)

    def on_log(self, trainer: TrainerView, logs: dict[str, float]) -> None:
        if "loss" in logs:
            self._print([train_line(trainer, logs)])
        elif not any(key.endswith("_samples") for key in logs):  # evaluations: on_evaluate
            shown = [f"{k} {format_number(v)}" for k, v in logs.items() if k != "epoch"]
            self._print([" | ".join([where(trainer), *shown]).strip(" |")])

    def on_evaluate(self, trainer: TrainerView, metrics: dict[str, float]) -> None:
        self._print(eval_lines(trainer, metrics))

    def on_predict(self, trainer: TrainerView, metrics: dict[str, float]) -> None:
        self._print(eval_lines(trainer, metrics))


__all__ = ["LogPrinter", "ParameterOverview", "ProgressBar", "eval_lines", "train_line"]
