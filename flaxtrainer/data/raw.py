"""The readers' common intermediate form and the checks every source goes through.

Each reader turns one file (or one hub split) into a :class:`RawSplit`: word lists, tag strings
and, for every sentence, where it came from ("line 12", "row 3") so that later checks can name
the exact spot of a problem.
"""

from __future__ import annotations

import codecs
import logging
from dataclasses import dataclass, field
from pathlib import Path

from flaxtrainer.errors import DataError

logger = logging.getLogger(__name__)

#: Optional column of a split whose source marks documents: each sentence's document, numbered
#: 0, 1, ... in file order (a new number wherever the document changes).
DOCUMENT_COLUMN = "document_id"


@dataclass
class RawSplit:
    """Sentences of one split as read from the source, before labels become ids.

    A sentence's tags are None when the source gives it none. After :meth:`validated`, either
    every sentence has tags or none has (an untagged split: a test file to predict).
    """

    source: str
    tokens: list[list[str]] = field(default_factory=list)
    tags: list[list[str] | None] = field(default_factory=list)
    where: list[str] = field(default_factory=list)
    # The source's own label order (a hub ClassLabel), or None when labels are plain strings.
    label_names: list[str] | None = None
    # Line number of every token, for line-per-token formats (CoNLL, CoNLL-U).
    token_lines: list[list[int]] | None = None
    # What the reader saw when the source has no tags at all ("no tag column"), for messages.
    untagged_reason: str | None = None
    # Each sentence's document, where the source marks documents (see DOCUMENT_COLUMN).
    documents: list[int] | None = None

    def add(
        self,
        tokens: list[str],
        tags: list[str] | None,
        where: str,
        lines: list[int] | None = None,
        document: int | None = None,
    ) -> None:
        self.tokens.append(tokens)
        self.tags.append(tags)
        self.where.append(where)
        if lines is not None:
            self.token_lines = self.token_lines if self.token_lines is not None else []
            self.token_lines.append(lines)
        if document is not None or self.documents is not None:
            # Sentences before the source's first document mark form a document of their own.
            if self.documents is None:
                self.documents = [-1] * (len(self.tokens) - 1)
            self.documents.append(-1 if document is None else document)

    @property
    def labelled(self) -> bool:
        """Whether every sentence has tags (for a validated split: whether the split has any)."""
        return all(tags is not None for tags in self.tags)

    def locate(self, sentence: int, word: int) -> str:
        """Where word ``word`` of sentence ``sentence`` is: its line, or sentence and word."""
        if self.token_lines is not None:
            return f"line {self.token_lines[sentence][word]}"
        return f"{self.where[sentence]}, word {word + 1}"

    def __len__(self) -> int:
        return len(self.tokens)

    def validated(self, *, labels_optional: bool = False) -> RawSplit:
        """Checks token/tag lengths and that the split is tagged throughout (or, where
        ``labels_optional``, untagged throughout); drops empty sentences (counted in the log)."""
        self._check_tagging(labels_optional)
        kept = RawSplit(
            self.source, label_names=self.label_names, untagged_reason=self.untagged_reason
        )
        empty: list[str] = []
        lines = self.token_lines or [None] * len(self.tokens)
        documents = self.documents or [None] * len(self.tokens)
        for tokens, tags, where, token_lines, document in zip(
            self.tokens, self.tags, self.where, lines, documents
        ):
            if tags is not None and len(tokens) != len(tags):
                raise DataError(
                    f"{self.source}: {where} has {len(tokens)} tokens but {len(tags)} tags. "
                    "Every token needs exactly one tag: fix that sentence or remove it."
                )
            if not tokens:
                empty.append(where)
                continue
            kept.add(tokens, tags, where, token_lines, document)
        if empty:
            logger.warning(
                "%s: skipped %d empty sentence(s) (no tokens; first: %s).",
                self.source,
                len(empty),
                empty[0],
            )
        if not kept.tokens:
            raise DataError(
                f"{self.source} holds no sentences. Check that it is the right file and format "
                "(CoNLL: one token per line, a blank line between sentences)."
            )
        if not kept.labelled:
            logger.info("%s has no tags (%s): predictions only.", self.source, self.reason)
        return kept

    @property
    def reason(self) -> str:
        """Why the split has no tags, for messages."""
        return self.untagged_reason or "no sentence has tags"

    def _check_tagging(self, labels_optional: bool) -> None:
        # Empty sentences (dropped later) count as neither.
        untagged = {i: tags is None for i, tags in enumerate(self.tags) if self.tokens[i]}
        if not any(untagged.values()):
            return
        if not all(untagged.values()):
            first = next(iter(untagged))
            i = next(i for i, none in untagged.items() if none != untagged[first])
            has, other = ("no tags", "tags") if untagged[i] else ("tags", "none")
            raise DataError(
                f"{self.source}: {self.where[i]} has {has} but {self.where[first]} has {other}. "
                "Tag every sentence, or (in a test file for prediction only) none."
            )
        if not labels_optional:
            raise DataError(
                f"{self.source} has no tags: {self.reason}. Training and evaluation data need a "
                "tag for every token; only the test split may come without tags (to predict)."
            )


