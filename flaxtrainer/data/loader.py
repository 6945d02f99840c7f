"""``load_token_classification_data``: any supported source -> a DatasetDict of tokens and tags."""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets

from flaxtrainer.data.conll import read_conll, read_conllu
from flaxtrainer.data.hub import read_hub
from flaxtrainer.data.raw import DOCUMENT_COLUMN, RawSplit
from flaxtrainer.data.tabular import read_csv, read_json
from flaxtrainer.errors import DataError

logger = logging.getLogger(__name__)

CONLL_SUFFIXES = (".conll", ".txt", ".iob", ".bio")
SUFFIXES = (*CONLL_SUFFIXES, ".conllu", ".json", ".jsonl", ".csv")

#: The split of the evaluation data. Several validation files give one split each, named
#: ``validation_<set name>`` (:func:`validation_splits`); :func:`eval_sets` reads them back.
VALIDATION = "validation"
_SET_SPLIT = f"{VALIDATION}_"


def validation_splits(paths: str | Path | Sequence[str | Path] | None) -> dict[str, Path]:
    """Split name -> file for the validation file(s). One file is the ``validation`` split, as
    always; several are one evaluation set each, split ``validation_<name>``, ``<name>`` the
    file's stem with non-word characters as ``_`` (``dev-ood.conll`` -> ``dev_ood``), a clash
    numbered in the order given (``dev``, ``dev_2``)."""
    if paths is None:
        return {}
    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    if len(paths) == 1:
        return {VALIDATION: paths[0]}
    names: dict[str, Path] = {}
    for path in paths:
        stem = re.sub(r"\W+", "_", path.stem).strip("_") or "set"
        name, n = stem, 1
        while name in names:
            n += 1
            name = f"{stem}_{n}"
        names[name] = path
    return {_SET_SPLIT + name: path for name, path in names.items()}


def eval_split_names(dsd: Mapping[str, Any]) -> list[str]:
    """The splits of ``dsd`` that hold evaluation data (see :func:`validation_splits`)."""
    if VALIDATION in dsd:
        return [VALIDATION]
    return [name for name in dsd if name.startswith(_SET_SPLIT)]


def eval_sets(dsd: Mapping[str, Any]) -> Any:
    """The evaluation data of ``dsd`` as ``FlaxTrainer(eval_dataset=...)`` takes it: the
    ``validation`` split; from several validation files, ``{set name: split}``; None if none."""
    names = eval_split_names(dsd)
    if names == [VALIDATION]:
        return dsd[VALIDATION]
    return {name.removeprefix(_SET_SPLIT): dsd[name] for name in names} or None


def features_for(label_names: list[str], documents: bool = False) -> datasets.Features:
    """The schema every reader returns; ``documents`` adds the ``document_id`` column."""
    features = {
        "tokens": datasets.Sequence(datasets.Value("string")),
        "tags": datasets.Sequence(datasets.ClassLabel(names=list(label_names))),
    }
    if documents:
        features[DOCUMENT_COLUMN] = datasets.Value("int32")
    return datasets.Features(features)


def number_documents(documents: list[int]) -> list[int]:
    """Document ids 0, 1, ... in order, a new id wherever the given id changes."""
    out: list[int] = []
    for i, document in enumerate(documents):
        out.append(0 if i == 0 else out[-1] + (document != documents[i - 1]))
    return out


