"""Document boundaries in the readers: CoNLL ``-DOCSTART-``, CoNLL-U ``# newdoc`` and a
``document_id`` column (JSON, CSV, hub) all give the same optional ``document_id`` column."""

import csv
import json

import datasets
import pytest

from flaxtrainer.data import DataError, features_for, load_token_classification_data

# Two documents: five sentences, then three (words, IOB2 tags).
DOC_A = [
    (["EU", "rejects", "German", "call"], ["B-ORG", "O", "B-MISC", "O"]),
    (["Peter", "Blackburn"], ["B-PER", "I-PER"]),
    (["BRUSSELS", "1996-08-22"], ["B-LOC", "O"]),
    (["The", "European", "Commission", "said"], ["O", "B-ORG", "I-ORG", "O"]),
    (["Germany", "imports", "sheep"], ["B-LOC", "O", "O"]),
]
DOC_B = [
    (["Rome", "is", "sunny"], ["B-LOC", "O", "O"]),
    (["Mary", "agreed"], ["B-PER", "O"]),
    (["."], ["O"]),
]
DOCUMENTS = [DOC_A, DOC_B]
EXPECTED_IDS = [0] * len(DOC_A) + [1] * len(DOC_B)
EXPECTED_TOKENS = [words for doc in DOCUMENTS for words, _ in doc]


def conll_text(documents, docstart=True) -> str:
    lines = []
    for doc in documents:
        if docstart:
            lines += ["-DOCSTART- O", ""]
        for words, tags in doc:
            lines += [f"{w} {t}" for w, t in zip(words, tags)] + [""]
    return "\n".join(lines) + "\n"


def conllu_text(documents) -> str:
    lines = []
    for d, doc in enumerate(documents):
        for s, (words, tags) in enumerate(doc):
            if s == 0:
                lines.append(f"# newdoc id = doc{d}")
            lines.append(f"# sent_id = {d}-{s}")
            for j, (w, t) in enumerate(zip(words, tags), 1):
                lines.append(f"{j}\t{w}\t_\t{t}\t_\t_\t0\troot\t_\t_")
            lines.append("")
    return "\n".join(lines) + "\n"


def rows(documents):
    return [
        {"document_id": f"news-{d}", "tokens": words, "tags": tags}
        for d, doc in enumerate(documents)
        for words, tags in doc
    ]


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def write_csv(tmp_path, name, documents):
    path = tmp_path / name
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["document_id", "tokens", "tags"])  # document_id first: not the text
        for row in rows(documents):
            writer.writerow(
                [row["document_id"], json.dumps(row["tokens"]), json.dumps(row["tags"])]
            )
    return str(path)


def load(path, **kwargs):
    dsd, names = load_token_classification_data(train_file=path, **kwargs)
    return dsd["train"], names


def test_conll_conllu_json_csv_give_the_same_documents(tmp_path):
    sources = {
        "conll": write(tmp_path, "train.conll", conll_text(DOCUMENTS)),
        "conllu": write(tmp_path, "train.conllu", conllu_text(DOCUMENTS)),
        "json": write(tmp_path, "train.json", json.dumps(rows(DOCUMENTS))),
        "jsonl": write(tmp_path, "train.jsonl", "\n".join(map(json.dumps, rows(DOCUMENTS)))),
        "csv": write_csv(tmp_path, "train.csv", DOCUMENTS),
    }
    tags = [tags for doc in DOCUMENTS for _, tags in doc]
    for kind, path in sources.items():
        split, names = load(path, task_name="pos" if kind == "conllu" else "ner")
        assert split.column_names == ["tokens", "tags", "document_id"], kind
        assert split.features == features_for(names, documents=True), kind
        assert split["document_id"] == EXPECTED_IDS, kind
        assert split["tokens"] == EXPECTED_TOKENS, kind
        label_names = split.features["tags"].feature.names
        assert [[label_names[t] for t in s] for s in split["tags"]] == tags, kind


