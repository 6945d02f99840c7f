"""Callback events arrive in the documented order, and flags set by callbacks are honoured."""

import os

import pytest
from training.toy import ToyTagger, ToyTask, make_dataset

from flaxtrainer import FlaxTrainer
from flaxtrainer.callbacks import EVENTS, Callback, CallbackList


class Recorder(Callback):
    """Records (event, step) and, as a director, forces an evaluation and an early stop."""

    def __init__(self, evaluate_at=None, stop_at=None, fail_at=None):
        self.events = []
        self.evaluate_at, self.stop_at, self.fail_at = evaluate_at, stop_at, fail_at
        self.saved = []

    def _add(self, trainer, name):
        self.events.append((name, trainer.state.global_step))

    def on_train_begin(self, trainer):
        self._add(trainer, "train_begin")

    def on_train_end(self, trainer):
        self._add(trainer, "train_end")

    def on_epoch_begin(self, trainer):
        self._add(trainer, "epoch_begin")

    def on_epoch_end(self, trainer):
        self._add(trainer, "epoch_end")

    def on_step_begin(self, trainer):
        if trainer.state.global_step + 1 == self.fail_at:
            raise RuntimeError("boom")
        self._add(trainer, "step_begin")

    def on_step_end(self, trainer):
        self._add(trainer, "step_end")
        if trainer.state.global_step == self.evaluate_at:
            trainer.control.should_evaluate = True
        if trainer.state.global_step == self.stop_at:
            trainer.control.should_training_stop = True

    def on_log(self, trainer, logs):
        self._add(trainer, "log_train" if "loss" in logs else "log_eval")

    def on_evaluate(self, trainer, metrics):
        self._add(trainer, "evaluate")

    def on_save(self, trainer, checkpoint_dir):
        self.saved.append(checkpoint_dir)
        self._add(trainer, "save")

    def on_predict(self, trainer, metrics):
        self._add(trainer, "predict")

    def on_exception(self, trainer, exc):
        self._add(trainer, f"exception:{exc}")


def test_events_in_documented_order_and_flags_honoured(make_args):
    args = make_args(
        max_steps=6,
        logging_steps=2,
        eval_strategy="steps",
        eval_steps=3,
        save_strategy="steps",
        save_steps=4,
        pad_to_max_length=True,
    )
    recorder = Recorder(evaluate_at=1, stop_at=5)
    data = make_dataset(40)  # 3 steps per epoch of 16 rows
    trainer = FlaxTrainer(
        ToyTagger(),
        ToyTask(),
        args,
        train_dataset=data,
        eval_dataset=make_dataset(5),
        callbacks=[recorder],
    )
    out = trainer.train()

    def step(n, *extra):
        return [("step_begin", n - 1), ("step_end", n), *[(e, n) for e in extra]]

    expected = [
        ("train_begin", 0),
        ("epoch_begin", 0),
        *step(1, "log_eval", "evaluate"),  # evaluation requested by the callback
        *step(2, "log_train"),
        *step(3, "log_eval", "evaluate"),  # eval_steps cadence
        ("epoch_end", 3),
        ("epoch_begin", 3),
        *step(4, "log_train", "save"),
        # the callback stops training here: the steps since the last log are logged, and
        # the final checkpoint is saved, before the epoch ends
        *step(5, "log_train", "save"),
        ("epoch_end", 5),
        ("train_end", 5),
    ]
    assert recorder.events == expected
    assert out.global_step == 5 and trainer.state.epoch == pytest.approx(5 / 3)
    latest = os.path.join(args.output_dir, "checkpoints", "latest")
    assert recorder.saved == [os.path.join(latest, "4"), os.path.join(latest, "5")]
    assert all(os.path.isdir(path) for path in recorder.saved)

    recorder.events.clear()
    trainer.evaluate()
    trainer.predict(make_dataset(3))
    assert recorder.events == [("log_eval", 5), ("evaluate", 5), ("predict", 5)]


def test_exception_fires_on_exception_and_propagates(make_args):
    recorder = Recorder(fail_at=1)
    trainer = FlaxTrainer(
        ToyTagger(),
        ToyTask(),
        make_args(max_steps=3),
        train_dataset=make_dataset(20),
        callbacks=[recorder],
    )
    with pytest.raises(RuntimeError, match="boom"):
        trainer.train()
    assert recorder.events == [("train_begin", 0), ("epoch_begin", 0), ("exception:boom", 0)]
    assert not trainer.is_training


def test_callback_list_dispatch_and_state_dicts():
    class Counter(Callback):
        def __init__(self):
            self.n = 0

        def on_step_end(self, trainer):
            self.n += 1

        def state_dict(self):
            return {"n": self.n}

        def load_state_dict(self, state):
            self.n = state["n"]

    callbacks = CallbackList([Counter, Counter()])
    callbacks.on_step_end(None)
    callbacks.on_step_end(None)
    assert callbacks.state_dict() == {"Counter": {"n": 2}, "Counter_1": {"n": 2}}
    fresh = CallbackList([Counter(), Counter()])
    fresh.load_state_dict({"Counter": {"n": 5}, "Counter_1": {"n": 7}, "Gone": {}})
    assert [c.n for c in fresh] == [5, 7]
    assert isinstance(callbacks.remove(Counter), Counter) and len(callbacks) == 1
    with pytest.raises(TypeError, match="must subclass"):
        CallbackList([object()])
    assert set(EVENTS) == {name for name in dir(Callback) if name.startswith("on_")}


def test_default_callbacks_follow_arguments(make_args):
    from flaxtrainer.callbacks import ProgressBar, TensorBoard
    from flaxtrainer.callbacks.progress import LogPrinter, ParameterOverview

    def kinds(**kw):
        return [type(c) for c in FlaxTrainer(ToyTagger(), ToyTask(), make_args(**kw)).callbacks]

    assert kinds() == [LogPrinter, ParameterOverview]
    assert kinds(report_to="tensorboard", disable_tqdm=False) == [
        TensorBoard,
        ParameterOverview,
        ProgressBar,
    ]
    mine = TensorBoard(log_dir="elsewhere")
    trainer = FlaxTrainer(
        ToyTagger(), ToyTask(), make_args(report_to="tensorboard"), callbacks=[mine]
    )
    assert [type(c) for c in trainer.callbacks] == [LogPrinter, ParameterOverview, TensorBoard]
    assert list(trainer.callbacks)[-1] is mine
