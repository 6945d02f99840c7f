"""What a new user meets first: hints that point the right way, and log lines that say which
split they are about."""

from __future__ import annotations

import contextlib
import io
import logging

import pytest
from conftest import fast_flags

from flaxtrainer.cli.main import main
from flaxtrainer.errors import UserError, import_object


def test_predict_with_a_missing_model_suggests_a_trained_one(tmp_path, capsys):
    argv = ["predict", "--model_name_or_path", str(tmp_path / "nope"), "--text", "Hi"]
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-2].startswith("error: ") and "no such folder" in lines[-2]
    hint = lines[-1]
    assert hint.startswith("hint: ") and "fine-tuned model" in hint
    assert "--output_dir of a training run" in hint and "fine-tune it first" in hint


@pytest.mark.parametrize(
    ("reference", "holding"),
    [
        ("no_such_package_xyz.bioes_task:BioesTask", "the no_such_package_xyz/ folder"),
        ("no_such_module_xyz:MyTask", "no_such_module_xyz.py"),
    ],
)
def test_task_class_hint_names_a_folder_for_a_package(reference, holding):
    with pytest.raises(UserError) as raised:
        import_object(reference, flag="--task_class")
    assert f"run from the folder that holds {holding}," in raised.value.hint


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_context_cost_is_logged_for_every_split_by_name(tmp_path, tiny_bert, ner_files):
    argv = [
        *fast_flags(tmp_path / "out", tiny_bert),
        "--train_file", str(ner_files["train"]),
        "--validation_file", str(ner_files["validation"]),
        "--test_file", str(ner_files["test"]),
        "--do_train", "--do_eval", "--do_predict", "--eval_strategy", "no",
        "--context_size", "8", "--report_to", "none",
    ]  # fmt: skip
    handler = _Records()
    task_logger = logging.getLogger("flaxtrainer.tasks.token_classification")
    task_logger.addHandler(handler)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(argv) == 0
    finally:
        task_logger.removeHandler(handler)
    lines = [m for m in handler.messages if "tokens per sentence" in m]
    assert [m.split(":")[0] for m in lines] == ["train", "validation", "test"]
    assert all(": context (context_size=8): " in m for m in lines)
