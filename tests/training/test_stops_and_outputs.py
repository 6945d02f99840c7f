"""Stopping and resuming as users do it: a callback's stop gets the exact train_loss and a final
checkpoint, should_epoch_stop ends an epoch, a relative output_dir resumes with "latest",
overwrite_output_dir starts TensorBoard clean, and a split without gold tags gets no metrics."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import datasets
import jax
import numpy as np
import pytest
from flax import nnx

from flaxtrainer import FlaxTrainer
from flaxtrainer.callbacks import Callback, TensorBoard, TerminateOnNaN
from flaxtrainer.training.preemption import TrainingInterrupted

from .toy import (
    NUM_LABELS,
    ToyTagger,
    ToyTask,
    make_dataset,
    masked_cross_entropy,
    reference_logits,
    toy_args,
)

DATA = make_dataset(40, seed=7)  # 3 steps per epoch of 16 rows (16, 16, 8)


class StopAt(Callback):
    """Sets ``should_training_stop`` at the end of step ``step`` (as EarlyStopping would)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer):
        if trainer.state.global_step == self.step:
            trainer.control.should_training_stop = True


class Saves(Callback):
    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_save(self, trainer, checkpoint_dir):
        self.steps.append(trainer.state.global_step)


def _params(model):
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


def _steps_on_disk(output_dir) -> list[int]:
    folder = Path(output_dir) / "checkpoints" / "latest"
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


# ------------------------------------------------------------------------ callback stops
def test_train_loss_is_exact_when_a_callback_stops_between_logging_steps(tmp_path):
    # learning_rate 0: the parameters never change, so every step's loss is that of the
    # initial model on its batch; steps 1-3 are exactly one epoch: every example once.
    model = ToyTagger(seed=2)
    task = ToyTask()
    features = task.prepare(DATA)
    loss_sum, count = masked_cross_entropy(
        reference_logits(model, features), [f["labels"] for f in features]
    )
    args = toy_args(
        str(tmp_path / "out"), max_steps=10, logging_steps=2, learning_rate=0.0,
        pad_to_max_length=True,
    )  # fmt: skip
    trainer = FlaxTrainer(model, task, args, DATA, callbacks=[StopAt(3)])
    out = trainer.train()
    assert trainer.state.global_step == 3
    assert out.training_loss == pytest.approx(loss_sum / count, rel=1e-5)
    assert out.metrics["train_loss"] == out.training_loss
    # the steps after the last logging step are logged when training ends
    assert [h["step"] for h in trainer.state.log_history if "loss" in h] == [2, 3]
    # the logged window of steps 1-2 alone is measurably different: the test can fail
    window = next(h for h in trainer.state.log_history if "loss" in h)
    assert abs(window["loss"] - loss_sum / count) > 1e-4


def test_a_callback_stop_writes_a_final_checkpoint(tmp_path):
    saves = Saves()
    args = toy_args(
        str(tmp_path / "out"), max_steps=10, save_strategy="steps", save_steps=2,
        pad_to_max_length=True,
    )  # fmt: skip
    trainer = FlaxTrainer(ToyTagger(seed=0), ToyTask(), args, DATA, callbacks=[StopAt(3), saves])
    trainer.train()
    assert trainer.state.global_step == 3
    assert saves.steps == [2, 3] and _steps_on_disk(args.output_dir) == [2, 3]

    # stopping at a step that was just saved saves it once
    saves = Saves()
    args = toy_args(
        str(tmp_path / "out2"), max_steps=10, save_strategy="steps", save_steps=2,
        pad_to_max_length=True,
    )  # fmt: skip
    FlaxTrainer(ToyTagger(seed=0), ToyTask(), args, DATA, callbacks=[StopAt(4), saves]).train()
    assert saves.steps == [2, 4] and _steps_on_disk(args.output_dir) == [2, 4]


def test_terminate_on_nan_stop_writes_no_final_checkpoint(tmp_path):
    saves = Saves()
    args = toy_args(
        str(tmp_path / "out"), max_steps=10, save_strategy="steps", save_steps=2,
        logging_steps=3, learning_rate=1e30, pad_to_max_length=True,
    )  # fmt: skip
    guard = TerminateOnNaN()
    trainer = FlaxTrainer(ToyTagger(seed=0), ToyTask(), args, DATA, callbacks=[guard, saves])
    trainer.train()
    assert guard.stopped_at is not None and trainer.state.global_step == guard.stopped_at < 10
    assert trainer.state.global_step not in saves.steps  # the bad state is not checkpointed


