"""Subword tokenization of pre-split words and word-label alignment, window by window.

A sentence is tokenized once with special tokens (one batched call of the fast tokenizer for
many sentences); its special-token prefix and suffix (``[CLS]``/``[SEP]``, ``<s>``/``</s>``)
are then put around each window of its content tokens, so any single-sequence template works.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from flaxtrainer.batching.batch_format import IGNORE_INDEX
from flaxtrainer.tasks.windows import plan_windows

if TYPE_CHECKING:
    from flaxtrainer.tasks.context import Context


def check_tokenizer(tokenizer: Any) -> None:
    """Fast tokenizers only; byte-level BPE must add a prefix space to pre-split words."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"{type(tokenizer).__name__} is not a fast (Rust) tokenizer; word alignment needs "
            "one. Load it with AutoTokenizer.from_pretrained(...) (fast by default)."
        )
    pre = tokenizer.backend_tokenizer.pre_tokenizer
    state = json.loads(pre.__getstate__()) if pre is not None else {}

    def byte_level_without_space(node) -> bool:
        if isinstance(node, dict):
            if node.get("type") == "ByteLevel" and not node.get("add_prefix_space", False):
                return True
            return any(byte_level_without_space(v) for v in node.values())
        if isinstance(node, list):
            return any(byte_level_without_space(v) for v in node)
        return False

    if byte_level_without_space(state):
        raise ValueError(
            f"{type(tokenizer).__name__} is a byte-level BPE tokenizer (RoBERTa/GPT-2 style) "
            "without add_prefix_space: pre-split words would be encoded as if each started the "
            "text, not as the model saw them in pre-training. Load it with "
            "AutoTokenizer.from_pretrained(name, add_prefix_space=True)."
        )


def encode_words(
    tokenizer: Any, sentences: Sequence[Sequence[str]], batch_size: int = 1024
) -> list:
    """Tokenizes pre-split sentences with special tokens, no truncation, no padding.

    Calls the Rust tokenizer's ``encode_batch`` directly (as the Hugging Face wrapper does
    inside), skipping the wrapper's conversion of every encoding to Python lists; returns the
    ``tokenizers.Encoding`` (ids, type_ids, word_ids) of each sentence.
    """
    backend = tokenizer.backend_tokenizer
    truncation, padding = backend.truncation, backend.padding
    backend.no_truncation()
    backend.no_padding()
    # As the wrapper does on each call: honour its split_special_tokens setting.
    backend.encode_special_tokens = bool(getattr(tokenizer, "split_special_tokens", False))
    try:
        encodings = []
        for i in range(0, len(sentences), batch_size):
            batch = [list(words) for words in sentences[i : i + batch_size]]
            encodings.extend(
                backend.encode_batch(batch, is_pretokenized=True, add_special_tokens=True)
            )
        return encodings
    finally:
        if truncation is not None:
            backend.enable_truncation(**truncation)
        if padding is not None:
            backend.enable_padding(**padding)


@dataclass
class AlignStats:
    """Counts reported once per ``prepare`` call (:meth:`report`)."""

    clipped_words: int = 0
    untokenized_words: int = 0
    windowed_sentences: int = 0
    example: str = ""
    context_tokens: int = 0  # document context put into the rows (see tasks.context)

    def report(
        self,
        logger: logging.Logger,
        features: Sequence[dict],
        sentences: int,
        *,
        max_seq_length: int,
        fallback_label: str,
        context_size: int = 0,
        where: str = "",
    ) -> None:
        """Logs, for a dataset of ``sentences`` (named ``where``, if known) turned into
        ``features``: the document context's cost (with ``context_size``), the sentences split
        into windows, the words clipped, the words that gave no token."""
        # The dataset's name goes into the text, not the arguments (which tests read).
        at = where.replace("%", "%%") + ": " if where else ""
        if context_size and sentences:
            real = sum(len(f["input_ids"]) for f in features)
            logger.info(
                at + "context (context_size=%d): %.1f -> %.1f tokens per sentence (%d sentences).",
                context_size,
                (real - self.context_tokens) / sentences,
                real / sentences,
                sentences,
            )
        if self.windowed_sentences:
            logger.info(
                at + "%d sentence(s) longer than max_seq_length=%d split into overlapping "
                "windows (%d rows for %d sentences).",
                self.windowed_sentences,
                max_seq_length,
                len(features),
                sentences,
            )
        if self.clipped_words:
            logger.warning(
                at + "%d word(s) have more subword pieces than fit in max_seq_length=%d "
                "(first: %s); each keeps its first pieces, which carry its label and prediction.",
                self.clipped_words,
                max_seq_length,
                self.example,
            )
        if self.untokenized_words:
            logger.warning(
                at + "%d word(s) yield no subword token (e.g. lone zero-width characters); they "
                "are predicted as %r.",
                self.untokenized_words,
                fallback_label,
            )


