"""``load_token_classification_data``: any supported source -> a DatasetDict of tokens and tags."""

from __future__ import annotations

import logging
from pathlib import Path

import datasets

from flaxtrainer.data.conll import read_conll, read_conllu
from flaxtrainer.data.errors import DataError
from flaxtrainer.data.hub import read_hub
from flaxtrainer.data.raw import RawSplit
from flaxtrainer.data.tabular import read_csv, read_json

logger = logging.getLogger(__name__)

CONLL_SUFFIXES = (".conll", ".txt", ".iob", ".bio")
SUFFIXES = (*CONLL_SUFFIXES, ".conllu", ".json", ".jsonl", ".csv")


def features_for(label_names: list[str]) -> datasets.Features:
    """The schema every reader returns."""
    return datasets.Features(
        {
            "tokens": datasets.Sequence(datasets.Value("string")),
            "tags": datasets.Sequence(datasets.ClassLabel(names=list(label_names))),
        }
    )


def read_file(
    path: str | Path,
    *,
    text_column_name: str | None = None,
    label_column_name: str | None = None,
    task_name: str = "ner",
    label_column: int | None = None,
    conllu_tag: str = "upos",
    labels_optional: bool = False,
) -> RawSplit:
    """Reads one local file, choosing the reader by its suffix.

    ``labels_optional`` lets the file come without tags (a test file to predict); a file tagged
    only in part is an error either way.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in CONLL_SUFFIXES:
        split = read_conll(path, label_column=label_column, task_name=task_name)
    elif suffix == ".conllu":
        split = read_conllu(path, tag=conllu_tag)
    elif suffix in (".json", ".jsonl", ".csv"):
        reader = read_csv if suffix == ".csv" else read_json
        split = reader(
            path,
            text_column_name=text_column_name,
            label_column_name=label_column_name,
            task_name=task_name,
        )
    else:
        raise DataError(
            f"{path}: unknown file type {path.suffix!r}. Supported: {', '.join(SUFFIXES)} "
            "(rename the file if it is one of these formats)."
        )
    return split.validated(labels_optional=labels_optional)


def build_dataset_dict(
    splits: dict[str, RawSplit], max_samples: dict[str, int | None] | None = None
) -> tuple[datasets.DatasetDict, list[str]]:
    """Fixes the label list, checks every tag against it and encodes the splits.

    Label order: the source's ClassLabel order if it has one; else sorted over the train split
    (a tag in another split that train never had is an error); else, without a train split,
    sorted over all tagged splits. An untagged split (validated with ``labels_optional``) gets
    the tag -1 for every token, as ``datasets`` marks "no label".
    """
    source_names = next((s.label_names for s in splits.values() if s.label_names), None)
    if source_names is not None:
        label_names = list(source_names)
    else:
        tagged = [splits["train"]] if "train" in splits else list(splits.values())
        label_names = sorted({tag for s in tagged if s.labelled for tags in s.tags for tag in tags})
    label2id = {name: i for i, name in enumerate(label_names)}
    train_source = splits["train"].source if "train" in splits else "the label list"

    result = {}
    for name, split in splits.items():
        limit = (max_samples or {}).get(name)
        encoded = []
        for i, tags in enumerate(split.tags):
            if tags is None:
                encoded.append([-1] * len(split.tokens[i]))
                continue
            try:
                encoded.append([label2id[tag] for tag in tags])
            except KeyError as exc:
                word = tags.index(exc.args[0])
                raise DataError(
                    f"{split.source}: {split.locate(i, word)} (token {split.tokens[i][word]!r}) "
                    f"has tag {exc.args[0]!r}, which {train_source} never uses (its tags: "
                    f"{label_names}). Add training sentences with that tag, or fix the tag."
                ) from None
        tokens = split.tokens
        if limit is not None:
            tokens, encoded = tokens[:limit], encoded[:limit]
        result[name] = datasets.Dataset.from_dict(
            {"tokens": tokens, "tags": encoded}, features=features_for(label_names)
        )
        logger.info("%s: %d sentences (%s).", name, len(tokens), split.source)
    return datasets.DatasetDict(result), label_names


def load_token_classification_data(
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    train_file: str | Path | None = None,
    validation_file: str | Path | None = None,
    test_file: str | Path | None = None,
    text_column_name: str | None = None,
    label_column_name: str | None = None,
    task_name: str = "ner",
    label_column: int | None = None,
    conllu_tag: str = "upos",
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    max_predict_samples: int | None = None,
    cache_dir: str | None = None,
) -> tuple[datasets.DatasetDict, list[str]]:
    """Loads a token classification dataset from the Hub or from local files.

    Returns ``(DatasetDict, label_names)``; each present split (``train``, ``validation``,
    ``test``) has exactly the columns ``tokens`` (list of strings) and ``tags`` (list of
    ``ClassLabel(names=label_names)``). ``max_*_samples`` keep the first N sentences of
    train / validation / test. The test split alone may come without tags (for prediction):
    then its ``tags`` are -1 for every token, with the same features. Bad input (including a
    source tagged only in part) raises :class:`DataError`.
    """
    files = {"train": train_file, "validation": validation_file, "test": test_file}
    files = {split: path for split, path in files.items() if path is not None}
    column_args = dict(
        text_column_name=text_column_name, label_column_name=label_column_name, task_name=task_name
    )
    if dataset_name and files:
        raise DataError("Give either dataset_name (a Hub dataset) or local files, not both.")
    if dataset_name:
        splits = {
            name: split.validated(labels_optional=name == "test")
            for name, split in read_hub(
                dataset_name, dataset_config_name, cache_dir=cache_dir, **column_args
            ).items()
        }
    elif files:
        splits = {
            name: read_file(
                path,
                label_column=label_column,
                conllu_tag=conllu_tag,
                labels_optional=name == "test",
                **column_args,
            )
            for name, path in files.items()
        }
    else:
        raise DataError(
            "No data given: set dataset_name (a Hub dataset) or train_file / validation_file / "
            "test_file (local .conll, .conllu, .json, .jsonl or .csv files)."
        )
    limits = {
        "train": max_train_samples,
        "validation": max_eval_samples,
        "test": max_predict_samples,
    }
    return build_dataset_dict(splits, limits)