# ---------------------------------------------------------------------- should_epoch_stop
class EpochStopAt(Callback):
    """Ends every epoch after its ``n``-th step; records where each step was."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.seen: list[tuple[int, int]] = []
        self.epochs_begun = 0

    def on_epoch_begin(self, trainer):
        self.epochs_begun += 1

    def on_step_end(self, trainer):
        state = trainer.state
        self.seen.append((state.epoch_index, state.step_in_epoch))
        if state.step_in_epoch == self.n:
            trainer.control.should_epoch_stop = True


def test_should_epoch_stop_ends_the_epoch_and_training_goes_on(tmp_path):
    stopper, saves = EpochStopAt(1), Saves()
    args = toy_args(
        str(tmp_path / "out"), num_train_epochs=3, save_strategy="epoch",
        pad_to_max_length=True,
    )  # fmt: skip
    trainer = FlaxTrainer(ToyTagger(seed=0), ToyTask(), args, DATA, callbacks=[stopper, saves])
    out = trainer.train()
    assert trainer.state.max_steps == 9  # 3 epochs of 3 steps planned
    assert stopper.seen == [(0, 1), (1, 1), (2, 1)]  # each epoch cut after its first step
    assert stopper.epochs_begun == 3 and out.global_step == 3
    assert trainer.state.epoch == 3.0 and trainer.state.epoch_index == 3
    assert saves.steps == [1, 2, 3]  # the epoch-strategy save at the end of each cut epoch

    # the same run resumed from the checkpoint of the first cut epoch goes on with epoch 1
    resumed_stopper = EpochStopAt(1)
    args = toy_args(
        args.output_dir, num_train_epochs=3, save_strategy="epoch", pad_to_max_length=True,
        resume_from_checkpoint=str(Path(args.output_dir) / "checkpoints" / "latest" / "1"),
    )  # fmt: skip
    resumed = FlaxTrainer(ToyTagger(seed=0), ToyTask(), args, DATA, callbacks=[resumed_stopper])
    resumed.train()
    assert resumed_stopper.seen == [(1, 1), (2, 1)]
    for a, b in zip(_params(resumed.model), _params(trainer.model), strict=True):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ relative output_dir
COMMON = dict(max_steps=7, save_strategy="steps", save_steps=2, pad_to_max_length=True)


def test_relative_output_dir_resumes_from_latest_exactly(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    reference = FlaxTrainer(ToyTagger(seed=0), ToyTask(), toy_args("ref", **COMMON), DATA)
    reference.train()

    class StopAfterSave(Callback):  # the process "dies" right after the save of step 4
        def on_save(self, trainer, checkpoint_dir):
            if trainer.state.global_step == 4:
                trainer.control.should_training_stop = True

    first = FlaxTrainer(
        ToyTagger(seed=0), ToyTask(), toy_args("out", **COMMON), DATA, callbacks=[StopAfterSave()]
    )
    first.train()
    assert first.state.global_step == 4 and _steps_on_disk("out") == [2, 4]

    resumed = FlaxTrainer(
        ToyTagger(seed=1),  # other initial weights: everything must come from the checkpoint
        ToyTask(),
        toy_args("out", resume_from_checkpoint="latest", **COMMON),
        DATA,
    )
    resumed.train()
    assert resumed.state.global_step == 7
    for a, b in zip(_params(resumed.model), _params(reference.model), strict=True):
        np.testing.assert_array_equal(a, b)

    # a relative checkpoint path works as well
    again = FlaxTrainer(
        ToyTagger(seed=1),
        ToyTask(),
        toy_args("again", resume_from_checkpoint="out/checkpoints/latest/4", **COMMON),
        DATA,
    )
    again.train()
    for a, b in zip(_params(again.model), _params(reference.model), strict=True):
        np.testing.assert_array_equal(a, b)


class SignalAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer):
        if trainer.state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def test_the_printed_resume_instructions_work_from_a_relative_output_dir(
    tmp_path, monkeypatch, capfd
):
    monkeypatch.chdir(tmp_path)
    reference = FlaxTrainer(ToyTagger(seed=0), ToyTask(), toy_args("ref", **COMMON), DATA)
    reference.train()
    interrupted = FlaxTrainer(
        ToyTagger(seed=0), ToyTask(), toy_args("out", **COMMON), DATA, callbacks=[SignalAt(3)]
    )
    with pytest.raises(TrainingInterrupted):
        interrupted.train()
    err = capfd.readouterr().err
    assert "--resume_from_checkpoint latest (same --output_dir out)" in err
    printed = re.search(r"resume_from_checkpoint='([^']+)'", err).group(1)
    for spec in ("latest", printed):  # both ways the message offers, verbatim
        resumed = FlaxTrainer(
            ToyTagger(seed=1),
            ToyTask(),
            toy_args("out", resume_from_checkpoint=spec, **COMMON),
            DATA,
        )
        resumed.train()
        assert resumed.state.global_step == 7
        for a, b in zip(_params(resumed.model), _params(reference.model), strict=True):
            np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ overwrite_output_dir
def test_overwrite_output_dir_starts_tensorboard_clean_and_resume_appends(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    output_dir = str(tmp_path / "out")

    def run(steps, **overrides):
        args = toy_args(
            output_dir, max_steps=steps, save_strategy="steps", save_steps=2,
            pad_to_max_length=True, **overrides,
        )  # fmt: skip
        FlaxTrainer(ToyTagger(seed=0), ToyTask(), args, DATA, callbacks=[TensorBoard()]).train()

    def logged_steps():
        events = EventAccumulator(str(Path(output_dir) / "runs"))
        events.Reload()
        return [e.step for e in events.Scalars("train/loss")]

    run(5)
    assert logged_steps() == [1, 2, 3, 4, 5]
    run(3, overwrite_output_dir=True)
    assert logged_steps() == [1, 2, 3]  # the first run's curve is gone
    run(6, resume_from_checkpoint="latest")
    assert logged_steps() == [1, 2, 3, 4, 5, 6]  # the resumed run appends


# ------------------------------------------------------------------------- without gold
class ReaderLikeTask(ToyTask):
    """Reads tags like the readers' datasets: ClassLabel ids, -1 for "no gold" mapped through
    the label names as a real task does (``names[-1]`` is the last label), none when absent."""

    def prepare(self, dataset):
        rows = (
            [dict(zip(dataset, values)) for values in zip(*dataset.values())]
            if isinstance(dataset, dict)
            else list(dataset)
        )
        features = []
        for index, example in enumerate(rows):
            ids = np.asarray(example["ids"], np.int32)
            if "tags" in example:
                labels = np.asarray(example["tags"], np.int32) % NUM_LABELS  # -1 -> a label
            else:
                labels = np.full(ids.shape, -100, np.int32)
            features.append(
                {"input_ids": ids, "attention_mask": np.ones_like(ids), "labels": labels,
                 "example_index": index}
            )  # fmt: skip
        return features


@pytest.mark.parametrize("kind", ["rows", "columns", "datasets"])
def test_predict_without_gold_tags_reports_no_loss_or_accuracy(tmp_path, kind):
    rows = [{"ids": x["ids"], "tags": [-1] * len(x["ids"])} for x in make_dataset(9, seed=5)]
    if kind == "rows":
        dataset = rows
    elif kind == "columns":
        dataset = {"ids": [r["ids"] for r in rows], "tags": [r["tags"] for r in rows]}
    else:
        dataset = datasets.Dataset.from_list(rows)
    trainer = FlaxTrainer(ToyTagger(seed=0), ReaderLikeTask(), toy_args(str(tmp_path)))
    out = trainer.predict(dataset)
    assert sorted(out.metrics) == ["test_runtime", "test_samples", "test_samples_per_second"]
    assert out.metrics["test_samples"] == 9
    assert len(out.predictions) == 9
    assert [len(p) for p in out.predictions] == [len(r["ids"]) for r in rows]
    assert all((ids == -100).all() for ids in out.label_ids)
    metrics = trainer.evaluate(dataset)
    assert "eval_loss" not in metrics and "eval_accuracy" not in metrics

    # the same data with gold tags gets loss and accuracy: the test can fail
    gold = [{"ids": r["ids"], "tags": [1] * len(r["ids"])} for r in rows]
    assert {"test_loss", "test_accuracy"} <= set(trainer.predict(gold).metrics)


def test_eval_samples_counts_examples_of_a_dict_of_columns(tmp_path):
    data = make_dataset(11, seed=3)
    columns = {"ids": [x["ids"] for x in data], "tags": [x["tags"] for x in data]}
    trainer = FlaxTrainer(ToyTagger(seed=0), ReaderLikeTask(), toy_args(str(tmp_path)))
    metrics = trainer.evaluate(columns)
    assert metrics["eval_samples"] == 11  # not 2, the number of columns
    assert metrics["eval_samples_per_second"] == pytest.approx(11 / metrics["eval_runtime"])


def test_overwrite_deletes_logs_inside_output_dir_only(tmp_path, caplog):
    from flaxtrainer.outputs.output_dir import prepare_output_dir

    def fill(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "events.out.tfevents.1.host").write_bytes(b"old run")
        return folder

    out = tmp_path / "out"
    fill(out / "checkpoints" / "latest" / "2")
    runs, elsewhere = fill(out / "runs"), fill(tmp_path / "shared-logs")
    keep = out / "eval_results.json"
    keep.write_text("{}")

    prepare_output_dir(toy_args(str(out), resume_from_checkpoint="latest"))
    assert runs.is_dir()  # a resumed run appends to its logs
    prepare_output_dir(toy_args(str(out), overwrite_output_dir=True, logging_dir=str(elsewhere)))
    assert not (out / "checkpoints").exists() and runs.is_dir() and elsewhere.is_dir()
    assert "outside output_dir and is kept" in caplog.text
    prepare_output_dir(toy_args(str(out), overwrite_output_dir=True))  # only runs/ left
    assert not runs.exists() and keep.is_file()
