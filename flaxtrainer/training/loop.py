"""The loop of ``FlaxTrainer.train``: epochs of steps until ``max_steps`` or a stop; after each
step, log / evaluate / save on the cadence (``cadence.py``); SIGTERM/SIGINT end it with a
checkpoint; the last step logs what is unlogged, and saves when training ends early.

:class:`TrainingLoop` is built by ``train()`` for one call with what it drives: the trainer
(only its public surface: the callbacks and their events, ``state``, ``control``, ``args``,
``evaluate``, ``log``), the :class:`~flaxtrainer.training.run.TrainingRun` that the steps
advance, the plan's batches, the checkpoints and the interrupt guard. The host runs at most
two steps ahead of the device.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

import jax

from flaxtrainer.callbacks.view import TrainerView
from flaxtrainer.runtime.sharding import prefetch_to_device
from flaxtrainer.training.cadence import end_epoch_early, new_epoch, new_step, set_cadence_flags
from flaxtrainer.training.checkpoints import checkpoint_meta, record_best
from flaxtrainer.training.totals import Totals

if TYPE_CHECKING:
    from flaxtrainer.batching.input_pipeline import PlacedBatch
    from flaxtrainer.training.checkpoints import TrainingCheckpoints
    from flaxtrainer.training.plan import TrainingPlan
    from flaxtrainer.training.preemption import InterruptGuard, TrainingInterrupted
    from flaxtrainer.training.run import TrainingRun


class LoopOwner(TrainerView, Protocol):
    """What the loop reads of the trainer that runs it: its callbacks' view, plus the
    evaluation it triggers and the figures it logs (the loop never imports the trainer)."""

    @property
    def train_batch_size(self) -> int: ...
    @property
    def train_compiled_shapes(self) -> int: ...
    @property
    def eval_compiled_shapes(self) -> int: ...
    def evaluate(
        self, dataset: Any = None, metric_key_prefix: str = "eval"
    ) -> dict[str, float]: ...


class TrainingLoop:
    """The epochs and steps of one ``train()`` call (see the module docstring).

    ``session`` counts what this call trained on (a resumed run: only the steps run here);
    ``start_step`` is the step it started at.
    """

    def __init__(
        self,
        trainer: LoopOwner,
        run: TrainingRun,
        plan: TrainingPlan,
        *,
        checkpoints: TrainingCheckpoints,
        interrupt: InterruptGuard,
    ) -> None:
        self.trainer = trainer
        self.training_run = run
        self.plan = plan
        self.checkpoints = checkpoints
        self.interrupt = interrupt
        self.state = trainer.state
        self.control = trainer.control
        self.args = trainer.args
        self.session = Totals()
        self.start_step = self.state.global_step
        # The evaluation at the last evaluated step: a final save at that step ranks by it.
        self.step_metrics: dict[str, float] | None = None
        self.step_metrics_at: int | None = None

    def run(self) -> None:
        """Epochs of steps until ``max_steps`` or a stop; log / evaluate / save on the cadence."""
        trainer, run, state, control = self.trainer, self.training_run, self.state, self.control
        sampler, batcher, grid = self.plan.sampler, self.plan.batcher, self.plan.grid
        accum = self.args.gradient_accumulation_steps
        rows = trainer.train_batch_size * accum
        run.new_window()
        in_flight: deque[jax.Array] = deque()
        while (
            state.global_step < state.max_steps
            and state.epoch_index < state.num_train_epochs
            and not control.should_training_stop
        ):
            epoch = state.epoch_index
            new_epoch(control)
            trainer.callbacks.on_epoch_begin(trainer)
            host_batches = (
                batcher.batch(indices, rows, (accum,), grid)
                for _, indices in sampler.iter_epoch(epoch, state.step_in_epoch)
            )
            for host, device in prefetch_to_device(host_batches, self._put, size=2):
                trainer.callbacks.on_step_begin(trainer)
                done = run.step(host, device)
                state.num_compilations = (
                    trainer.train_compiled_shapes + trainer.eval_compiled_shapes
                )
                # Run at most 2 steps ahead of the device: keeps host memory bounded and the
                # progress bar honest; unbounded dispatch of collective programs also
                # deadlocked XLA:CPU with 8 host devices (observed, rendezvous timeout).
                in_flight.append(done)
                if len(in_flight) > 2:
                    in_flight.popleft().block_until_ready()
                state.global_step += 1
                state.step_in_epoch += 1
                state.epoch = epoch + state.step_in_epoch / state.steps_per_epoch
                state.num_input_tokens_seen += host.real_tokens
                run.window.add_batch(host)
                self.session.add_batch(host)
                end_of_epoch = state.step_in_epoch == state.steps_per_epoch
                set_cadence_flags(self.args, state, control, end_of_epoch=end_of_epoch)
                trainer.callbacks.on_step_end(trainer)
                if control.should_epoch_stop and state.step_in_epoch < state.steps_per_epoch:
                    end_epoch_early(self.args, state, control)
                self._act_on_flags()
                if self.interrupt.should_stop(state.global_step):
                    raise self._stop_for_interrupt()
                if (
                    control.should_training_stop
                    or state.global_step >= state.max_steps
                    or (control.should_epoch_stop and epoch + 1 >= state.num_train_epochs)
                ):
                    self.finish()  # the last step of the run
                    break
                if control.should_epoch_stop:
                    break
            if state.step_in_epoch >= state.steps_per_epoch:
                state.epoch_index += 1
                state.step_in_epoch = 0
            trainer.callbacks.on_epoch_end(trainer)

    def finish(self) -> None:
        """At the run's last step: log the steps since the last logging step (so ``train_loss``
        is the exact mean over every step run), and, when training ends before ``max_steps`` (a
        callback's stop, or ``should_epoch_stop`` using up the epochs), save a final checkpoint
        unless this step was just saved, saving is off, or a callback cleared
        ``control.should_save_at_end`` (``TerminateOnNaN``: the state is bad). Does nothing
        when called again at the same step."""
        state, control = self.state, self.control
        if self.training_run.unlogged_steps() > 0:
            self._log_window()
        if (
            state.global_step > self.start_step
            and state.global_step < state.max_steps
            and self.args.save_strategy != "no"
            and control.should_save_at_end
            and not self.checkpoints.saved(state.global_step)
        ):
            metrics = self.step_metrics if self.step_metrics_at == state.global_step else None
            self._save_checkpoint(metrics)

    # --------------------------------------------------------------------------- internals
    def _put(self, host: PlacedBatch) -> dict[str, jax.Array]:
        return host.put(self.training_run.mesh, batch_axis=1)

    def _act_on_flags(self) -> None:
        """Log, then evaluate, then save, as the flags say; then clear the per-step flags."""
        control = self.control
        if control.should_log:
            self._log_window()
        paused = time.perf_counter()
        metrics = None
        if control.should_evaluate:
            metrics = self.trainer.evaluate()
            record_best(self.state, self.args, metrics)
            self.step_metrics, self.step_metrics_at = metrics, self.state.global_step
        if control.should_save:
            self._save_checkpoint(metrics)
        # throughput excludes evaluation and saving
        self.training_run.window.start += time.perf_counter() - paused
        new_step(control)

    def _log_window(self) -> None:
        """Close the log window and log it with the learning rate of its last update."""
        trainer = self.trainer
        window = self.training_run.close_window()
        trainer.log(
            {
                "loss": window.loss,
                "learning_rate": trainer.learning_rate_at(self.state.global_step - 1),
                "grad_norm": window.grad_norm,
                "tokens_per_second": window.tokens_per_second,
                "padding_efficiency": window.padding_efficiency,
                "compiled_shapes": trainer.train_compiled_shapes,
            }
        )

    def _save_checkpoint(self, metrics: dict[str, Any] | None = None) -> None:
        """Save everything an exact resume needs at the current step; fire ``on_save``."""
        trainer, state = self.trainer, self.state
        meta = checkpoint_meta(
            state, trainer.callbacks.state_dict(), self.training_run.totals, self.args
        )
        path, best = self.checkpoints.save(
            state.global_step, self.training_run.checkpoint_target(), meta, metrics=metrics
        )
        if best is not None:
            state.best_model_checkpoint = best
        trainer.callbacks.on_save(trainer, path)

    def _stop_for_interrupt(self) -> TrainingInterrupted:
        """After SIGTERM/SIGINT: save this step (unless saved already, or a callback stopped
        training at it: TerminateOnNaN keeps a bad state out of checkpoints), wait until it is
        on disk, and return the exception that ends ``train()``."""
        step = self.state.global_step
        if not self.checkpoints.saved(step) and not self.control.should_training_stop:
            self._save_checkpoint()
        location = self.checkpoints.latest_on_disk()
        return self.interrupt.stop(step, location, self.args.output_dir)
