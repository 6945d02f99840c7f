"""Raw-text prediction in scripts with combining marks (issue 12): `split_words` keeps vowel
signs, viramas, harakat and decomposed accents with their letters, its offsets slice the input,
and the pipeline and `flaxtrainer predict` return entities that are whole words."""

from __future__ import annotations

import contextlib
import io
import json
import re
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from flaxtrainer.cli.main import main
from flaxtrainer.inference.pipeline import TokenClassificationPipeline, split_words

HINDI = "नमस्ते दुनिया, भारत"
THAI = "สวัสดีครับ ผมชื่อสมชาย อายุ ๒๕ ปี"
ARABIC = "مُحَمَّدٌ رَسُولُ"
LATIN = "Cafe\u0301 de\u0301ja\u0300 vu"
MIXED = "Dr. राम (४२) met «Zoe\u0308» at 10:30 — \ufeffفي القاهرة، ٢٠٢٤!"
PERSIAN = "من می\u200cخواهم\u200b بروم."  # ZWNJ inside a word, a zero-width space after it
TEXTS = [HINDI, THAI, ARABIC, LATIN, MIXED, PERSIAN]
LABELS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")
GLUE = "\u200c\u200d\u00ad\u2060"  # ZWNJ, ZWJ, soft hyphen, word joiner


def expected_words(text: str) -> list[str]:
    """An independent expectation: whitespace-split, then within each chunk runs of letters,
    marks, digits and `_` (by `unicodedata` category; ZWNJ/ZWJ, soft hyphen and word joiner
    inside a run), other format characters (category Cf) dropped as separators, every other
    character alone."""
    words = []
    for chunk in text.split():
        run = ""
        for char in chunk:
            category = unicodedata.category(char)
            if category[0] in "LMN" or char == "_" or (run and char in GLUE):
                run += char
                continue
            if category == "Cf":
                words.extend([run] if run else [])
                run = ""
                continue
            if run:
                words.append(run)
            words.append(char)
            run = ""
        if run:
            words.append(run)
    return words


def starts_with_mark(word: str) -> bool:
    return unicodedata.category(word[0]).startswith("M")


@pytest.mark.parametrize(
    "text", TEXTS, ids=["hindi", "thai", "arabic", "latin-nfd", "mixed", "persian"]
)
def test_split_words_keeps_marks_with_their_letters(text):
    words = split_words(text)
    assert [w.text for w in words] == expected_words(text)
    assert all(text[w.start : w.end] == w.text for w in words)
    assert not any(starts_with_mark(w.text) for w in words)
    starts = [w.start for w in words]
    assert starts == sorted(starts) and all(a.end <= b.start for a, b in zip(words, words[1:]))


def test_split_words_examples():
    """Spelled out, so a reader sees the unit: one word per Thai run, punctuation alone."""
    assert [w.text for w in split_words(HINDI)] == ["नमस्ते", "दुनिया", ",", "भारत"]
    assert [w.text for w in split_words(ARABIC)] == ["مُحَمَّدٌ", "رَسُولُ"]
    assert [w.text for w in split_words(LATIN)] == ["Cafe\u0301", "de\u0301ja\u0300", "vu"]
    assert [w.text for w in split_words(THAI)] == ["สวัสดีครับ", "ผมชื่อสมชาย", "อายุ", "๒๕", "ปี"]
    assert [w.text for w in split_words(PERSIAN)] == ["من", "می\u200cخواهم", "بروم", "."]
    # a mark with no base letter (after whitespace) is no word; punctuation keeps its marks
    assert [w.text for w in split_words("x \u0301y !\u0301 \u0301")] == ["x", "y", "!\u0301"]
    # zero-width spaces and a BOM separate words; a soft hyphen stays inside its word
    words = split_words("\ufeffสวัสดี\u200bครับ co\u00adop")
    assert [w.text for w in words] == ["สวัสดี", "ครับ", "co\u00adop"]
    assert [(w.start, w.end) for w in words] == [(1, 7), (8, 12), (13, 18)]


@pytest.mark.parametrize(
    "text",
    [
        "Angela Merkel's visit to Sao Paulo, 2024!",
        "snake_case x+y=z (a,b) [1] {q}; e-mail: me@example.com...",
        "  tabs\tand\nnew lines\r\n  ",
        "",
    ],
)
def test_ascii_splits_as_before(text):
    """ASCII text gives exactly what the former `\\w+|[^\\w\\s]` pattern gave."""
    old = [(m.group(), m.start(), m.end()) for m in re.finditer(r"\w+|[^\w\s]", text)]
    assert [(w.text, w.start, w.end) for w in split_words(text)] == old


@pytest.fixture(scope="module")
def every_word_a_place(tmp_path_factory, tiny_bert) -> Path:
    """The tiny BERT with an NER head that tags every token B-LOC, so each word of the input
    comes back as an entity of its own (random weights otherwise give arbitrary entities)."""
    from flaxtrainer.cli.job import load_tokenizer
    from flaxtrainer.models import from_pretrained, save_pretrained

    model = from_pretrained(tiny_bert, id2label=dict(enumerate(LABELS)))
    bias = np.zeros(len(LABELS), np.float32)
    bias[LABELS.index("B-LOC")] = 10.0
    model.classifier.kernel[...] = np.zeros_like(model.classifier.kernel[...])
    model.classifier.bias[...] = bias
    folder = tmp_path_factory.mktemp("places") / "model"
    save_pretrained(model, folder, load_tokenizer(str(tiny_bert)))
    return folder


def check_entities(result: dict, text: str) -> None:
    assert result["text"] == text
    entities = result["entities"]
    assert [e["text"] for e in entities] == expected_words(text)
    for entity in entities:
        assert text[entity["start"] : entity["end"]] == entity["text"]
        assert entity["type"] == "LOC" and 0 < entity["score"] <= 1


def test_pipeline_entities_are_whole_words(every_word_a_place):
    tagger = TokenClassificationPipeline(every_word_a_place, batch_size=2)
    results = tagger(TEXTS)
    assert len(results) == len(TEXTS)
    for result, text in zip(results, TEXTS):
        check_entities(result, text)


def test_predict_command_on_raw_text(every_word_a_place, tmp_path, capsys):
    inputs = tmp_path / "texts.txt"
    inputs.write_text(f"{ARABIC}\n{LATIN}\n", encoding="utf-8")
    argv = ["predict", "--model_name_or_path", str(every_word_a_place), "--text", HINDI,
            "--input_file", str(inputs)]  # fmt: skip
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    assert code == 0, capsys.readouterr().err[-3000:]
    results = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(results) == 3
    for result, text in zip(results, [HINDI, ARABIC, LATIN]):
        check_entities(result, text)
