"""TensorBoard events read back with tensorboard's EventAccumulator; ProgressBar; LRMonitor."""

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from training.toy import ToyTagger, ToyTask, make_dataset

from flaxtrainer import FlaxTrainer
from flaxtrainer.callbacks import LRMonitor, ProgressBar


class FinalCount(ProgressBar):
    def on_train_end(self, trainer):
        self.final = (self.bar.n, self.bar.total)
        super().on_train_end(trainer)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from training.toy import toy_args

    args = toy_args(
        str(tmp_path_factory.mktemp("tb")),
        max_steps=8,
        logging_steps=2,
        eval_strategy="steps",
        eval_steps=4,
        report_to="tensorboard",
        disable_tqdm=False,
        pad_to_max_length=True,
        warmup_steps=2,
    )
    monitor, bar = LRMonitor(every_step=True), FinalCount()
    trainer = FlaxTrainer(
        ToyTagger(),
        ToyTask(),
        args,
        train_dataset=make_dataset(40),
        eval_dataset=make_dataset(6),
        callbacks=[monitor, bar],
    )
    trainer.train()
    trainer.predict(make_dataset(3))
    events = EventAccumulator(args.logging_dir, size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return trainer, events, monitor, bar


def _steps(events, tag):
    return [e.step for e in events.Scalars(tag)]


def test_training_and_eval_scalars_at_the_right_steps(run):
    trainer, events, _, _ = run
    tags = set(events.Tags()["scalars"])
    for tag in (
        "train/loss",
        "train/learning_rate",
        "train/grad_norm",
        "train/tokens_per_second",
        "train/epoch",
    ):
        assert tag in tags and _steps(events, tag) == [2, 4, 6, 8], tag
    for tag in ("eval/loss", "eval/accuracy", "eval/runtime"):
        assert _steps(events, tag) == [4, 8], tag
    assert _steps(events, "test/loss") == [8]
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx(logged, rel=1e-6)
    evals = [h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h]
    assert [e.value for e in events.Scalars("eval/loss")] == pytest.approx(evals, rel=1e-6)


def test_text_examples_and_hparams_written(run):
    _, events, _, _ = run
    tensors = events.Tags()["tensors"]
    assert "eval/examples/text_summary" in tensors
    examples = events.Tensors("eval/examples/text_summary")
    assert [e.step for e in examples] == [4, 8]
    assert b"| tokens | predicted |" in examples[0].tensor_proto.string_val[0]
    assert "hparams/text_summary" in tensors
    hparams = events.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(hparams)
    assert b"learning_rate" in hparams["_hparams_/session_start_info"]


def test_progress_bar_and_lr_monitor(run):
    trainer, _, monitor, bar = run
    assert bar.final == (8, 8) and bar.bar is None
    assert [r["step"] for r in monitor.history] == [2, 4, 6, 8]
    logged = [h["learning_rate"] for h in trainer.state.log_history if "loss" in h]
    assert [r["learning_rate"] for r in monitor.history] == logged
    assert [s for s, _ in monitor.step_learning_rates] == list(range(1, 9))
    lrs = [lr for _, lr in monitor.step_learning_rates]
    assert (
        lrs[0] == 0.0 and lrs[1] == pytest.approx(0.005) and lrs[2] == pytest.approx(0.01)
    )  # warmup 2
    assert lrs[-1] < lrs[2]
