"""Document context for token classification (FLERT: Schweter & Akbik, 2020).

With ``context_size`` N > 0, each sentence goes into the model with up to N subword tokens of
the sentences around it in its document: the last ``ceil(N/2)`` tokens of the preceding
sentences on the left and the first ``floor(N/2)`` tokens of the following sentences on the
right, concatenated with the sentence between its special tokens
(``[CLS] left sentence right [SEP]``). Context tokens take no loss (label -100), own no word
and give no prediction, so training and predictions stay per word of the sentence itself.

Rules:

- Context never crosses a document boundary: documents are the data's ``document_id`` column
  (CoNLL ``-DOCSTART-``, CoNLL-U ``# newdoc``, or the column in JSON/CSV/hub data; see
  :func:`flaxtrainer.data.load_token_classification_data`). Data without one is read as one
  document (the neighbouring sentences of the file), with one warning per task.
- Context is cut at word boundaries: it never starts or ends inside a word.
- The sentence comes first: context only fills the room that the sentence leaves below
  ``max_seq_length``, shared between the sides (the right side gets at most half of the room,
  the left side the rest). A sentence split into windows gets left context in its first window
  and right context in its last one, where room remains.
- In a multi-process run each process prepares a contiguous shard of the data, so the first
  and last sentence of a shard see no context from the other shards.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flaxtrainer.data.raw import DOCUMENT_COLUMN

logger = logging.getLogger(__name__)

_NO_TOKENS = np.zeros(0, np.int32)
_NO_CUTS = np.zeros(1, np.int64)  # only "keep nothing"


@dataclass(frozen=True)
class Context:
    """The context tokens available to one sentence, before fitting them into a row.

    ``left`` holds token ids of the preceding sentences (nearest last), ``right`` of the
    following ones (nearest first). ``left_cuts`` / ``right_cuts`` are the ascending token
    counts that can be kept (from the sentence's side) without cutting a word; both hold 0.
    """

    left: np.ndarray = field(default_factory=lambda: _NO_TOKENS)
    right: np.ndarray = field(default_factory=lambda: _NO_TOKENS)
    left_cuts: np.ndarray = field(default_factory=lambda: _NO_CUTS)
    right_cuts: np.ndarray = field(default_factory=lambda: _NO_CUTS)

    def fit(
        self, room: int, *, left: bool = True, right: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """(left tokens, right tokens) that fit in ``room`` tokens: the right side takes at most
        half the room (all it has if less), the left side the rest, then the right side any room
        the left one leaves. ``left`` / ``right`` False leave that side out (a window of a long
        sentence that is not its first / last)."""
        room = max(room, 0)
        left_cuts = self.left_cuts if left else _NO_CUTS
        right_cuts = self.right_cuts if right else _NO_CUTS
        n_left = _largest_at_most(left_cuts, room - _largest_at_most(right_cuts, room // 2))
        n_right = _largest_at_most(right_cuts, room - n_left)
        return self.left[len(self.left) - n_left :], self.right[:n_right]


def _largest_at_most(cuts: np.ndarray, limit: int) -> int:
    """The largest of the ascending ``cuts`` that is <= ``limit`` (cuts[0] is 0)."""
    return int(cuts[np.searchsorted(cuts, limit, side="right") - 1])


def sentence_tokens(encoding: Any) -> tuple[np.ndarray, np.ndarray]:
    """A tokenized sentence's content tokens (between its special tokens) and, per token,
    whether a word starts there (a word's first piece, or a token of no word)."""
    word_ids = np.array([-1 if w is None else w for w in encoding.word_ids], np.int64)
    content = np.flatnonzero(word_ids >= 0)
    if len(content) == 0:
        return _NO_TOKENS, np.zeros(0, bool)
    p0, p1 = int(content[0]), int(content[-1]) + 1
    words = word_ids[p0:p1]
    starts = np.ones(len(words), bool)
    starts[1:] = (words[1:] != words[:-1]) | (words[1:] < 0)
    return np.asarray(encoding.ids[p0:p1], np.int32), starts


def document_ids(dataset: Any) -> list[int] | None:
    """The ``document_id`` of every example, or None when the dataset has no such column
    (a ``datasets.Dataset``, a mapping of columns, or a sequence of row mappings)."""
    column_names = getattr(dataset, "column_names", None)
    if column_names is not None:
        return list(dataset[DOCUMENT_COLUMN]) if DOCUMENT_COLUMN in column_names else None
    if isinstance(dataset, Mapping):
        ids = dataset.get(DOCUMENT_COLUMN)
        return None if ids is None else list(ids)
    rows = list(dataset)
    if rows and all(isinstance(r, Mapping) and DOCUMENT_COLUMN in r for r in rows):
        return [r[DOCUMENT_COLUMN] for r in rows]
    return None


def document_bounds(ids: Sequence[Any] | None, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per sentence, the first and the end (exclusive) sentence index of its document: a
    document is a run of equal ids; no ids (None) make all ``n`` sentences one document."""
    if ids is None:
        return np.zeros(n, np.int64), np.full(n, n, np.int64)
    if len(ids) != n:
        raise ValueError(f"{len(ids)} {DOCUMENT_COLUMN} values for {n} sentences.")
    change = np.ones(n, bool)
    change[1:] = [a != b for a, b in zip(ids[1:], ids[:-1])]
    first = np.flatnonzero(change)
    ends = np.append(first[1:], n)
    which = np.cumsum(change) - 1
    return first[which], ends[which]


class DocumentContext:
    """Builds every sentence's :class:`Context` from its document's neighbouring sentences.

    Args:
        size: context tokens per sentence, both sides together (``--context_size``); the left
            side gets ``ceil(size / 2)``, the right side ``floor(size / 2)``.
    """

    def __init__(self, size: int) -> None:
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 0:
            raise ValueError(f"context_size must be an integer >= 0, got {size!r}.")
        self.size = int(size)
        self.left_size = (self.size + 1) // 2
        self.right_size = self.size // 2
        self._warned = False

    def contexts(self, dataset: Any, encodings: Sequence[Any]) -> list[Context]:
        """One :class:`Context` per example of ``dataset`` (tokenized as ``encodings``)."""
        ids = document_ids(dataset)
        if ids is None and not self._warned:
            self._warned = True
            logger.warning(
                "context_size=%d, but the data marks no document boundaries (no -DOCSTART- "
                "lines, '# newdoc' comments or %r column separating documents): each sentence "
                "gets its context from the neighbouring sentences of the file, which may belong "
                "to other documents.",
                self.size,
                DOCUMENT_COLUMN,
            )
        pieces = [sentence_tokens(encoding) for encoding in encodings]
        first, end = document_bounds(ids, len(pieces))
        return [self._context(pieces, i, int(first[i]), int(end[i])) for i in range(len(pieces))]

    def _context(
        self, pieces: list[tuple[np.ndarray, np.ndarray]], i: int, first: int, end: int
    ) -> Context:
        left_ids, left_starts = _gather(pieces, range(i - 1, first - 1, -1), self.left_size)
        right_ids, right_starts = _gather(pieces, range(i + 1, end), self.right_size + 1)
        if not len(left_ids) and not len(right_ids):
            return Context()
        # Left: keep k tokens when the kept part starts on a word start.
        n = len(left_ids)
        left_cuts = np.unique(np.append(n - np.flatnonzero(left_starts), 0))
        left_cuts = left_cuts[left_cuts <= self.left_size]
        # Right: keep k tokens when token k starts a word (or k is all there is).
        right_cuts = np.unique(np.append(np.flatnonzero(right_starts), len(right_ids)))
        right_cuts = right_cuts[right_cuts <= self.right_size]
        return Context(
            left=left_ids[n - int(left_cuts[-1]) :],
            right=right_ids[: int(right_cuts[-1])],
            left_cuts=left_cuts,
            right_cuts=right_cuts,
        )


def _gather(
    pieces: list[tuple[np.ndarray, np.ndarray]], order: range, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Tokens (and word starts) of the sentences in ``order``, nearest first, until at least
    ``size`` tokens; returned in text order."""
    taken: list[tuple[np.ndarray, np.ndarray]] = []
    count = 0
    for j in order:
        if count >= size:
            break
        taken.append(pieces[j])
        count += len(pieces[j][0])
    if order.step < 0:
        taken.reverse()
    if not taken:
        return _NO_TOKENS, np.zeros(0, bool)
    return np.concatenate([t for t, _ in taken]), np.concatenate([s for _, s in taken])
