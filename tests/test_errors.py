"""flaxtrainer.errors: one home for the user-facing errors, mapped by type to exit code + hint."""

import subprocess
import sys

import pytest

from flaxtrainer.cli import main as cli
from flaxtrainer.errors import (
    CheckpointMismatchError,
    CheckpointNotFoundError,
    DataError,
    ModelLoadError,
    UserError,
)
from flaxtrainer.outputs.output_dir import OutputDirExistsError

CASES = {
    "user error with its hint": (UserError("bad --flag", "use --flag 3"), "use --flag 3"),
    "user error without hint": (UserError("bad --flag"), cli.DEFAULT_HINT),
    "data": (DataError("train.conll:3: one column"), cli.DATA_HINT),
    "model": (ModelLoadError("./m: no config.json"), cli.MODEL_HINT),
    "checkpoint not found": (CheckpointNotFoundError("no checkpoint"), "--resume_from_checkpoint"),
    "checkpoint mismatch": (CheckpointMismatchError("shapes differ"), cli.CHECKPOINT_MISMATCH_HINT),
    "output dir": (
        OutputDirExistsError("output_dir out already holds a training run", "pass --x"),
        "pass --x",
    ),
}


def _raising(exc: BaseException):
    def command(argv):
        raise exc

    return command


@pytest.mark.parametrize("case", list(CASES))
def test_each_user_error_exits_2_with_one_error_and_one_hint_line(case, monkeypatch, capsys):
    exc, hint = CASES[case]
    monkeypatch.setitem(cli.COMMANDS, "train", _raising(exc))
    outcome = cli.classify_error(exc)
    assert outcome.exit_code == cli.USER_ERROR_EXIT and hint in outcome.hint
    assert cli.main([]) == cli.USER_ERROR_EXIT == 2
    lines = capsys.readouterr().err.strip().splitlines()
    message = str(getattr(exc, "message", None) or exc)
    assert lines == [f"error: {message}", lines[1]]
    assert lines[1].startswith("hint: ") and hint in lines[1]


def test_a_multi_line_message_is_folded_into_one_line(monkeypatch, capsys):
    exc = DataError("Invalid data:\n  - train.conll:3: one column\n  - dev.conll:9: empty tag")
    monkeypatch.setitem(cli.COMMANDS, "train", _raising(exc))
    assert cli.main([]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == "error: Invalid data: train.conll:3: one column; dev.conll:9: empty tag"
    assert len(lines) == 2


@pytest.mark.parametrize(
    "exc", [RuntimeError("a bug"), ValueError("a bug"), FileNotFoundError("a bug"), KeyError("x")]
)
def test_other_errors_are_not_user_errors_and_keep_their_traceback(exc, monkeypatch):
    assert cli.classify_error(exc) is None
    monkeypatch.setitem(cli.COMMANDS, "train", _raising(exc))
    with pytest.raises(type(exc)):
        cli.main([])
    with pytest.raises(TypeError, match="not a user-facing error"):
        cli.report_error(exc)


def test_interrupts_and_exits(monkeypatch, capsys):
    monkeypatch.setitem(cli.COMMANDS, "train", _raising(KeyboardInterrupt()))
    assert cli.main([]) == cli.INTERRUPTED_EXIT == 130
    assert capsys.readouterr().err.strip() == "interrupted"
    monkeypatch.setitem(cli.COMMANDS, "train", _raising(SystemExit(143)))  # TrainingInterrupted
    assert cli.main([]) == 143


def test_package_names_are_the_error_types_of_flaxtrainer_errors():
    from flaxtrainer import data, errors, models

    assert data.DataError is DataError
    assert models.ModelLoadError is errors.ModelLoadError
    assert issubclass(DataError, ValueError) and issubclass(CheckpointNotFoundError, OSError)


def test_the_library_does_not_import_the_command_line():
    code = (
        "import sys\n"
        "import flaxtrainer.inference.pipeline, flaxtrainer.outputs.results, flaxtrainer.checkpointing.checkpointer\n"
        "import flaxtrainer.data, flaxtrainer.training.trainer\n"
        "print(sorted(m for m in sys.modules if m.startswith(('flaxtrainer.cli.main', 'flaxtrainer.cli.job'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout


def test_every_error_type_of_flaxtrainer_errors_is_mapped():
    import flaxtrainer.errors as errors

    defined = {
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type)
        and issubclass(obj, BaseException)
        and obj.__module__ == errors.__name__
    }
    assert defined and defined <= set(cli.user_error_hints())


def test_parse_json_names_file_line_and_problem():
    from flaxtrainer.errors import UserError, parse_json

    assert parse_json('{"a": [1, 2]}', "x.json", "hint") == {"a": [1, 2]}
    with pytest.raises(UserError, match=r"^x\.json:3: not valid JSON \(Expecting value\)") as err:
        parse_json('{\n "a":\n }', "x.json", "write an object")
    assert err.value.hint == "write an object"
    with pytest.raises(UserError, match=r"^w\.jsonl:7: not valid JSON"):
        parse_json("[1,", "w.jsonl", "one list per line", line=7)  # a line of a JSON-lines file
