"""examples/bioes_task.py: IOB2 data trained as IOBES, scored in strict IOBES mode."""

import importlib.util
import inspect
from pathlib import Path

import numpy as np
import pytest
from seqeval.metrics import f1_score
from seqeval.scheme import IOBES

from flaxtrainer.tasks import TokenClassificationTask

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "bioes_task.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("bioes_task", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bioes_task(example, wordpiece_tokenizer):
    iob2 = ["B-LOC", "B-PER", "I-LOC", "I-PER", "O"]
    task = example.BioesTask(iob2, wordpiece_tokenizer, max_seq_length=16, scheme="IOB2", mode=None)
    assert (task.scheme.name, task.mode) == ("IOBES", "strict")
    assert task.source_label_names == iob2
    assert set(task.label_names) == {f"{p}-{t}" for p in "BIES" for t in ("LOC", "PER")} | {"O"}
    assert task.num_labels == len(task.id2label) == 9
    words = [["Angela", "Merkel", "in", "New", "York", "City"], ["Paris"]]
    tags = [["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "I-LOC"], ["B-LOC"]]
    data = {"tokens": words, "tags": tags}
    features = task.prepare(data)
    gold = [["B-PER", "E-PER", "O", "B-LOC", "I-LOC", "E-LOC"], ["S-LOC"]]
    for feature in features:
        mask = feature["prediction_mask"]
        got = [task.label_names[i] for i in feature["labels"][mask]]
        assert got == gold[feature["example_index"]]
    pred = [["B-PER", "E-PER", "O", "B-LOC", "I-LOC", "I-LOC"], ["S-LOC"]]
    outputs = []
    for feature in features:
        predictions = np.zeros(len(feature["input_ids"]), np.int32)
        for pos in np.flatnonzero(feature["prediction_mask"]):
            predictions[pos] = task.label2id[
                pred[feature["example_index"]][feature["word_ids"][pos]]
            ]
        outputs.append({"predictions": predictions})
    metrics = task.compute_metrics(data, features, outputs)
    assert metrics["f1"] == pytest.approx(f1_score(gold, pred, mode="strict", scheme=IOBES))
    assert metrics["f1"] < 1.0 and metrics["PER_f1"] == 1.0


def test_constructor_compatible(example):
    base = inspect.signature(TokenClassificationTask.__init__).parameters
    sub = inspect.signature(example.BioesTask.__init__).parameters
    assert list(sub)[:3] == list(base)[:3] == ["self", "label_names", "tokenizer"]
    assert any(p.kind is p.VAR_KEYWORD for p in sub.values())


def test_script_runs(example, capsys):
    example.main()
    out = capsys.readouterr().out
    assert "Paris/S-LOC" in out and "perfect predictions:   f1=1.000" in out
