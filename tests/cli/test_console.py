"""What the command line prints: a short console for a default run (the progress bar, one
headline line per evaluation, one short results block), nothing glued onto the bar, the
parameter table only at --log_level debug (and always in parameters.txt and TensorBoard)."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest
from conftest import fast_flags

from flaxtrainer.cli.main import main

#: A log line's start, as the command line formats it (`12:34:56 INFO ...`).
TIMESTAMP = re.compile(r"\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR) ")
#: A line of clu's parameter table (`| classifier/kernel | (32, 7) | float32 | 224 |`).
TABLE_LINE = re.compile(r"^\s*(\| .* \|$|\+-+\+)")


def run_console(argv: list[str]) -> tuple[int, str]:
    """Run the command line in-process; stdout and stderr together, in the order written."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(argv)
    return code, out.getvalue()


def console_argv(output_dir: Path, model: Path, files: dict[str, Path], *extra: str) -> list[str]:
    flags = [f for f in fast_flags(output_dir, model) if f != "--disable_tqdm"]  # the bar
    return flags + [
        "--train_file", str(files["train"]),
        "--validation_file", str(files["validation"]),
        "--test_file", str(files["test"]),
        "--do_train", "--do_eval", "--do_predict",
        "--return_entity_level_metrics",
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def default_run(tmp_path_factory, tiny_bert, ner_files):
    """Two epochs with an evaluation after each, default logging and the progress bar."""
    output_dir = tmp_path_factory.mktemp("console") / "out"
    argv = console_argv(
        output_dir, tiny_bert, ner_files, "--num_train_epochs", "2", "--eval_strategy", "epoch"
    )
    code, text = run_console(argv)
    assert code == 0, text
    return output_dir, text


def test_the_console_of_a_default_run_is_short(default_run):
    _, text = default_run
    lines = text.splitlines()
    assert len(lines) < 60, text


def test_the_final_f1_is_among_the_last_lines(default_run):
    output_dir, text = default_run
    f1 = json.loads((output_dir / "eval_results.json").read_text())["eval_f1"]
    assert any(f"{f1:.4f}" in line for line in text.splitlines()[-10:]), text


def test_each_evaluation_prints_one_headline_line(default_run):
    _, text = default_run
    pattern = re.compile(
        r"^eval step \d+/\d+ \| loss [\d.]+ \| f1 [\d.]+ \| precision [\d.]+ \| "
        r"recall [\d.]+ \| [\d.,]+ samples/s$"
    )
    segments = [s.strip() for s in re.split(r"[\r\n]", text)]
    assert sum(bool(pattern.match(s)) for s in segments) == 2, text  # one per epoch
    assert "eval_PER_f1" not in text and "eval_LOC_precision" not in text  # per type: files


def test_no_log_line_is_glued_onto_the_progress_bar(default_run):
    _, text = default_run
    assert "step/s" in text or "s/step" in text  # the bar was drawn
    for segment in re.split(r"[\r\n]", text):  # what a terminal shows after each \r
        found = TIMESTAMP.search(segment)
        assert found is None or not segment[: found.start()].strip(), segment


def test_the_parameter_table_is_in_files_not_on_the_console(default_run):
    output_dir, text = default_run
    assert not [line for line in text.splitlines() if TABLE_LINE.match(line)], text
    summary = [line for line in text.splitlines() if " parameters (" in line]
    assert len(summary) == 1 and "parameters.txt" in summary[0], text
    table = (output_dir / "parameters.txt").read_text()
    assert "classifier/kernel" in table and "Total:" in table
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(output_dir / "runs"), size_guidance={"tensors": 0})
    events.Reload()
    (event,) = events.Tensors("parameters/text_summary")
    assert "classifier/kernel" in event.tensor_proto.string_val[0].decode()


def test_the_results_block_is_short_and_names_the_file(default_run):
    _, text = default_run
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("***** eval metrics"))
    assert "eval_results.json" in lines[start]
    assert re.match(
        r"^  eval: loss [\d.]+ \| f1 [\d.]+ \| precision [\d.]+ \| recall [\d.]+ \| "
        r"12 samples \| [\d.e-]+ s \([\d.,]+ samples/s\)$",
        lines[start + 1],
    ), lines[start + 1]
    assert not lines[start + 2].startswith("  "), lines[start : start + 3]  # nothing more


def test_log_level_debug_prints_the_tables(tmp_path, tiny_bert, ner_files):
    argv = console_argv(
        tmp_path / "out", tiny_bert, ner_files, "--max_steps", "2", "--log_level", "debug"
    )
    code, text = run_console(argv)
    assert code == 0, text
    table = [line for line in text.splitlines() if TABLE_LINE.match(line)]
    assert any("classifier/kernel" in line for line in table), text
    assert "Entity errors (eval, step 2):\n" in text  # the per-type table
    assert "  eval_PER_f1 " in text  # every result, aligned
