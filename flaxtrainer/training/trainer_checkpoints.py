"""The trainer's checkpoint room: what a checkpoint holds, saving on the cadence and on
SIGTERM/SIGINT, exact resume, the best step (one rule, ``flaxtrainer.checkpointing.best_metric``) and
``load_best_model_at_end``.

:class:`TrainerCheckpointing` is a base class of ``FlaxTrainer``: its methods read and write
the trainer's state (``self.state``, ``self._train_state``, ``self._metrics``, ...) and can be
overridden in a subclass like any other trainer method.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from flaxtrainer.callbacks.state import TrainerState
from flaxtrainer.checkpointing.best_metric import BestMetric
from flaxtrainer.training.preemption import TrainingInterrupted
from flaxtrainer.training.totals import Totals

if TYPE_CHECKING:
    from flaxtrainer.checkpointing.checkpointer import Checkpointer

logger = logging.getLogger(__name__)

#: Version of the checkpoint ``meta`` layout written by ``_save_checkpoint``.
CHECKPOINT_META_VERSION = 1


class TrainerCheckpointing:
    """Checkpoint I/O and the best-step record of ``FlaxTrainer`` (see the module docstring)."""

    def _update_best(self, metrics: dict[str, float]) -> None:
        """Record this evaluation as the best one if it improves (``flaxtrainer.checkpointing.best_metric``,
        the rule the checkpointer and early stopping use too)."""
        rule = BestMetric.from_args(self.args)
        value = None if rule is None else rule.value(metrics)
        if rule is not None and rule.improves(value, self.state.best_metric):
            self.state.best_metric = value
            self.state.best_global_step = self.state.global_step

    # ------------------------------------------------------------------------ checkpointing
    def _checkpoint_target(self) -> dict[str, Any]:
        """The pytree a checkpoint holds: the train state and the unlogged window sums."""
        return {"train_state": self._train_state, "metrics": self._metrics}

    def _checkpoint_meta(self) -> dict[str, Any]:
        return {
            "version": CHECKPOINT_META_VERSION,
            "trainer_state": self.state.to_dict(),
            "callbacks": self.callbacks.state_dict(),
            "totals": self._totals.counters(),
            "args": self.args.to_dict(),
        }

    def _get_checkpointer(self) -> Checkpointer:
        if self.checkpointer is None:
            from flaxtrainer.checkpointing.checkpointer import CHECKPOINTS_DIRNAME, Checkpointer

            self.checkpointer = Checkpointer(
                os.path.join(self.args.output_dir, CHECKPOINTS_DIRNAME),
                save_total_limit=self.args.save_total_limit,
                metric_for_best_model=self.args.metric_for_best_model,
                greater_is_better=self.args.greater_is_better,
            )
        return self.checkpointer

    def _close_checkpointer(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.close()
            self.checkpointer = None

    def _save_checkpoint(self, metrics: dict[str, float] | None = None) -> None:
        """Save everything an exact resume needs at the current step; fire ``on_save``.

        Arrays: train state (params, optimizer state, step) and the on-device window sums.
        Meta: TrainerState (epoch, position in epoch, log history, best metric), callbacks'
        ``state_dict()``, host totals and the arguments. Dropout and data order derive from
        ``(seed, step)`` and ``(seed, epoch)``, so no RNG state needs saving.
        """
        checkpointer = self._get_checkpointer()
        step = self.state.global_step
        checkpointer.save(step, self._checkpoint_target(), self._checkpoint_meta(), metrics=metrics)
        best = checkpointer.best_location()
        if best is not None:
            self.state.best_model_checkpoint = str(best)
        self.callbacks.on_save(self, str(checkpointer.step_path(step)))

    def _stop_for_interrupt(self) -> TrainingInterrupted:
        """After SIGTERM/SIGINT: save this step (unless saved already, or a callback stopped
        training at it: TerminateOnNaN keeps a bad state out of checkpoints), wait until it is
        on disk, and return the exception that ends ``train()``."""
        checkpointer = self._get_checkpointer()
        step = self.state.global_step
        if checkpointer.last_saved_step != step and not self.control.should_training_stop:
            self._save_checkpoint()
        checkpointer.wait_until_finished()
        latest = checkpointer.latest_step()
        location = None if latest is None else str(checkpointer.step_path(latest))
        return self._interrupt.stop(step, location, self.args.output_dir)

    def _maybe_resume(self) -> None:
        """Restore train state, TrainerState and callbacks from ``args.resume_from_checkpoint``."""
        if self.args.resume_from_checkpoint is None:
            return
        from flaxtrainer.checkpointing.checkpointer import find_checkpoint, restore_checkpoint

        location = find_checkpoint(self.args.output_dir, self.args.resume_from_checkpoint)
        if location is None:
            return
        restored, meta, step = restore_checkpoint(location, self._checkpoint_target())
        saved = TrainerState.from_dict(meta["trainer_state"])
        if saved.steps_per_epoch != self.state.steps_per_epoch:
            logger.warning(
                "Resuming from %s: it had %d steps per epoch, this run has %d (different data or "
                "batch size?); the data order will not match the original run.",
                location,
                saved.steps_per_epoch,
                self.state.steps_per_epoch,
            )
        self._train_state = restored["train_state"]
        self._metrics = restored["metrics"]
        for name in (
            "max_steps",
            "num_train_epochs",
            "steps_per_epoch",
            "logging_steps",
            "eval_steps",
            "save_steps",
            "train_batch_size",
        ):
            setattr(saved, name, getattr(self.state, name))
        if saved.step_in_epoch >= saved.steps_per_epoch:
            saved.epoch_index += 1
            saved.step_in_epoch = 0
        self.state = saved
        self.callbacks.load_state_dict(meta.get("callbacks", {}))
        self._totals = Totals(**meta.get("totals", {}))
        logger.info("Resumed from %s at step %d (epoch %.2f).", location, step, saved.epoch)

    def _load_best_model(self) -> None:
        """Replace the train state by the best checkpoint's (``load_best_model_at_end``)."""
        from flaxtrainer.checkpointing.checkpointer import restore_checkpoint

        checkpointer = self._get_checkpointer()
        checkpointer.wait_until_finished()
        best = checkpointer.best_location()
        if best is None:
            logger.warning(
                "load_best_model_at_end: no best checkpoint was saved; keeping the last state."
            )
            return
        restored, _, _ = restore_checkpoint(best, self._checkpoint_target())
        self._train_state = restored["train_state"]
        logger.info(
            "Loaded the best model (step %d, %s=%s).",
            best.step,
            self.args.metric_for_best_model,
            checkpointer.best_metric(),
        )
