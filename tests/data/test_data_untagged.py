"""Test files without tags (for prediction only): every format reads them as tags of -1 with the
train split's features; train/validation without tags and partly tagged files are errors."""

import json

import datasets
import pytest

from flaxtrainer.data import DataError, features_for, load_token_classification_data

TRAIN = "EU\tB-ORG\nrejects\tO\n\nPeter\tB-PER\nBlackburn\tI-PER\n"
NAMES = ["B-ORG", "B-PER", "I-PER", "O"]
SENTENCES = [["BRUSSELS", "1996-08-22"], ["New York", "rocks", "."]]


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def conllu(upos, xpos=None):
    """SENTENCES as CoNLL-U with these UPOS and XPOS tags (one list per sentence)."""
    blocks = []
    for i, (words, upos_tags, xpos_tags) in enumerate(zip(SENTENCES, upos, xpos or upos)):
        lines = [f"# sent_id = {i}"]
        for j, (word, u, x) in enumerate(zip(words, upos_tags, xpos_tags), 1):
            lines.append(f"{j}\t{word}\t_\t{u}\t{x}\t_\t0\troot\t_\t_")
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def csv_cells(words):
    return '"' + json.dumps(words).replace('"', '""') + '"'


UNTAGGED = {
    "one_column.conll": "-DOCSTART-\n\nBRUSSELS\n1996-08-22\n\nNew\nYork\nrocks\n.\n\n",
    "upos.conllu": conllu([["_", "_"], ["_", "_", "_"]]),
    "array.json": json.dumps([{"id": str(i), "tokens": w} for i, w in enumerate(SENTENCES)]),
    "tokens.jsonl": "\n".join(json.dumps({"tokens": w}) for w in SENTENCES),
    "minus_one.jsonl": "\n".join(
        json.dumps({"tokens": w, "ner_tags": [-1] * len(w)}) for w in SENTENCES
    ),
    "tokens.csv": "tokens\n" + "\n".join(csv_cells(w) for w in SENTENCES) + "\n",
}


@pytest.mark.parametrize("name", UNTAGGED)
def test_untagged_test_file_reads_as_minus_one(tmp_path, name):
    train = write(tmp_path, "train.conll", TRAIN)
    test = write(tmp_path, name, UNTAGGED[name])
    # A one-column CoNLL file has no tab, so its columns split on spaces: "New York" is two lines.
    tokens = [["BRUSSELS", "1996-08-22"], ["New", "York", "rocks", "."]]
    expected = tokens if name.endswith(".conll") else SENTENCES
    dsd, names = load_token_classification_data(train_file=train, test_file=test)
    assert names == NAMES  # from train only
    assert dsd["test"].features == dsd["train"].features == features_for(NAMES)
    assert dsd["test"]["tokens"] == expected
    assert dsd["test"]["tags"] == [[-1] * len(words) for words in expected]


def test_predict_only_untagged_test_file(tmp_path):
    test = write(tmp_path, "words.txt", "a\nb\n\nc\n\nd\n")
    dsd, names = load_token_classification_data(test_file=test, max_predict_samples=2)
    assert list(dsd) == ["test"] and names == []
    assert dsd["test"]["tokens"] == [["a", "b"], ["c"]]
    assert dsd["test"]["tags"] == [[-1, -1], [-1]]
    assert isinstance(dsd["test"].features["tags"].feature, datasets.ClassLabel)


def test_xpos_all_blank_is_untagged_but_upos_is_not(tmp_path):
    text = conllu([["PROPN", "NUM"], ["PROPN", "VERB", "PUNCT"]], [["_", "_"], ["_", "_", "_"]])
    test = write(tmp_path, "test.conllu", text)
    upos, names = load_token_classification_data(test_file=test)
    assert names == ["NUM", "PROPN", "PUNCT", "VERB"]
    assert all(t >= 0 for tags in upos["test"]["tags"] for t in tags)
    xpos, _ = load_token_classification_data(test_file=test, conllu_tag="xpos")
    assert xpos["test"]["tags"] == [[-1, -1], [-1, -1, -1]]
    with pytest.raises(DataError, match=r"test.conllu has no tags: every token's XPOS is '_'"):
        load_token_classification_data(train_file=test, conllu_tag="xpos")


