"""Several evaluation sets: `--validation_file` repeated on the command line, and a dict of
datasets as `FlaxTrainer(eval_dataset=...)`, each set reported as `eval_<name>_*` as Hugging
Face's Trainer does for a dict (`metric_key_prefix=f"eval_{name}"`).

One training run with three validation files (`dev.conll`, `ood.conll`, and a second
`dev.conll` that becomes `dev_2`) is checked against `--do_eval` runs of the trained model on
each file alone, and best-model selection by one set's key is checked against the log (those
tests are slow: they share one ~45 s run). The API tests use the toy tagger: a dict of eval
datasets, best checkpoint and early stopping by one set's key, and the refused keys.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import fast_flags, make_sentences, write_conll
from flax import nnx
from training.toy import ToyTagger, ToyTask, make_dataset, toy_args

from flaxtrainer import FlaxTrainer
from flaxtrainer.callbacks import Callback, EarlyStopping
from flaxtrainer.cli.main import main
from flaxtrainer.data.loader import validation_splits
from flaxtrainer.errors import MetricForBestModelError

SETS = ("dev", "ood", "dev_2")
COMPARED = ("f1", "accuracy", "loss", "samples")


def run_main(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


def load_json(path: Path) -> dict:
    return json.loads(path.read_text())


def with_misc(sentences):
    """The sentences with every LOC entity retagged MISC: a tag the training data lacks."""
    return [(words, [t.replace("LOC", "MISC") for t in tags]) for words, tags in sentences]


@pytest.fixture(scope="module")
def eval_files(tmp_path_factory, ner_files) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("multi-eval-data")
    (folder / "other").mkdir()
    return {
        "dev": ner_files["validation"],  # dev.conll
        "ood": write_conll(folder / "ood.conll", with_misc(make_sentences(10, 7))),
        "dev_2": write_conll(folder / "other" / "dev.conll", make_sentences(8, 3)),
    }


@pytest.fixture(scope="module")
def multi_run(tmp_path_factory, tiny_bert, ner_files, eval_files):
    """Train 3 epochs, evaluating the three sets each epoch; keep the best by eval_ood_f1."""
    output_dir = tmp_path_factory.mktemp("multi-eval") / "out"
    validation = [arg for name in SETS for arg in ("--validation_file", str(eval_files[name]))]
    argv = fast_flags(output_dir, tiny_bert) + [
        "--train_file", str(ner_files["train"]), *validation,
        "--do_train", "--do_eval",
        "--num_train_epochs", "3", "--learning_rate", "5e-3",
        "--eval_strategy", "epoch", "--save_strategy", "epoch",
        "--metric_for_best_model", "eval_ood_f1", "--load_best_model_at_end",
    ]  # fmt: skip
    code, stdout = run_main(argv)
    assert code == 0
    return output_dir, stdout


def test_several_validation_files_name_their_sets_by_file_stem(tmp_path):
    a, b, c = tmp_path / "dev.conll", tmp_path / "x" / "dev.conll", tmp_path / "ood-2024.conll"
    assert validation_splits(a) == {"validation": a}  # one file: as always
    assert validation_splits([a]) == {"validation": a}
    assert validation_splits([a, c, b]) == {
        "validation_dev": a,
        "validation_ood_2024": c,
        "validation_dev_2": b,
    }


@pytest.mark.slow  # the shared training run takes ~45 s on 2 CPU cores
def test_each_set_is_reported_under_its_prefix(multi_run, eval_files):
    output_dir, stdout = multi_run
    results = load_json(output_dir / "eval_results.json")
    sizes = {"dev": 12, "ood": 10, "dev_2": 8}
    for name in SETS:
        assert results[f"eval_{name}_samples"] == sizes[name]
        assert 0 <= results[f"eval_{name}_f1"] <= 1 and results[f"eval_{name}_loss"] > 0
    assert "eval_f1" not in results and "eval_loss" not in results
    assert {k: results[k] for k in results} == {
        k: v for k, v in load_json(output_dir / "all_results.json").items() if k in results
    }
    assert "eval dev F1 = " in stdout and "eval ood F1 = " in stdout
    # Every validation file adds its tags to the label list, as the single one does.
    labels = load_json(output_dir / "flaxtrainer_task.json")["label_names"]
    assert {"B-MISC", "I-MISC"} <= set(labels) and "B-LOC" in labels


@pytest.mark.slow  # the shared training run takes ~45 s on 2 CPU cores
def test_per_set_scores_equal_single_file_evaluations(multi_run, eval_files, tmp_path):
    output_dir, _ = multi_run
    results = load_json(output_dir / "eval_results.json")
    assert max(results[f"eval_{name}_accuracy"] for name in SETS) > 0.5  # a model that learned
    for name in SETS:
        single = tmp_path / f"single-{name}"
        code, _ = run_main(
            [
                "--model_name_or_path",
                str(output_dir),
                "--output_dir",
                str(single),
                "--validation_file",
                str(eval_files[name]),
                "--do_eval",
                "--per_device_eval_batch_size",
                "2",
                "--max_seq_length",
                "32",
                "--pad_to_max_length",
                "--disable_tqdm",
            ]  # fmt: skip
        )
        assert code == 0
        alone = load_json(single / "eval_results.json")
        for metric in COMPARED:
            assert results[f"eval_{name}_{metric}"] == pytest.approx(
                alone[f"eval_{metric}"], rel=1e-5, abs=1e-7
            ), (name, metric)


@pytest.mark.slow  # the shared training run takes ~45 s on 2 CPU cores
def test_the_best_model_is_chosen_by_the_named_sets_key(multi_run):
    output_dir, _ = multi_run
    state = load_json(output_dir / "trainer_state.json")
    during = [e for e in state["log_history"] if "eval_ood_f1" in e][:3]  # the 3 epochs
    assert [e["epoch"] for e in during] == [1, 2, 3]
    assert all(f"eval_{name}_loss" in e for e in during for name in SETS)  # one entry each
    best = max(during, key=lambda e: e["eval_ood_f1"])  # the first of equal scores
    assert state["best_metric"] == pytest.approx(best["eval_ood_f1"])
    assert state["best_global_step"] == best["step"]
    final = load_json(output_dir / "eval_results.json")  # load_best_model_at_end: that model
    assert final["eval_ood_loss"] == pytest.approx(best["eval_ood_loss"], rel=1e-5)


@pytest.mark.slow  # the shared training run takes ~45 s on 2 CPU cores
def test_tensorboard_gets_each_sets_metrics_under_its_prefix(multi_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    output_dir, _ = multi_run
    tags: set[str] = set()
    for path in sorted((output_dir / "runs").rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(path))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    assert {f"eval/{name}_f1" for name in SETS} <= tags


def test_an_ambiguous_metric_for_best_model_names_the_keys(tmp_path, tiny_bert, ner_files, capsys):
    argv = fast_flags(tmp_path / "out", tiny_bert) + [
        "--train_file", str(ner_files["train"]),
        "--validation_file", str(ner_files["validation"]),
        "--validation_file", str(ner_files["test"]),
        "--do_train", "--do_eval", "--metric_for_best_model", "f1",
    ]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error: metric_for_best_model='f1' names no evaluation set" in err
    assert "eval_dev_f1, eval_test_f1" in err and "hint:" in err


def test_a_dict_of_eval_datasets_in_the_api(tmp_path):
    """The API takes HF's dict: each set's metrics equal its own evaluate(), in one log entry;
    the best checkpoint and early stopping follow the named set's key, not the other set's."""

    class Snapshot(Callback):
        def __init__(self) -> None:
            self.params: dict[int, list[np.ndarray]] = {}

        def on_save(self, trainer, checkpoint_dir) -> None:
            leaves = jax.tree.leaves(trainer._train_state.params)
            self.params[trainer.state.global_step] = [np.asarray(x) for x in leaves]

    sets = {"a": make_dataset(6, seed=1), "b": make_dataset(9, seed=2)}
    # compute_metrics runs per set, a then b, at steps 2, 4, 6; then 4 evaluate() passes below.
    # b is best at step 4 and then worse (patience 1: stop at 6); a keeps improving.
    task = ToyTask(score_script=[0.1, 0.3, 0.2, 0.9, 0.8, 0.5, 0, 0, 0, 0])
    args = toy_args(
        str(tmp_path / "out"), max_steps=10, eval_strategy="steps", eval_steps=2,
        save_strategy="steps", save_steps=2, pad_to_max_length=True,
        metric_for_best_model="eval_b_score", load_best_model_at_end=True,
    )  # fmt: skip
    snapshot, early = Snapshot(), EarlyStopping("eval_b_score", patience=1)
    trainer = FlaxTrainer(ToyTagger(), task, args, make_dataset(32), sets, [snapshot, early])
    trainer.train()
    logged = [e for e in trainer.state.log_history if "eval_a_score" in e]
    assert [e["step"] for e in logged] == [2, 4, 6] and all("eval_b_loss" in e for e in logged)
    assert early.stopped_at == trainer.state.global_step == 6
    assert (trainer.state.best_global_step, trainer.state.best_metric) == (4, 0.9)
    assert Path(trainer.state.best_model_checkpoint).name == "4"
    final = [np.asarray(x) for x in jax.tree.leaves(nnx.state(trainer.model, nnx.Param))]
    assert all(np.array_equal(x, y) for x, y in zip(final, snapshot.params[4], strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(final, snapshot.params[6]))

    merged = trainer.evaluate()
    # each set's pass is kept for the error report, not only the last one
    assert [p.prefix for p in trainer.last_evaluations] == ["eval_a", "eval_b"]
    for name, data in sets.items():
        alone = trainer.evaluate(data)
        assert merged[f"eval_{name}_accuracy"] == alone["eval_accuracy"]
        assert merged[f"eval_{name}_loss"] == pytest.approx(alone["eval_loss"], rel=1e-6)
        assert merged[f"eval_{name}_samples"] == len(data)


def test_a_metric_for_best_model_naming_no_set_or_no_metric_is_refused(tmp_path):
    sets = {"a": make_dataset(6, seed=1), "b": make_dataset(9, seed=2)}
    ambiguous = toy_args(str(tmp_path / "o2"), max_steps=2, metric_for_best_model="accuracy")
    with pytest.raises(MetricForBestModelError, match="eval_a_accuracy, eval_b_accuracy"):
        FlaxTrainer(ToyTagger(), ToyTask(), ambiguous, make_dataset(32), sets).train()
    missing = toy_args(
        str(tmp_path / "o3"), max_steps=2, eval_strategy="steps", eval_steps=2,
        pad_to_max_length=True, metric_for_best_model="eval_a_f1",
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"no metric 'eval_a_f1'; its metrics: .*eval_a_accuracy"):
        FlaxTrainer(ToyTagger(), ToyTask(), missing, make_dataset(32), sets).train()
