"""What a split without gold tags means for evaluation.

The readers mark every tag of a split without gold as -1. Such a split gets predictions and
counts/runtime only: no loss, no task metrics, whichever entry point asked for them. Its
``tags`` are dropped before ``task.prepare`` (:func:`without_missing_gold`), so that no task
maps the placeholder to a real label.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: The column of gold tags in the readers' datasets (-1 for every token: no gold).
TAGS_COLUMN = "tags"


def has_gold_tags(dataset: Any) -> bool | None:
    """Whether ``dataset`` carries gold tags: False when it has a ``tags`` column (or key) in
    which no tag is >= 0 (the readers' "no gold" marking), True when some tag is, None when
    it has no ``tags`` at all (the task decides: its labels may come from elsewhere)."""
    column = _tags_column(dataset)
    if column is None:
        return None
    return any(isinstance(tag, str) or int(tag) >= 0 for tags in column for tag in tags)


def without_missing_gold(dataset: Any) -> Any:
    """``dataset`` without its ``tags`` when they are all -1 (see :func:`has_gold_tags`), so
    that no task maps the placeholder to a real label; otherwise ``dataset`` itself."""
    if has_gold_tags(dataset) is not False:
        return dataset
    try:
        import datasets

        if isinstance(dataset, datasets.Dataset):
            return dataset.remove_columns(TAGS_COLUMN)
    except ImportError:  # pragma: no cover - datasets is a dependency
        pass
    if isinstance(dataset, Mapping):
        return {k: v for k, v in dataset.items() if k != TAGS_COLUMN}
    return [{k: v for k, v in row.items() if k != TAGS_COLUMN} for row in dataset]


class GoldFreeDatasets:
    """:func:`without_missing_gold` of each dataset, computed once per dataset object (a
    dataset evaluated at every evaluation step is scanned once)."""

    def __init__(self) -> None:
        self._cache: dict[int, tuple[Any, Any]] = {}

    def of(self, dataset: Any) -> Any:
        """``without_missing_gold(dataset)``, cached while ``dataset`` is the same object."""
        cached = self._cache.get(id(dataset))
        if cached is None or cached[0] is not dataset:
            cached = (dataset, without_missing_gold(dataset))
            self._cache[id(dataset)] = cached
        return cached[1]


def _tags_column(dataset: Any) -> Sequence[Sequence[int]] | None:
    try:
        import datasets

        if isinstance(dataset, datasets.Dataset):
            if TAGS_COLUMN not in dataset.column_names:
                return None
            return dataset.select_columns([TAGS_COLUMN]).with_format(None)[TAGS_COLUMN]
    except ImportError:  # pragma: no cover
        pass
    if isinstance(dataset, Mapping):
        return dataset.get(TAGS_COLUMN)
    if isinstance(dataset, Sequence) and dataset and all(isinstance(r, Mapping) for r in dataset):
        if not all(TAGS_COLUMN in r for r in dataset):
            return None
        return [r[TAGS_COLUMN] for r in dataset]
    return None
