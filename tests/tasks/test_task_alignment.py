"""Word -> subword label alignment for WordPiece and byte-level BPE tokenizers."""

import datasets
import numpy as np
import pytest
from transformers import RobertaTokenizer

from flaxtrainer.tasks import PosTaggingTask, TokenClassificationTask

LABELS = ["B-LOC", "B-PER", "I-LOC", "I-PER", "O"]
SENTENCES = [
    (["John", "lives", "in", "Hunterbridge", "."], ["B-PER", "O", "O", "B-LOC", "O"]),
    (["Angela", "Merkel", "visited", "Tegucigalpa"], ["B-PER", "I-PER", "O", "B-LOC"]),
    (
        ["the", "cat", "sat", "on", "New", "Yorkshire", "mats"],
        ["O", "O", "O", "O", "B-LOC", "I-LOC", "O"],
    ),
]


def make_dataset(sentences, label_names=LABELS):
    return datasets.Dataset.from_dict(
        {"tokens": [w for w, _ in sentences], "tags": [t for _, t in sentences]},
        features=datasets.Features(
            {
                "tokens": datasets.Sequence(datasets.Value("string")),
                "tags": datasets.Sequence(datasets.ClassLabel(names=label_names)),
            }
        ),
    )


def reference(tokenizer, words, tags, label_all_tokens, continuation):
    """Hugging Face's run_ner alignment, through the tokenizer's own word_ids()."""
    enc = tokenizer(words, is_split_into_words=True)
    labels, previous = [], None
    for word in enc.word_ids():
        if word is None:
            labels.append(-100)
        elif word != previous:
            labels.append(LABELS.index(tags[word]))
        else:
            labels.append(LABELS.index(continuation(tags[word])) if label_all_tokens else -100)
        previous = word
    return enc["input_ids"], labels, enc.word_ids()


def b_to_i(tag):
    return "I-" + tag[2:] if tag.startswith("B-") else tag


@pytest.mark.parametrize("label_all_tokens", [False, True])
@pytest.mark.parametrize("which", ["wordpiece", "bpe"])
def test_alignment_matches_reference(request, which, label_all_tokens):
    tokenizer = request.getfixturevalue(f"{which}_tokenizer")
    task = TokenClassificationTask(LABELS, tokenizer, label_all_tokens=label_all_tokens)
    features = task.prepare(make_dataset(SENTENCES))
    assert len(features) == len(SENTENCES)
    multi_piece = 0
    for i, (feature, (words, tags)) in enumerate(zip(features, SENTENCES)):
        ids, labels, word_ids = reference(tokenizer, words, tags, label_all_tokens, b_to_i)
        multi_piece += len(ids) - 2 - len(words)
        assert feature["example_index"] == i
        np.testing.assert_array_equal(feature["input_ids"], ids)
        np.testing.assert_array_equal(feature["labels"], labels)
        np.testing.assert_array_equal(
            feature["word_ids"], [-1 if w is None else w for w in word_ids]
        )
        firsts = [k for k, w in enumerate(word_ids) if w is not None and w != word_ids[k - 1]]
        np.testing.assert_array_equal(np.flatnonzero(feature["prediction_mask"]), firsts)
        for name in task.model_input_names:
            assert feature[name].dtype == np.int32 and feature[name].shape == (len(ids),)
        assert feature["labels"].dtype == np.int32
    assert multi_piece > 0, "the test sentences must contain words split into several pieces"


def test_wordpiece_positions_by_hand(wordpiece_tokenizer):
    words, tags = SENTENCES[0]
    pieces = wordpiece_tokenizer.convert_ids_to_tokens(
        wordpiece_tokenizer(words, is_split_into_words=True)["input_ids"]
    )
    assert pieces == ["[CLS]", "john", "lives", "in", "hunter", "##bridge", ".", "[SEP]"]
    B_PER, B_LOC, I_LOC, OUT = (LABELS.index(t) for t in ("B-PER", "B-LOC", "I-LOC", "O"))
    first = TokenClassificationTask(LABELS, wordpiece_tokenizer).prepare(
        make_dataset([SENTENCES[0]])
    )
    assert first[0]["labels"].tolist() == [-100, B_PER, OUT, OUT, B_LOC, -100, OUT, -100]
    every = TokenClassificationTask(LABELS, wordpiece_tokenizer, label_all_tokens=True)
    assert every.prepare(make_dataset([SENTENCES[0]]))[0]["labels"].tolist() == [
        -100, B_PER, OUT, OUT, B_LOC, I_LOC, OUT, -100,
    ]  # fmt: skip
    assert "token_type_ids" in every.model_input_names


def test_bpe_has_no_token_type_ids_and_prefix_space_matters(bpe_tokenizer, bpe_parts):
    task = TokenClassificationTask(LABELS, bpe_tokenizer)
    assert task.model_input_names == ("input_ids", "attention_mask")
    feature = task.prepare(make_dataset(SENTENCES[:1]))[0]
    assert "token_type_ids" not in feature
    # Every word, the first included, is encoded as if preceded by a space.
    pieces = bpe_tokenizer.convert_ids_to_tokens(feature["input_ids"][feature["prediction_mask"]])
    assert all(p.startswith("\u0120") for p in pieces), pieces
    vocab, merges = bpe_parts
    no_space = RobertaTokenizer(vocab=vocab, merges=merges, add_prefix_space=False)
    with pytest.raises(ValueError, match="add_prefix_space=True"):
        TokenClassificationTask(LABELS, no_space)


