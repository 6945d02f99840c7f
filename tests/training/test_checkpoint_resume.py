"""Checkpoints: resuming mid-run reproduces the uninterrupted run exactly; best model at end."""

import jax
import numpy as np
import pytest
from flax import nnx

from flaxtrainer import FlaxTrainer
from flaxtrainer.callbacks import Callback

from .toy import ToyTagger, ToyTask, make_dataset


class StepCounter(Callback):
    def __init__(self):
        self.steps = 0

    def on_step_end(self, trainer):
        self.steps += 1

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = state["steps"]


def _params(model):
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


def _logs(trainer):
    keys = ("step", "epoch", "loss", "learning_rate", "grad_norm")
    return [{k: h[k] for k in keys} for h in trainer.state.log_history if "loss" in h]


def test_resume_from_a_mid_run_checkpoint_is_exact(make_args, tmp_path):
    data = make_dataset(40, seed=7)  # 3 steps per epoch: the resume point ends epoch 1
    common = dict(
        max_steps=7,
        logging_steps=2,
        save_strategy="steps",
        save_steps=3,
        pad_to_max_length=True,
        lr_scheduler_type="cosine",
        warmup_steps=2,
    )
    full = FlaxTrainer(
        ToyTagger(dropout=0.1, seed=0),
        ToyTask(),
        make_args(**common),
        train_dataset=data,
        callbacks=[StepCounter()],
    )
    full.train()
    checkpoint = f"{full.args.output_dir}/checkpoints/latest/3"

    counter = StepCounter()
    resumed = FlaxTrainer(
        ToyTagger(
            dropout=0.1, seed=123
        ),  # other initial weights: all must come from the checkpoint
        ToyTask(),
        make_args(
            **{**common, "output_dir": str(tmp_path / "resumed")}, resume_from_checkpoint=checkpoint
        ),
        train_dataset=data,
        callbacks=[counter],
    )
    out = resumed.train()
    assert out.global_step == 7 and counter.steps == 7  # 3 restored + 4 run
    # the step-4 log spans the resume point: its window sums came from the checkpoint
    assert _logs(resumed) == _logs(full)
    for a, b in zip(_params(resumed.model), _params(full.model)):
        np.testing.assert_array_equal(a, b)
    assert resumed.state.epoch == pytest.approx(full.state.epoch)


def test_load_best_model_at_end(make_args):
    class Snapshot(Callback):
        def __init__(self):
            self.params = {}

        def on_save(self, trainer, checkpoint_dir):
            self.params[trainer.state.global_step] = [
                np.asarray(x) for x in jax.tree.leaves(trainer.train_state.params)
            ]

    snapshot = Snapshot()
    args = make_args(
        max_steps=6,
        eval_strategy="steps",
        eval_steps=2,
        save_strategy="steps",
        save_steps=2,
        load_best_model_at_end=True,
        metric_for_best_model="score",
        pad_to_max_length=True,
    )
    task = ToyTask(score_script=[0.3, 0.9, 0.5])
    trainer = FlaxTrainer(
        ToyTagger(),
        task,
        args,
        train_dataset=make_dataset(40),
        eval_dataset=make_dataset(4),
        callbacks=[snapshot],
    )
    trainer.train()
    assert trainer.state.best_metric == 0.9 and trainer.state.best_global_step == 4
    assert trainer.state.best_model_checkpoint.endswith("checkpoints/latest/4")
    assert sorted(snapshot.params) == [2, 4, 6]
    for a, b in zip(_params(trainer.model), snapshot.params[4]):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(snapshot.params[4], snapshot.params[6]))
