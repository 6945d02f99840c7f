"""What one ``train()`` call advances: the train state that the jitted step updates, the
on-device sums of the current log window, the host counters of that window and of the run, the
learning-rate schedule, and the batch shapes the step compiled for.

Step metrics (loss sum, label count, grad norm) accumulate on device and reach the host only
when a window closes (:meth:`TrainingRun.close_window`, at logging steps). A checkpoint holds
the train state and the window sums (``checkpoints.checkpoint_target``) and the run's totals,
so a resumed run logs exactly what the uninterrupted one did.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import optax
from jax.sharding import Mesh

from flaxtrainer.runtime.sharding import replicate, to_host
from flaxtrainer.training.checkpoints import checkpoint_target
from flaxtrainer.training.steps import TrainState, zero_metrics
from flaxtrainer.training.totals import Totals

if TYPE_CHECKING:
    from flaxtrainer.batching.input_pipeline import PlacedBatch


class WindowLogs(NamedTuple):
    """A closed log window: mean loss per label, mean gradient norm per step, throughput of
    real tokens, and real over computed tokens."""

    loss: float
    grad_norm: float
    tokens_per_second: float
    padding_efficiency: float


@dataclass(eq=False)
class TrainingRun:
    """The state of one ``train()`` call (see the module docstring).

    Args:
        train_step: the jitted ``(train_state, rest, metrics, batch) -> (train_state, metrics,
            done)`` (``steps.jit_train_step``); its train state and metrics are donated.
        train_state: the initial ``TrainState``, placed on ``mesh``.
        rest: the model's non-parameter state, placed on ``mesh`` (constant).
        mesh: the device mesh.
        schedule: the learning-rate schedule of the optimizer.
    """

    train_step: Callable[..., Any]
    train_state: TrainState
    _: KW_ONLY
    rest: Any
    mesh: Mesh
    schedule: optax.Schedule
    #: On-device sums of the current log window (``steps.zero_metrics``).
    metrics: dict[str, jax.Array] = field(init=False)
    #: The run's logged loss sum and label count (checkpointed: ``train_loss`` spans resumes).
    totals: Totals = field(default_factory=Totals, init=False)
    #: Host counters of the current log window.
    window: Totals = field(default_factory=Totals, init=False)
    #: Distinct batch shapes given to ``train_step``: its compilations.
    batch_shapes: set[tuple[int, ...]] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        self.metrics = replicate(zero_metrics(), self.mesh)

    def step(self, host: PlacedBatch, device: dict[str, jax.Array]) -> jax.Array:
        """Apply one update with ``device`` (the batch ``host``, placed); returns an array that
        is ready once the step has run."""
        self.train_state, self.metrics, done = self.train_step(
            self.train_state, self.rest, self.metrics, device
        )
        self.batch_shapes.add(tuple(host.shape))
        return done

    def learning_rate_at(self, updates_done: int) -> float:
        """Learning rate of the update applied after ``updates_done`` updates (host-side)."""
        return float(self.schedule(max(updates_done, 0)))

    def new_window(self) -> None:
        """Start the host counters of a log window (the clock of its throughput)."""
        self.window = Totals()

    def unlogged_steps(self) -> int:
        """Steps summed on device since the last log (a device sync)."""
        return int(to_host(self.metrics)["steps"])

    def close_window(self) -> WindowLogs:
        """Fetch the on-device window sums (the only per-window sync), add them to the run's
        totals, and start a new window."""
        metrics = to_host(self.metrics)
        window, seconds = self.window, time.perf_counter() - self.window.start
        self.metrics = replicate(zero_metrics(), self.mesh)
        self.window = Totals()
        loss_sum, count = float(metrics["loss_sum"]), int(metrics["count"])
        self.totals.loss_sum += loss_sum
        self.totals.count += count
        return WindowLogs(
            loss=loss_sum / max(count, 1),
            grad_norm=float(metrics["grad_norm_sum"]) / max(int(metrics["steps"]), 1),
            tokens_per_second=window.real_tokens / max(seconds, 1e-9),
            padding_efficiency=window.padding_efficiency,
        )

    @property
    def training_loss(self) -> float:
        """Mean loss per label over every logged step of the run (resumed runs included)."""
        return self.totals.loss_sum / max(self.totals.count, 1)

    def checkpoint_target(self) -> dict[str, Any]:
        """The arrays a checkpoint holds (``checkpoints.checkpoint_target``)."""
        return checkpoint_target(self.train_state, self.metrics)

    def restore(
        self, train_state: TrainState, metrics: dict[str, jax.Array], totals: Totals
    ) -> None:
        """Continue from a checkpoint: its train state, window sums and run totals."""
        self.train_state, self.metrics, self.totals = train_state, metrics, totals
