"""Output writers and the raw-text helpers of the pipeline (no model needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flaxtrainer.inference.pipeline import group_entities, split_words, words_from_tokens
from flaxtrainer.outputs.results import read_predictions, save_metrics, write_predictions


def test_save_metrics_writes_split_file_and_merges_all_results(tmp_path):
    save_metrics(tmp_path, "train", {"train_loss": np.float32(0.5), "train_samples": 10})
    save_metrics(tmp_path, "eval", {"eval_f1": np.float64(0.25), "eval_samples": np.int64(3)})
    assert json.loads((tmp_path / "eval_results.json").read_text()) == {
        "eval_f1": 0.25,
        "eval_samples": 3,
    }
    merged = json.loads((tmp_path / "all_results.json").read_text())
    assert merged == {"train_loss": 0.5, "train_samples": 10, "eval_f1": 0.25, "eval_samples": 3}


def test_predictions_file_one_line_per_word_blank_between_sentences(tmp_path):
    words = [["John", "lives", "in", "New York"], ["Hi"], []]
    gold = [["B-PER", "O", "O", "B-LOC"], ["O"], []]
    pred = [["B-PER", "O", "O", "O"], ["B-PER"], []]
    path = write_predictions(tmp_path / "p.txt", words, pred, gold)
    text = path.read_text()
    assert text.splitlines()[:5] == [
        "John B-PER B-PER",
        "lives O O",
        "in O O",
        "New_York B-LOC O",
        "",
    ]
    assert read_predictions(path) == [
        [["John", "B-PER", "B-PER"], ["lives", "O", "O"], ["in", "O", "O"], ["New_York", "B-LOC", "O"]],
        [["Hi", "O", "B-PER"]],
        [],
    ]  # fmt: skip


def test_predictions_file_without_gold_has_two_columns(tmp_path):
    path = write_predictions(tmp_path / "p.txt", [["a", "b"]], [["O", "B-X"]])
    assert path.read_text() == "a O\nb B-X\n\n"


def test_predictions_must_match_words(tmp_path):
    with pytest.raises(ValueError, match="sentence 0: 2 words but 1 predictions"):
        write_predictions(tmp_path / "p.txt", [["a", "b"]], [["O"]])


def test_split_words_keeps_character_offsets():
    text = "Angela Merkel's visit to São Paulo, 2024!"
    words = split_words(text)
    assert [w.text for w in words] == [
        "Angela", "Merkel", "'", "s", "visit", "to", "São", "Paulo", ",", "2024", "!",
    ]  # fmt: skip
    assert all(text[w.start : w.end] == w.text for w in words)


def test_words_from_tokens_offsets_into_joined_text():
    text, words = words_from_tokens(["New", "York", "!"])
    assert text == "New York !"
    assert [(w.start, w.end) for w in words] == [(0, 3), (4, 8), (9, 10)]


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        (["B-PER", "I-PER", "O", "B-LOC", "O"], [("PER", "Angela Merkel"), ("LOC", "Paris")]),
        (["I-PER", "I-PER", "O", "I-LOC", "O"], [("PER", "Angela Merkel"), ("LOC", "Paris")]),
        (["B-PER", "E-PER", "O", "S-LOC", "O"], [("PER", "Angela Merkel"), ("LOC", "Paris")]),
        (["B-PER", "L-PER", "O", "U-LOC", "O"], [("PER", "Angela Merkel"), ("LOC", "Paris")]),
        (["B-PER", "B-PER", "O", "O", "O"], [("PER", "Angela"), ("PER", "Merkel")]),
    ],
)
def test_group_entities_schemes(tags, expected):
    text = "Angela Merkel visited Paris ."
    words = split_words(text)
    scores = [0.9, 0.7, 0.99, 0.8, 0.5]
    entities = group_entities(text, words, tags, scores)
    assert [(e.type, e.text) for e in entities] == expected
    for e in entities:
        assert text[e.start : e.end] == e.text
    assert entities[0].score == pytest.approx(0.8 if expected[0][1] == "Angela Merkel" else 0.9)


def test_group_entities_reads_io_tags_with_the_scheme():
    """Bare IO tags (`PER`) are whole entity types, not a prefix plus a cut-off type."""
    from flaxtrainer.tasks.schemes import get_scheme

    text = "Angela Merkel visited Paris ."
    words = split_words(text)
    tags = ["PER", "PER", "O", "LOC", "O"]
    entities = group_entities(text, words, tags, [0.9] * 5, get_scheme("IO"))
    assert [(e.type, e.text) for e in entities] == [("PER", "Angela Merkel"), ("LOC", "Paris")]
