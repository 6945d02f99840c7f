"""Flags that Hugging Face users type: --bf16, --fp16 (refused), --lr_scheduler_type
constant / constant_with_warmup, --report_to lists, --profile_steps, --log_level(_replica),
--disable_tqdm printing plain log lines."""

from __future__ import annotations

import json
import logging
import sys

import jax.numpy as jnp
import pytest
from training.toy import ToyTagger, ToyTask, make_dataset, toy_args

from flaxtrainer import FlaxTrainer, TrainingArguments
from flaxtrainer.callbacks import LogPrinter, LRMonitor
from flaxtrainer.cli.main import main, train_parser
from flaxtrainer.cli.parser import UserError
from flaxtrainer.training.optim import make_schedule

REQUIRED = ["--model_name_or_path", "m", "--output_dir", "out"]


def parse(*flags: str) -> TrainingArguments:
    (_, _, _, training_args), _ = train_parser().parse([*REQUIRED, *flags])
    return training_args


# -- precision ------------------------------------------------------------------------------


def test_bf16_is_the_bfloat16_compute_switch(tmp_path):
    assert parse("--bf16").dtype == "bfloat16"
    assert parse().dtype == "float32" and parse().bf16 is False
    assert parse("--dtype", "bfloat16").bf16 is True  # the two names agree either way
    args = toy_args(str(tmp_path), bf16=True)
    assert args.dtype == "bfloat16"
    assert FlaxTrainer(ToyTagger(), ToyTask(), args).compute_dtype == jnp.bfloat16
    assert FlaxTrainer(ToyTagger(), ToyTask(), toy_args(str(tmp_path))).compute_dtype is None


def test_fp16_is_refused_with_a_clear_message(tmp_path, capsys):
    with pytest.raises(UserError) as info:
        parse("--fp16")
    assert "--fp16 is not supported" in info.value.message and "--bf16" in info.value.hint
    assert parse("--fp16", "false").dtype == "float32"  # explicitly off is fine
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"model_name_or_path": "m", "output_dir": "o", "fp16": True}))
    with pytest.raises(UserError, match="fp16 is not supported"):
        train_parser().parse([str(config)])
    assert main([*REQUIRED, "--fp16"]) == 2
    err = capsys.readouterr().err
    assert "error: --fp16 is not supported" in err and "hint: use --bf16" in err


# -- learning-rate schedules --------------------------------------------------------------------


def test_constant_schedule_does_not_warm_up(tmp_path):
    args = toy_args(str(tmp_path), lr_scheduler_type="constant", warmup_steps=5, learning_rate=0.1)
    schedule = make_schedule(args, total_steps=20)
    assert [float(schedule(s)) for s in (0, 1, 5, 19)] == pytest.approx([0.1] * 4)
    warm = make_schedule(
        toy_args(
            str(tmp_path),
            lr_scheduler_type="constant_with_warmup",
            warmup_steps=5,
            learning_rate=0.1,
        ),
        total_steps=20,
    )
    assert float(warm(0)) == 0.0
    assert [float(warm(s)) for s in (1, 5, 19)] == pytest.approx([0.02, 0.1, 0.1])


def test_constant_learning_rate_logged_by_a_training_run(tmp_path):
    steps = 4
    args = toy_args(
        str(tmp_path),
        lr_scheduler_type="constant",
        warmup_steps=3,
        learning_rate=0.05,
        max_steps=steps,
        pad_to_max_length=True,
    )
    monitor = LRMonitor(every_step=True)
    trainer = FlaxTrainer(
        ToyTagger(), ToyTask(), args, train_dataset=make_dataset(64), callbacks=[monitor]
    )
    trainer.train()
    rates = dict(monitor.step_learning_rates)
    assert sorted(rates) == list(range(1, steps + 1))
    assert rates[1] == rates[steps] == pytest.approx(0.05)
    assert trainer.learning_rate_at(0) == trainer.learning_rate_at(steps) == pytest.approx(0.05)


# -- report_to, profile_steps, log levels ---------------------------------------------------------


def test_report_to_takes_a_list_all_or_none(tmp_path, monkeypatch):
    assert parse().report_to == ["tensorboard"]
    assert parse("--report_to", "tensorboard,mlflow").report_to == ["tensorboard", "mlflow"]
    assert parse("--report_to", "mlflow", "wandb").report_to == ["mlflow", "wandb"]
    assert parse("--report_to", "all").report_to == ["tensorboard", "mlflow", "wandb"]
    assert parse("--report_to", "none").report_to == []
    assert toy_args(str(tmp_path), report_to="wandb").report_to == ["wandb"]
    assert toy_args(str(tmp_path), report_to=None).report_to == []
    with pytest.raises(ValueError, match="unknown tracker 'comet'"):
        toy_args(str(tmp_path), report_to="tensorboard,comet")
    monkeypatch.setitem(sys.modules, "wandb", None)  # not installed: `all` leaves it out
    assert parse("--report_to", "all").report_to == ["tensorboard", "mlflow"]


def test_profile_steps_accepts_a_string_or_a_pair(tmp_path):
    assert parse("--profile_steps", "3,5").profile_range == (3, 5)
    args = toy_args(str(tmp_path), profile_steps=(2, 4))
    assert args.profile_steps == "2,4" and args.profile_range == (2, 4)
    assert toy_args(str(tmp_path)).profile_range is None
    for bad in ("5,3", "0,2", "3", "a,b"):
        with pytest.raises(ValueError, match="profile_steps"):
            toy_args(str(tmp_path), profile_steps=bad)


def test_log_level_for_process_zero_and_replicas(tmp_path):
    args = parse("--log_level", "error", "--log_level_replica", "debug")
    assert args.get_process_log_level(0) == logging.ERROR
    assert args.get_process_log_level(1) == logging.DEBUG
    default = toy_args(str(tmp_path))
    assert default.get_process_log_level(1) == logging.WARNING  # HF's replica default
    package = logging.getLogger("flaxtrainer")
    previous = package.level
    try:
        package.setLevel(logging.INFO)
        assert default.get_process_log_level(0) == logging.INFO  # passive: leave it
    finally:
        package.setLevel(previous)
    with pytest.raises(UserError, match="log_level"):
        parse("--log_level", "verbose")


# -- disable_tqdm -------------------------------------------------------------------------------


def test_log_printer_prints_each_log_as_one_plain_line(tmp_path, capsys):
    args = toy_args(
        str(tmp_path),
        max_steps=4,
        logging_steps=2,
        eval_strategy="steps",
        eval_steps=4,
        pad_to_max_length=True,
    )
    trainer = FlaxTrainer(
        ToyTagger(),
        ToyTask(),
        args,
        train_dataset=make_dataset(64),
        eval_dataset=make_dataset(6),
        callbacks=[LogPrinter()],
    )
    trainer.train()
    lines = capsys.readouterr().out.splitlines()
    # One short line per log window and per evaluation, not the whole dict (HF's PrinterCallback).
    train_lines = [line for line in lines if line.startswith("train step ")]
    assert [line.split(" | ")[0] for line in train_lines] == ["train step 2/4", "train step 4/4"]
    assert all(float(line.split(" | ")[1].removeprefix("loss ")) >= 0 for line in train_lines)
    (evaluation,) = [line for line in lines if line.startswith("eval step ")]
    parts = dict(part.split(" ", 1) for part in evaluation.split(" | ")[1:])
    assert evaluation.startswith("eval step 4/4 | loss ")
    assert 0.0 <= float(parts["accuracy"]) <= 1.0
    assert all(len(line) < 160 for line in lines)
