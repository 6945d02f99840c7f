"""Reading a token-classification dataset: its words, its gold tags as names, their label ids.

A dataset is a ``datasets.Dataset`` (tags as ``ClassLabel`` ids or strings), a dict of columns,
or an iterable of rows, each with ``tokens`` and optionally ``tags``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import datasets
import numpy as np

from flaxtrainer.batching.batch_format import IGNORE_INDEX

logger = logging.getLogger(__name__)


def read_columns(
    dataset: Any,
    source_label_names: Sequence[str],
    convert_tags: Callable[[list[str]], list[str]],
) -> tuple[list[list[str]], list[list[str]] | None]:
    """Words and gold tag names (through ``convert_tags``) of every example; tags None if the
    dataset has none. Tag ids are read as names by the dataset's ``ClassLabel``, else by
    ``source_label_names``."""
    names = None
    if isinstance(dataset, datasets.Dataset):
        present = [c for c in ("tokens", "tags") if c in dataset.column_names]
        columns = dataset.select_columns(present).with_format(None)[:]
        inner = getattr(dataset.features.get("tags"), "feature", None)
        names = list(inner.names) if isinstance(inner, datasets.ClassLabel) else None
    elif isinstance(dataset, Mapping):
        columns = dataset
    else:
        rows = list(dataset)
        columns = {"tokens": [r["tokens"] for r in rows]}
        if rows and all("tags" in r for r in rows):
            columns["tags"] = [r["tags"] for r in rows]
    tokens = list(columns["tokens"])
    raw_tags = columns.get("tags")
    if raw_tags is None:
        return tokens, None
    names = names or list(source_label_names)
    tags = []
    for i, sentence in enumerate(raw_tags):
        if len(sentence) != len(tokens[i]):
            raise ValueError(f"Example {i}: {len(tokens[i])} tokens but {len(sentence)} tags.")
        if len(sentence) and not isinstance(sentence[0], str):  # ClassLabel ids
            sentence = [names[t] for t in sentence]
        tags.append(convert_tags(list(sentence)))
    return tokens, tags


def gold_tag_ids(
    tags: Sequence[Sequence[str]], label2id: Mapping[str, int], label_names: Sequence[str]
) -> list[np.ndarray]:
    """Label ids of the gold word tags, for the loss. A tag outside the task's labels (data
    with a tag the model was never trained on) gets IGNORE_INDEX, with a warning naming it
    and its count: it takes no loss, while its gold string stays for the metrics (where the
    model, which can't predict it, scores a miss)."""
    out = []
    unknown: dict[str, int] = {}
    first = ""
    for i, sentence in enumerate(tags):
        ids = np.array([label2id.get(t, IGNORE_INDEX) for t in sentence], np.int32)
        if np.any(ids == IGNORE_INDEX):
            for j in np.flatnonzero(ids == IGNORE_INDEX):
                unknown[sentence[j]] = unknown.get(sentence[j], 0) + 1
            first = first or f"example {i}, word {int(np.argmax(ids == IGNORE_INDEX))}"
        out.append(ids)
    if unknown:
        logger.warning(
            "Gold tags outside the task's labels (%s): %s (first: %s). Those words take no "
            "loss and count as misses in the metrics (the model can't predict them).",
            ", ".join(label_names),
            ", ".join(f"{tag!r} x{n}" for tag, n in sorted(unknown.items())),
            first,
        )
    return out
