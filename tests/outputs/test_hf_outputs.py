"""Outputs that Hugging Face tools read: trainer_state.json (transformers.TrainerState),
training_args.json, all_results.json with run_ner.py's metric names; and one command-line run
reporting to TensorBoard and MLflow (a local file store), read back with the MLflow client."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import io
import json
import os
from pathlib import Path

import pytest
from training.toy import ToyTagger, ToyTask, make_dataset, toy_args

from flaxtrainer import FlaxTrainer
from flaxtrainer.cli.main import main, train_parser
from flaxtrainer.outputs.results import hf_metric_aliases, hf_trainer_state, write_trainer_state


def _cli_fixtures():
    """tests/cli/conftest.py's builders (tiny BERT, CoNLL files), loaded as a plain module."""
    path = Path(__file__).parents[1] / "cli" / "conftest.py"
    spec = importlib.util.spec_from_file_location("_hf_outputs_cli_fixtures", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """Train 6 steps, evaluate every 3, predict; report to TensorBoard and MLflow."""
    pytest.importorskip("mlflow")
    fx = _cli_fixtures()
    work = tmp_path_factory.mktemp("hf-outputs")
    model = fx.build_tiny_bert(work / "model")
    files = {
        name: fx.write_conll(work / f"{name}.conll", fx.make_sentences(n, seed))
        for name, n, seed in (("train", 48, 0), ("dev", 12, 1), ("test", 10, 2))
    }
    output_dir = work / "out"
    store = (work / "mlruns").as_uri()
    argv = fx.fast_flags(output_dir, model) + [
        "--train_file", str(files["train"]),
        "--validation_file", str(files["dev"]),
        "--test_file", str(files["test"]),
        "--do_train", "--do_eval", "--do_predict",
        "--num_train_epochs", "2",
        "--eval_strategy", "steps", "--eval_steps", "3",
        "--report_to", "tensorboard,mlflow",
        "--log_level", "warning",
        "--return_entity_level_metrics",  # HF's names differ only then (overall_*, *_number)
    ]  # fmt: skip
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", store)
        mp.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        mp.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # the callback allows file: stores
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    assert code == 0, err.getvalue()
    return output_dir, store, out.getvalue(), err.getvalue()


def _json(path: Path):
    return json.loads(path.read_text("utf-8"))


def test_trainer_state_loads_with_transformers(cli_run):
    from transformers import TrainerState

    output_dir = cli_run[0]
    state = TrainerState.load_from_json(str(output_dir / "trainer_state.json"))
    assert state.global_step == state.max_steps == 6
    losses = [e for e in state.log_history if "loss" in e]
    assert [e["step"] for e in losses] == [2, 4, 6]
    assert all(isinstance(e["loss"], float) for e in losses)
    evaluations = [e for e in state.log_history if "eval_f1" in e]
    # during training; --do_eval reuses the evaluation at the last step instead of a second pass
    assert [e["step"] for e in evaluations] == [3, 6]
    assert evaluations[-1]["eval_f1"] == _json(output_dir / "eval_results.json")["eval_f1"]
    assert any("train_loss" in e for e in state.log_history)
    assert state.best_model_checkpoint is None and state.stateful_callbacks == {}


def test_training_args_json_holds_every_argument_and_reruns(cli_run):
    output_dir = cli_run[0]
    saved = _json(output_dir / "training_args.json")
    assert saved["learning_rate"] == 1e-3 and saved["num_train_epochs"] == 2.0
    assert saved["report_to"] == ["tensorboard", "mlflow"]
    assert saved["train_file"].endswith("train.conll") and "model_name_or_path" in saved
    assert "token" not in saved
    # Its keys are flag names: as a config file it gives back the same training arguments.
    (_, _, _, again), _ = train_parser().parse([str(output_dir / "training_args.json")])
    assert json.loads(json.dumps(dataclasses.asdict(again))) == {
        k: v for k, v in saved.items() if k in dataclasses.asdict(again)
    }


def test_all_results_merges_the_splits_with_hugging_face_names(cli_run):
    output_dir = cli_run[0]
    merged = _json(output_dir / "all_results.json")
    for split in ("train", "eval", "test"):
        assert _json(output_dir / f"{split}_results.json").items() <= merged.items()
    assert "train_loss" in merged and "test_f1" in merged
    for name in ("precision", "recall", "f1", "accuracy"):
        assert merged[f"eval_overall_{name}"] == merged[f"eval_{name}"]
    for entity in ("PER", "LOC", "ORG"):
        assert f"eval_{entity}_f1" in merged
        assert merged[f"eval_{entity}_number"] == int(merged[f"eval_{entity}_support"]) > 0


def test_mlflow_has_the_train_loss_and_eval_f1(cli_run, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses file: stores
    output_dir, store, _, _ = cli_run
    client = mlflow.MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("flaxtrainer")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    state = _json(output_dir / "trainer_state.json")
    losses = client.get_metric_history(run.info.run_id, "loss")
    expected = [e for e in state["log_history"] if "loss" in e]
    assert [(m.step, m.value) for m in losses] == [(e["step"], e["loss"]) for e in expected]
    f1 = client.get_metric_history(run.info.run_id, "eval_f1")
    assert [m.step for m in f1] == [3, 6]  # --do_eval reused the evaluation at step 6
    assert f1[-1].value == _json(output_dir / "eval_results.json")["eval_f1"]
    assert run.data.params["learning_rate"] == "0.001"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert {"model/config.json", "model/model.safetensors"} <= artifacts
    assert any(p.name.startswith("events.out.tfevents") for p in (output_dir / "runs").iterdir())


def test_log_level_warning_silences_info_lines(cli_run):
    err = cli_run[3]
    assert " INFO " not in err
    assert "eval F1 =" in cli_run[2]  # the results are still printed


def test_trainer_train_writes_hf_trainer_state(tmp_path):
    from transformers import TrainerState

    args = toy_args(str(tmp_path / "out"), max_steps=4, pad_to_max_length=True, logging_steps=2)
    trainer = FlaxTrainer(ToyTagger(), ToyTask(), args, train_dataset=make_dataset(64))
    trainer.train()
    state = TrainerState.load_from_json(os.path.join(args.output_dir, "trainer_state.json"))
    assert state.global_step == 4
    assert state.log_history == json.loads(json.dumps(trainer.state.log_history))


def test_hf_trainer_state_keys_and_metric_aliases(tmp_path):
    from transformers import TrainerState

    fields = {f.name for f in dataclasses.fields(TrainerState)}
    trainer = FlaxTrainer(ToyTagger(), ToyTask(), toy_args(str(tmp_path)))
    assert set(hf_trainer_state(trainer.state)) == fields  # the installed transformers' fields
    path = write_trainer_state(tmp_path / "s.json", {"global_step": 3, "epoch_index": 1})
    assert TrainerState.load_from_json(str(path)).global_step == 3
    metrics = {"eval_f1": 0.5, "eval_PER_f1": 0.4, "eval_PER_support": 3.0, "eval_loss": 1.0}
    assert hf_metric_aliases(metrics) == {"eval_overall_f1": 0.5, "eval_PER_number": 3}
    assert hf_metric_aliases({"eval_f1": 0.5, "eval_loss": 1.0}) == {}  # no entity level