def test_named_label_column_missing_from_the_test_file(tmp_path):
    train = write(tmp_path, "train.jsonl", json.dumps({"words": ["a"], "labels": ["O"]}))
    test = write(tmp_path, "test.jsonl", json.dumps({"words": ["b", "c"]}))
    args = dict(text_column_name="words", label_column_name="labels")
    dsd, names = load_token_classification_data(train_file=train, test_file=test, **args)
    assert names == ["O"] and dsd["test"]["tags"] == [[-1, -1]]
    with pytest.raises(
        DataError, match=r"test.jsonl has no tags: line 1 has no column 'labels'.*--label_column"
    ):
        load_token_classification_data(train_file=test, **args)


@pytest.mark.parametrize("split", ["train", "validation"])
@pytest.mark.parametrize(
    "name, reason",
    [
        ("one_column.conll", r"every line holds a single column, the token"),
        ("upos.conllu", r"every token's UPOS is '_'"),
        ("array.json", r"row 1 has no tag column besides the token column 'tokens'"),
        ("tokens.csv", r"line 2 has no tag column besides the token column 'tokens'"),
        ("minus_one.jsonl", r"no sentence has tags"),
    ],
)
def test_train_and_validation_need_tags(tmp_path, split, name, reason):
    path = write(tmp_path, name, UNTAGGED[name])
    files = {"train_file": write(tmp_path, "train.conll", TRAIN), f"{split}_file": path}
    with pytest.raises(
        DataError, match=rf"{name} has no tags: {reason}.*only the test split may come without"
    ):
        load_token_classification_data(**files)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.conll", "EU\tB-ORG\nrejects\n\nPeter\tB-PER\n",
         r"missing.conll: line 2 has 1 column but the file's first line \(line 1\) has 2.*"
         r"a missing tag"),
        ("extra.conll", "EU\nrejects\n\nPeter B-PER\n",
         r"extra.conll: line 4 has 2 columns but the file's first line \(line 1\) has 1"),
        ("mixed.conllu", conllu([["PROPN", "NUM"], ["PROPN", "_", "PUNCT"]]),
         r"mixed.conllu: line 7 has UPOS '_' but line 2 has 'PROPN'"),
        ("sentence.conllu", conllu([["_", "_"], ["PROPN", "VERB", "PUNCT"]]),
         r"sentence.conllu: line 6 has UPOS 'PROPN' but line 2 has '_'"),
        ("dropped.jsonl", '{"tokens": ["a"], "tags": ["O"]}\n{"tokens": ["b"]}\n',
         r"dropped.jsonl: line 2 has no column 'tags' but line 1 has.*only a test file"),
        ("added.jsonl", '{"tokens": ["a"]}\n\n{"tokens": ["b"], "ner_tags": ["O"]}\n',
         r"added.jsonl: line 3 has tags \(column 'ner_tags'\) but line 1 has none"),
        ("minus_one.json", '[{"tokens": ["a"], "tags": ["O"]}, {"tokens": ["b"], "tags": [-1]}]',
         r"minus_one.json: row 2 has no tags but row 1 has tags"),
        ("first_minus_one.json",
         '[{"tokens": ["a"], "tags": [-1]}, {"tokens": ["b"], "tags": ["O"]}]',
         r"first_minus_one.json: row 2 has tags but row 1 has none"),
        ("empty_cell.csv", "tokens,tags\na b,O O\nc d,\n",
         r"empty_cell.csv: line 3 has 2 tokens but 0 tags"),
    ],
)  # fmt: skip
def test_partly_tagged_test_file_is_an_error(tmp_path, name, content, message):
    train = write(tmp_path, "train.conll", TRAIN)
    with pytest.raises(DataError, match=message):
        load_token_classification_data(train_file=train, test_file=write(tmp_path, name, content))


def test_empty_sentences_count_as_neither_tagged_nor_untagged(tmp_path):
    """A comment-only CoNLL-U block is an empty sentence; it does not make the file partly tagged."""
    text = "# newdoc id = a\n\n" + conllu([["_", "_"], ["_", "_", "_"]])
    dsd, _ = load_token_classification_data(test_file=write(tmp_path, "test.conllu", text))
    assert dsd["test"]["tags"] == [[-1, -1], [-1, -1, -1]]
    tagged = "# newdoc id = a\n\n" + conllu([["X", "X"], ["X", "X", "X"]])
    dsd, _ = load_token_classification_data(test_file=write(tmp_path, "tagged.conllu", tagged))
    assert dsd["test"]["tags"] == [[0, 0], [0, 0, 0]]
