"""Hub datasets without network: the script-dataset -> Parquet-branch retry, offline errors."""

import datasets
import pytest

from flaxtrainer.data import DataError, features_for, load_token_classification_data
from flaxtrainer.data.hub import PARQUET_REVISION

NER = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
POS = ["NN", "NNP", "VBZ", "."]
SPLIT_ROWS = {
    "train": [
        (["EU", "rejects", "."], [3, 0, 0], [1, 2, 3]),
        (["Peter", "Blackburn"], [1, 2], [1, 1]),
    ],
    "validation": [(["Peter"], [1], [1])],
    "test": [(["BRUSSELS", "."], [5, 0], [1, 3])],
}


@pytest.fixture
def parquet_branch(tmp_path):
    """A local copy of the Hub's refs/convert/parquet layout: <config>/<split>/0000.parquet."""
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "tokens": datasets.Sequence(datasets.Value("string")),
            "pos_tags": datasets.Sequence(datasets.ClassLabel(names=POS)),
            "ner_tags": datasets.Sequence(datasets.ClassLabel(names=NER)),
        }
    )
    for split, rows in SPLIT_ROWS.items():
        folder = tmp_path / "conll2003" / split
        folder.mkdir(parents=True)
        data = {
            "id": [str(i) for i in range(len(rows))],
            "tokens": [r[0] for r in rows],
            "pos_tags": [r[2] for r in rows],
            "ner_tags": [r[1] for r in rows],
        }
        datasets.Dataset.from_dict(data, features=features).to_parquet(folder / "0000.parquet")
    return tmp_path


def test_script_dataset_falls_back_to_parquet_branch(parquet_branch, tmp_path, monkeypatch):
    real_load = datasets.load_dataset
    calls = []

    def fake_load(path, name=None, **kwargs):
        calls.append((path, name, kwargs))
        if kwargs.get("revision") != PARQUET_REVISION:
            raise RuntimeError("Dataset scripts are no longer supported, but found conll2003.py")
        assert path == "conll2003"
        return real_load(
            str(parquet_branch), data_dir=kwargs["data_dir"], cache_dir=str(tmp_path / "cache")
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    dsd, names = load_token_classification_data(
        dataset_name="conll2003", dataset_config_name="conll2003"
    )
    assert len(calls) == 2 and calls[1][2]["revision"] == PARQUET_REVISION
    assert calls[1][2]["data_dir"] == "conll2003"
    assert names == NER  # the source's ClassLabel order, not sorted
    assert list(dsd) == ["train", "validation", "test"]
    for split, rows in SPLIT_ROWS.items():
        assert dsd[split].features == features_for(NER)
        assert dsd[split]["tokens"] == [r[0] for r in rows]
        assert dsd[split]["tags"] == [r[1] for r in rows]

    pos, pos_names = load_token_classification_data(
        dataset_name="conll2003", dataset_config_name="conll2003", task_name="pos"
    )
    assert pos_names == POS and pos["train"]["tags"] == [r[2] for r in SPLIT_ROWS["train"]]
    limited, _ = load_token_classification_data(
        dataset_name="conll2003", dataset_config_name="conll2003", max_train_samples=1
    )
    assert len(limited["train"]) == 1


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionError("Couldn't reach 'conll2003' on the Hub (OfflineModeIsEnabled)"),
        datasets.exceptions.DatasetNotFoundError("Dataset 'conll2003' doesn't exist on the Hub"),
    ],
)
def test_unreachable_hub_is_a_clear_error(monkeypatch, exc):
    def fake_load(*args, **kwargs):
        raise exc

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    with pytest.raises(
        DataError, match=r"Can't fetch dataset 'conll2003'.*offline.*--train_file train.conll"
    ):
        load_token_classification_data(dataset_name="conll2003")


def test_parquet_branch_unreachable(monkeypatch):
    def fake_load(*args, revision=None, **kwargs):
        if revision is None:
            raise RuntimeError("Dataset scripts are no longer supported, but found conll2003.py")
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    with pytest.raises(DataError, match="Can't fetch dataset 'conll2003'"):
        load_token_classification_data(dataset_name="conll2003")


def test_other_runtime_errors_propagate(monkeypatch):
    def fake_load(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    with pytest.raises(RuntimeError, match="disk full"):
        load_token_classification_data(dataset_name="conll2003")


def fake_hub(monkeypatch, test_rows, *, with_label_column=True, train_tags=((3, 0, 0),)):
    """`datasets.load_dataset` returning a train split and a test split built from `test_rows`."""
    tags = datasets.Sequence(datasets.ClassLabel(names=NER))
    tokens = datasets.Sequence(datasets.Value("string"))
    train = datasets.Dataset.from_dict(
        {"tokens": [["EU", "rejects", "."]] * len(train_tags), "ner_tags": list(train_tags)},
        features=datasets.Features({"tokens": tokens, "ner_tags": tags}),
    )
    columns = {"id": [str(i) for i in range(len(test_rows))], "tokens": [r[0] for r in test_rows]}
    features = {"id": datasets.Value("string"), "tokens": tokens}
    if with_label_column:
        columns["ner_tags"], features["ner_tags"] = [r[1] for r in test_rows], tags
    test = datasets.Dataset.from_dict(columns, features=datasets.Features(features))
    dsd = datasets.DatasetDict({"train": train, "test": test})
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: dsd)


def test_hub_test_split_without_labels(monkeypatch):
    """Unlabelled hub test splits hold -1 ids; they stay -1, not names[-1]."""
    fake_hub(monkeypatch, [(["Paris", "."], [-1, -1]), (["Rome"], [-1])])
    dsd, names = load_token_classification_data(dataset_name="fake")
    assert names == NER
    assert dsd["test"].features == dsd["train"].features == features_for(NER)
    assert dsd["test"]["tags"] == [[-1, -1], [-1]]

    fake_hub(monkeypatch, [(["Paris", "."], None)], with_label_column=False)
    dsd, _ = load_token_classification_data(dataset_name="fake")
    assert dsd["test"]["tokens"] == [["Paris", "."]] and dsd["test"]["tags"] == [[-1, -1]]


def test_hub_partly_labelled_or_unlabelled_train_is_an_error(monkeypatch):
    fake_hub(monkeypatch, [(["Paris", "."], [5, -1])])
    with pytest.raises(
        DataError, match=r"fake\[test\]: example 0 \(0-based\), word 2 has no label"
    ):
        load_token_classification_data(dataset_name="fake")
    fake_hub(monkeypatch, [(["Paris", "."], [5, 0]), (["Rome"], [-1])])
    with pytest.raises(
        DataError, match=r"fake\[test\]: example 1 \(0-based\) has no tags but example 0"
    ):
        load_token_classification_data(dataset_name="fake")
    fake_hub(monkeypatch, [(["Paris"], [5])], train_tags=([-1, -1, -1],))
    with pytest.raises(DataError, match=r"fake\[train\] has no tags: every tag is -1"):
        load_token_classification_data(dataset_name="fake")
