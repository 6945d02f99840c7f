"""What the console callbacks print: ProgressBar's and LogPrinter's one line per evaluation,
LogPrinter's training lines, log lines lifted above an open bar, the one warning that says which
callback stopped training and why, and ErrorReport's table only at DEBUG."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import sys
from types import SimpleNamespace

import pytest

from flaxtrainer.callbacks import (
    Callback,
    CallbackList,
    EarlyStopping,
    ErrorReport,
    LogPrinter,
    ProgressBar,
    TerminateOnNaN,
)
from flaxtrainer.callbacks.state import TrainerControl, TrainerState
from flaxtrainer.tasks.error_report import entity_error_report
from flaxtrainer.tasks.schemes import get_scheme

METRICS = {  # the order of a real evaluation: per-type scores before the overall ones
    "eval_company_precision": 0.1,
    "eval_facility_precision": 0.3,
    "eval_precision": 0.6012,
    "eval_recall": 0.6238,
    "eval_f1": 0.6123,
    "eval_accuracy": 0.9394,
    "eval_loss": 0.23154,
    "eval_samples": 240,
    "eval_runtime": 5.12,
    "eval_samples_per_second": 512.4,
}
HEADLINE = (
    "eval step 40/100 | loss 0.2315 | f1 0.6123 | precision 0.6012 | recall 0.6238 | 512 samples/s"
)


def fake_trainer(step=40, max_steps=100, best=None, callbacks=(), is_training=True):
    return SimpleNamespace(
        args=SimpleNamespace(metric_for_best_model=best, learning_rate=1e-3, output_dir=None),
        state=TrainerState(global_step=step, max_steps=max_steps),
        control=TrainerControl(),
        callbacks=CallbackList(callbacks),
        is_training=is_training,
    )


def test_progress_bar_prints_the_headline_line(capsys):
    bar = ProgressBar()
    trainer = fake_trainer(best="accuracy")
    bar.on_train_begin(trainer)
    bar.on_evaluate(trainer, METRICS)
    bar.on_train_end(trainer)
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "eval step 40/100 | loss 0.2315 | accuracy 0.9394 | f1 0.6123 | precision 0.6012 | "
        "recall 0.6238 | 512 samples/s"
    ]


def test_log_printer_prints_short_lines():
    stream = io.StringIO()
    printer, trainer = LogPrinter(stream), fake_trainer()
    window = {
        "loss": 0.41234,
        "learning_rate": 5e-05,
        "grad_norm": 0.81234,
        "tokens_per_second": 1234.4,
        "padding_efficiency": 0.9,
        "compiled_shapes": 1,
        "epoch": 0.6667,
    }
    printer.on_log(trainer, window)
    printer.on_log(trainer, {**METRICS, "epoch": 0.6667})  # the evaluation's log: on_evaluate
    printer.on_evaluate(trainer, METRICS)
    printer.on_log(trainer, {"my_value": 3, "epoch": 0.6667})
    printer.on_predict(trainer, {k.replace("eval_", "test_"): v for k, v in METRICS.items()})
    assert stream.getvalue().splitlines() == [
        "train step 40/100 | loss 0.4123 | lr 5.0e-05 | grad_norm 0.8123 | 1,234 tok/s | epoch 0.67",
        HEADLINE,
        "step 40/100 | my_value 3",
        HEADLINE.replace("eval step", "test step"),
    ]


def test_log_lines_are_lifted_above_an_open_bar():
    """A plain console handler (logging.basicConfig's) writes through tqdm while the bar is
    open, so the line starts at the left margin instead of after the bar's text."""
    out = io.StringIO()
    package = logging.getLogger("flaxtrainer")
    saved = package.handlers, package.propagate, package.level
    with contextlib.redirect_stderr(out), contextlib.redirect_stdout(out):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("12:00:00 INFO %(message)s"))
        package.handlers, package.propagate = [handler], False
        package.setLevel(logging.INFO)
        try:
            bar, trainer = ProgressBar(), fake_trainer(step=0, max_steps=4)
            bar.on_train_begin(trainer)
            bar.on_step_end(trainer)
            bar.bar.refresh()
            logging.getLogger("flaxtrainer.test").info("Saved the final model")
            bar.on_train_end(trainer)
            logging.getLogger("flaxtrainer.test").info("after the bar")
        finally:
            package.handlers, package.propagate, package.level = saved
    assert package.handlers is saved[0]  # restored
    segments = re.split(r"[\r\n]", out.getvalue())
    assert "12:00:00 INFO Saved the final model" in segments, out.getvalue()
    assert "12:00:00 INFO after the bar" in segments


