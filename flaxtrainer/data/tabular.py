"""JSON, JSON Lines and CSV files: one sentence per row, a token column and a tag column.

- ``.jsonl``: one JSON object per line.
- ``.json``: a JSON array of objects, an object of columns (``{"tokens": [[...], ...], ...}``),
  or, as Hugging Face's examples write them, JSON Lines.
- ``.csv`` (with a header row): each cell holds either a JSON list (``["EU", "rejects"]``,
  for tokens that contain spaces) or space-separated items (``EU rejects German``).
  A cell that starts with ``[`` and parses as a JSON list is read as one; any other cell is
  split on whitespace.

Column choice follows run_flax_ner.py (see :func:`~flaxtrainer.data.raw.choose_columns`). A file
without a tag column, or whose tag lists are all -1 (how ``datasets`` marks "no label"), has no
tags. An optional ``document_id`` column (any value; a document's rows consecutive) marks
documents: it is never taken as the token or tag column.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flaxtrainer.data.raw import (
    DOCUMENT_COLUMN,
    RawSplit,
    choose_columns,
    lines_of,
    log_columns,
    read_text,
    untagged_reason,
)
from flaxtrainer.errors import DataError

NO_LABEL = "-1"  # a -1 tag id, as ``datasets`` marks an unlabelled token


def _as_strings(value: Any, path: Path, where: str, column: str) -> list[str]:
    if isinstance(value, list) and all(isinstance(v, (str, int)) for v in value):
        return [str(v) for v in value]
    raise DataError(
        f"{path}: {where}: column {column!r} must be a list of strings, got {value!r:.80}. "
        "Fix that row."
    )


def _rows_to_split(
    path: Path, rows: Iterable[tuple[str, dict]], *, cell_parser=None, **column_args: Any
) -> RawSplit:
    split = RawSplit(str(path))
    columns: list[str] = []
    text = first = ""
    label: str | None = None
    documents = DocumentNumbers(str(path))
    for where, row in rows:
        if not isinstance(row, dict):
            raise DataError(f"{path}: {where} is not an object with named columns: {row!r:.80}.")
        document = documents.number(row, where)
        row = {k: v for k, v in row.items() if k != DOCUMENT_COLUMN}
        if not columns:
            columns, first = list(row), where
            text, label = choose_columns(columns, str(path), **column_args)
            if label is None:
                reason = untagged_reason(columns, text, column_args.get("label_column_name"))
                split.untagged_reason = f"{first} has {reason}"
        elif label is None and list(row) != columns:
            # Untagged so far: a row with a tag column would make the file partly tagged.
            _, row_label = choose_columns(list(row), str(path), **column_args)
            if row_label is not None:
                raise DataError(
                    f"{path}: {where} has tags (column {row_label!r}) but {first} has none. "
                    "Tag every row, or (in a test file for prediction only) none."
                )
        values: list[list[str] | None] = []
        for column in (text, label):
            if column is None:
                values.append(None)
                continue
            if column not in row:
                hint = " (only a test file may come without tags, and then in no row)"
                raise DataError(
                    f"{path}: {where} has no column {column!r} but {first} has. Fix that row"
                    f"{hint if column == label else ''}."
                )
            value = row[column]
            if cell_parser is not None:
                value = cell_parser(value)
            values.append(_as_strings(value, path, where, column))
        tokens, tags = values
        if where == first and label is not None:
            log_columns(
                str(path),
                text,
                label,
                label_column_name=column_args.get("label_column_name"),
                task_name=column_args.get("task_name", "ner"),
                where=where,
                tokens=tokens or [],
                tags=tags,
            )
        split.add(tokens, None if _all_unlabelled(tags) else tags, where, document=document)
    if not columns:
        raise DataError(f"{path} holds no rows. Give a file with at least one sentence.")
    return split


class DocumentNumbers:
    """Numbers the documents of a source with a ``document_id`` column: 0, 1, ... in row order,
    a new number wherever the value changes. The first row decides whether the source has the
    column; then every row must have it."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.present: bool | None = None
        self.first = ""
        self.value: Any = None
        self.current = -1

    def number(self, row: dict, where: str) -> int | None:
        """The document number of ``row`` (None when the source has no document column)."""
        if self.present is None:
            self.present, self.first = DOCUMENT_COLUMN in row, where
        if not self.present:
            return None
        if DOCUMENT_COLUMN not in row:
            raise DataError(
                f"{self.source}: {where} has no column {DOCUMENT_COLUMN!r} but {self.first} has. "
                f"Give every row its document (or drop the {DOCUMENT_COLUMN!r} column)."
            )
        value = row[DOCUMENT_COLUMN]
        if self.current < 0 or value != self.value:
            self.current, self.value = self.current + 1, value
        return self.current


def _all_unlabelled(tags: list[str] | None) -> bool:
    """No tags, or (the ``datasets`` convention for "no label") all -1."""
    return tags is None or (bool(tags) and all(tag == NO_LABEL for tag in tags))


def _json_rows(path: Path, text: str) -> Iterable[tuple[str, dict]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None  # not one JSON document: JSON Lines
    if isinstance(data, list):
        return ((f"row {i + 1}", row) for i, row in enumerate(data))
    if isinstance(data, dict):
        values = list(data.values())
        # Columns hold one list per row; a single row holds one list per column.
        columnar = all(isinstance(v, list) for v in values)
        if columnar and any(v and isinstance(v[0], list) for v in values):
            n = len(values[0])
            if any(len(v) != n for v in values):
                raise DataError(f"{path}: the columns have different lengths; give one per row.")
            return ((f"row {i + 1}", {k: v[i] for k, v in data.items()}) for i in range(n))
        return [("line 1", data)]
    return _jsonl_rows(path, text)


def _jsonl_rows(path: Path, text: str) -> Iterable[tuple[str, dict]]:
    for lineno, line in enumerate(lines_of(text), 1):
        if not line.strip():
            continue
        try:
            yield f"line {lineno}", json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{path}: line {lineno} is not valid JSON ({exc.msg}, column {exc.colno}). "
                "JSON Lines files need one complete JSON object per line."
            ) from None


def read_json(path: str | Path, **column_args: Any) -> RawSplit:
    """Reads ``.json`` / ``.jsonl``; ``column_args`` go to :func:`choose_columns`."""
    path = Path(path)
    text = read_text(path)
    rows = _jsonl_rows(path, text) if path.suffix == ".jsonl" else _json_rows(path, text)
    return _rows_to_split(path, rows, **column_args)


def _parse_cell(cell: Any) -> Any:
    if not isinstance(cell, str):
        return cell  # None: a short row; _as_strings reports it
    stripped = cell.strip()
    if stripped.startswith("["):
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, list):
            return value
    return stripped.split()


def read_csv(path: str | Path, **column_args: Any) -> RawSplit:
    """Reads a ``.csv`` with a header; cells are JSON lists or space-separated items."""
    path = Path(path)
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    rows = ((f"line {reader.line_num}", row) for row in reader)
    return _rows_to_split(path, rows, cell_parser=_parse_cell, **column_args)
