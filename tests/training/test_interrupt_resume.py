"""Interrupting and resuming in-process (toy model): Ctrl-C saves and resumes exactly, a damaged
newest checkpoint falls back to the one before, early-stopping patience survives a resume,
TensorBoard shows each step once, and output_dir protects an earlier run."""

from __future__ import annotations

import logging
import os
import shutil
import signal
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from flaxtrainer import FlaxTrainer
from flaxtrainer.callbacks import Callback, EarlyStopping
from flaxtrainer.callbacks.state import TrainerState
from flaxtrainer.outputs.output_dir import OutputDirExistsError
from flaxtrainer.training.preemption import TrainingInterrupted

from .toy import ToyTagger, ToyTask, make_dataset, toy_args

STEPS = 7
DATA = make_dataset(40, seed=7)  # 3 steps per epoch of 16 rows
COMMON = dict(
    max_steps=STEPS,
    save_strategy="steps",
    save_steps=2,
    pad_to_max_length=True,
    lr_scheduler_type="cosine",
    warmup_steps=2,
)


class StartStep(Callback):
    """Records the step ``train()`` starts at (after any resume)."""

    start_step: int | None = None

    def on_train_begin(self, trainer):
        self.start_step = trainer.state.global_step


class SignalAt(Callback):
    """Sends ``signum`` to this process at the end of step ``step``."""

    def __init__(self, step: int, signum: int = signal.SIGINT, stop: bool = False) -> None:
        self.step, self.signum, self.stop = step, signum, stop

    def on_step_end(self, trainer):
        if trainer.state.global_step == self.step:
            if self.stop:  # as TerminateOnNaN does: stop, and keep this state out of checkpoints
                trainer.control.should_training_stop = True
                trainer.control.should_save = False
            os.kill(os.getpid(), self.signum)


def _trainer(output_dir, callbacks=(), dropout=0.1, **overrides):
    """The toy run; ``overrides`` go to TrainingArguments (dropout 0 compiles faster)."""
    args = toy_args(str(output_dir), **{**COMMON, **overrides})
    model = ToyTagger(dropout=dropout, seed=0)
    return FlaxTrainer(model, ToyTask(), args, DATA, callbacks=callbacks)


def _params(model):
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


def _logs(state):
    """The training-window entries of ``state.log_history`` (a TrainerState), bitwise keys."""
    keys = ("step", "epoch", "loss", "learning_rate", "grad_norm")
    return [{k: h[k] for k in keys} for h in state.log_history if "loss" in h]


