"""Local readers: CoNLL columns, CoNLL-U, JSON (Lines), CSV; label lists; limits."""

import json
import logging

import datasets
import pytest

from flaxtrainer.data import DataError, features_for, load_token_classification_data

CONLL2003 = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

"""

CONLL2003_DEV = """-DOCSTART- -X- -X- O

BRUSSELS NNP B-NP B-ORG
1996-08-22 CD I-NP O
"""


def write(tmp_path, name, text, encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return str(path)


def split_tags(ds):
    names = ds.features["tags"].feature.names
    return [[names[t] for t in tags] for tags in ds["tags"]]


def test_conll2003_columns_by_task(tmp_path):
    train = write(tmp_path, "train.conll", CONLL2003)
    dev = write(tmp_path, "dev.txt", CONLL2003_DEV)
    dsd, names = load_token_classification_data(train_file=train, validation_file=dev)
    assert list(dsd) == ["train", "validation"]
    assert names == ["B-MISC", "B-ORG", "B-PER", "I-PER", "O"]
    for split in dsd.values():
        assert split.column_names == ["tokens", "tags"]
        assert split.features == features_for(names)
    assert dsd["train"]["tokens"] == [
        ["EU", "rejects", "German", "call", "."],
        ["Peter", "Blackburn"],
    ]
    assert split_tags(dsd["train"])[1] == ["B-PER", "I-PER"]

    pos, pos_names = load_token_classification_data(train_file=train, task_name="pos")
    assert split_tags(pos["train"])[0] == ["NNP", "VBZ", "JJ", "NN", "."]
    chunk, _ = load_token_classification_data(train_file=train, task_name="chunk")
    assert split_tags(chunk["train"])[0] == ["B-NP", "B-VP", "B-NP", "I-NP", "O"]
    explicit, _ = load_token_classification_data(train_file=train, label_column=1)
    assert split_tags(explicit["train"]) == split_tags(pos["train"])
    last, _ = load_token_classification_data(train_file=train, task_name="pos", label_column=-1)
    assert split_tags(last["train"]) == split_tags(dsd["train"])
    with pytest.raises(DataError, match=r"train.conll: label column 4 does not exist"):
        load_token_classification_data(train_file=train, label_column=4)


def test_conll_tab_separated_tokens_with_spaces(tmp_path):
    path = write(tmp_path, "wnut.bio", "New York\tB-loc\nrocks\tO\n\t\n\nhi\tO\n")
    dsd, names = load_token_classification_data(train_file=path)
    assert dsd["train"]["tokens"] == [["New York", "rocks"], ["hi"]]
    assert names == ["B-loc", "O"]


def test_conllu_upos_xpos(tmp_path):
    text = (
        "# sent_id = 1\n# text = Don't stop.\n"
        "1-2\tDon't\t_\t_\t_\t_\t_\t_\t_\t_\n"
        "1\tDo\tdo\tAUX\tVBP\t_\t3\taux\t_\t_\n"
        "2\tn't\tnot\tPART\tRB\t_\t3\tadvmod\t_\t_\n"
        "2.1\tgo\tgo\tVERB\tVB\t_\t_\t_\t3:conj\t_\n"
        "3\tstop\tstop\tVERB\tVB\t_\t0\troot\t_\t_\n"
        "4\t.\t.\tPUNCT\t.\t_\t3\tpunct\t_\t_\n"
        "\n"
        "# sent_id = 2\n"
        "1\tGo\tgo\tVERB\tVB\t_\t0\troot\t_\t_\n\n"
    )
    path = write(tmp_path, "train.conllu", text)
    dsd, names = load_token_classification_data(train_file=path)
    assert dsd["train"]["tokens"] == [["Do", "n't", "stop", "."], ["Go"]]
    assert split_tags(dsd["train"]) == [["AUX", "PART", "VERB", "PUNCT"], ["VERB"]]
    assert names == ["AUX", "PART", "PUNCT", "VERB"]
    xpos, xnames = load_token_classification_data(train_file=path, conllu_tag="xpos")
    assert split_tags(xpos["train"])[0] == ["VBP", "RB", "VB", "."]
    bad = write(tmp_path, "bad.conllu", text.replace("3\tstop\tstop", "3\tstop stop"))
    with pytest.raises(DataError, match=r"bad.conllu: line 7 has 9 tab-separated columns"):
        load_token_classification_data(train_file=bad)


def test_json_variants_and_column_rules(tmp_path):
    rows = [
        {
            "id": "0",
            "tokens": ["EU", "rejects"],
            "pos_tags": ["NNP", "VBZ"],
            "ner_tags": ["B-ORG", "O"],
        },
        {"id": "1", "tokens": ["Peter"], "pos_tags": ["NNP"], "ner_tags": ["B-PER"]},
    ]
    jsonl = write(tmp_path, "train.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    as_json_lines = write(tmp_path, "lines.json", "\n".join(json.dumps(r) for r in rows))
    array = write(tmp_path, "array.json", json.dumps(rows))
    columnar = write(tmp_path, "cols.json", json.dumps({k: [r[k] for r in rows] for k in rows[0]}))
    for path in (jsonl, as_json_lines, array, columnar):
        dsd, names = load_token_classification_data(train_file=path)
        assert dsd["train"]["tokens"] == [["EU", "rejects"], ["Peter"]], path
        assert names == ["B-ORG", "B-PER", "O"], path
    pos, names = load_token_classification_data(train_file=jsonl, task_name="pos")
    assert names == ["NNP", "VBZ"]
    named, names = load_token_classification_data(
        train_file=jsonl, text_column_name="tokens", label_column_name="pos_tags"
    )
    assert names == ["NNP", "VBZ"]
    # No `tokens` / `{task}_tags` column: first and second columns.
    plain = write(tmp_path, "plain.jsonl", json.dumps({"words": ["a", "b"], "labels": ["X", "Y"]}))
    dsd, names = load_token_classification_data(train_file=plain)
    assert dsd["train"]["tokens"] == [["a", "b"]] and names == ["X", "Y"]
    with pytest.raises(DataError, match="has no column 'nope'"):
        load_token_classification_data(train_file=plain, label_column_name="nope")


def test_csv_space_separated_and_json_cells(tmp_path):
    text = 'tokens,ner_tags\nEU rejects German,B-ORG O B-MISC\n"[""New York"", ""rocks""]","[""B-LOC"", ""O""]"\n'
    path = write(tmp_path, "train.csv", text)
    dsd, names = load_token_classification_data(train_file=path)
    assert dsd["train"]["tokens"] == [["EU", "rejects", "German"], ["New York", "rocks"]]
    assert names == ["B-LOC", "B-MISC", "B-ORG", "O"]


def test_max_samples_and_no_train_split(tmp_path):
    train = write(tmp_path, "train.conll", CONLL2003)
    dsd, _ = load_token_classification_data(
        train_file=train, validation_file=train, test_file=train,
        max_train_samples=1, max_eval_samples=2, max_predict_samples=0,
    )  # fmt: skip
    assert [len(dsd[s]) for s in ("train", "validation", "test")] == [1, 2, 0]
    assert dsd["train"]["tokens"] == [["EU", "rejects", "German", "call", "."]]
    dev = write(tmp_path, "dev.conll", CONLL2003_DEV)
    dsd, names = load_token_classification_data(validation_file=dev, test_file=train)
    assert names == ["B-MISC", "B-ORG", "B-PER", "I-PER", "O"]  # sorted over all splits


def test_empty_sentences_skipped_and_logged(tmp_path, caplog):
    rows = [
        {"tokens": ["a"], "tags": ["O"]},
        {"tokens": [], "tags": []},
        {"tokens": [], "tags": []},
    ]
    path = write(tmp_path, "train.jsonl", "\n".join(json.dumps(r) for r in rows))
    with caplog.at_level(logging.INFO, logger="flaxtrainer"):
        dsd, _ = load_token_classification_data(train_file=path)
    assert len(dsd["train"]) == 1
    assert "train.jsonl: skipped 2 empty sentence(s)" in caplog.text


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("lengths.jsonl", '{"tokens": ["a"], "tags": ["O"]}\n{"tokens": ["a", "b"], "tags": ["O"]}\n',
         r"lengths.jsonl: line 2 has 2 tokens but 1 tags"),
        ("lengths.json", '[{"tokens": ["a"], "tags": ["O"]}, {"tokens": ["a"], "tags": []}]',
         r"lengths.json: row 2 has 1 tokens but 0 tags"),
        ("lengths.csv", "tokens,tags\na b,O O\nc d e,O O\n", r"lengths.csv: line 3 has 3 tokens but 2 tags"),
        ("empty.conll", "", r"empty.conll is empty"),
        ("blank.conll", "\n\n  \n", r"blank.conll is empty"),
        ("docstart.conll", "-DOCSTART- -X- O\n\n", r"docstart.conll holds no sentences"),
        ("empty.json", "[]", r"empty.json holds no rows"),
        ("latin1.conll", "caf\xe9 O\n".encode() * 3 + "na\xefve O\n".encode("latin-1"),
         r"latin1.conll: line 4 is not valid UTF-8"),
        ("columns.conll", "EU NNP B-ORG\nrejects VBZ O\n\nNew York NNP B-LOC\n",
         r"columns.conll: line 4 has 4 columns but the file's first line \(line 1\) has 3"),
        ("single.conll", "EU\nrejects\n",
         r"single.conll has no tags: every line holds a single column, the token\. Training "),
        ("broken.jsonl", '{"tokens": ["a"], "tags": ["O"]}\n{"tokens": [\n', r"broken.jsonl: line 2 is not valid JSON"),
        ("type.jsonl", '{"tokens": "a b", "tags": ["O", "O"]}\n', r"type.jsonl: line 1: column 'tokens' must be a list"),
        ("data.parquet", "x", r"unknown file type '.parquet'"),
    ],
)  # fmt: skip
def test_bad_input(tmp_path, name, content, message):
    path = write(tmp_path, name, content)
    with pytest.raises(DataError, match=message):
        load_token_classification_data(train_file=path)


def test_unseen_label_in_validation_refused_when_strict(tmp_path):
    train = write(tmp_path, "train.conll", CONLL2003)
    dev = write(tmp_path, "dev.conll", CONLL2003_DEV + "\nParis NNP B-NP B-LOC\n")
    with pytest.raises(
        DataError,
        match=r"dev.conll: line 6 \(token 'Paris'\) has tag 'B-LOC'.*train.conll never uses",
    ):
        load_token_classification_data(train_file=train, validation_file=dev, strict_labels=True)


def test_missing_file_and_no_source(tmp_path):
    with pytest.raises(DataError, match="nope.conll: file not found"):
        load_token_classification_data(train_file=str(tmp_path / "nope.conll"))
    with pytest.raises(DataError, match="No data given"):
        load_token_classification_data()
    with pytest.raises(DataError, match="either dataset_name"):
        load_token_classification_data(dataset_name="conll2003", train_file="x.conll")


def test_dataset_is_a_datasets_dict(tmp_path):
    dsd, names = load_token_classification_data(train_file=write(tmp_path, "t.conll", CONLL2003))
    assert isinstance(dsd, datasets.DatasetDict)
    assert isinstance(dsd["train"].features["tags"].feature, datasets.ClassLabel)


def test_unseen_label_in_json_names_row_and_word(tmp_path):
    train = write(tmp_path, "train.jsonl", '{"tokens": ["a"], "tags": ["O"]}\n')
    test = write(
        tmp_path,
        "test.json",
        '[{"tokens": ["a"], "tags": ["O"]}, {"tokens": ["x", "y"], "tags": ["O", "B-X"]}]',
    )
    with pytest.raises(DataError, match=r"test.json: row 2, word 2 \(token 'y'\) has tag 'B-X'"):
        load_token_classification_data(train_file=train, test_file=test, strict_labels=True)
