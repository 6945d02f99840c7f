"""EarlyStopping: patience, threshold, modes, state, and stopping a real run."""

from types import SimpleNamespace

import pytest
from training.toy import ToyTagger, ToyTask, make_dataset

from flaxtrainer import FlaxTrainer
from flaxtrainer.callbacks import EarlyStopping
from flaxtrainer.callbacks.state import TrainerControl, TrainerState


def _fake_trainer():
    return SimpleNamespace(state=TrainerState(), control=TrainerControl(), is_training=True)


def _feed(callback, values, key="eval_f1"):
    trainer = _fake_trainer()
    for i, value in enumerate(values, start=1):
        trainer.state.global_step = i
        callback.on_evaluate(trainer, {key: value})
        if trainer.control.should_training_stop:
            return i
    return None


def test_patience_threshold_and_modes():
    assert _feed(EarlyStopping("f1", patience=2), [0.5, 0.6, 0.6, 0.55, 0.9]) == 4
    assert _feed(EarlyStopping("f1", patience=2), [0.5, 0.6, 0.7, 0.8]) is None
    # improvements smaller than the threshold do not count
    assert _feed(EarlyStopping("f1", patience=2, threshold=0.05), [0.5, 0.52, 0.54, 0.9]) == 3
    assert (
        _feed(EarlyStopping("eval_loss", patience=1, mode="min"), [1.0, 0.8, 0.85], key="eval_loss")
        == 3
    )


def test_state_dict_round_trip_continues_the_count():
    first = EarlyStopping("f1", patience=3)
    _feed(first, [0.5, 0.4, 0.4])
    second = EarlyStopping("f1", patience=3)
    second.load_state_dict(first.state_dict())
    assert (second.best, second.counter) == (0.5, 2)
    assert _feed(second, [0.45]) == 1


def test_bad_configuration_and_missing_metric_are_clear():
    with pytest.raises(ValueError, match="mode must be"):
        EarlyStopping("f1", mode="up")
    with pytest.raises(ValueError, match="patience must be"):
        EarlyStopping("f1", patience=0)
    with pytest.raises(KeyError, match="'f1' is not among the evaluation metrics"):
        _feed(EarlyStopping("f1"), [0.1], key="eval_accuracy")


def test_ignores_evaluations_outside_training():
    callback, trainer = EarlyStopping("f1", patience=1), _fake_trainer()
    trainer.is_training = False
    for value in (0.9, 0.1, 0.1):
        callback.on_evaluate(trainer, {"eval_f1": value})
    assert callback.best is None and not trainer.control.should_training_stop


def test_stops_training_at_expected_step(make_args, caplog):
    # evaluations at steps 2, 4, 6, 8: best at 4, no improvement at 6 and 8 -> stop at 8
    task = ToyTask(score_script=[0.5, 0.6, 0.6, 0.55, 0.9, 0.95])
    stopper = EarlyStopping("score", patience=2)
    args = make_args(
        max_steps=20, eval_strategy="steps", eval_steps=2, logging_steps=5, pad_to_max_length=True
    )
    trainer = FlaxTrainer(
        ToyTagger(),
        task,
        args,
        train_dataset=make_dataset(40),
        eval_dataset=make_dataset(4),
        callbacks=[stopper],
    )
    with caplog.at_level("INFO", logger="flaxtrainer"):
        out = trainer.train()
    assert out.global_step == 8 and stopper.stopped_at == 8
    stops = [r for r in caplog.records if r.getMessage().startswith("Training stopped")]
    assert [(r.levelname, r.getMessage()) for r in stops] == [
        (
            "WARNING",
            "Training stopped at step 8 of 20 by EarlyStopping: eval_score did not improve "
            "for 2 evaluations (best 0.6000 at step 4)",
        )
    ]
    assert [h["step"] for h in trainer.state.log_history if "eval_score" in h] == [2, 4, 6, 8]
    assert trainer.state.best_metric is None  # no metric_for_best_model set
