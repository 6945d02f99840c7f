"""CoNLL column files (``.conll``, ``.txt``, ``.iob``, ``.bio``) and CoNLL-U (``.conllu``).

CoNLL: one token per line, the token in the first column and tags in the others (which column
:func:`read_conll` reads depends on the task and the number of columns), a blank line
between sentences, ``-DOCSTART-`` lines skipped (each starts a document: the sentences then
carry document ids, see :data:`~flaxtrainer.data.raw.DOCUMENT_COLUMN`). A file whose first data
line holds a tab is split on tabs (tokens may then contain spaces); otherwise on runs of
spaces. Every line must have as many columns as the file's first data line; a file of one
column (tokens only) has no tags.

CoNLL-U: a file whose chosen tag column (UPOS or XPOS) is ``_`` for every token has no tags;
``# newdoc`` comments start documents, as ``-DOCSTART-`` does in CoNLL.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from flaxtrainer.data.raw import RawSplit, lines_of, read_text
from flaxtrainer.errors import DataError

logger = logging.getLogger(__name__)

DOCSTART = "-DOCSTART-"
NEWDOC = "# newdoc"  # CoNLL-U: "# newdoc" or "# newdoc id = ..." starts a document
_SPACES = re.compile(r" +")

# CoNLL-2003 (token, POS, chunk, NER): the column each task reads when no column is given.
_CONLL2003_COLUMNS = {"pos": 1, "chunk": 2}
# Phrase types of syntactic chunks (CoNLL-2000): a 3-column file whose last column holds only
# these is word/POS/chunk; otherwise (word/POS/NER) it has no chunk column.
CHUNK_TYPES = frozenset(
    {"NP", "VP", "PP", "ADJP", "ADVP", "SBAR", "PRT", "CONJP", "INTJ", "LST", "UCP"}
)
_CHUNK_PREFIX = re.compile(r"^[BIELSU]-")

CONLLU_COLUMNS = ("ID", "FORM", "LEMMA", "UPOS", "XPOS", "FEATS", "HEAD", "DEPREL", "DEPS", "MISC")
_CONLLU_TAG_COLUMN = {"upos": 3, "xpos": 4}
NO_VALUE = "_"  # CoNLL-U's "unspecified"


def _columns(n: int) -> str:
    return f"{n} column" if n == 1 else f"{n} columns"


def _index(path: Path, what: str, value: int, ncols: int, lineno: int) -> int:
    """A 0-based column index (negative counts from the end) checked against ``ncols``."""
    column = value + ncols if value < 0 else value
    if not 0 <= column < ncols:
        raise DataError(
            f"{path}: {what} {value} does not exist: line {lineno} has {_columns(ncols)} "
            f"(0-based: 0 to {ncols - 1}, or -1 for the last)."
        )
    return column


def _looks_like_chunks(tags: list[str]) -> bool:
    types = {_CHUNK_PREFIX.sub("", tag) for tag in tags if tag != "O"}
    return bool(types) and types <= CHUNK_TYPES


def _choose_columns(
    path: Path,
    rows: list[tuple[int, list[str]]],
    label_column: int | None,
    token_column: int,
    task: str,
) -> tuple[int, int | None, str]:
    """(token column, tag column or None for a 1-column file, why that tag column)."""
    lineno, first = rows[0]
    ncols = len(first)
    token = _index(path, "token column", token_column, ncols, lineno)
    if ncols == 1:
        return token, None, ""
    if label_column is not None:
        label = _index(path, "label column", label_column, ncols, lineno)
        if label == token:
            raise DataError(
                f"{path}: label column {label_column} is the token column ({token}). Give "
                "different columns for tokens (--token_column) and tags (--label_column)."
            )
        return token, label, f"label_column={label_column}"
    if token == 0 and task in _CONLL2003_COLUMNS and ncols in (3, 4):
        if ncols == 4:
            names = ("POS", "chunk")[_CONLL2003_COLUMNS[task] - 1]
            return 0, _CONLL2003_COLUMNS[task], f"{names}, as in CoNLL-2003: word POS chunk NER"
        if task == "pos":
            return 0, 1, "POS, as in word POS NER / word POS chunk files"
        last = [fields[2] for _, fields in rows]
        if _looks_like_chunks(last):
            return 0, 2, "chunk, as in CoNLL-2000: word POS chunk"
        example = next((tag for tag in last if tag != "O"), "O")
        raise DataError(
            f"{path} has 3 columns (line {lineno}: {' '.join(first)!r}), which reads as word "
            f"POS NER: its last column holds tags such as {example!r}, not chunk phrases "
            "(NP, VP, PP, ...), so --task_name chunk finds no chunk "
            "column. Give the tag column with --label_column N (label_column=N), or use "
            "--task_name ner / pos."
        )
    label = ncols - 1
    if label == token:
        if ncols != 2:
            raise DataError(
                f"{path}: the tokens are in the last column ({token}), where the tags are by "
                "default. Give the tag column with --label_column N (label_column=N)."
            )
        label = 0
        return token, label, "the column besides the tokens"
    return token, label, "the last"


def read_conll(
    path: str | Path,
    *,
    label_column: int | None = None,
    token_column: int = 0,
    task_name: str = "ner",
) -> RawSplit:
    """Reads a CoNLL column file.

    ``label_column`` / ``token_column`` are 0-based columns (negative counts from the end) of
    the tags and words. By default the words are column 0 and the tags the last column, except
    that ``task_name`` "pos" reads column 1 of a 3- or 4-column file (CoNLL-2003 exports: word
    POS [chunk] NER), and "chunk" column 2 of a 4-column file or of a 3-column word/POS/chunk
    (CoNLL-2000) file; a 3-column file whose last column is not chunk tags has no chunk column
    (a DataError). The columns used are logged once, with an example line. A file of one column
    (tokens only) gives untagged sentences.
    """
    path = Path(path)
    split = RawSplit(str(path))
    sep: str | None = None
    first_line = ncols = 0
    rows: list[tuple[int, list[str]] | None] = []  # None: a sentence boundary
    raw_lines: dict[int, str] = {}
    docstarts: set[int] = set()  # indices in rows of the -DOCSTART- lines

    for lineno, line in enumerate(lines_of(read_text(path)), 1):
        line = line.rstrip(" \t")
        if not line.strip() or line.split(maxsplit=1)[0] == DOCSTART:
            if line.strip():
                docstarts.add(len(rows))
            rows.append(None)
            continue
        if sep is None:
            sep = "\t" if "\t" in line else " "
            first_line = lineno
            raw_lines[lineno] = line
        fields = line.split("\t") if sep == "\t" else _SPACES.split(line.lstrip(" "))
        fields = [field.strip(" ") for field in fields]
        if not ncols:
            ncols = len(fields)
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
        rows.append((lineno, fields))

    data = [r for r in rows if r is not None]
    if not data:
        return split  # only -DOCSTART- lines: validated() reports an empty file
    token, column, why = _choose_columns(path, data, label_column, token_column, task_name)
    example_line, example = data[0]
    if column is None:
        split.untagged_reason = "every line holds a single column, the token"
    else:
        logger.info(
            "%s: tags from column %d (%s), tokens from column %d; e.g. line %d: %r -> token %r, "
            "tag %r",
            path,
            column,
            why,
            token,
            example_line,
            raw_lines[example_line],
            example[token],
            example[column],
        )

    tokens: list[str] = []
    tags: list[str] = []
    lines: list[int] = []
    document = 0 if docstarts else None
    for index, row in enumerate([*rows, None]):
        if row is None:
            if tokens:
                where = f"sentence at line {lines[0]}"
                split.add(tokens, tags if column is not None else None, where, lines, document)
                tokens, tags, lines = [], [], []
            if index in docstarts:
                document += 1  # loader.build_dataset_dict renumbers documents 0, 1, ...
            continue
        lineno, fields = row
        tokens.append(fields[token])
        if column is not None:
            tags.append(fields[column])
        lines.append(lineno)
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
    example = ("", "")  # that line and its FORM
    document: int | None = None  # None until a "# newdoc" comment

    def flush() -> None:
        nonlocal tokens, tags, lines, in_sentence
        if in_sentence:
            untagged = first is not None and first[1] == NO_VALUE
            where = f"sentence at line {start}"
            split.add(tokens, None if untagged else tags, where, lines, document)
        tokens, tags, lines, in_sentence = [], [], [], False

    for lineno, line in enumerate(lines_of(read_text(path)), 1):
        if not line.strip():
            flush()
            continue
        if not in_sentence:
            in_sentence, start = True, lineno
        if line.startswith("#"):
            if line.startswith(NEWDOC) and line[len(NEWDOC) :][:1] in ("", " ", "\t", "="):
                document = 0 if document is None else document + 1
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
            example = (line, fields[1])
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
    elif first is not None:
        logger.info(
            "%s: tags from column %d, %s (conllu_tag=%r), tokens from column 1, FORM; e.g. "
            "line %d: %r -> token %r, tag %r",
            path,
            column,
            tag.upper(),
            tag,
            first[0],
            example[0],
            example[1],
            first[1],
        )
    return split