def align_sentence(
    encoding: Any,
    *,
    example_index: int,
    num_words: int,
    max_length: int,
    stride: int,
    input_names: Sequence[str],
    word_labels: np.ndarray | None = None,
    continuation_labels: np.ndarray | None = None,
    stats: AlignStats | None = None,
    context: Context | None = None,
) -> list[dict]:
    """The model rows (features) of one tokenized sentence.

    ``word_labels[j]`` is word j's label id; ``continuation_labels[j]`` (``label_all_tokens``)
    the label of its other pieces; None means no loss on those pieces. ``context`` (document
    context, see :mod:`flaxtrainer.tasks.context`) fills the room the sentence leaves: left of
    its first window, right of its last, with label -100, word id -1 and no prediction.
    Each feature holds unpadded int32 ``input_names`` and ``labels``, plus host metadata:
    ``example_index``, ``num_words``, ``word_ids`` (per token, -1 on special tokens and
    context) and ``prediction_mask`` (the token whose prediction is the word's: the first
    piece of a word this window owns).
    """
    stats = stats if stats is not None else AlignStats()
    ids = np.asarray(encoding.ids, np.int32)
    types = np.asarray(encoding.type_ids, np.int32)
    word_ids = np.array([-1 if w is None else w for w in encoding.word_ids], np.int32)
    content = np.flatnonzero(word_ids >= 0)
    if len(content) == 0:  # no words, or none that yields a token: one row of specials
        stats.untokenized_words += num_words
        labels = np.full(len(ids), IGNORE_INDEX, np.int32)
        return [
            _feature(
                ids, types, word_ids, labels, labels >= 0, input_names, example_index, num_words
            )
        ]

    p0, p1 = int(content[0]), int(content[-1]) + 1
    budget = max_length - p0 - (len(ids) - p1)
    if budget < 1:
        raise ValueError(f"max_seq_length={max_length} leaves no room beside the special tokens.")
    c_ids, c_types, c_words = ids[p0:p1], types[p0:p1], word_ids[p0:p1]

    # Runs of equal word id (a word's pieces are contiguous); -1 runs are stray non-word tokens.
    run_start, run_len = _runs(c_words)
    too_long = (run_len > budget) & (c_words[run_start] >= 0)
    if too_long.any():
        # Such a word keeps its first `budget` pieces; the first carries label and prediction.
        stats.clipped_words += int(too_long.sum())
        stats.example = stats.example or f"example {example_index}"
        keep = np.ones(len(c_words), bool)
        for s, n in zip(run_start[too_long], run_len[too_long]):
            keep[s + budget : s + n] = False
        c_ids, c_types, c_words = c_ids[keep], c_types[keep], c_words[keep]
        run_start, run_len = _runs(c_words)

    is_word_run = c_words[run_start] >= 0
    starts = run_start[is_word_run]
    ends = starts + run_len[is_word_run]
    stats.untokenized_words += num_words - len(starts)
    is_first = np.zeros(len(c_words), bool)
    is_first[starts] = True
    token_labels = np.full(len(c_words), IGNORE_INDEX, np.int32)
    if word_labels is not None:
        if continuation_labels is not None:
            has_word = c_words >= 0
            token_labels[has_word] = continuation_labels[c_words[has_word]]
        token_labels[starts] = word_labels[c_words[starts]]

    if len(c_words) <= budget:
        windows = [(0, len(starts))]
        token_owner = np.where(c_words >= 0, 0, -1)
    else:
        stats.windowed_sentences += 1
        windows, owner = plan_windows(starts, ends, budget, stride)
        run_owner = np.full(len(run_start), -1, np.int64)
        run_owner[is_word_run] = owner
        token_owner = np.repeat(run_owner, run_len)  # the window owning each token's word

    n_suffix = len(ids) - p1
    no_word = (np.full(p0, -1, np.int32), np.full(n_suffix, -1, np.int32))
    no_label = (np.full(p0, IGNORE_INDEX, np.int32), np.full(n_suffix, IGNORE_INDEX, np.int32))
    no_pred = (np.zeros(p0, bool), np.zeros(n_suffix, bool))
    features = []
    for k, (a, b) in enumerate(windows):
        ts, te = int(starts[a]), int(ends[b - 1])
        owned = token_owner[ts:te] == k
        window_labels = np.where(owned, token_labels[ts:te], IGNORE_INDEX).astype(np.int32)
        left = right = np.zeros(0, np.int32)
        if context is not None:
            first, last = k == 0, k == len(windows) - 1
            left, right = context.fit(budget - (te - ts), left=first, right=last)
            stats.context_tokens += len(left) + len(right)
        sides = (len(left), len(right))
        features.append(
            _feature(
                np.concatenate([ids[:p0], left, c_ids[ts:te], right, ids[p1:]]),
                np.concatenate([types[:p0], _pad(c_types[ts:te], c_types[ts], sides), types[p1:]]),
                np.concatenate([no_word[0], _pad(c_words[ts:te], -1, sides), no_word[1]]),
                np.concatenate(
                    [no_label[0], _pad(window_labels, IGNORE_INDEX, sides), no_label[1]]
                ),
                np.concatenate(
                    [no_pred[0], _pad(owned & is_first[ts:te], False, sides), no_pred[1]]
                ),
                input_names,
                example_index,
                num_words,
            )
        )
    return features


def _pad(middle: np.ndarray, fill: Any, sides: tuple[int, int]) -> np.ndarray:
    """``middle`` with ``sides`` (left, right) positions of ``fill`` around it (context)."""
    left, right = (np.full(n, fill, middle.dtype) for n in sides)
    return np.concatenate([left, middle, right])


def _runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and length of each run of equal values."""
    start = np.flatnonzero(np.concatenate(([True], values[1:] != values[:-1])))
    return start, np.diff(np.append(start, len(values)))


def _feature(ids, types, word_ids, labels, mask, input_names, example_index, num_words) -> dict:
    arrays = {
        "input_ids": ids,
        "attention_mask": np.ones(len(ids), np.int32),
        "token_type_ids": types,
    }
    feature = {name: arrays[name] for name in input_names}
    feature.update(
        labels=labels,
        example_index=example_index,
        num_words=num_words,
        word_ids=word_ids.astype(np.int32),
        prediction_mask=mask,
    )
    return feature