def test_without_boundaries_the_two_column_contract_holds(tmp_path):
    one_doc = [DOC_A + DOC_B]
    for name, text in {
        "plain.conll": conll_text(one_doc, docstart=False),
        "single_docstart.conll": conll_text(one_doc),  # one document: no boundary
        "plain.jsonl": "\n".join(json.dumps({"tokens": w, "tags": t}) for w, t in one_doc[0]),
    }.items():
        split, _ = load(write(tmp_path, name, text))
        assert split.column_names == ["tokens", "tags"], name
        assert split["tokens"] == EXPECTED_TOKENS, name


def test_sentences_before_the_first_docstart_are_a_document(tmp_path):
    text = conll_text([DOC_A[:2]], docstart=False) + conll_text([DOC_A[2:], DOC_B])
    split, _ = load(write(tmp_path, "train.conll", text))
    assert split["document_id"] == [0, 0, 1, 1, 1, 2, 2, 2]
    assert split["tokens"] == EXPECTED_TOKENS


def test_empty_documents_and_empty_rows_keep_ids_consecutive(tmp_path):
    # Two -DOCSTART- lines in a row (an empty document) and an empty JSON sentence.
    text = "-DOCSTART- O\n\n-DOCSTART- O\n\n" + conll_text(DOCUMENTS)
    split, _ = load(write(tmp_path, "train.conll", text))
    assert split["document_id"] == EXPECTED_IDS
    data = rows(DOCUMENTS)
    data.insert(6, {"document_id": "news-1", "tokens": [], "tags": []})
    split, _ = load(write(tmp_path, "train.json", json.dumps(data)))
    assert split["document_id"] == EXPECTED_IDS
    assert split["tokens"] == EXPECTED_TOKENS


def test_a_document_is_a_run_of_equal_ids(tmp_path):
    data = rows(DOCUMENTS)
    data[-1]["document_id"] = "news-0"  # back to an earlier id: a third document
    split, _ = load(write(tmp_path, "train.json", json.dumps(data)))
    assert split["document_id"] == [0] * 5 + [1, 1, 2]


def test_max_samples_cuts_the_document_column_too(tmp_path):
    path = write(tmp_path, "train.conll", conll_text(DOCUMENTS))
    split, _ = load(path, max_train_samples=6)
    assert split["document_id"] == EXPECTED_IDS[:6]


def test_a_row_without_its_document_is_an_error(tmp_path):
    data = rows(DOCUMENTS)
    del data[3]["document_id"]
    path = write(tmp_path, "train.json", json.dumps(data))
    with pytest.raises(
        DataError, match=r"train\.json: row 4 has no column 'document_id' but row 1"
    ):
        load(path)


def test_hub_document_id_column(monkeypatch):
    tags = datasets.Sequence(datasets.ClassLabel(names=["B-LOC", "B-MISC", "B-ORG", "B-PER",
                                                        "I-ORG", "I-PER", "O"]))  # fmt: skip
    names = tags.feature.names
    data = rows(DOCUMENTS)
    train = datasets.Dataset.from_dict(
        {
            "document_id": [r["document_id"] for r in data],
            "tokens": [r["tokens"] for r in data],
            "ner_tags": [[names.index(t) for t in r["tags"]] for r in data],
        },
        features=datasets.Features(
            {
                "document_id": datasets.Value("string"),
                "tokens": datasets.Sequence(datasets.Value("string")),
                "ner_tags": tags,
            }
        ),
    )
    dsd = datasets.DatasetDict({"train": train})
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: dsd)
    loaded, label_names = load_token_classification_data(dataset_name="fake")
    assert label_names == names
    assert loaded["train"]["document_id"] == EXPECTED_IDS
    assert loaded["train"]["tokens"] == EXPECTED_TOKENS
    assert loaded["train"]["tags"] == train["ner_tags"]
