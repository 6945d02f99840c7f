"""Evaluation and prediction see every example exactly once, in order."""

import numpy as np
import pytest

from flaxtrainer import FlaxTrainer

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
