"""Evaluation and prediction see every example exactly once, in order."""

import numpy as np
import pytest

from flaxtrainer import FlaxTrainer
from flaxtrainer.callbacks import Callback

from .toy import ToyTagger, ToyTask, make_dataset, masked_cross_entropy, reference_logits


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    from .toy import toy_args

    args = toy_args(str(tmp_path_factory.mktemp("eval")))
    return FlaxTrainer(ToyTagger(seed=4), ToyTask(), args)


@pytest.mark.parametrize("n", [1, 7, 63, 1001])
def test_every_example_counted_once_in_order(trainer, n):
    assert trainer.eval_batch_size == 16
    dataset = make_dataset(n, seed=n)
    task = trainer.task
    metrics = trainer.evaluate(dataset)
    evaluation = trainer.last_evaluation
    features, outputs = evaluation.features, evaluation.outputs
    assert metrics["eval_samples"] == n and task.metric_calls[-1] == (n, n)
    expected = reference_logits(trainer.model, features)
    for i, (feature, output) in enumerate(zip(features, outputs)):
        assert output["predictions"].shape == feature["input_ids"].shape, i
        np.testing.assert_allclose(output["logits"], expected[i], rtol=1e-5, atol=1e-5)
    loss_sum, count = masked_cross_entropy(expected, [f["labels"] for f in features])
    assert metrics["eval_labelled_tokens"] == count
    if count:
        assert metrics["eval_loss"] == pytest.approx(loss_sum / count, rel=1e-5)
    assert trainer.state.log_history[-1]["eval_samples"] == n


def test_predict_decodes_in_order_with_label_ids(trainer):
    dataset = make_dataset(21, seed=9)
    out = trainer.predict(dataset)
    assert len(out.predictions) == 21 and [len(p) for p in out.predictions] == [
        len(x["ids"]) for x in dataset
    ]
    assert (
        out.metrics["test_samples"] == 21
        and "test_loss" in out.metrics
        and "test_accuracy" in out.metrics
    )
    assert [len(ids) for ids in out.label_ids] == [len(x["ids"]) for x in dataset]
    expected = reference_logits(trainer.model, trainer.task.prepare(dataset))
    assert out.predictions == [[f"T{int(k)}" for k in e.argmax(-1)] for e in expected]


def test_eval_compilations_bounded_by_widths(trainer):
    widths = trainer.inputs.prepare(trainer.last_evaluation.dataset).widths
    assert len(trainer.evaluator.batch_shapes) <= len(widths)
    assert trainer.evaluator.eval_step._cache_size() == len(trainer.evaluator.batch_shapes)
    assert trainer.state.num_compilations == len(trainer.evaluator.batch_shapes)


def test_evaluate_without_dataset_is_a_clear_error(trainer):
    with pytest.raises(ValueError, match="needs a dataset"):
        trainer.evaluate()


def test_a_subclass_overrides_evaluate_and_predict(make_args):
    """The loop evaluates through ``self.evaluate``: an override's metrics are what the best
    step is ranked by; ``predict`` is overridable too."""
    calls = []

    class Mine(FlaxTrainer):
        def evaluate(self, dataset=None, metric_key_prefix="eval"):
            metrics = super().evaluate(dataset, metric_key_prefix)
            calls.append(("evaluate", self.state.global_step))
            return {**metrics, "eval_loss": [0.5, 0.2, 0.3][len(calls) - 1]}

        def predict(self, dataset, metric_key_prefix="test"):
            calls.append(("predict", metric_key_prefix))
            return super().predict(dataset, metric_key_prefix)

    args = make_args(max_steps=3, eval_strategy="steps", eval_steps=1, metric_for_best_model="loss")
    trainer = Mine(
        ToyTagger(), ToyTask(), args, train_dataset=make_dataset(40), eval_dataset=make_dataset(4)
    )
    trainer.train()
    assert calls == [("evaluate", 1), ("evaluate", 2), ("evaluate", 3)]
    assert trainer.state.best_metric == 0.2 and trainer.state.best_global_step == 2
    assert len(trainer.predict(make_dataset(3), "mine").predictions) == 3
    assert calls[-1] == ("predict", "mine")


class _Counting(Callback):
    def __init__(self):
        self.steps = []

    def on_evaluate(self, trainer, metrics):
        self.steps.append(trainer.state.global_step)


def test_evaluate_after_train_reuses_the_last_steps_evaluation(make_args):
    """``--do_eval`` after training: the loop evaluated the same sets at the last step with the
    parameters training ended with, so ``evaluate()`` returns those metrics without a second
    pass (no tables printed twice); another set, or another prefix, is evaluated."""
    counting = _Counting()
    args = make_args(max_steps=4, eval_strategy="steps", eval_steps=2)
    sets = {"a": make_dataset(6), "b": make_dataset(4, seed=3)}
    trainer = FlaxTrainer(
        ToyTagger(),
        ToyTask(),
        args,
        train_dataset=make_dataset(40),
        eval_dataset=sets,
        callbacks=[counting],
    )
    trainer.train()
    assert counting.steps == [2, 4]
    during = [h for h in trainer.state.log_history if "eval_a_loss" in h][-1]
    again = trainer.evaluate(dict(sets))  # a new dict of the same sets, as the CLI passes them
    assert counting.steps == [2, 4]  # no second pass at step 4
    assert again["eval_a_loss"] == during["eval_a_loss"]
    assert again["eval_b_loss"] == during["eval_b_loss"]
    trainer.evaluate(sets, metric_key_prefix="other")
    trainer.evaluate(make_dataset(6))
    assert counting.steps == [2, 4, 4, 4]


def test_evaluate_after_loading_an_earlier_best_runs_again(make_args):
    """``load_best_model_at_end`` with the best at an earlier step: other parameters than the
    last evaluation saw, so ``evaluate()`` runs again (and scores the best step's parameters)."""
    ranked = iter([0.5, 0.2, 0.3])  # the best (lowest) at step 2 of 3

    class BestAtTwo(FlaxTrainer):
        def evaluate(self, dataset=None, metric_key_prefix="eval"):
            metrics = super().evaluate(dataset, metric_key_prefix)
            return {**metrics, "eval_loss": next(ranked)} if self.is_training else metrics

    counting = _Counting()
    args = make_args(
        max_steps=3,
        eval_strategy="steps",
        eval_steps=1,
        save_strategy="steps",
        save_steps=1,
        load_best_model_at_end=True,
        metric_for_best_model="loss",
    )
    eval_set = make_dataset(6)
    trainer = BestAtTwo(
        ToyTagger(),
        ToyTask(),
        args,
        train_dataset=make_dataset(40),
        eval_dataset=eval_set,
        callbacks=[counting],
    )
    trainer.train()
    assert trainer.state.best_global_step == 2 and counting.steps == [1, 2, 3]
    losses = {h["step"]: h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h}
    metrics = trainer.evaluate(eval_set)
    assert counting.steps == [1, 2, 3, 3]
    assert metrics["eval_loss"] == pytest.approx(losses[2], rel=1e-5)
