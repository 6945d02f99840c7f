"""Label lists from all labelled splits (tags that training never saw), column layouts of
CoNLL files (task defaults, --label_column / --token_column, CoNLL-U UPOS/XPOS), the log line
naming the columns used, and empty JSON sentences."""

import json
import logging
import re

import pytest

from flaxtrainer.data import DataError, load_token_classification_data

TRAIN = "EU B-ORG\nrejects O\nGerman B-MISC\n\nPeter B-PER\nBlackburn I-PER\n"
# Tags train never uses: I-product (3 tokens), B-product (2), B-LOC (1); O and B-PER it knows.
TEST = (
    "Paris B-LOC\nsells O\niPhone B-product\nPro I-product\nMax I-product\nUltra I-product\n\n"
    "Peter B-PER\nbuys O\nPixel B-product\n"
)
DEV = "Acme B-product\nRome B-LOC\nWeb I-product\n"

# word POS NER (a common CoNLL-2003 export without the chunk column).
THREE_COLUMNS = (
    "-DOCSTART- -X- O\n\nEU NNP B-ORG\nrejects VBZ O\nGerman JJ B-MISC\n\nPeter NNP B-PER\n"
)
# word POS chunk (CoNLL-2000).
CONLL2000 = "Confidence NN B-NP\nin IN B-PP\nthe DT B-NP\npound NN I-NP\nis VBZ B-VP\n"


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def split_tags(ds):
    names = ds.features["tags"].feature.names
    return [[names[t] for t in tags] for tags in ds["tags"]]


