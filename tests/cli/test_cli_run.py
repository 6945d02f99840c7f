"""End to end through the command line: one NER run (JSON / CSV / CoNLL inputs, a user
callback and a user task) checked by several tests, a POS run on CoNLL-U through the console
script, prediction on raw text, and prediction on a test split without labels."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, fast_flags

from flaxtrainer.cli.main import main
from flaxtrainer.outputs.results import read_predictions

USER_TASK = '''
from flaxtrainer.tasks import TokenClassificationTask


class CountingTask(TokenClassificationTask):
    """Adds the number of words it scored, to prove that it is the task in use."""

    def compute_metrics(self, dataset, features, outputs):
        metrics = super().compute_metrics(dataset, features, outputs)
        metrics["user_task_words"] = float(sum(len(t) for t in dataset["tokens"]))
        return metrics
'''


def conll_sentences(path: Path) -> list[list[list[str]]]:
    """Sentences of a tab-separated CoNLL file as rows of columns."""
    blocks = path.read_text().strip("\n").split("\n\n")
    return [[line.split("\t") for line in block.splitlines()] for block in blocks]


def run_main(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def ner_run(tmp_path_factory, tiny_bert, ner_files):
    """One training run: train .json, validation .csv, test .conll, callback, user task."""
    work = tmp_path_factory.mktemp("ner-run")
    (work / "my_tasks.py").write_text(USER_TASK)
    output_dir = work / "out"
    argv = fast_flags(output_dir, tiny_bert) + [
        "--train_file", str(ner_files["train_json"]),
        "--validation_file", str(ner_files["validation_csv"]),
        "--test_file", str(ner_files["test"]),
        "--do_train", "--do_eval", "--do_predict",
        "--num_train_epochs", "2",
        "--eval_strategy", "epoch",
        "--return_entity_level_metrics",
        "--callbacks", str(REPO / "examples" / "my_callback.py") + ":EventRecorder",
        "--task_class", "my_tasks:CountingTask",
    ]  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        code, stdout = run_main(argv)
    assert code == 0
    return output_dir, stdout


def load_json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_results_files_exist_and_parse(ner_run, ner_files):
    output_dir, _ = ner_run
    train = load_json(output_dir / "train_results.json")
    assert train["train_samples"] == 48 and train["train_loss"] > 0
    eval_ = load_json(output_dir / "eval_results.json")
    for key in ("eval_f1", "eval_precision", "eval_recall", "eval_accuracy", "eval_runtime"):
        assert 0 <= eval_[key] <= (1 if key != "eval_runtime" else 1e6), key
    assert eval_["eval_samples"] == 12
    entity_keys = {
        k for k in eval_ if k.endswith("_f1") and k not in ("eval_f1", "eval_overall_f1")
    }
    assert entity_keys and all(k.split("_")[1] in ("PER", "LOC", "ORG") for k in entity_keys)
    test = load_json(output_dir / "test_results.json")
    assert test["test_samples"] == 10 and "test_f1" in test
    assert all(k.startswith("test_") for k in test)
    assert load_json(output_dir / "all_results.json") == {**train, **eval_, **test}
    state = load_json(output_dir / "trainer_state.json")
    import jax

    steps_per_epoch = -(-48 // (2 * jax.device_count()))  # per-device batch 2
    assert state["global_step"] == 2 * steps_per_epoch and state["log_history"]


def test_tensorboard_logs_hold_scalars(ner_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    output_dir, _ = ner_run
    files = sorted((output_dir / "runs").rglob("events.out.tfevents.*"))
    assert files
    tags = set()
    for path in files:
        accumulator = EventAccumulator(str(path))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    assert any("loss" in tag for tag in tags) and any("f1" in tag for tag in tags)


def test_final_model_is_exported_in_hf_format(ner_run):
    from transformers import AutoTokenizer

    from flaxtrainer.models import from_pretrained

    output_dir, _ = ner_run
    model = from_pretrained(output_dir)
    assert model.config.num_labels == 7
    assert sorted(model.config.label2id) == sorted(
        load_json(output_dir / "flaxtrainer_task.json")["label_names"]
    )
    assert AutoTokenizer.from_pretrained(str(output_dir)).tokenize("John") == ["John"]


def test_predictions_file_has_one_line_per_test_word(ner_run, ner_files):
    output_dir, _ = ner_run
    predicted = read_predictions(output_dir / "test_predictions.txt")
    source = conll_sentences(ner_files["test"])
    assert len(predicted) == len(source)
    labels = set(load_json(output_dir / "flaxtrainer_task.json")["label_names"])
    for rows, gold_rows in zip(predicted, source):
        assert [r[:2] for r in rows] == gold_rows  # word and gold tag, in order
        assert all(len(r) == 3 and r[2] in labels for r in rows)


def test_user_callback_received_events(ner_run):
    output_dir, stdout = ner_run
    lines = (output_dir / "callback_events.jsonl").read_text().splitlines()
    events = [json.loads(line)["event"] for line in lines]
    assert events[0] == "on_train_begin"
    assert events.count("on_epoch_end") == 2
    # two evaluations during training; --do_eval reuses the one at the last step
    assert events.count("on_evaluate") == 2
    assert {"on_log", "on_save", "on_train_end", "on_predict"} <= set(events)
    assert events.index("on_train_end") < events.index("on_predict")
    assert stdout.count("[EventRecorder] evaluation") == 2


def test_user_task_class_is_used(ner_run, ner_files):
    output_dir, _ = ner_run
    # dev.csv (the validation file of the run) holds the same sentences as dev.conll
    dev_words = sum(len(sentence) for sentence in conll_sentences(ner_files["validation"]))
    assert load_json(output_dir / "eval_results.json")["eval_user_task_words"] == dev_words
    saved = load_json(output_dir / "flaxtrainer_task.json")
    assert saved["task_class"] == "my_tasks:CountingTask"
    assert saved["base_task_class"].endswith(":TokenClassificationTask")


def test_final_f1_is_printed(ner_run):
    _, stdout = ner_run
    assert "***** eval metrics *****" in stdout
    assert any(
        line.startswith("eval F1 = ") and "test F1 = " in line for line in stdout.splitlines()
    )


def test_pipeline_agrees_with_test_predictions(ner_run, ner_files):
    from flaxtrainer.inference.pipeline import TokenClassificationPipeline

    output_dir, _ = ner_run
    sentences = [[row[0] for row in s] for s in conll_sentences(ner_files["test"])]
    tagger = TokenClassificationPipeline(output_dir, batch_size=4)
    tagged = tagger.tag(sentences)
    written = read_predictions(output_dir / "test_predictions.txt")
    assert [[tag for tag, _ in s] for s in tagged] == [[r[2] for r in s] for s in written]
    assert all(0 < score <= 1 for s in tagged for _, score in s)
    result = tagger("John visited Paris.")
    assert result["text"] == "John visited Paris." and isinstance(result["entities"], list)
    assert not tagger._trainer.inputs._prepared  # nothing kept from one call to the next


def python_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # one CPU device, as a user's machine
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def test_predict_command_prints_json_lines(ner_run, tmp_path):
    output_dir, _ = ner_run
    inputs = tmp_path / "sentences.txt"
    inputs.write_text("Mary met Anna in Berlin today.\n\nGoogle said .\n")
    words = tmp_path / "words.jsonl"
    words.write_text(json.dumps(["John", "works", "for", "Acme"]) + "\n")
    proc = subprocess.run(
        [sys.executable, "-m", "flaxtrainer", "predict", "--model_name_or_path", str(output_dir),
         "--text", "John visited Paris.", "--input_file", str(inputs)],
        capture_output=True, text=True, env=python_env(), timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["text"] for r in results] == [
        "John visited Paris.", "Mary met Anna in Berlin today.", "", "Google said .",
    ]  # fmt: skip
    for result in results:
        for entity in result["entities"]:
            assert set(entity) == {"type", "text", "start", "end", "score"}
            assert result["text"][entity["start"] : entity["end"]] == entity["text"]
            assert entity["type"] in ("PER", "LOC", "ORG") and 0 < entity["score"] <= 1
    code, stdout = run_main(
        ["predict", "--model_name_or_path", str(output_dir), "--input_file", str(words)]
    )
    assert code == 0 and json.loads(stdout)["text"] == "John works for Acme"


def test_pos_on_conllu_through_the_console_script(tmp_path, tiny_bert, ner_files):
    output_dir = tmp_path / "pos"
    script = Path(sys.executable).with_name("flaxtrainer")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "flaxtrainer"]
    proc = subprocess.run(
        command + fast_flags(output_dir, tiny_bert) + [
            "--task_name", "pos",
            "--train_file", str(ner_files["train_conllu"]),
            "--validation_file", str(ner_files["validation_conllu"]),
            "--test_file", str(ner_files["test_conllu"]),
            "--do_train", "--do_eval", "--do_predict", "--report_to", "none",
        ],
        capture_output=True, text=True, env=python_env(), timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    eval_ = load_json(output_dir / "eval_results.json")
    assert 0 <= eval_["eval_accuracy"] <= 1 and "eval_f1" not in eval_
    assert "eval accuracy = " in proc.stdout
    rows = [r for s in read_predictions(output_dir / "test_predictions.txt") for r in s]
    test_words = [line for line in ner_files["test_conllu"].read_text().splitlines()
                  if line and not line.startswith("#")]  # fmt: skip
    assert len(rows) == len(test_words)
    assert [r[:2] for r in rows] == [[w.split("\t")[1], w.split("\t")[3]] for w in test_words]

    from flaxtrainer.inference.pipeline import TokenClassificationPipeline

    result = TokenClassificationPipeline(output_dir)("the Acme .")
    assert [w["word"] for w in result["words"]] == ["the", "Acme", "."]
    assert all(set(w) == {"word", "tag", "start", "end", "score"} for w in result["words"])


def test_predict_only_on_a_test_split_without_labels(ner_run, ner_files, tmp_path, monkeypatch):
    """`word predicted` lines and no test_results.json when the test split has no labels."""
    import flaxtrainer.data

    real_loader = flaxtrainer.data.load_token_classification_data

    def without_test_labels(**kwargs):
        dsd, names = real_loader(**kwargs)
        dsd["test"] = dsd["test"].remove_columns("tags")
        return dsd, names

    monkeypatch.setattr(flaxtrainer.data, "load_token_classification_data", without_test_labels)
    model_dir, _ = ner_run
    output_dir = tmp_path / "predict-only"
    code, _ = run_main(
        ["--model_name_or_path", str(model_dir), "--output_dir", str(output_dir),
         "--test_file", str(ner_files["test"]), "--do_predict", "--disable_tqdm"]
    )  # fmt: skip
    assert code == 0
    assert not (output_dir / "test_results.json").exists()
    predicted = read_predictions(output_dir / "test_predictions.txt")
    source = conll_sentences(ner_files["test"])
    assert [[r[0] for r in s] for s in predicted] == [[r[0] for r in s] for s in source]
    assert all(len(r) == 2 for s in predicted for r in s)
    expected = read_predictions(model_dir / "test_predictions.txt")
    assert [[r[1] for r in s] for s in predicted] == [[r[2] for r in s] for s in expected]


def test_unlabeled_conll_test_file(ner_run, ner_files, tmp_path):
    model_dir, _ = ner_run
    output_dir = tmp_path / "unlabeled"
    code, _ = run_main(
        ["--model_name_or_path", str(model_dir), "--output_dir", str(output_dir),
         "--test_file", str(ner_files["test_unlabeled"]), "--do_predict", "--disable_tqdm"]
    )  # fmt: skip
    assert code == 0
    assert all(
        len(r) == 2 for s in read_predictions(output_dir / "test_predictions.txt") for r in s
    )


def test_pipeline_falls_back_when_the_saved_task_class_is_gone(ner_run, tmp_path, caplog):
    import shutil

    from flaxtrainer.inference.pipeline import TokenClassificationPipeline

    output_dir, _ = ner_run
    copy = tmp_path / "model"
    shutil.copytree(output_dir, copy, ignore=shutil.ignore_patterns("checkpoints", "runs"))
    info = load_json(copy / "flaxtrainer_task.json")
    info["task_class"] = "module_that_is_gone_xyz:CountingTask"
    (copy / "flaxtrainer_task.json").write_text(json.dumps(info))
    sentence = ["John", "visited", "Paris", "."]
    expected = TokenClassificationPipeline(output_dir).tag([sentence])
    with caplog.at_level("WARNING", logger="flaxtrainer"):
        tagger = TokenClassificationPipeline(copy)
    assert "cannot import module 'module_that_is_gone_xyz'" in caplog.text
    assert type(tagger.task).__name__ == "TokenClassificationTask"
    assert tagger.tag([sentence]) == expected
