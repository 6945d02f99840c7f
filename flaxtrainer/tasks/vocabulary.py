"""Words a model's tokenizer cannot read, so that a wrong model is said, not silent.

An English vocabulary has no pieces for many scripts. The uncased WordPiece of MiniLM or
``bert-base-uncased`` turns an Ethiopic, Sinhala, Khmer or Armenian word into ``[UNK]``, and
spells a Devanagari, Arabic, Cyrillic, Thai or Hangul word out one character a piece, having
stripped its vowel signs (``नरेंद्र`` -> ``न ##र ##द ##र``); a byte-level BPE vocabulary
(RoBERTa) gives such a word one piece per character or less. The model has learned next to
nothing about those pieces: training learns little from them, and prediction finds no
entities in them, without an error anywhere. :func:`warn_unreadable_words` says so, once per
dataset, when a large share of the words is such.

A word counts when it has a letter. It is *unknown* when every piece of it is the
tokenizer's unknown token, *spelled out* when it is made of letters (and their marks) only
and split into two or more pieces of at most one character each. Words of Han characters or
kana are never counted as spelled out: Chinese and Japanese BERT vocabularies split them into
single characters by design.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import regex

logger = logging.getLogger(__name__)

#: The share of words (of those with a letter) that are unknown or spelled out from which a
#: dataset is reported. English tweets (W-NUT 2016, MiniLM) come to 0.3%.
UNREADABLE_SHARE = 0.2
#: The model to suggest instead.
MULTILINGUAL_HINT = "a multilingual model, e.g. xlm-roberta-base"
_MARKS_AND_JOINERS = frozenset({"Mn", "Mc", "Me", "Cf"})
_ONE_CHARACTER_SCRIPTS = regex.compile(r"[\p{Han}\p{Hiragana}\p{Katakana}]")


@dataclass
class Readability:
    """What :func:`unreadable_words` counted over a dataset's words."""

    words: int = 0  # words with at least one letter
    unknown: int = 0  # every piece the unknown token
    spelled_out: int = 0  # letters only, two or more pieces of at most one character
    example: str = ""  # the first unreadable word ...
    example_pieces: tuple[str, ...] = ()  # ... and its pieces

    @property
    def unreadable(self) -> int:
        return self.unknown + self.spelled_out

    @property
    def share(self) -> float:
        return self.unreadable / self.words if self.words else 0.0


def _letters_only(word: str) -> bool:
    """Letters with their marks (vowel signs, viramas, harakat) and joiners (ZWJ, ZWNJ)."""
    return all(char.isalpha() or unicodedata.category(char) in _MARKS_AND_JOINERS for char in word)


def unreadable_words(
    sentences: Sequence[Sequence[str]], encodings: Sequence[Any], tokenizer: Any
) -> Readability:
    """Counts the unknown and spelled-out words of pre-split ``sentences``, given their
    ``tokenizers.Encoding`` (``encode_words``: ids, word ids and character offsets)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    found = Readability()
    for words, encoding in zip(sentences, encodings):
        ids, word_ids, offsets = encoding.ids, encoding.word_ids, encoding.offsets
        pieces = [0] * len(words)
        all_unknown = [True] * len(words)
        all_short = [True] * len(words)  # every piece at most one character
        for word_id, token_id, (start, end) in zip(word_ids, ids, offsets):
            if word_id is not None:
                pieces[word_id] += 1
                all_unknown[word_id] &= token_id == unk
                all_short[word_id] &= end - start <= 1
        for word_id, word in enumerate(words):
            if not any(map(str.isalpha, word)):
                continue
            found.words += 1
            if not pieces[word_id]:  # no token at all: the alignment reports it (untokenized)
                continue
            if unk is not None and all_unknown[word_id]:
                found.unknown += 1
            elif (
                pieces[word_id] > 1
                and all_short[word_id]
                and _letters_only(word)
                and not _ONE_CHARACTER_SCRIPTS.search(word)
            ):
                found.spelled_out += 1
            else:
                continue
            if not found.example:
                found.example = word
                word_pieces = [i for w, i in zip(word_ids, ids) if w == word_id]
                found.example_pieces = tuple(tokenizer.convert_ids_to_tokens(word_pieces))
    return found


def warn_unreadable_words(
    sentences: Sequence[Sequence[str]],
    encodings: Sequence[Any],
    tokenizer: Any,
    where: str = "",
) -> Readability:
    """Logs one warning when at least :data:`UNREADABLE_SHARE` of the words are unknown to the
    tokenizer or spelled out by it (see the module docstring); ``where`` names the dataset."""
    found = unreadable_words(sentences, encodings, tokenizer)
    if found.words and found.share >= UNREADABLE_SHARE:
        kinds = []
        if found.unknown:
            kinds.append(f"{found.unknown:,} became its unknown token {tokenizer.unk_token}")
        if found.spelled_out:
            kinds.append(f"{found.spelled_out:,} were spelled out one character a piece")
        logger.warning(
            "%s%s of %s word(s) (%.0f%%) are outside the tokenizer's vocabulary: %s (e.g. %r -> "
            "%s). The model knows next to nothing about them: training learns little from such "
            "words and prediction finds no entities in them. For text in their script use %s.",
            f"{where}: " if where else "",
            f"{found.unreadable:,}",
            f"{found.words:,}",
            100 * found.share,
            " and ".join(kinds),
            found.example,
            " ".join(found.example_pieces),
            MULTILINGUAL_HINT,
        )
    return found