def warnings_of(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# -- label sets from all splits ---------------------------------------------------------------


def test_unseen_test_tags_are_appended_sorted_with_a_warning(tmp_path, caplog):
    train = write(tmp_path, "train.conll", TRAIN)
    test = write(tmp_path, "test.conll", TEST)
    with caplog.at_level(logging.INFO, logger="flaxtrainer"):
        dsd, names = load_token_classification_data(train_file=train, test_file=test)
    trained = ["B-MISC", "B-ORG", "B-PER", "I-PER", "O"]
    assert names == trained + ["B-LOC", "B-product", "I-product"]
    assert dsd["test"].features["tags"].feature.names == names
    assert split_tags(dsd["test"]) == [
        ["B-LOC", "O", "B-product", "I-product", "I-product", "I-product"],
        ["B-PER", "O", "B-product"],
    ]
    assert split_tags(dsd["train"])[1] == ["B-PER", "I-PER"]
    warned = [m for m in warnings_of(caplog) if "never uses" in m]
    assert len(warned) == 1
    assert "test.conll (test)" in warned[0] and "train.conll" in warned[0]
    assert "'B-LOC' (1 token), 'B-product' (2 tokens), 'I-product' (3 tokens)" in warned[0]
    assert "'O'" not in warned[0] and "'B-PER'" not in warned[0]
    assert "miss" in warned[0]


def test_one_warning_per_split_and_extras_merged(tmp_path, caplog):
    train = write(tmp_path, "train.conll", TRAIN)
    dev = write(tmp_path, "dev.conll", DEV)
    test = write(tmp_path, "test.conll", TEST)
    with caplog.at_level(logging.WARNING, logger="flaxtrainer"):
        _, names = load_token_classification_data(
            train_file=train, validation_file=dev, test_file=test
        )
    assert names[5:] == ["B-LOC", "B-product", "I-product"]  # each once, sorted
    warned = [m for m in warnings_of(caplog) if "never uses" in m]
    assert len(warned) == 2
    dev_warning = next(m for m in warned if "(validation)" in m)
    assert "'B-LOC' (1 token), 'B-product' (1 token), 'I-product' (1 token)" in dev_warning
    assert any("'I-product' (3 tokens)" in m for m in warned if "(test)" in m)


def test_label_list_does_not_depend_on_the_test_file_otherwise(tmp_path, caplog):
    """A test file using only trained tags changes nothing and warns nothing."""
    train = write(tmp_path, "train.conll", TRAIN)
    test = write(tmp_path, "test.conll", "Peter B-PER\nsaid O\n")
    with caplog.at_level(logging.WARNING, logger="flaxtrainer"):
        _, names = load_token_classification_data(train_file=train, test_file=test)
    assert names == ["B-MISC", "B-ORG", "B-PER", "I-PER", "O"]
    assert not [m for m in warnings_of(caplog) if "never uses" in m]


def test_strict_labels_refuses_unseen_tags(tmp_path):
    train = write(tmp_path, "train.conll", TRAIN)
    test = write(tmp_path, "test.conll", TEST)
    with pytest.raises(
        DataError,
        match=r"test.conll: line 1 \(token 'Paris'\) has tag 'B-LOC', which .*train.conll never "
        r"uses.*strict_labels",
    ):
        load_token_classification_data(train_file=train, test_file=test, strict_labels=True)
    # The same data without the unseen tags passes under strict_labels.
    ok = write(tmp_path, "ok.conll", "Peter B-PER\nsaid O\n")
    _, names = load_token_classification_data(train_file=train, test_file=ok, strict_labels=True)
    assert names == ["B-MISC", "B-ORG", "B-PER", "I-PER", "O"]


def test_label_list_ignores_max_samples(tmp_path):
    """The label list comes from whole splits, so it does not change with max_*_samples."""
    train = write(tmp_path, "train.conll", TRAIN)
    test = write(tmp_path, "test.conll", TEST)
    dsd, names = load_token_classification_data(
        train_file=train, test_file=test, max_train_samples=1, max_predict_samples=1
    )
    assert len(dsd["train"]) == 1 and len(dsd["test"]) == 1
    assert names[-3:] == ["B-LOC", "B-product", "I-product"]


# -- CoNLL column layouts ---------------------------------------------------------------------


def test_three_columns_pos_reads_column_1_and_logs_it(tmp_path, caplog):
    path = write(tmp_path, "train.conll", THREE_COLUMNS)
    with caplog.at_level(logging.INFO, logger="flaxtrainer"):
        dsd, names = load_token_classification_data(train_file=path, task_name="pos")
    assert split_tags(dsd["train"]) == [["NNP", "VBZ", "JJ"], ["NNP"]]
    assert names == ["JJ", "NNP", "VBZ"]
    logged = [m for m in caplog.messages if "tags from column" in m]
    assert len(logged) == 1
    assert re.search(
        r"train.conll: tags from column 1 \(POS.*\), tokens from column 0; e\.g\. line 3: "
        r"'EU NNP B-ORG' -> token 'EU', tag 'NNP'",
        logged[0],
    )


def test_three_columns_ner_reads_the_last_column(tmp_path, caplog):
    path = write(tmp_path, "train.conll", THREE_COLUMNS)
    with caplog.at_level(logging.INFO, logger="flaxtrainer"):
        dsd, _ = load_token_classification_data(train_file=path, task_name="ner")
    assert split_tags(dsd["train"]) == [["B-ORG", "O", "B-MISC"], ["B-PER"]]
    assert any("tags from column 2 (the last)" in m for m in caplog.messages)


def test_chunk_on_three_column_ner_file_is_an_error(tmp_path):
    path = write(tmp_path, "train.conll", THREE_COLUMNS)
    with pytest.raises(DataError, match=r"train.conll has 3 columns.*no chunk column") as info:
        load_token_classification_data(train_file=path, task_name="chunk")
    assert "--label_column" in str(info.value) and "'B-ORG'" in str(info.value)


def test_chunk_on_conll2000_file_reads_the_chunks(tmp_path, caplog):
    path = write(tmp_path, "train.txt", CONLL2000)
    with caplog.at_level(logging.INFO, logger="flaxtrainer"):
        dsd, _ = load_token_classification_data(train_file=path, task_name="chunk")
    assert split_tags(dsd["train"]) == [["B-NP", "B-PP", "B-NP", "I-NP", "B-VP"]]
    assert any("tags from column 2 (chunk, as in CoNLL-2000" in m for m in caplog.messages)


def test_label_and_token_columns_pick_any_column(tmp_path, caplog):
    # id, word, lemma, tag
    text = "1\tEU\teu\tB-ORG\n2\trejects\treject\tO\n\n1\tPeter\tpeter\tB-PER\n"
    path = write(tmp_path, "train.conll", text)
    with caplog.at_level(logging.INFO, logger="flaxtrainer"):
        dsd, _ = load_token_classification_data(train_file=path, token_column=1)
    assert dsd["train"]["tokens"] == [["EU", "rejects"], ["Peter"]]
    assert split_tags(dsd["train"]) == [["B-ORG", "O"], ["B-PER"]]
    lemmas, _ = load_token_classification_data(train_file=path, token_column=1, label_column=2)
    assert split_tags(lemmas["train"]) == [["eu", "reject"], ["peter"]]
    by_lemma, _ = load_token_classification_data(train_file=path, token_column=-2, label_column=1)
    assert by_lemma["train"]["tokens"] == [["eu", "reject"], ["peter"]]
    assert split_tags(by_lemma["train"]) == [["EU", "rejects"], ["Peter"]]
    assert any(
        "tags from column 3 (the last), tokens from column 1; e.g. line 1: '1\\tEU\\teu\\tB-ORG'"
        " -> token 'EU', tag 'B-ORG'" in m
        for m in caplog.messages
    )


def test_tag_first_two_column_file(tmp_path):
    path = write(tmp_path, "train.conll", "B-ORG EU\nO rejects\n")
    dsd, _ = load_token_classification_data(train_file=path, token_column=1)
    assert dsd["train"]["tokens"] == [["EU", "rejects"]]
    assert split_tags(dsd["train"]) == [["B-ORG", "O"]]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"token_column": 3}, r"train.conll: token column 3 does not exist: line 1 has 3 columns"),
        ({"label_column": 1, "token_column": 1}, r"label column 1 is the token column"),
        ({"token_column": 2}, r"tokens are in the last column \(2\).*--label_column"),
    ],
)
def test_bad_column_choices(tmp_path, kwargs, message):
    path = write(tmp_path, "train.conll", "EU NNP B-ORG\n")
    with pytest.raises(DataError, match=message):
        load_token_classification_data(train_file=path, **kwargs)


