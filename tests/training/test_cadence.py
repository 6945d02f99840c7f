"""The loop's cadence flags: cleared exactly as ``TrainerControl`` clears them itself."""

from __future__ import annotations

import dataclasses

import pytest

from flaxtrainer.callbacks.state import TrainerControl, TrainerState
from flaxtrainer.training.cadence import end_epoch_early, new_epoch, new_step, set_cadence_flags

from .toy import toy_args


def _all_set() -> TrainerControl:
    return TrainerControl(**{f.name: True for f in dataclasses.fields(TrainerControl)})


@pytest.mark.parametrize(("ours", "theirs"), [(new_step, "_new_step"), (new_epoch, "_new_epoch")])
def test_clearing_matches_trainer_control(ours, theirs):
    """cadence.py clears through the public flags what TrainerControl's private methods clear:
    if TrainerControl gains a flag, this fails until cadence.py clears it too."""
    expected, got = _all_set(), _all_set()
    getattr(expected, theirs)()
    ours(got)
    assert got == expected


def test_cadence_flags_on_the_last_step_and_an_epoch_ended_early(tmp_path):
    args = toy_args(
        str(tmp_path), logging_steps=5, eval_strategy="epoch", save_strategy="steps", save_steps=4
    )
    state, control = TrainerState(global_step=3, max_steps=3, steps_per_epoch=10), TrainerControl()
    set_cadence_flags(args, state, control, end_of_epoch=False)
    assert control.should_log and control.should_evaluate and control.should_save
    new_step(control)
    state = TrainerState(global_step=2, max_steps=9, steps_per_epoch=5, step_in_epoch=2)
    end_epoch_early(args, state, control)
    assert state.step_in_epoch == 5 and state.epoch == 1.0
    assert control.should_evaluate and not control.should_save  # saves on steps, not epochs
