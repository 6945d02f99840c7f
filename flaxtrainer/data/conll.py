"""CoNLL column files (``.conll``, ``.txt``, ``.iob``, ``.bio``) and CoNLL-U (``.conllu``).

CoNLL: one token per line, the token in the first column and tags in the others, a blank line
between sentences, ``-DOCSTART-`` lines skipped. A file whose first data line holds a tab is
split on tabs (tokens may then contain spaces); otherwise on runs of spaces. Every line must have
as many columns as the file's first data line; a file of one column (tokens only) has no tags.

CoNLL-U: a file whose chosen tag column (UPOS or XPOS) is ``_`` for every token has no tags.
"""

from __future__ import annotations

import re
from pathlib import Path

from flaxtrainer.data.errors import DataError
from flaxtrainer.data.raw import RawSplit, lines_of, read_text

DOCSTART = "-DOCSTART-"
_SPACES = re.compile(r" +")

# CoNLL-2003 (token, POS, chunk, NER): the column each task reads when no column is given.
_CONLL2003_COLUMNS = {"pos": 1, "chunk": 2}

CONLLU_COLUMNS = ("ID", "FORM", "LEMMA", "UPOS", "XPOS", "FEATS", "HEAD", "DEPREL", "DEPS", "MISC")
_CONLLU_TAG_COLUMN = {"upos": 3, "xpos": 4}
NO_VALUE = "_"  # CoNLL-U's "unspecified"


def _columns(n: int) -> str:
    return f"{n} column" if n == 1 else f"{n} columns"


def _label_column(path: Path, ncols: int, lineno: int, label_column: int | None, task: str) -> int:
    if label_column is None:
        if ncols == 4 and task in _CONLL2003_COLUMNS:
            return _CONLL2003_COLUMNS[task]
        return ncols - 1
    column = label_column + ncols if label_column < 0 else label_column
    if not 1 <= column < ncols:
        raise DataError(
            f"{path}: label column {label_column} does not exist: line {lineno} has {ncols} "
            f"columns (0 is the token). Choose a column from 1 to {ncols - 1}, or -1 for the last."
        )
    return column


def read_conll(
    path: str | Path, *, label_column: int | None = None, task_name: str = "ner"
) -> RawSplit:
    """Reads a CoNLL column file.

    ``label_column`` is the 0-based column of the tags (negative counts from the end); by
    default the last one, except that ``task_name`` "pos"/"chunk" on a 4-column file
    (CoNLL-2003) reads column 1/2. A file of one column (tokens only) gives untagged sentences.
    """
    path = Path(path)
    split = RawSplit(str(path))
    sep: str | None = None
    ncols = column = first_line = 0
    tokens: list[str] = []
    tags: list[str] = []
    lines: list[int] = []

    def flush() -> None:
        nonlocal tokens, tags, lines
        if tokens:
            split.add(tokens, tags if column else None, f"sentence at line {lines[0]}", lines)
            tokens, tags, lines = [], [], []

    for lineno, line in enumerate(lines_of(read_text(path)), 1):
        line = line.rstrip(" \t")
        if not line.strip():
            flush()
            continue
        if line.split(maxsplit=1)[0] == DOCSTART:
            flush()
            continue
        if sep is None:
            sep = "\t" if "\t" in line else " "
            first_line = lineno
        fields = line.split("\t") if sep == "\t" else _SPACES.split(line.lstrip(" "))
        if not ncols:
            ncols = len(fields)
            if ncols > 1:
                column = _label_column(path, ncols, lineno, label_column, task_name)
            else:
                split.untagged_reason = "every line holds a single column, the token"
        elif len(fields) != ncols:
            hint = (
                "a missing tag? Tag every line, or (in a test file for prediction only) none"
                if len(fields) < ncols
                else "a token with a space in a space-separated file? separate columns with tabs"
            )
            raise DataError(
                f"{path}: line {lineno} has {_columns(len(fields))} but the file's first line "
                f"(line {first_line}) has {ncols}. Fix that line ({hint}) or remove it."
            )
        tokens.append(fields[0].strip(" "))
        if column:
            tags.append(fields[column].strip(" "))
        lines.append(lineno)
    flush()
    return split


def read_conllu(path: str | Path, *, tag: str = "upos") -> RawSplit:
    """Reads a CoNLL-U file: FORM and UPOS (``tag="upos"``) or XPOS (``tag="xpos"``).

    Comment lines, multi-word token ranges (``1-2``) and empty nodes (``1.1``) are skipped. A tag
    of ``_`` (no value) on every token gives untagged sentences; on only some, it is an error.
    """
    if tag not in _CONLLU_TAG_COLUMN:
        raise ValueError(f"conllu_tag must be 'upos' or 'xpos', got {tag!r}.")
    column = _CONLLU_TAG_COLUMN[tag]
    path = Path(path)
    split = RawSplit(str(path))
    tokens: list[str] = []
    tags: list[str] = []
    lines: list[int] = []
    start = 0
    in_sentence = False
    first: tuple[int, str] | None = None  # line and tag of the file's first token

    def flush() -> None:
        nonlocal tokens, tags, lines, in_sentence
        if in_sentence:
            untagged = first is not None and first[1] == NO_VALUE
            split.add(tokens, None if untagged else tags, f"sentence at line {start}", lines)
        tokens, tags, lines, in_sentence = [], [], [], False

    for lineno, line in enumerate(lines_of(read_text(path)), 1):
        if not line.strip():
            flush()
            continue
        if not in_sentence:
            in_sentence, start = True, lineno
        if line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != len(CONLLU_COLUMNS):
            raise DataError(
                f"{path}: line {lineno} has {len(fields)} tab-separated columns; CoNLL-U needs "
                f"{len(CONLLU_COLUMNS)} ({' '.join(CONLLU_COLUMNS)}). Fix or remove that line."
            )
        if "-" in fields[0] or "." in fields[0]:
            continue
        if first is None:
            first = (lineno, fields[column])
        elif (fields[column] == NO_VALUE) != (first[1] == NO_VALUE):
            raise DataError(
                f"{path}: line {lineno} has {tag.upper()} {fields[column]!r} but line {first[0]} "
                f"has {first[1]!r} ({NO_VALUE!r} is no tag). Tag every token, or (in a test file "
                "for prediction only) none."
            )
        tokens.append(fields[1])
        tags.append(fields[column])
        lines.append(lineno)
    flush()
    if first is not None and first[1] == NO_VALUE:
        split.untagged_reason = f"every token's {tag.upper()} is {NO_VALUE!r}"
    return split