CONLLU = (
    "# sent_id = 1\n"
    "1-2\tDon't\t_\t_\t_\t_\t_\t_\t_\t_\n"
    "1\tDo\tdo\tAUX\tVBP\t_\t3\taux\t_\t_\n"
    "2\tn't\tnot\tPART\tRB\t_\t3\tadvmod\t_\t_\n"
    "3\tstop\tstop\tVERB\tVB\t_\t0\troot\t_\t_\n"
)


@pytest.mark.parametrize(
    "tag, expected, column",
    [("upos", ["AUX", "PART", "VERB"], 3), ("xpos", ["VBP", "RB", "VB"], 4)],
)
def test_conllu_tag_column_is_read_and_logged(tmp_path, caplog, tag, expected, column):
    path = write(tmp_path, "train.conllu", CONLLU)
    with caplog.at_level(logging.INFO, logger="flaxtrainer"):
        dsd, _ = load_token_classification_data(train_file=path, conllu_tag=tag)
    assert dsd["train"]["tokens"] == [["Do", "n't", "stop"]]
    assert split_tags(dsd["train"]) == [expected]
    logged = [m for m in caplog.messages if "tags from column" in m]
    assert len(logged) == 1
    assert f"tags from column {column}, {tag.upper()} (conllu_tag={tag!r})" in logged[0]
    assert "e.g. line 3: '1\\tDo\\tdo\\tAUX\\tVBP" in logged[0]
    assert f"-> token 'Do', tag {expected[0]!r}" in logged[0]


# -- JSON / CSV -------------------------------------------------------------------------------


def test_json_and_csv_log_the_chosen_label_column(tmp_path, caplog):
    rows = [{"tokens": ["EU", "rejects"], "pos_tags": ["NNP", "VBZ"], "ner_tags": ["B-ORG", "O"]}]
    path = write(tmp_path, "train.jsonl", "\n".join(json.dumps(r) for r in rows))
    csv_path = write(tmp_path, "dev.csv", "words,labels\nEU rejects,B-ORG O\n")
    with caplog.at_level(logging.INFO, logger="flaxtrainer"):
        dsd, _ = load_token_classification_data(
            train_file=path, validation_file=csv_path, task_name="pos"
        )
    assert split_tags(dsd["train"]) == [["NNP", "VBZ"]]
    logged = [m for m in caplog.messages if "tags from column" in m]
    assert len(logged) == 2
    assert (
        "train.jsonl: tags from column 'pos_tags' (task 'pos'), tokens from column 'tokens'; "
        "e.g. line 1: tokens ['EU', 'rejects'] -> tags ['NNP', 'VBZ']" in logged[0]
    )
    assert (
        "dev.csv: tags from column 'labels' (the second column), tokens from column 'words'"
        in logged[1]
    )


def test_json_empty_token_lists_are_counted_with_the_first_row(tmp_path, caplog):
    rows = [
        {"tokens": ["a"], "tags": ["O"]},
        {"tokens": [], "tags": []},
        {"tokens": ["b"], "tags": ["O"]},
        {"tokens": [], "tags": []},
        {"tokens": [], "tags": []},
    ]
    jsonl = write(tmp_path, "train.jsonl", "\n".join(json.dumps(r) for r in rows))
    array = write(tmp_path, "dev.json", json.dumps(rows))
    with caplog.at_level(logging.WARNING, logger="flaxtrainer"):
        dsd, _ = load_token_classification_data(train_file=jsonl, validation_file=array)
    assert dsd["train"]["tokens"] == [["a"], ["b"]]
    assert len(dsd["validation"]) == 2
    warned = warnings_of(caplog)
    assert any("train.jsonl: skipped 3 empty sentence(s)" in m and "first: line 2" in m
               for m in warned)  # fmt: skip
    assert any("dev.json: skipped 3 empty sentence(s)" in m and "first: row 2" in m
               for m in warned)  # fmt: skip
