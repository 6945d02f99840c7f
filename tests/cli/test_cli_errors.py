"""User mistakes end as `error: ...` + `hint: ...` on stderr, exit code 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO

from flaxtrainer.cli.main import main

CALLBACK_FILE = str(REPO / "examples" / "my_callback.py")


@pytest.fixture
def base(tmp_path, tiny_bert, ner_files):
    """A valid command line, minus whatever a case removes or adds."""
    return {
        "--model_name_or_path": str(tiny_bert),
        "--output_dir": str(tmp_path / "out"),
        "--train_file": str(ner_files["train"]),
        "--do_train": None,
    }


def argv_of(options: dict) -> list[str]:
    argv = []
    for flag, value in options.items():
        argv.append(flag)
        if value is not None:
            argv.append(value)
    return argv


CASES = {
    "no output_dir": (
        {"--output_dir": ...},
        "missing required --output_dir",
    ),
    "no data": (
        {"--train_file": ...},
        "no data given",
    ),
    "dataset not fetchable offline": (
        {"--train_file": ..., "--dataset_name": "conll2003"},
        "cannot fetch dataset 'conll2003' from the Hugging Face Hub",
    ),
    "do_predict without a test split": (
        {"--do_predict": None},
        "--do_predict needs a test split",
    ),
    "do_eval without a validation split": (
        {"--do_eval": None},
        "--do_eval needs a validation split",
    ),
    "callback module not importable": (
        {"--callbacks": "no_such_module_xyz:Recorder"},
        "--callbacks 'no_such_module_xyz:Recorder': cannot import module 'no_such_module_xyz'",
    ),
    "callback class missing": (
        {"--callbacks": CALLBACK_FILE + ":EventRecordr"},
        "has no attribute 'EventRecordr'",
    ),
    "callback not a Callback": (
        {"--callbacks": "json:JSONDecoder"},
        "is not a flaxtrainer.callbacks.Callback",
    ),
    "task class not importable": (
        {"--task_class": "no_such_module_xyz:MyTask"},
        "--task_class 'no_such_module_xyz:MyTask': cannot import module",
    ),
    "task class not a Task": (
        {"--task_class": "json:JSONDecoder"},
        "is not a subclass of flaxtrainer.tasks.Task",
    ),
    "malformed class reference": (
        {"--task_class": "just_a_name"},
        "is not of the form module:Class",
    ),
    "unknown task name": (
        {"--task_name": "sentiment"},
        "unknown --task_name 'sentiment'",
    ),
    "nothing to do": (
        {"--do_train": ...},
        "nothing to do",
    ),
    "missing data file": (
        {"--train_file": "does/not/exist.conll"},
        "does/not/exist.conll: file not found",
    ),
    "resume without a checkpoint": (
        {"--resume_from_checkpoint": "latest"},
        "checkpoint",
    ),
    "model folder missing": (
        {"--model_name_or_path": "./no/such/model"},
        "no/such/model",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_user_error_is_two_lines_and_exit_2(case, base, capsys):
    changes, expected = CASES[case]
    options = dict(base)
    for flag, value in changes.items():
        if value is ...:
            options.pop(flag)
        else:
            options[flag] = value
    code = main(argv_of(options))
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    # INFO lines (e.g. data sizes) may come first; the error is the last two lines
    assert lines[-2].startswith("error: ") and lines[-1].startswith("hint: ")
    assert sum(line.startswith(("error:", "hint:")) for line in lines) == 2
    assert expected in lines[-2]
    assert "Traceback" not in captured.err + captured.out


def test_output_dir_with_an_earlier_run_needs_overwrite(base, tmp_path, capsys):
    step = tmp_path / "out" / "checkpoints" / "latest" / "3"
    step.mkdir(parents=True)
    (step / "state").write_text("x")
    assert main(argv_of(base)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-2].startswith("error: output_dir") and "already holds a training run" in lines[-2]
    assert lines[-1].startswith("hint: ") and "--overwrite_output_dir" in lines[-1]


def test_predict_command_needs_input(tiny_bert, capsys):
    assert main(["predict", "--model_name_or_path", str(tiny_bert)]) == 2
    assert "error: nothing to tag" in capsys.readouterr().err


def test_console_process_prints_no_traceback(base):
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "flaxtrainer", *argv_of({**base, "--do_predict": None})],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-2:] == [
        "error: --do_predict needs a test split, but the data has only: train",
        "hint: add --test_file FILE, or drop --do_predict",
    ]
    assert "Traceback" not in proc.stderr
