"""The argument parser: run_flax_ner.py flags, bool forms, config files, errors, --help."""

from __future__ import annotations

import argparse
import json
import re

import pytest

from flaxtrainer.cli.main import main, predict_parser, train_parser
from flaxtrainer.cli.parser import UserError

BASE = ["--model_name_or_path", "m", "--output_dir", "out"]

# run_flax_ner.py's flags (transformers/examples/flax/token-classification), verbatim.
RUN_FLAX_NER_FLAGS = """
model_name_or_path config_name tokenizer_name cache_dir model_revision token use_auth_token
task_name dataset_name dataset_config_name train_file validation_file test_file
text_column_name label_column_name overwrite_cache preprocessing_num_workers max_seq_length
max_train_samples max_eval_samples max_predict_samples label_all_tokens
return_entity_level_metrics output_dir overwrite_output_dir do_train do_eval do_predict
per_device_train_batch_size per_device_eval_batch_size learning_rate weight_decay adam_beta1
adam_beta2 adam_epsilon adafactor num_train_epochs warmup_steps logging_steps save_steps
eval_steps seed push_to_hub hub_model_id hub_token
""".split()


def parse(argv):
    (model, data, plugins, training), given = train_parser().parse(argv)
    return model, data, plugins, training, given


def test_readme_command_line_parses():
    argv = (
        "--dataset_name conll2003 --model_name_or_path bert-base-cased "
        "--output_dir ./output_ner --do_train --do_eval --do_predict"
    )
    model, data, _, training, _ = parse(argv.split())
    assert model.model_name_or_path == "bert-base-cased"
    assert data.dataset_name == "conll2003"
    assert training.output_dir == "./output_ner"
    assert (training.do_train, training.do_eval, training.do_predict) == (True, True, True)


def test_every_run_flax_ner_flag_is_accepted():
    options = {o for a in train_parser().parser._actions for o in a.option_strings}
    missing = [f for f in RUN_FLAX_NER_FLAGS if f"--{f}" not in options]
    assert not missing


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--do_train"], True),
        (["--do_train", "true"], True),
        (["--do_train", "False"], False),
        (["--do_train", "1"], True),
        (["--do-train", "no"], False),
        ([], False),
    ],
)
def test_bool_flags_accept_hf_forms(flags, expected):
    *_, training, _ = parse(BASE + flags)
    assert training.do_train is expected


def test_types_lists_and_dashed_aliases():
    model, data, plugins, training, given = parse(
        BASE
        + ["--learning-rate", "3e-4", "--max_seq_length", "64", "--bucket_widths", "16", "32"]
        + ["--callbacks", "a:B,c:D", "e:F", "--task_class", "t:T", "--label_all_tokens"]
    )
    assert training.learning_rate == pytest.approx(3e-4)
    assert data.max_seq_length == 64 and data.label_all_tokens is True
    assert training.bucket_widths == [16, 32]
    assert plugins.callbacks == ["a:B,c:D", "e:F"] and plugins.task_class == "t:T"
    assert {"learning_rate", "max_seq_length", "output_dir"} <= given


def test_config_file_json_and_override(tmp_path):
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"model_name_or_path": "m", "output_dir": "o",
                                  "do_train": True, "num_train_epochs": 2,
                                  "callbacks": ["x:Y"], "push_to_hub": False}))  # fmt: skip
    model, _, plugins, training, _ = parse([str(config), "--num_train_epochs", "1"])
    assert model.model_name_or_path == "m" and training.do_train is True
    assert training.num_train_epochs == 1.0
    assert plugins.callbacks == ["x:Y"]


def test_config_file_yaml(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model_name_or_path: m\noutput_dir: o\ndo_eval: true\nlearning_rate: 2e-5\n")
    _, _, _, training, _ = parse([str(config)])
    assert training.do_eval is True and training.learning_rate == pytest.approx(2e-5)


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ('{"output_dir": "o", "learning_rat": 1}', r"unknown option 'learning_rat'"),
        ('{"output_dir": "o", "do_train": "maybe"}', r"option 'do_train': expected true or false"),
        ('{"output_dir": "o",\n "seed": }', r"run\.json:2: not valid JSON"),
        ('["output_dir"]', r"expected a mapping"),
    ],
)
def test_config_file_errors_name_file_and_option(tmp_path, content, pattern):
    config = tmp_path / "run.json"
    config.write_text(content)
    with pytest.raises(UserError, match=pattern) as info:
        parse([str(config)])
    assert info.value.hint


def test_unknown_flag_suggests_close_match():
    with pytest.raises(UserError, match="unrecognized arguments: --learning_rat") as info:
        parse(BASE + ["--learning_rat", "1e-4"])
    assert "--learning_rate" in info.value.hint


def test_invalid_training_arguments_become_one_line():
    with pytest.raises(UserError) as info:
        parse(BASE + ["--per_device_train_batch_size", "0", "--adam_beta1", "2"])
    assert "\n" not in info.value.message
    assert "per_device_train_batch_size" in info.value.message
    assert "adam_beta1" in info.value.message


def test_ignored_flag_prints_notice(capsys):
    parse(BASE + ["--overwrite_cache", "--preprocessing_num_workers", "4"])
    err = capsys.readouterr().err
    assert "notice: --overwrite_cache is accepted for compatibility and ignored" in err
    assert "notice: --preprocessing_num_workers" in err


@pytest.mark.parametrize(
    "flags", [["--push_to_hub"], ["--hub_model_id", "me/model"], ["--hub_token", "x"]]
)
def test_upload_flags_are_refused_not_ignored(flags):
    """Asking for an upload and silently getting none would lose the model: an error."""
    with pytest.raises(UserError) as info:
        parse(BASE + flags)
    assert f"{flags[0]} is not supported" in info.value.message
    assert "upload" in info.value.hint
    parse(BASE + ["--push_to_hub", "false"])  # explicitly off is fine


def test_help_explains_every_flag(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    parser = train_parser().parser
    for action in parser._actions:
        if action.option_strings and action.help != argparse.SUPPRESS and action.dest != "help":
            assert action.help and len(action.help) > 10, action.option_strings
            assert action.option_strings[0] in text
    assert "flaxtrainer predict --help" in text and "flaxtrainer demo --help" in text


def test_predict_and_demo_help(capsys):
    assert main(["predict", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--input_file" in out and "--text" in out
    assert all(a.help for a in predict_parser().parser._actions)
    assert main(["demo", "--help"]) == 0
    assert "W-NUT 2016" in capsys.readouterr().out


def test_missing_output_dir_is_a_one_line_error(capsys):
    assert main(["--model_name_or_path", "m", "--do_train"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: missing required --output_dir", "hint: see `flaxtrainer --help`"]


def test_bad_value_error_names_the_flag(capsys):
    assert main(BASE + ["--num_train_epochs", "many"]) == 2
    err = capsys.readouterr().err
    assert re.search(r"^error: argument --num_train_epochs.*expected a number", err, re.M)
    assert "Traceback" not in err