def read_file(
    path: str | Path,
    *,
    text_column_name: str | None = None,
    label_column_name: str | None = None,
    task_name: str = "ner",
    label_column: int | None = None,
    token_column: int = 0,
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
        split = read_conll(
            path, label_column=label_column, token_column=token_column, task_name=task_name
        )
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


def _tag_counts(split: RawSplit) -> Counter[str]:
    return Counter(tag for tags in split.tags if tags is not None for tag in tags)


def _first_use(split: RawSplit, tag: str) -> str:
    """Where ``tag`` first occurs in ``split``: "line 6 (token 'Paris')"."""
    for i, tags in enumerate(split.tags):
        if tags is not None and tag in tags:
            word = tags.index(tag)
            return f"{split.locate(i, word)} (token {split.tokens[i][word]!r})"
    raise AssertionError(f"{tag!r} not in {split.source}")


def _label_names(splits: dict[str, RawSplit], strict_labels: bool) -> list[str]:
    """The label list (see :func:`build_dataset_dict`); warns about, or under
    ``strict_labels`` refuses, tags of other splits that the train split never uses."""
    source_names = next((s.label_names for s in splits.values() if s.label_names), None)
    if "train" not in splits:
        if source_names is not None:
            return list(source_names)
        return sorted({tag for s in splits.values() for tag in _tag_counts(s)})
    train = splits["train"]
    trained = _tag_counts(train)
    label_names = list(source_names) if source_names is not None else sorted(trained)
    extras: set[str] = set()
    for name, split in splits.items():
        if name == "train":
            continue
        unseen = {tag: n for tag, n in sorted(_tag_counts(split).items()) if tag not in trained}
        if not unseen:
            continue
        if strict_labels:
            tag = next(iter(unseen))
            raise DataError(
                f"{split.source}: {_first_use(split, tag)} has tag {tag!r}, which "
                f"{train.source} never uses (its tags: {sorted(trained)}); strict_labels "
                "(--strict_labels) refuses such data. Add training sentences with that tag, fix "
                "the tag, or drop strict_labels to score it as a miss."
            )
        logger.warning(
            "%s (%s): tags that the training data (%s) never uses: %s. They are kept in the "
            "label list, but the model can't learn them: every token with one counts as a miss "
            "(strict_labels / --strict_labels refuses such data instead).",
            split.source,
            name,
            train.source,
            ", ".join(f"{tag!r} ({n} token{'s' if n != 1 else ''})" for tag, n in unseen.items()),
        )
        extras.update(unseen)
    return label_names + sorted(extras - set(label_names))


def build_dataset_dict(
    splits: dict[str, RawSplit],
    max_samples: dict[str, int | None] | None = None,
    *,
    strict_labels: bool = False,
) -> tuple[datasets.DatasetDict, list[str]]:
    """Fixes the label list and encodes the splits.

    Label order: with a train split, its tags (in the source's ClassLabel order if it has one,
    else sorted), then the tags that only other splits use, sorted; each split with such tags
    gets a warning naming them and their token counts (the model can't learn them: they are
    scored as misses). ``strict_labels`` makes such a tag a :class:`DataError`. Without a train
    split: the source's ClassLabel order, else sorted over all tagged splits. The label list
    comes from whole splits, before ``max_samples`` cuts them. An untagged split (validated with
    ``labels_optional``) gets the tag -1 for every token, as ``datasets`` marks "no label".
    """
    label_names = _label_names(splits, strict_labels)
    label2id = {name: i for i, name in enumerate(label_names)}

    result = {}
    for name, split in splits.items():
        limit = (max_samples or {}).get(name)
        encoded = [
            [-1] * len(split.tokens[i]) if tags is None else [label2id[tag] for tag in tags]
            for i, tags in enumerate(split.tags)
        ]
        tokens = split.tokens
        if limit is not None:
            tokens, encoded = tokens[:limit], encoded[:limit]
        columns = {"tokens": tokens, "tags": encoded}
        # Only a source with document boundaries (two or more documents) gets the column.
        documents = number_documents(split.documents or [])
        if documents and documents[-1] > 0:
            columns[DOCUMENT_COLUMN] = documents[: len(tokens)]
        features = features_for(label_names, documents=DOCUMENT_COLUMN in columns)
        result[name] = datasets.Dataset.from_dict(columns, features=features)
        counted = (
            f", {columns[DOCUMENT_COLUMN][-1] + 1} documents"
            if columns.get(DOCUMENT_COLUMN)
            else ""
        )
        logger.info("%s: %d sentences%s (%s).", name, len(tokens), counted, split.source)
    return datasets.DatasetDict(result), label_names


def load_token_classification_data(
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    train_file: str | Path | None = None,
    validation_file: str | Path | Sequence[str | Path] | None = None,
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
    token_column: int = 0,
    strict_labels: bool = False,
) -> tuple[datasets.DatasetDict, list[str]]:
    """Loads a token classification dataset from the Hub or from local files.

    Returns ``(DatasetDict, label_names)``; each present split (``train``, ``validation``,
    ``test``) has exactly the columns ``tokens`` (list of strings) and ``tags`` (list of
    ``ClassLabel(names=label_names)``), and, where the source marks documents (CoNLL
    ``-DOCSTART-`` lines, CoNLL-U ``# newdoc`` comments, a ``document_id`` column), an int
    column ``document_id`` (0, 1, ... per split in file order; only where a split holds two
    or more documents). ``max_*_samples`` keep the first N sentences of
    train / validation / test. Several ``validation_file`` give one split per file
    (:func:`validation_splits`; :func:`eval_sets` collects them), each with
    ``max_eval_samples``. The test split alone may come without tags (for prediction):
    then its ``tags`` are -1 for every token, with the same features. Bad input (including a
    source tagged only in part) raises :class:`DataError`.

    CoNLL files: ``label_column`` / ``token_column`` pick the columns (see :func:`read_conll`
    for the defaults); CoNLL-U files: ``conllu_tag`` ("upos" or "xpos"). The label list is the
    train split's tags, then, sorted, tags that only validation/test use (with a warning per
    split; they are scored as misses); ``strict_labels=True`` refuses such tags instead.
    """
    validation = validation_splits(validation_file)
    files = {"train": train_file, **validation, "test": test_file}
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
                token_column=token_column,
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
        **dict.fromkeys(validation or [VALIDATION], max_eval_samples),
        "test": max_predict_samples,
    }
    return build_dataset_dict(splits, limits, strict_labels=strict_labels)
