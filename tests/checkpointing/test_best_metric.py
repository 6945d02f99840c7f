"""The best-metric rule (flaxtrainer.checkpointing.best_metric), and its four users agreeing on one step."""

import math
from types import SimpleNamespace

import jax
import numpy as np
import pytest
from training.toy import ToyTagger, ToyTask, make_dataset, toy_args

from flaxtrainer import FlaxTrainer
from flaxtrainer.callbacks import Callback, EarlyStopping
from flaxtrainer.checkpointing.best_metric import (
    BestMetric,
    default_greater_is_better,
    improves,
    metric_value,
)
from flaxtrainer.checkpointing.checkpointer import CheckpointLocation

NAN = float("nan")


# ----------------------------------------------------------------------------- lookup
@pytest.mark.parametrize(
    ("metrics", "name", "expected"),
    [
        ({"eval_f1": 0.5}, "f1", 0.5),  # evaluate() prefixes its metrics
        ({"eval_f1": 0.5}, "eval_f1", 0.5),  # already prefixed: found as given
        ({"f1": 0.1, "eval_f1": 0.5}, "f1", 0.1),  # the name as given comes first
        ({"eval_dev_f1": 0.7}, "dev_f1", 0.7),  # a named eval set
        ({"eval_f1": np.float32(0.25)}, "f1", 0.25),
        ({"eval_f1": 0.5}, "loss", None),
        ({"eval_f1": "n/a"}, "f1", None),
        ({}, "f1", None),
        (None, "f1", None),
    ],
)
def test_metric_value_lookup(metrics, name, expected):
    assert metric_value(metrics, name) == expected


def test_metric_value_keeps_nan_as_a_value():
    assert math.isnan(metric_value({"eval_f1": NAN}, "f1"))


# ------------------------------------------------------------------------ comparison
@pytest.mark.parametrize(
    ("value", "best", "greater", "expected"),
    [
        (0.6, 0.5, True, True),
        (0.4, 0.5, True, False),
        (0.4, 0.5, False, True),
        (0.6, 0.5, False, False),
        (0.5, 0.5, True, False),  # a tie keeps the earlier
        (0.5, 0.5, False, False),
        (0.5, None, True, True),  # anything beats no best
        (0.5, None, False, True),
        (NAN, None, True, False),  # NaN never improves, not even on nothing
        (NAN, 0.5, True, False),
        (NAN, 0.5, False, False),
        (None, None, True, False),  # a missing value neither
        (0.1, NAN, True, True),  # a NaN best (an old checkpoint's) is beaten by any number
    ],
)
def test_improves(value, best, greater, expected):
    assert improves(value, best, greater) is expected


def test_threshold_is_a_strict_margin():
    assert not improves(0.55, 0.5, True, threshold=0.05)
    assert improves(0.56, 0.5, True, threshold=0.05)
    assert not improves(0.45, 0.5, False, threshold=0.05)
    assert improves(0.44, 0.5, False, threshold=0.05)
    with pytest.raises(ValueError, match="threshold must be >= 0"):
        BestMetric("f1", threshold=-1)


def test_default_direction_and_from_args():
    assert default_greater_is_better("f1") and default_greater_is_better("eval_accuracy")
    assert not default_greater_is_better("loss") and not default_greater_is_better("eval_loss")
    assert BestMetric("loss").greater_is_better is False
    assert BestMetric("loss", greater_is_better=True).greater_is_better is True
    assert BestMetric.from_args(SimpleNamespace(metric_for_best_model=None)) is None
    rule = BestMetric.from_args(toy_args("o", metric_for_best_model="f1"))
    assert rule == BestMetric("f1", True)


@pytest.mark.parametrize("greater", [True, False])
def test_best_of_folds_in_step_order(greater):
    rule = BestMetric("f1", greater)
    good, bad = (0.9, 0.1) if greater else (0.1, 0.9)
    history = [(4, {"eval_f1": good}), (1, {"eval_f1": bad}), (2, {"eval_f1": good})]
    assert rule.best_of(history + [(3, {"eval_f1": NAN}), (5, None)]) == 2  # tie: the earlier
    assert rule.best_of([(1, {"eval_f1": NAN}), (2, {"eval_loss": 0.1})]) is None
    assert rule.best_of([]) is None


def test_rank_orders_as_improves_does():
    for greater in (True, False):
        rule = BestMetric("f1", greater)
        values = [0.3, 0.7, 0.5]
        ranked = max(values, key=lambda v: rule.rank({"eval_f1": v}))
        assert ranked == (0.7 if greater else 0.3)
        assert rule.rank({"eval_f1": NAN}) == rule.rank({}) == -math.inf


# ---------------------------------------------------------- the four users agree
class _Snapshot(Callback):
    """The parameters at every save, to check which step load_best_model_at_end loaded."""

    def __init__(self) -> None:
        self.params: dict[int, list[np.ndarray]] = {}

    def on_save(self, trainer, checkpoint_dir):
        self.params[trainer.state.global_step] = [
            np.asarray(x) for x in jax.tree.leaves(trainer.train_state.params)
        ]


def test_early_stopping_checkpoint_trainer_state_and_loaded_model_agree(tmp_path):
    """Scores with NaNs (the first one too) and a tie: step 3 is the best for all four users
    of the rule."""
    scores = [NAN, 0.5, 0.8, NAN, 0.8, 0.3, 0.2, 0.1]
    stopper, snapshot = EarlyStopping("score", patience=3), _Snapshot()
    args = toy_args(
        str(tmp_path / "out"),
        max_steps=8,
        eval_strategy="steps",
        eval_steps=1,
        save_strategy="steps",
        save_steps=1,
        save_total_limit=1,
        load_best_model_at_end=True,
        metric_for_best_model="score",
        pad_to_max_length=True,
    )
    trainer = FlaxTrainer(
        ToyTagger(),
        ToyTask(score_script=scores),
        args,
        train_dataset=make_dataset(40),
        eval_dataset=make_dataset(4),
        callbacks=[stopper, snapshot],
    )
    trainer.train()
    # early stopping: best 0.8 at step 3, then NaN, a tie and a drop use up the patience
    assert stopper.best == 0.8 and stopper.stopped_at == 6
    # trainer_state.json's fields
    assert trainer.state.best_metric == 0.8 and trainer.state.best_global_step == 3
    latest = tmp_path / "out" / "checkpoints" / "latest"
    assert trainer.state.best_model_checkpoint == str(CheckpointLocation(latest, 3))
    # the kept checkpoints: the newest (save_total_limit=1) and the best
    assert sorted(int(p.name) for p in latest.iterdir()) == [3, 6]
    # load_best_model_at_end loaded step 3's parameters
    final = [np.asarray(x) for x in jax.tree.leaves(trainer.train_state.params)]
    for got, want in zip(final, snapshot.params[3]):
        np.testing.assert_array_equal(got, want)
    assert not all(np.array_equal(a, b) for a, b in zip(snapshot.params[3], snapshot.params[6]))
