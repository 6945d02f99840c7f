"""The trainer's checkpoints: what a checkpoint holds, saving, the stop on SIGTERM/SIGINT,
exact resume, the best step (one rule, ``flaxtrainer.checkpointing.best_metric``) and
``load_best_model_at_end``.

:class:`TrainingCheckpoints` owns the ``Checkpointer`` of a ``train()`` call and nothing of the
trainer: it is given what it saves (the arrays, as a pytree, and the meta of
:func:`checkpoint_meta`) and returns what it restores (:class:`Resumed`, a train state), and
the trainer assigns it. A checkpoint holds:

- arrays: ``{"train_state": TrainState, "metrics": the unlogged on-device window sums}``;
- meta: the ``TrainerState`` (epoch, position in the epoch, log history, best metric), the
  callbacks' ``state_dict()``, the run's host totals and the arguments.

Dropout and data order derive from ``(seed, step)`` and ``(seed, epoch)``, so no RNG state
needs saving.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from flaxtrainer.callbacks.state import TrainerState
from flaxtrainer.checkpointing.best_metric import BestMetric
from flaxtrainer.training.totals import Totals

if TYPE_CHECKING:
    from flaxtrainer.checkpointing.checkpointer import Checkpointer
    from flaxtrainer.config.training_args import TrainingArguments

logger = logging.getLogger(__name__)

#: Version of the checkpoint ``meta`` layout written by :func:`checkpoint_meta`.
CHECKPOINT_META_VERSION = 1

#: ``TrainerState`` fields that describe this run's shape, not the position in it: a resume
#: keeps this run's values (its arguments may differ from the checkpoint's, e.g. max_steps).
RUN_SHAPE_FIELDS = (
    "max_steps",
    "num_train_epochs",
    "steps_per_epoch",
    "logging_steps",
    "eval_steps",
    "save_steps",
    "train_batch_size",
)


def checkpoint_target(train_state: Any, metrics: Any) -> dict[str, Any]:
    """The pytree a checkpoint holds: the train state and the unlogged window sums."""
    return {"train_state": train_state, "metrics": metrics}


def checkpoint_meta(
    state: TrainerState,
    callbacks: Mapping[str, Any],
    totals: Totals,
    args: TrainingArguments,
) -> dict[str, Any]:
    """The JSON beside the arrays: TrainerState, callbacks' ``state_dict()``, host totals and
    the arguments."""
    return {
        "version": CHECKPOINT_META_VERSION,
        "trainer_state": state.to_dict(),
        "callbacks": dict(callbacks),
        "totals": totals.counters(),
        "args": args.to_dict(),
    }


def record_best(state: TrainerState, args: TrainingArguments, metrics: Mapping[str, Any]) -> None:
    """Record this evaluation in ``state`` (``best_metric``, ``best_global_step``) if it
    improves, by the rule the checkpointer and early stopping use too."""
    rule = BestMetric.from_args(args)
    value = None if rule is None else rule.value(metrics)
    if rule is not None and rule.improves(value, state.best_metric):
        state.best_metric = value
        state.best_global_step = state.global_step


class Resumed(NamedTuple):
    """What a resume restores: the arrays (in the structure of the target given), the
    ``TrainerState`` to go on with, the callbacks' saved state and the run's host totals."""

    train_state: Any
    metrics: Any
    state: TrainerState
    callbacks: dict[str, Any]
    totals: Totals


class TrainingCheckpoints:
    """The checkpoints of ``args.output_dir`` for one ``train()`` call (module docstring).

    The ``Checkpointer`` opens on first use (the first save, resume check or best-model load)
    and is closed by :meth:`close` when training ends.
    """

    def __init__(self, args: TrainingArguments) -> None:
        self.args = args
        #: The open ``Checkpointer``, or None (before the first use, after :meth:`close`).
        self.checkpointer: Checkpointer | None = None

    def open(self) -> Checkpointer:
        """The ``Checkpointer`` of ``output_dir/checkpoints``, opened on first use."""
        if self.checkpointer is None:
            from flaxtrainer.checkpointing.checkpointer import CHECKPOINTS_DIRNAME, Checkpointer

            self.checkpointer = Checkpointer(
                os.path.join(self.args.output_dir, CHECKPOINTS_DIRNAME),
                save_total_limit=self.args.save_total_limit,
                metric_for_best_model=self.args.metric_for_best_model,
                greater_is_better=self.args.greater_is_better,
            )
        return self.checkpointer

    def close(self) -> None:
        """Finish pending writes and close the ``Checkpointer`` (if open)."""
        if self.checkpointer is not None:
            self.checkpointer.close()
            self.checkpointer = None

    def saved(self, step: int) -> bool:
        """Whether ``step`` is the step saved last."""
        return self.open().last_saved_step == step

    def save(
        self,
        step: int,
        target: Any,
        meta: Mapping[str, Any],
        metrics: Mapping[str, float] | None = None,
    ) -> tuple[str, str | None]:
        """Save ``target`` (:func:`checkpoint_target`) and ``meta`` (:func:`checkpoint_meta`)
        as ``step``, ranked by ``metrics`` (the evaluation at this step, if any).

        Returns the step's folder and the best checkpoint's (None while there is none)."""
        checkpointer = self.open()
        checkpointer.save(step, target, meta, metrics=metrics)
        best = checkpointer.best_location()
        return str(checkpointer.step_path(step)), None if best is None else str(best)

    def latest_on_disk(self) -> str | None:
        """Wait until every save is on disk; the newest checkpoint's folder (None: none)."""
        checkpointer = self.open()
        checkpointer.wait_until_finished()
        latest = checkpointer.latest_step()
        return None if latest is None else str(checkpointer.step_path(latest))

    def resume(self, target: Any, state: TrainerState) -> Resumed | None:
        """Restore ``args.resume_from_checkpoint`` into ``target``'s structure; None when no
        resume is asked for. The returned ``TrainerState`` is the saved one with ``state``'s
        run shape (:data:`RUN_SHAPE_FIELDS`), at the start of the next epoch if the saved step
        ended one."""
        if self.args.resume_from_checkpoint is None:
            return None
        from flaxtrainer.checkpointing.checkpointer import find_checkpoint, restore_checkpoint

        location = find_checkpoint(self.args.output_dir, self.args.resume_from_checkpoint)
        if location is None:
            return None
        restored, meta, step = restore_checkpoint(location, target)
        saved = TrainerState.from_dict(meta["trainer_state"])
        if saved.steps_per_epoch != state.steps_per_epoch:
            logger.warning(
                "Resuming from %s: it had %d steps per epoch, this run has %d (different data or "
                "batch size?); the data order will not match the original run.",
                location,
                saved.steps_per_epoch,
                state.steps_per_epoch,
            )
        for name in RUN_SHAPE_FIELDS:
            setattr(saved, name, getattr(state, name))
        if saved.step_in_epoch >= saved.steps_per_epoch:
            saved.epoch_index += 1
            saved.step_in_epoch = 0
        logger.info("Resumed from %s at step %d (epoch %.2f).", location, step, saved.epoch)
        return Resumed(
            restored["train_state"],
            restored["metrics"],
            saved,
            meta.get("callbacks", {}),
            Totals(**meta.get("totals", {})),
        )

    def load_best(self, target: Any) -> Any | None:
        """The train state of the best checkpoint, restored into ``target``'s structure
        (``load_best_model_at_end``); None, with a warning, when no best was saved."""
        from flaxtrainer.checkpointing.checkpointer import restore_checkpoint

        checkpointer = self.open()
        checkpointer.wait_until_finished()
        best = checkpointer.best_location()
        if best is None:
            logger.warning(
                "load_best_model_at_end: no best checkpoint was saved; keeping the last state."
            )
            return None
        restored, _, _ = restore_checkpoint(best, target)
        logger.info(
            "Loaded the best model (step %d, %s=%s).",
            best.step,
            self.args.metric_for_best_model,
            checkpointer.best_metric(),
        )
        return restored["train_state"]
