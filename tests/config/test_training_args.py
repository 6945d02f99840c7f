"""TrainingArguments: defaults, derived values and validation messages."""

import dataclasses

import pytest

from flaxtrainer import TrainingArguments


def test_defaults_follow_run_flax_ner_and_are_resolved():
    args = TrainingArguments(output_dir="out")
    assert (args.per_device_train_batch_size, args.learning_rate, args.num_train_epochs) == (
        8,
        5e-5,
        3.0,
    )
    assert (args.logging_steps, args.save_steps, args.seed, args.max_steps) == (500, 500, 42, -1)
    assert args.eval_strategy == "no" and args.eval_steps == 500
    assert args.logging_dir.endswith("out/runs")
    assert TrainingArguments(output_dir="o", do_eval=True).eval_strategy == "steps"
    assert TrainingArguments(output_dir="o", logging_steps=7).eval_steps == 7


def test_every_field_has_help():
    for f in dataclasses.fields(TrainingArguments):
        assert f.metadata.get("help"), f"{f.name} lacks metadata help"


def test_best_model_defaults_like_hf():
    args = TrainingArguments(
        output_dir="o",
        load_best_model_at_end=True,
        eval_strategy="steps",
        eval_steps=5,
        save_steps=10,
    )
    assert args.metric_for_best_model == "loss" and args.greater_is_better is False
    assert args.best_metric_key == "eval_loss"
    f1 = TrainingArguments(output_dir="o", metric_for_best_model="f1")
    assert f1.greater_is_better is True and f1.best_metric_key == "eval_f1"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"per_device_train_batch_size": 0}, "per_device_train_batch_size must be an integer >= 1"),
        ({"lr_scheduler_type": "step"}, "lr_scheduler_type must be one of"),
        ({"dtype": "float16"}, "dtype must be one of"),
        ({"warmup_steps": 10, "warmup_ratio": 0.1}, "not both"),
        ({"warmup_ratio": 1.5}, "warmup_ratio must be in [0, 1)"),
        ({"max_steps": 0}, "max_steps must be -1"),
        ({"eval_strategy": "sometimes"}, "eval_strategy must be one of"),
        ({"load_best_model_at_end": True}, "load_best_model_at_end needs evaluation"),
        (
            {
                "load_best_model_at_end": True,
                "eval_strategy": "steps",
                "eval_steps": 3,
                "save_steps": 10,
            },
            "must be a multiple of eval_steps",
        ),
        ({"bucket_widths": [16, 0]}, "bucket_widths must be positive integers"),
    ],
)
def test_invalid_values_are_reported_clearly(overrides, message):
    with pytest.raises(ValueError, match="Invalid TrainingArguments") as info:
        TrainingArguments(output_dir="o", **overrides)
    assert message in str(info.value)


def test_all_errors_are_reported_at_once():
    with pytest.raises(ValueError) as info:
        TrainingArguments(output_dir="o", adam_beta1=1.0, gradient_accumulation_steps=0)
    assert "adam_beta1" in str(info.value) and "gradient_accumulation_steps" in str(info.value)


def test_warmup_steps_for():
    assert TrainingArguments(output_dir="o", warmup_ratio=0.1).warmup_steps_for(95) == 10
    assert TrainingArguments(output_dir="o", warmup_steps=7).warmup_steps_for(5) == 5
