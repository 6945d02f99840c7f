"""Through the command line: validation/test tags that training never saw (kept, warned about,
scored as misses; refused with --strict_labels), evaluating a trained model on data with a tag
it does not know, and the column flags (--label_column, --token_column, --conllu_tag)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import fast_flags, make_sentences, write_conll
from seqeval.metrics import f1_score, precision_score, recall_score

from flaxtrainer.cli.main import main, train_parser
from flaxtrainer.outputs.results import read_predictions

# Sentences with "product" entities, a type the training data (PER/LOC/ORG) never has.
PRODUCTS = [
    (["Mary", "met", "Apple", "Google", "."], ["B-PER", "O", "B-product", "I-product", "O"]),
    (["the", "Acme", "at", "Paris", "."], ["O", "B-product", "O", "B-LOC", "O"]),
]
EVENTS = [(["John", "met", "Rome", "today", "."], ["B-PER", "O", "B-event", "I-event", "O"])]


def run_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def load_json(path: Path) -> dict:
    return json.loads(path.read_text())


def seqeval_on_predictions(path: Path) -> dict[str, float]:
    """seqeval called directly on the gold and predicted columns of test_predictions.txt."""
    sentences = read_predictions(path)
    gold = [[row[1] for row in s] for s in sentences]
    pred = [[row[2] for row in s] for s in sentences]
    return {
        "precision": precision_score(gold, pred),
        "recall": recall_score(gold, pred),
        "f1": f1_score(gold, pred),
    }


@pytest.fixture(scope="module")
def unseen_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("unseen-data")
    return {
        "train": write_conll(folder / "train.conll", make_sentences(24, 0)),
        "validation": write_conll(folder / "dev.conll", make_sentences(6, 1) + PRODUCTS[:1]),
        "test": write_conll(folder / "test.conll", make_sentences(6, 2) + PRODUCTS),
        "events": write_conll(folder / "events.conll", make_sentences(4, 3) + EVENTS * 2),
    }


@pytest.fixture(scope="module")
def unseen_run(tmp_path_factory, tiny_bert, unseen_files):
    """Train on PER/LOC/ORG; validation and test also hold product entities."""
    output_dir = tmp_path_factory.mktemp("unseen-run") / "out"
    argv = fast_flags(output_dir, tiny_bert) + [
        "--train_file", str(unseen_files["train"]),
        "--validation_file", str(unseen_files["validation"]),
        "--test_file", str(unseen_files["test"]),
        "--do_train", "--do_eval", "--do_predict", "--report_to", "none",
    ]  # fmt: skip
    code, stdout, stderr = run_main(argv)
    assert code == 0, stderr[-3000:]
    return output_dir, stderr


TRAINED = ["B-LOC", "B-ORG", "B-PER", "I-LOC", "I-ORG", "I-PER", "O"]


def test_unseen_tags_are_warned_about_and_appended(unseen_run):
    output_dir, stderr = unseen_run
    warned = [line for line in stderr.splitlines() if "never uses" in line]
    assert len(warned) == 2
    assert any("dev.conll (validation)" in w and "'B-product' (1 token), 'I-product' (1 token)"
               in w for w in warned)  # fmt: skip
    assert any("test.conll (test)" in w and "'B-product' (2 tokens), 'I-product' (1 token)"
               in w for w in warned)  # fmt: skip
    labels = TRAINED + ["B-product", "I-product"]
    from flaxtrainer.models import load_config

    assert list(load_config(str(output_dir)).labels) == labels
    assert load_json(output_dir / "flaxtrainer_task.json")["label_names"] == labels


def test_unseen_tags_are_scored_as_in_seqeval(unseen_run):
    output_dir, _ = unseen_run
    predictions = read_predictions(output_dir / "test_predictions.txt")
    assert sum(row[1] == "B-product" for s in predictions for row in s) == 2  # gold kept
    expected = seqeval_on_predictions(output_dir / "test_predictions.txt")
    test = load_json(output_dir / "test_results.json")
    for key, value in expected.items():
        assert test[f"test_{key}"] == pytest.approx(value), key


def test_pipeline_works_with_the_untrained_labels_in_the_head(unseen_run):
    from flaxtrainer.inference.pipeline import TokenClassificationPipeline

    output_dir, _ = unseen_run
    tagged = TokenClassificationPipeline(output_dir).tag([["Mary", "met", "Apple", "."]])
    assert len(tagged[0]) == 4
    assert all(tag in TRAINED + ["B-product", "I-product"] for tag, _ in tagged[0])


def test_strict_labels_refuses_unseen_tags(tmp_path, tiny_bert, unseen_files):
    argv = fast_flags(tmp_path / "out", tiny_bert) + [
        "--train_file", str(unseen_files["train"]),
        "--test_file", str(unseen_files["test"]),
        "--do_train", "--do_predict", "--strict_labels",
    ]  # fmt: skip
    code, _, stderr = run_main(argv)
    assert code == 2
    error = next(line for line in stderr.splitlines() if line.startswith("error:"))
    assert "test.conll" in error and "'B-product'" in error and "never uses" in error
    assert "strict_labels" in error
    assert not (tmp_path / "out" / "test_results.json").exists()


def eval_only_argv(model: Path, output_dir: Path, data: Path) -> list[str]:
    return [
        "--model_name_or_path", str(model), "--output_dir", str(output_dir),
        "--validation_file", str(data), "--test_file", str(data),
        "--do_eval", "--do_predict", "--disable_tqdm", "--report_to", "none",
    ]  # fmt: skip


def test_eval_only_on_a_tag_the_model_does_not_know(unseen_run, unseen_files, tmp_path):
    model, _ = unseen_run
    output_dir = tmp_path / "eval"
    code, _, stderr = run_main(eval_only_argv(model, output_dir, unseen_files["events"]))
    assert code == 0, stderr[-3000:]
    warned = [line for line in stderr.splitlines() if "not trained on" in line]
    assert len(warned) == 2  # validation and test
    assert all("'B-event' (2 tokens), 'I-event' (2 tokens)" in w for w in warned)
    assert "eval_f1" in load_json(output_dir / "eval_results.json")
    predictions = read_predictions(output_dir / "test_predictions.txt")
    assert sum(row[1] == "B-event" for s in predictions for row in s) == 2  # gold kept
    test = load_json(output_dir / "test_results.json")
    expected = seqeval_on_predictions(output_dir / "test_predictions.txt")
    for key, value in expected.items():
        assert test[f"test_{key}"] == pytest.approx(value), key
    assert test["test_recall"] < 1  # the event entities are missed

    strict = eval_only_argv(model, tmp_path / "strict", unseen_files["events"])
    code, _, stderr = run_main(strict + ["--strict_labels"])
    assert code == 2
    assert "error: the validation data has tags ['B-event', 'I-event'] that the model was not" in (
        stderr
    )


def test_task_scores_unknown_gold_tags_as_misses_and_leaves_them_out_of_the_loss(
    tiny_bert, tmp_path
):
    """A task built on the trained labels, on data with unknown tags: -100 for the loss, the
    gold strings for the metrics, which agree with seqeval on the same strings."""
    from flaxtrainer.cli.job import load_tokenizer
    from flaxtrainer.data import load_token_classification_data
    from flaxtrainer.tasks import TokenClassificationTask

    sentences = [
        (["Mary", "met", "Parisrome", "Google", "."], ["B-PER", "O", "B-product", "I-product", "O"]),
        (["John", "visited", "Berlin", "."], ["B-PER", "O", "B-LOC", "O"]),
    ]  # fmt: skip
    dsd, _ = load_token_classification_data(test_file=write_conll(tmp_path / "t.conll", sentences))
    data = dsd["test"]
    task = TokenClassificationTask(
        TRAINED, load_tokenizer(str(tiny_bert)), max_seq_length=32, label_all_tokens=True
    )
    features = task.prepare(data)
    gold = [[tag for tag in s] for s in (sentences[0][1], sentences[1][1])]
    outputs = []
    for feature in features:
        labels = np.asarray(feature["labels"])
        # Each word's gold tag on its pieces; the unknown ones are -100 (no loss).
        words = feature["word_ids"]
        expected = [
            -100 if w < 0 else task.label2id.get(gold[feature["example_index"]][w], -100)
            for w in words
        ]
        assert labels.tolist() == expected
        # A model right on every known tag, "O" where the tag is unknown.
        outputs.append({"predictions": np.where(labels >= 0, labels, task.label2id["O"])})
    assert sum(1 for f in features for v in f["labels"] if v == -100) > 2  # the specials too

    metrics = task.compute_metrics(data, features, outputs)
    pred = [[t if t in TRAINED else "O" for t in s] for s in gold]
    assert metrics["precision"] == pytest.approx(precision_score(gold, pred)) == 1.0
    assert metrics["recall"] == pytest.approx(recall_score(gold, pred)) == pytest.approx(3 / 4)
    assert metrics["f1"] == pytest.approx(f1_score(gold, pred))


# -- column flags -----------------------------------------------------------------------------


def parsed_data(argv: list[str], tiny_bert: Path, tmp_path: Path):
    from flaxtrainer.cli.job import load_data

    (model_args, data_args, _, _), _ = train_parser().parse(
        fast_flags(tmp_path / "out", tiny_bert) + argv
    )
    return load_data(data_args, model_args, data_args.task_name or "ner")


def tags_of(ds) -> list[list[str]]:
    names = ds.features["tags"].feature.names
    return [[names[t] for t in tags] for tags in ds["tags"]]


def test_column_flags_reach_the_reader(tiny_bert, tmp_path):
    three = tmp_path / "three.conll"
    three.write_text("EU NNP B-ORG\nrejects VBZ O\n\nPeter NNP B-PER\n")
    dsd, _ = parsed_data(["--train_file", str(three), "--task_name", "pos"], tiny_bert, tmp_path)
    assert tags_of(dsd["train"]) == [["NNP", "VBZ"], ["NNP"]]
    dsd, _ = parsed_data(
        ["--train_file", str(three), "--label_column", "-1", "--token_column", "1"],
        tiny_bert,
        tmp_path,
    )
    assert dsd["train"]["tokens"] == [["NNP", "VBZ"], ["NNP"]]
    assert tags_of(dsd["train"]) == [["B-ORG", "O"], ["B-PER"]]

    conllu = tmp_path / "train.conllu"
    conllu.write_text("1\tDo\tdo\tAUX\tVBP\t_\t0\troot\t_\t_\n2\tgo\tgo\tVERB\tVB\t_\t1\tx\t_\t_\n")
    dsd, _ = parsed_data(["--train_file", str(conllu), "--conllu_tag", "xpos"], tiny_bert, tmp_path)
    assert tags_of(dsd["train"]) == [["VBP", "VB"]]
    dsd, _ = parsed_data(["--train_file", str(conllu)], tiny_bert, tmp_path)
    assert tags_of(dsd["train"]) == [["AUX", "VERB"]]


def test_chunk_on_a_three_column_ner_file_is_a_clear_error(tiny_bert, tmp_path):
    three = tmp_path / "three.conll"
    three.write_text("EU NNP B-ORG\nrejects VBZ O\n")
    argv = fast_flags(tmp_path / "out", tiny_bert) + [
        "--train_file", str(three), "--task_name", "chunk", "--do_train",
    ]  # fmt: skip
    code, _, stderr = run_main(argv)
    assert code == 2
    error = next(line for line in stderr.splitlines() if line.startswith("error:"))
    assert "three.conll has 3 columns" in error and "--label_column" in error
    code, _, stderr = run_main(argv + ["--conllu_tag", "lemma"])
    assert code == 2 and "conllu_tag" in stderr
