"""Datasets from the Hugging Face Hub, through ``datasets.load_dataset``.

Script-based datasets (``conll2003`` and its like) no longer load with ``datasets>=4``; the Hub
keeps an auto-converted Parquet copy of most of them on the ``refs/convert/parquet`` branch,
one folder per config (``<config>/<split>/0000.parquet``), which we load instead.

A split without a tag column, or whose ClassLabel tags are all -1 (``datasets``' "no label", as
in unlabelled test splits), has no tags. A ``document_id`` column marks documents (as in JSON
files, see :class:`~flaxtrainer.data.tabular.DocumentNumbers`).
"""

from __future__ import annotations

import logging
from typing import Any

import datasets

from flaxtrainer.data.raw import (
    DOCUMENT_COLUMN,
    RawSplit,
    choose_columns,
    log_columns,
    untagged_reason,
)
from flaxtrainer.data.tabular import DocumentNumbers
from flaxtrainer.errors import DataError

logger = logging.getLogger(__name__)

PARQUET_REVISION = "refs/convert/parquet"
SPLITS = ("train", "validation", "test")
_SCRIPT_ERROR = "Dataset scripts are no longer supported"


def _unreachable(name: str, exc: BaseException) -> DataError:
    return DataError(
        f"Can't fetch dataset {name!r} from the Hugging Face Hub: it is not in the local cache "
        f"and the Hub can't be reached (offline?). [{type(exc).__name__}: {exc}] "
        "Use local files instead, e.g. --train_file train.conll --validation_file dev.conll "
        "--test_file test.conll (CoNLL columns, CoNLL-U, JSON Lines or CSV)."
    )


def load_hub_dataset(
    name: str, config: str | None = None, *, cache_dir: str | None = None
) -> datasets.DatasetDict:
    """``load_dataset(name, config)``, retried on the Parquet branch for script datasets."""
    try:
        return datasets.load_dataset(name, config, cache_dir=cache_dir)
    except RuntimeError as exc:
        if _SCRIPT_ERROR not in str(exc):
            raise
        logger.info("%s is a script dataset; loading the Hub's Parquet conversion.", name)
    except (ConnectionError, FileNotFoundError) as exc:
        raise _unreachable(name, exc) from exc
    try:
        # The Parquet branch keeps each config in a folder of that name.
        return datasets.load_dataset(
            name, revision=PARQUET_REVISION, data_dir=config, cache_dir=cache_dir
        )
    except (ConnectionError, FileNotFoundError) as exc:
        raise _unreachable(name, exc) from exc


def _tag_names(
    tags: list[Any], names: list[str] | None, source: str, example: int
) -> list[str] | None:
    """Tag strings of one example; None when all its ClassLabel ids are -1 ("no label")."""
    if names is None:
        return [str(t) for t in tags]
    if tags and all(t == -1 for t in tags):
        return None
    if -1 in tags:
        raise DataError(
            f"{source}: example {example} (0-based), word {tags.index(-1) + 1} has no label (-1) "
            "but other words have one. Label every word of an example, or none."
        )
    return [names[t] for t in tags]


def read_hub(
    name: str, config: str | None = None, *, cache_dir: str | None = None, **column_args: Any
) -> dict[str, RawSplit]:
    """Reads the train/validation/test splits of a hub dataset into :class:`RawSplit`s."""
    dsd = load_hub_dataset(name, config, cache_dir=cache_dir)
    ignored = [split for split in dsd if split not in SPLITS]
    if ignored:
        logger.warning("%s: ignoring splits %s (only %s are used).", name, ignored, SPLITS)
    result = {}
    for split_name in SPLITS:
        if split_name not in dsd:
            continue
        ds = dsd[split_name]
        source = f"{name}[{split_name}]"
        columns = [c for c in ds.column_names if c != DOCUMENT_COLUMN]
        text, label = choose_columns(columns, source, **column_args)
        names = None
        if label is None:
            reason = untagged_reason(columns, text, column_args.get("label_column_name"))
        else:
            reason = "every tag is -1 (no label)"
            feature = getattr(ds.features[label], "feature", None)
            names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
        split = RawSplit(source, label_names=names, untagged_reason=reason)
        wanted = [c for c in (text, label, DOCUMENT_COLUMN) if c and c in ds.column_names]
        rows = ds.select_columns(wanted).with_format(None)[:]
        tag_lists = rows[label] if label else [None] * len(rows[text])
        documents = DocumentNumbers(source)
        doc_rows = (
            ({DOCUMENT_COLUMN: d} for d in rows[DOCUMENT_COLUMN])
            if DOCUMENT_COLUMN in rows
            else ({} for _ in tag_lists)
        )
        for i, (tokens, tags, doc) in enumerate(zip(rows[text], tag_lists, doc_rows)):
            tags = None if tags is None else _tag_names(tags, names, source, i)
            where = f"example {i} (0-based)"
            split.add(list(tokens), tags, where, document=documents.number(doc, where))
        if label is not None and len(split):
            log_columns(
                source,
                text,
                label,
                label_column_name=column_args.get("label_column_name"),
                task_name=column_args.get("task_name", "ner"),
                where=split.where[0],
                tokens=split.tokens[0],
                tags=split.tags[0],
            )
        result[split_name] = split
    if not result:
        raise DataError(f"{name} has none of the splits {SPLITS} (it has {list(dsd)}).")
    return result
