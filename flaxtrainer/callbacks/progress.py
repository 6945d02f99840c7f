"""ProgressBar: a tqdm bar of optimizer steps with loss, throughput and ETA."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
from tqdm.auto import tqdm

from flaxtrainer.callbacks.base import Callback

_NOT_SHOWN = ("_runtime", "_samples_per_second", "_support")

if TYPE_CHECKING:
    from flaxtrainer.trainer import FlaxTrainer


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

    def on_train_begin(self, trainer: FlaxTrainer) -> None:
        self.bar = tqdm(
            total=trainer.state.max_steps,
            initial=trainer.state.global_step,
            desc="train",
            unit="step",
            dynamic_ncols=True,
            leave=self.leave,
            disable=jax.process_index() != 0,
        )

    def on_step_end(self, trainer: FlaxTrainer) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def on_log(self, trainer: FlaxTrainer, logs: dict[str, float]) -> None:
        if self.bar is None or "loss" not in logs:
            return
        postfix = {"loss": f"{logs['loss']:.4f}"}
        if "tokens_per_second" in logs:
            postfix["tok/s"] = f"{logs['tokens_per_second']:.0f}"
        self.bar.set_postfix(postfix, refresh=False)

    def on_evaluate(self, trainer: FlaxTrainer, metrics: dict[str, float]) -> None:
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

    def on_train_end(self, trainer: FlaxTrainer) -> None:
        self._close()

    def on_exception(self, trainer: FlaxTrainer, exc: BaseException) -> None:
        self._close()
