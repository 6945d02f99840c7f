"""Console output: ProgressBar (a tqdm bar), LogPrinter (plain lines, for --disable_tqdm) and
ParameterOverview (the model's parameter table at the start of training)."""

from __future__ import annotations

import logging
import numbers
import sys
from typing import TYPE_CHECKING, Any, TextIO

import jax
from tqdm.auto import tqdm

from flaxtrainer.callbacks.base import Callback

_NOT_SHOWN = ("_runtime", "_samples_per_second", "_support")

if TYPE_CHECKING:
    from flaxtrainer.callbacks.view import TrainerView

logger = logging.getLogger(__name__)


class ProgressBar(Callback):
    """One bar over ``state.max_steps`` updates (process 0 only).

    Advancing the bar needs no device sync: the host runs at most two steps ahead of the device
    (the trainer bounds it), so the rate and ETA are honest. The loss shown is the one of the
    last logging step, since fetching it every step would stall the device. Each evaluation
    prints one line with its first ``max_metrics`` metrics.
    """

    def __init__(self, leave: bool = True, max_metrics: int = 8) -> None:
        self.leave = leave
        self.max_metrics = max_metrics
        self.bar: tqdm | None = None

    def on_train_begin(self, trainer: TrainerView) -> None:
        self.bar = tqdm(
            total=trainer.state.max_steps,
            initial=trainer.state.global_step,
            desc="train",
            unit="step",
            dynamic_ncols=True,
            leave=self.leave,
            disable=jax.process_index() != 0,
        )

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
        if self.bar is None:
            return
        shown = [
            f"{k}={v:.4f}"
            for k, v in metrics.items()
            if isinstance(v, float) and not k.endswith(_NOT_SHOWN)
        ]
        self.bar.write(f"step {trainer.state.global_step}: {', '.join(shown[: self.max_metrics])}")

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_train_end(self, trainer: TrainerView) -> None:
        self._close()

    def on_exception(self, trainer: TrainerView, exc: BaseException) -> None:
        self._close()


class LogPrinter(Callback):
    """Print every log (training windows and evaluations) and prediction metrics as one plain
    line on process 0, e.g. ``{'loss': 0.4123, 'learning_rate': 5e-05, 'epoch': 0.5, 'step':
    10}``: what Hugging Face's PrinterCallback does when ``disable_tqdm`` turns the bar off."""

    def __init__(self, stream: TextIO | None = None, digits: int = 4) -> None:
        self.stream = stream
        self.digits = digits

    def _print(self, trainer: TrainerView, logs: dict[str, Any]) -> None:
        if jax.process_index() != 0:
            return
        shown = {k: _rounded(v, self.digits) for k, v in logs.items()}
        shown.setdefault("step", trainer.state.global_step)
        print(shown, file=self.stream or sys.stdout, flush=True)

    def on_log(self, trainer: TrainerView, logs: dict[str, float]) -> None:
        self._print(trainer, logs)

    def on_predict(self, trainer: TrainerView, metrics: dict[str, float]) -> None:
        self._print(trainer, metrics)


class ParameterOverview(Callback):
    """At the start of training, log the model's parameters (name, shape, dtype, size) and their
    total with ``clu.parameter_overview``, and add the table to TensorBoard as text
    (``parameters``) when a TensorBoard callback with an open writer runs before this one."""

    def __init__(self, max_lines: int | None = None) -> None:
        self.max_lines = max_lines
        self.text: str | None = None

    def on_train_begin(self, trainer: TrainerView) -> None:
        if jax.process_index() != 0 or trainer.state.global_step > 0:
            return  # a resumed run logged it when it started
        try:
            from clu import parameter_overview
        except ImportError:
            logger.info("clu is not installed: no parameter overview (pip install clu).")
            return
        try:
            from flax import nnx

            params = nnx.to_pure_dict(nnx.state(trainer.model, nnx.Param))
            self.text = parameter_overview.get_parameter_overview(
                params, include_stats=False, max_lines=self.max_lines
            )
        except Exception:  # noqa: BLE001 - an overview must never stop a run
            logger.exception("Could not build the parameter overview")
            return
        logger.info("Model parameters:\n%s", self.text)
        from flaxtrainer.callbacks.tensorboard import TensorBoard

        for callback in trainer.callbacks:
            writer = getattr(callback, "writer", None)
            if isinstance(callback, TensorBoard) and writer is not None:
                writer.write_text(0, "parameters", f"```\n{self.text}\n```")
                break


def _rounded(value: Any, digits: int) -> Any:
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, numbers.Integral)):
        value = float(value)
        return value if abs(value) < 10**-digits else round(value, digits)
    return value
