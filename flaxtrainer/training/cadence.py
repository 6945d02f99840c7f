"""When the training loop logs, evaluates and saves: the ``TrainingArguments`` cadence as
``TrainerControl`` flags, set before ``on_step_end`` so that callbacks may both request and
veto an action; an epoch a callback ends early; and the flags cleared for the next epoch and
step. Plain functions of the arguments, the ``TrainerState`` and the ``TrainerControl``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flaxtrainer.callbacks.state import TrainerControl, TrainerState
    from flaxtrainer.config.training_args import TrainingArguments


def set_cadence_flags(
    args: TrainingArguments, state: TrainerState, control: TrainerControl, *, end_of_epoch: bool
) -> None:
    """Raise the log / evaluate / save flags that the arguments' cadence asks for at
    ``state.global_step`` (the last step of the run logs, and saves or evaluates under the
    ``"steps"``/``"epoch"`` strategies)."""
    step = state.global_step
    last = step >= state.max_steps
    if step % args.logging_steps == 0 or last:
        control.should_log = True
    if args.eval_strategy == "steps" and step % args.eval_steps == 0:
        control.should_evaluate = True
    if args.eval_strategy == "epoch" and (end_of_epoch or last):
        control.should_evaluate = True
    if args.save_strategy == "steps" and (
        (args.save_steps and step % args.save_steps == 0) or last
    ):
        control.should_save = True
    if args.save_strategy == "epoch" and (end_of_epoch or last):
        control.should_save = True


def end_epoch_early(args: TrainingArguments, state: TrainerState, control: TrainerControl) -> None:
    """A callback set ``should_epoch_stop``: this step ends the epoch as its last step would
    (``epoch`` whole, epoch-strategy evaluation and save), and the next epoch starts at its
    beginning, in this run or in one resumed from this step's checkpoint. The run still ends
    after ``num_train_epochs`` epochs (or ``max_steps`` updates)."""
    state.step_in_epoch = state.steps_per_epoch
    state.epoch = float(state.epoch_index + 1)
    if args.eval_strategy == "epoch":
        control.should_evaluate = True
    if args.save_strategy == "epoch":
        control.should_save = True


# ``TrainerControl`` clears these itself with private methods (``_new_epoch``/``_new_step``);
# the loop clears them through the public flags, the same ones.
def new_epoch(control: TrainerControl) -> None:
    """Clear the per-epoch flag (at the start of each epoch)."""
    control.should_epoch_stop = False


def new_step(control: TrainerControl) -> None:
    """Clear the per-step flags (after each step's log, evaluation and save)."""
    control.should_log = False
    control.should_evaluate = False
    control.should_save = False