def read_text(path: str | Path) -> str:
    """Reads a UTF-8 text file; a missing, empty or non-UTF-8 file is a DataError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found. Check the path.") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a directory; give the path of a data file.") from None
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{path}: line {line} is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset "
            f"{exc.start}). Re-encode the file as UTF-8, e.g. "
            f"`iconv -f latin1 -t utf-8 {path.name} > {path.stem}.utf8{path.suffix}`."
        ) from None
    if not text.strip():
        raise DataError(f"{path} is empty. Give a file with at least one sentence.")
    return text


def lines_of(text: str) -> list[str]:
    """Splits on '\\n' only: str.splitlines would also break inside tokens at U+2028, U+0085."""
    return [line.rstrip("\r") for line in text.split("\n")]


def choose_columns(
    columns: list[str],
    source: str,
    *,
    text_column_name: str | None,
    label_column_name: str | None,
    task_name: str,
) -> tuple[str, str | None]:
    """run_flax_ner.py's rule: text `tokens` else the first column; labels `{task}_tags` else
    the second; explicit names win.

    The label column is None when the source has none: an explicitly named one it lacks, or no
    column besides the text one (see :func:`untagged_reason`).
    """
    text = text_column_name or ("tokens" if "tokens" in columns else columns[0])
    if text not in columns:
        raise DataError(
            f"{source} has no column {text!r} (columns: {columns}). Set --text_column_name."
        )
    if label_column_name:
        if label_column_name == text:
            raise DataError(
                f"{source}: tokens and tags would both come from column {text!r} (columns: "
                f"{columns}). Set --text_column_name and --label_column_name."
            )
        return text, label_column_name if label_column_name in columns else None
    label = (
        f"{task_name}_tags" if f"{task_name}_tags" in columns else columns[min(1, len(columns) - 1)]
    )
    return text, None if label == text else label


def log_columns(
    source: str,
    text: str,
    label: str,
    *,
    label_column_name: str | None,
    task_name: str,
    where: str,
    tokens: list[str],
    tags: list[str] | None,
) -> None:
    """Logs (once per file or split) which named columns :func:`choose_columns` took, with the
    first row's values as an example."""
    if label_column_name:
        why = "label_column_name"
    elif label == f"{task_name}_tags":
        why = f"task {task_name!r}"
    else:
        why = "the second column"

    def head(items: list[str] | None) -> str:
        items = items or []
        return repr(items[:6])[:-1] + (", ...]" if len(items) > 6 else "]")

    logger.info(
        "%s: tags from column %r (%s), tokens from column %r; e.g. %s: tokens %s -> tags %s",
        source,
        label,
        why,
        text,
        where,
        head(tokens),
        head(tags),
    )


def untagged_reason(columns: list[str], text: str, label_column_name: str | None) -> str:
    """Why :func:`choose_columns` found no label column, and what to set if there is one."""
    if label_column_name:
        return f"no column {label_column_name!r} (columns: {columns}); check --label_column_name"
    return (
        f"no tag column besides the token column {text!r} (columns: {columns}); if one of them "
        "holds the tags, set --label_column_name"
    )