# -- stop reasons ---------------------------------------------------------------------------


class Halt(Callback):
    def on_step_end(self, trainer):
        trainer.control.should_training_stop = True


def stop_warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("Training stopped")]


def test_early_stopping_says_why(caplog):
    stopper = EarlyStopping("f1", patience=2)
    trainer = fake_trainer(callbacks=[stopper])
    with caplog.at_level(logging.INFO, logger="flaxtrainer"):
        for step, f1 in ((20, 0.61), (30, 0.6), (40, 0.55)):
            trainer.state.global_step = step
            trainer.callbacks.on_evaluate(trainer, {"eval_f1": f1})
        trainer.callbacks.on_evaluate(trainer, {"eval_f1": 0.5})  # already stopped: no repeat
    assert trainer.control.should_training_stop
    assert stop_warnings(caplog) == [
        "Training stopped at step 40 of 100 by EarlyStopping: eval_f1 did not improve for 2 "
        "evaluations (best 0.6100 at step 20)"
    ]
    assert [r.levelno for r in caplog.records] == [logging.WARNING]


def test_a_callback_without_a_reason_is_named_and_the_first_stopper_wins(caplog):
    trainer = fake_trainer(step=3, max_steps=10, callbacks=[Halt(), Halt()])
    with caplog.at_level(logging.INFO, logger="flaxtrainer"):
        trainer.callbacks.on_step_end(trainer)
        trainer.callbacks.on_step_end(trainer)
    assert stop_warnings(caplog) == ["Training stopped at step 3 of 10 by Halt"]


def test_no_stop_message_outside_training(caplog):
    trainer = fake_trainer(callbacks=[Halt()], is_training=False)
    with caplog.at_level(logging.INFO, logger="flaxtrainer"):
        trainer.callbacks.on_step_end(trainer)
    assert stop_warnings(caplog) == []


def test_terminate_on_nan_says_why(caplog):
    trainer = fake_trainer(step=12, max_steps=50, callbacks=[TerminateOnNaN()])
    with caplog.at_level(logging.INFO, logger="flaxtrainer"):
        trainer.callbacks.on_log(trainer, {"loss": 1.0})
        trainer.callbacks.on_log(trainer, {"loss": float("nan")})
    (message,) = stop_warnings(caplog)
    assert message.startswith(
        "Training stopped at step 12 of 50 by TerminateOnNaN: training loss is nan in the "
        "logging window ending at step 12"
    )
    assert len(caplog.records) == 1


# -- the error report -----------------------------------------------------------------------


@pytest.mark.parametrize("is_training", [True, False])
def test_error_report_table_only_at_debug(tmp_path, caplog, is_training):
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "O", "O", "B-LOC"], ["B-LOC", "O"]]
    report = entity_error_report(gold, pred, get_scheme("IOB2"))
    trainer = fake_trainer(step=7, is_training=is_training)
    trainer.args.output_dir = str(tmp_path)
    trainer.last_evaluation = SimpleNamespace(error_report=report, prefix="eval")
    with caplog.at_level(logging.INFO, logger="flaxtrainer"):
        ErrorReport().on_evaluate(trainer, {})
    info = [r.getMessage() for r in caplog.records]
    assert (tmp_path / "eval_error_report.json").is_file()
    if is_training:
        assert info == []  # the progress line has the scores
    else:
        assert info == [
            "Entity errors (eval, step 7): 1/3 exact, 1 boundary, 1 type, 0 missed, 0 spurious; "
            "most errors: ORG 1, PER 1 (eval_error_report.json)"
        ]
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="flaxtrainer"):
        ErrorReport().on_evaluate(trainer, {})
    assert report.table() in caplog.text