def _assert_same_run(trainer, reference):
    assert trainer.state.global_step == reference.state.global_step == STEPS
    assert _logs(trainer.state) == _logs(reference.state)  # every logged float, bitwise
    for a, b in zip(_params(trainer.model), _params(reference.model), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run (dropout on, TensorBoard on, checkpoints at 2, 4, 6 and 7)."""
    trainer = _trainer(tmp_path_factory.mktemp("reference") / "out", report_to="tensorboard")
    trainer.train()
    return trainer


def test_ctrl_c_saves_exits_130_and_resume_is_exact(reference, tmp_path, capfd):
    output_dir = tmp_path / "out"
    previous = signal.getsignal(signal.SIGINT)
    interrupted = _trainer(output_dir, [SignalAt(3)])
    with pytest.raises(TrainingInterrupted) as info:
        interrupted.train()
    assert isinstance(info.value, SystemExit) and info.value.code == 130
    assert signal.getsignal(signal.SIGINT) is previous  # handlers restored
    checkpoint = output_dir / "checkpoints" / "latest" / "3"  # 3 is no save step: saved for Ctrl-C
    assert info.value.step == 3 and info.value.checkpoint == str(checkpoint)
    assert sorted(os.listdir(checkpoint.parent)) == ["2", "3"]
    err = capfd.readouterr().err
    assert "Received SIGINT" in err
    assert (
        f"Training interrupted by SIGINT after step 3. Checkpoint to resume from: {checkpoint}"
        in err
    )
    assert "--resume_from_checkpoint latest" in err

    start = StartStep()
    resumed = _trainer(output_dir, [start], resume_from_checkpoint="latest")
    out = resumed.train()
    assert start.start_step == 3
    _assert_same_run(resumed, reference)
    assert out.training_loss == reference.state.log_history[-1]["train_loss"]
    saved = TrainerState.load_from_json(output_dir / "trainer_state.json")
    assert saved.global_step == STEPS and _logs(saved) == _logs(reference.state)


def test_a_callback_stop_at_the_signal_step_is_not_saved(tmp_path, capsys):
    output_dir = tmp_path / "out"
    trainer = _trainer(output_dir, [SignalAt(3, signal.SIGTERM, stop=True)], dropout=0.0)
    with pytest.raises(TrainingInterrupted) as info:
        trainer.train()
    assert info.value.code == 143
    assert sorted(os.listdir(output_dir / "checkpoints" / "latest")) == ["2"]
    assert info.value.checkpoint == str(output_dir / "checkpoints" / "latest" / "2")
    assert "Training interrupted by SIGTERM after step 3" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_corrupted_newest_checkpoint_resumes_from_the_previous(reference, tmp_path, caplog):
    output_dir = tmp_path / "out"
    shutil.copytree(reference.args.output_dir, output_dir)
    newest = output_dir / "checkpoints" / "latest" / str(STEPS)
    chunks = [p for p in (newest / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert chunks
    for chunk in chunks:  # truncate the array data of the newest checkpoint
        chunk.write_bytes(chunk.read_bytes()[: len(chunk.read_bytes()) // 2])

    start = StartStep()
    resumed = _trainer(output_dir, [start], resume_from_checkpoint="latest")
    with caplog.at_level(logging.WARNING, logger="flaxtrainer.checkpointing.checkpointer"):
        resumed.train()
    assert f"Checkpoint step {STEPS}" in caplog.text and "unusable" in caplog.text
    assert start.start_step == STEPS - 1
    _assert_same_run(resumed, reference)


def test_tensorboard_shows_each_step_once_after_resuming_from_an_earlier_step(reference, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    output_dir = tmp_path / "out"
    shutil.copytree(reference.args.output_dir, output_dir)
    # As after a kill at step 7 with the newest checkpoint at 4: steps 5-7 get logged twice.
    checkpoint = output_dir / "checkpoints" / "latest" / "4"
    resumed = _trainer(output_dir, report_to="tensorboard", resume_from_checkpoint=str(checkpoint))
    resumed.train()
    _assert_same_run(resumed, reference)

    runs = output_dir / "runs"
    events = EventAccumulator(str(runs))
    events.Reload()
    expected = [(h["step"], h["loss"]) for h in _logs(reference.state)]
    logged = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert [s for s, _ in logged] == list(range(1, STEPS + 1))  # no step twice
    np.testing.assert_allclose([v for _, v in logged], [v for _, v in expected], rtol=1e-6)
    assert len(events.Tensors("hparams/text_summary")) == 1  # hparams written once


def test_early_stopping_patience_survives_a_resume(tmp_path):
    scores = [0.5, 0.6, 0.55, 0.54, 0.53, 0.52, 0.51]  # best at 2; patience 3 runs out at 5

    def run(output_dir, task_scores, callbacks=(), **overrides):
        stopper = EarlyStopping("score", patience=3)
        args = toy_args(
            str(output_dir),
            **{**COMMON, "eval_strategy": "steps", "eval_steps": 1, **overrides},
        )
        trainer = FlaxTrainer(
            ToyTagger(seed=0),
            ToyTask(score_script=task_scores),
            args,
            DATA,
            eval_dataset=make_dataset(4),
            callbacks=[stopper, *callbacks],
        )
        return trainer, stopper

    output_dir = tmp_path / "out"
    interrupted, stopper = run(output_dir, scores, [SignalAt(3, signal.SIGTERM)])
    with pytest.raises(TrainingInterrupted):
        interrupted.train()
    assert stopper.counter == 1 and stopper.best == 0.6
    # The resumed task scores steps 4, 5, ... only; counting afresh would not stop before 7.
    resumed, stopper = run(output_dir, scores[3:], resume_from_checkpoint="latest")
    resumed.train()
    assert stopper.stopped_at == 5 and resumed.state.global_step == 5
    assert stopper.best == 0.6 and stopper.counter == 3


def test_output_dir_with_an_earlier_run_is_refused_unless_overwritten(tmp_path):
    output_dir = tmp_path / "out"
    _trainer(output_dir, dropout=0.0, max_steps=4).train()
    assert sorted(os.listdir(output_dir / "checkpoints" / "latest")) == ["2", "4"]

    with pytest.raises(OutputDirExistsError) as info:
        _trainer(output_dir, max_steps=4).train()
    message = str(info.value)
    assert str(output_dir) in message and "checkpoints/" in message
    assert "--overwrite_output_dir" in message and "--resume_from_checkpoint latest" in message

    _trainer(output_dir, overwrite_output_dir=True, max_steps=3, save_steps=3).train()
    assert sorted(os.listdir(output_dir / "checkpoints" / "latest")) == ["3"]  # old ones gone
    assert not any(Path(output_dir, "checkpoints").rglob("4"))
