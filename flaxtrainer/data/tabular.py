"""JSON, JSON Lines and CSV files: one sentence per row, a token column and a tag column.

- ``.jsonl``: one JSON object per line.
- ``.json``: a JSON array of objects, an object of columns (``{"tokens": [[...], ...], ...}``),
  or, as Hugging Face's examples write them, JSON Lines.
- ``.csv`` (with a header row): each cell holds either a JSON list (``["EU", "rejects"]``,
  for tokens that contain spaces) or space-separated items (``EU rejects German``).
  A cell that starts with ``[`` and parses as a JSON list is read as one; any other cell is
  split on whitespace.

Column choice follows run_flax_ner.py (see :func:`~flaxtrainer.data.raw.choose_columns`).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flaxtrainer.data.errors import DataError
from flaxtrainer.data.raw import RawSplit, choose_columns, lines_of, read_text


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
    text = label = ""
    for where, row in rows:
        if not isinstance(row, dict):
            raise DataError(f"{path}: {where} is not an object with named columns: {row!r:.80}.")
        if not text:
            text, label = choose_columns(list(row), str(path), **column_args)
        values = []
        for column in (text, label):
            if column not in row:
                raise DataError(f"{path}: {where} has no column {column!r}. Fix that row.")
            value = row[column]
            if cell_parser is not None:
                value = cell_parser(value)
            values.append(_as_strings(value, path, where, column))
        split.add(values[0], values[1], where)
    if not text:
        raise DataError(f"{path} holds no rows. Give a file with at least one sentence.")
    return split


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
