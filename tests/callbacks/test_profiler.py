"""--profile_steps: a JAX profiler trace of the chosen steps under logging_dir/plugins/profile."""

from __future__ import annotations

from pathlib import Path

import pytest
from training.toy import ToyTagger, ToyTask, make_dataset, toy_args

from flaxtrainer import FlaxTrainer
from flaxtrainer.callbacks import Callback, Profiler, tracker_callbacks


class ActiveAt(Callback):
    """Records, for each step, whether the profiler traced it."""

    def __init__(self, profiler: Profiler) -> None:
        self.profiler = profiler
        self.active: dict[int, bool] = {}

    def on_step_begin(self, trainer) -> None:
        self.active[trainer.state.global_step + 1] = self.profiler.active


def test_profile_steps_writes_an_xplane_trace_of_those_steps(tmp_path):
    args = toy_args(str(tmp_path / "out"), max_steps=5, profile_steps="2,3", pad_to_max_length=True)
    callbacks = tracker_callbacks(args)
    (profiler,) = [c for c in callbacks if isinstance(c, Profiler)]
    assert (profiler.first, profiler.last) == (2, 3)
    probe = ActiveAt(profiler)
    trainer = FlaxTrainer(
        ToyTagger(),
        ToyTask(),
        args,
        train_dataset=make_dataset(100),
        callbacks=[*callbacks, probe],
    )
    trainer.train()
    assert probe.active == {1: False, 2: True, 3: True, 4: False, 5: False}
    assert not profiler.active
    traces = sorted(Path(args.logging_dir, "plugins", "profile").glob("*/*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 0


def test_no_profiler_without_profile_steps_and_bad_ranges_refused(tmp_path):
    assert not any(isinstance(c, Profiler) for c in tracker_callbacks(toy_args(str(tmp_path))))
    with pytest.raises(ValueError, match="first <= last"):
        Profiler(3, 2)