def test_scheme_continuation_for_end_tags(wordpiece_tokenizer):
    labels = ["B-LOC", "E-LOC", "I-LOC", "O", "S-LOC"]
    task = TokenClassificationTask(
        labels, wordpiece_tokenizer, scheme="IOBES", label_all_tokens=True
    )
    words, tags = (
        ["in", "Tegucigalpa", "Hunterbridge", "Yorkshire"],
        ["O", "B-LOC", "E-LOC", "S-LOC"],
    )
    feature = task.prepare(make_dataset([(words, tags)], labels))[0]
    word_ids, got = feature["word_ids"], feature["labels"]
    for k in range(1, len(got) - 1):
        tag = tags[word_ids[k]]
        expected = tag if feature["prediction_mask"][k] else ("I-LOC" if tag != "O" else "O")
        assert labels[got[k]] == expected
    pos = PosTaggingTask(["NN", "VB"], wordpiece_tokenizer, label_all_tokens=True)
    pos_feature = pos.prepare(make_dataset([(["Tegucigalpa"], ["NN"])], ["NN", "VB"]))[0]
    assert pos_feature["labels"][1:-1].tolist() == [0] * (len(pos_feature["labels"]) - 2)


def test_prepare_without_tags_and_from_rows(wordpiece_tokenizer):
    task = TokenClassificationTask(LABELS, wordpiece_tokenizer)
    rows = [{"tokens": words} for words, _ in SENTENCES]
    features = task.prepare(rows)
    assert [f["example_index"] for f in features] == [0, 1, 2]
    assert all((f["labels"] == -100).all() for f in features)
    with_tags = task.prepare({"tokens": [SENTENCES[0][0]], "tags": [SENTENCES[0][1]]})
    np.testing.assert_array_equal(
        with_tags[0]["labels"], task.prepare(make_dataset(SENTENCES[:1]))[0]["labels"]
    )


def test_word_without_subwords_gets_fallback(wordpiece_tokenizer, caplog):
    task = TokenClassificationTask(LABELS, wordpiece_tokenizer)
    data = make_dataset([(["Paris", "\u200b", "rocks"], ["B-LOC", "O", "O"])])
    features = task.prepare(data)
    assert "1 word(s) yield no subword token" in caplog.text
    outputs = [
        {
            "predictions": np.full(len(f["input_ids"]), LABELS.index("B-PER")),
            "scores": np.ones(len(f["input_ids"])),
        }
        for f in features
    ]
    assert task.decode(data, features, outputs) == [["B-PER", "O", "B-PER"]]
    assert task.decode_with_scores(data, features, outputs)[0][1] == ("O", 0.0)


def test_bad_task_arguments(wordpiece_tokenizer, caplog):
    with pytest.raises(ValueError, match="E-LOC"):
        TokenClassificationTask(["B-LOC", "E-LOC", "O"], wordpiece_tokenizer, scheme="IOB2")
    with pytest.raises(ValueError, match="mode"):
        TokenClassificationTask(LABELS, wordpiece_tokenizer, mode="lenient")
    with pytest.raises(ValueError, match="stride"):
        TokenClassificationTask(LABELS, wordpiece_tokenizer, max_seq_length=16, stride=14)
    with pytest.raises(ValueError, match="Unknown tagging scheme"):
        TokenClassificationTask(LABELS, wordpiece_tokenizer, scheme="XYZ")
    task = TokenClassificationTask(LABELS, wordpiece_tokenizer)
    # A gold tag outside the labels: no loss (-100), a warning; the metrics keep its string.
    with caplog.at_level("WARNING", logger="flaxtrainer"):
        (feature,) = task.prepare({"tokens": [["Acme", "Rome"]], "tags": [["B-ORG", "B-LOC"]]})
    assert [v for v in feature["labels"].tolist() if v != -100] == [task.label2id["B-LOC"]]
    assert "'B-ORG' x1 (first: example 0, word 0)" in caplog.text


def test_format_examples_marks_errors(wordpiece_tokenizer):
    task = TokenClassificationTask(LABELS, wordpiece_tokenizer)
    data = make_dataset(SENTENCES)
    features = task.prepare(data)
    outputs = []
    for feature in features:
        predictions = np.where(feature["labels"] >= 0, feature["labels"], 0)
        if feature["example_index"] == 1:
            predictions[feature["prediction_mask"]] = LABELS.index("O")
        outputs.append({"predictions": predictions})
    text = task.format_examples(data, features, outputs, n=2)
    lines = text.split("\n")
    assert len(lines) == 2
    assert lines[0] == "1. John/B-PER lives/O in/O Hunterbridge/B-LOC \\./O"
    assert "**Angela/O (gold B-PER)**" in lines[1] and "visited/O" in lines[1]
    assert task.pad_token_id == wordpiece_tokenizer.pad_token_id
