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

from flaxtrainer.data.errors import DataError

logger = logging.getLogger(__name__)


@dataclass
class RawSplit:
    """Sentences of one split as read from the source, before labels become ids."""

    source: str
    tokens: list[list[str]] = field(default_factory=list)
    tags: list[list[str]] = field(default_factory=list)
    where: list[str] = field(default_factory=list)
    # The source's own label order (a hub ClassLabel), or None when labels are plain strings.
    label_names: list[str] | None = None
    # Line number of every token, for line-per-token formats (CoNLL, CoNLL-U).
    token_lines: list[list[int]] | None = None

    def add(
        self, tokens: list[str], tags: list[str], where: str, lines: list[int] | None = None
    ) -> None:
        self.tokens.append(tokens)
        self.tags.append(tags)
        self.where.append(where)
        if lines is not None:
            self.token_lines = self.token_lines if self.token_lines is not None else []
            self.token_lines.append(lines)

    def locate(self, sentence: int, word: int) -> str:
        """Where word ``word`` of sentence ``sentence`` is: its line, or sentence and word."""
        if self.token_lines is not None:
            return f"line {self.token_lines[sentence][word]}"
        return f"{self.where[sentence]}, word {word + 1}"

    def __len__(self) -> int:
        return len(self.tokens)

    def validated(self) -> RawSplit:
        """Checks token/tag lengths, drops empty sentences (counted in the log)."""
        kept = RawSplit(self.source, label_names=self.label_names)
        empty = 0
        lines = self.token_lines or [None] * len(self.tokens)
        for tokens, tags, where, token_lines in zip(self.tokens, self.tags, self.where, lines):
            if len(tokens) != len(tags):
                raise DataError(
                    f"{self.source}: {where} has {len(tokens)} tokens but {len(tags)} tags. "
                    "Every token needs exactly one tag: fix that sentence or remove it."
                )
            if not tokens:
                empty += 1
                continue
            kept.add(tokens, tags, where, token_lines)
        if empty:
            logger.warning("%s: skipped %d empty sentence(s).", self.source, empty)
        if not kept.tokens:
            raise DataError(
                f"{self.source} holds no sentences. Check that it is the right file and format "
                "(CoNLL: one token per line, a blank line between sentences)."
            )
        return kept


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
) -> tuple[str, str]:
    """run_flax_ner.py's rule: text `tokens` else the first column; labels `{task}_tags` else
    the second; explicit names win."""
    text = text_column_name or ("tokens" if "tokens" in columns else columns[0])
    label = label_column_name or (
        f"{task_name}_tags" if f"{task_name}_tags" in columns else columns[min(1, len(columns) - 1)]
    )
    for name, flag in ((text, "--text_column_name"), (label, "--label_column_name")):
        if name not in columns:
            raise DataError(f"{source} has no column {name!r} (columns: {columns}). Set {flag}.")
    if text == label:
        raise DataError(
            f"{source}: tokens and tags would both come from column {text!r} (columns: "
            f"{columns}). Set --text_column_name and --label_column_name."
        )
    return text, label
