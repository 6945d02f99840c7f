"""Trackers of --report_to: MLflow in a local file store, W&B offline, and the clear error when
a tracker's package is missing. (The command-line MLflow run is in tests/outputs/test_hf_outputs.py.)"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from training.toy import ToyTagger, ToyTask, make_dataset, toy_args

from flaxtrainer import FlaxTrainer
from flaxtrainer.callbacks import (
    LogPrinter,
    MLflow,
    ParameterOverview,
    TensorBoard,
    WandB,
    tracker_callbacks,
)
from flaxtrainer.callbacks.mlflow_tracker import import_mlflow
from flaxtrainer.callbacks.wandb_tracker import import_wandb
from flaxtrainer.cli.main import main


def _train(args, callbacks):
    trainer = FlaxTrainer(
        ToyTagger(),
        ToyTask(),
        args,
        train_dataset=make_dataset(64),
        eval_dataset=make_dataset(6),
        callbacks=callbacks,
    )
    trainer.train()
    return trainer


def _args(output_dir: Path, **overrides):
    values = dict(
        max_steps=4,
        logging_steps=2,
        eval_strategy="steps",
        eval_steps=2,
        pad_to_max_length=True,
        disable_tqdm=False,
    )
    values.update(overrides)
    return toy_args(str(output_dir), **values)


def test_tracker_callbacks_follow_the_arguments(tmp_path):
    def kinds(**overrides):
        return [type(c) for c in tracker_callbacks(toy_args(str(tmp_path), **overrides))]

    assert kinds() == [LogPrinter, ParameterOverview]  # toy_args: disable_tqdm, no tracker
    assert kinds(report_to="all", disable_tqdm=False) == [
        TensorBoard,
        MLflow,
        WandB,
        ParameterOverview,
    ]
    mine = TensorBoard(log_dir=str(tmp_path / "elsewhere"))
    args = toy_args(str(tmp_path), report_to="tensorboard")
    assert not any(isinstance(c, TensorBoard) for c in tracker_callbacks(args, [mine]))


@pytest.mark.parametrize("tracker", ["mlflow", "wandb"])
def test_a_missing_tracker_package_is_a_clear_error(tmp_path, monkeypatch, capsys, tracker):
    monkeypatch.setitem(sys.modules, tracker, None)  # `import <tracker>` now fails
    extra = f"flaxtrainer[{tracker}]"
    with pytest.raises(ImportError, match=rf"flaxtrainer\[{tracker}\]"):
        tracker_callbacks(toy_args(str(tmp_path), report_to=f"tensorboard,{tracker}"))
    with pytest.raises(ImportError, match=rf"flaxtrainer\[{tracker}\]"):
        {"mlflow": import_mlflow, "wandb": import_wandb}[tracker]()
    argv = ["--model_name_or_path", str(tmp_path / "no-model"), "--output_dir", str(tmp_path)]
    assert main([*argv, "--do_train", "--report_to", tracker]) == 2
    err = capsys.readouterr().err
    assert f"error: --report_to {tracker}: not installed" in err
    assert "hint:" in err and extra in err


def test_mlflow_records_params_metrics_and_the_model_in_a_file_store(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    store = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "toy")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # the callback sets it
    args = _args(tmp_path / "out", report_to="mlflow", learning_rate=0.02)
    callbacks = tracker_callbacks(args)
    (tracker,) = [c for c in callbacks if isinstance(c, MLflow)]
    trainer = _train(args, callbacks)
    trainer.predict(make_dataset(4))

    client = mlflow.MlflowClient(tracking_uri=store)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "toy"
    assert run.data.params["learning_rate"] == "0.02"
    assert run.data.params["report_to"] == "['mlflow']"
    losses = client.get_metric_history(tracker.run_id, "loss")
    logged = [e for e in trainer.state.log_history if "loss" in e]
    assert [m.step for m in losses] == [e["step"] for e in logged] == [2, 4]
    assert [m.value for m in losses] == pytest.approx([e["loss"] for e in logged])
    accuracy = client.get_metric_history(tracker.run_id, "eval_accuracy")
    evals = [e for e in trainer.state.log_history if "eval_accuracy" in e]
    assert [m.step for m in accuracy] == [e["step"] for e in evals] == [2, 4]
    assert [m.value for m in accuracy] == pytest.approx([e["eval_accuracy"] for e in evals])
    assert run.data.metrics["train_loss"] == pytest.approx(
        trainer.state.log_history[-1]["train_loss"]
    )
    assert "test_accuracy" in run.data.metrics  # predict() after training: the same run
    artifacts = {a.path for a in client.list_artifacts(tracker.run_id, "model")}
    assert "model/trainer_state.json" in artifacts  # the exported folder (the toy has no config)


def test_a_resumed_run_continues_its_mlflow_run(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    store = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    output_dir = tmp_path / "out"
    first = _args(output_dir, report_to="mlflow", max_steps=2, save_strategy="steps", save_steps=2)
    (tracker,) = [c for c in tracker_callbacks(first) if isinstance(c, MLflow)]
    _train(first, [tracker])
    resumed_args = _args(
        output_dir,
        report_to="mlflow",
        max_steps=4,
        save_strategy="steps",
        save_steps=2,
        resume_from_checkpoint="latest",
    )
    (again,) = [c for c in tracker_callbacks(resumed_args) if isinstance(c, MLflow)]
    _train(resumed_args, [again])
    assert again.run_id == tracker.run_id  # from the checkpoint's callback state
    client = mlflow.MlflowClient(tracking_uri=store)
    assert [m.step for m in client.get_metric_history(again.run_id, "loss")] == [2, 4]
    run = client.get_run(again.run_id)
    assert run.info.status == "FINISHED" and run.data.params["max_steps"] == "2"


def test_wandb_offline_writes_its_run_folder(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    args = _args(tmp_path / "out", report_to="wandb")
    callbacks = tracker_callbacks(args)
    (tracker,) = [c for c in callbacks if isinstance(c, WandB)]
    trainer = _train(args, callbacks)
    run_id = tracker.run_id
    summary = dict(tracker.run.summary)
    tracker.finish()
    wandb.teardown()  # waits for wandb's writer process: finish() returns before it is done
    assert summary["train_loss"] == pytest.approx(trainer.state.log_history[-1]["train_loss"])
    assert summary["eval/accuracy"] == pytest.approx(
        [e for e in trainer.state.log_history if "eval_accuracy" in e][-1]["eval_accuracy"]
    )
    (folder,) = (Path(args.output_dir) / "wandb").glob(f"offline-run-*-{run_id}")
    records = (folder / f"run-{run_id}.wandb").read_bytes()  # what `wandb sync` uploads
    for name in (b"learning_rate", b"train/loss", b"eval/accuracy", b"train/global_step"):
        assert name in records


@pytest.mark.parametrize("tensorboard_first", [True, False])
def test_parameter_overview_goes_to_a_file_tensorboard_and_debug(
    tmp_path, caplog, tensorboard_first
):
    """One INFO line with the totals; the table in parameters.txt, in TensorBoard (also when
    the TensorBoard callback comes after ParameterOverview, as the command line orders them)
    and in the log at DEBUG only."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    args = _args(tmp_path / "out", report_to="tensorboard", max_steps=2, eval_strategy="no")
    callbacks = tracker_callbacks(args)
    if not tensorboard_first:
        callbacks = [c for c in callbacks if not isinstance(c, TensorBoard)] + [TensorBoard()]
    assert isinstance(callbacks[0], TensorBoard) == tensorboard_first
    overview = next(c for c in callbacks if isinstance(c, ParameterOverview))
    with caplog.at_level("INFO", logger="flaxtrainer"):
        _train(args, callbacks)
    assert "head/kernel" in overview.text and "Total:" in overview.text
    messages = [r.getMessage() for r in caplog.records]
    assert not any("head/kernel" in m for m in messages)  # the table is DEBUG
    path = Path(args.output_dir) / "parameters.txt"
    (line,) = [m for m in messages if m.startswith("Model: ")]
    size = re.escape(f"{overview.total:,}") + r" parameters \([\d.]+ (bytes|kB)\)"
    assert re.fullmatch(
        f"Model: {size}; table in {re.escape(str(path))} and TensorBoard "
        r"\(text: parameters\)",
        line,
    ), line
    assert path.read_text() == overview.text + "\n"
    events = EventAccumulator(args.logging_dir, size_guidance={"tensors": 0})
    events.Reload()
    (text_event,) = events.Tensors("parameters/text_summary")
    assert text_event.step == 0
    assert "head/kernel" in text_event.tensor_proto.string_val[0].decode()


def test_parameter_overview_table_at_debug(tmp_path, caplog):
    args = _args(tmp_path / "out", max_steps=1, eval_strategy="no")
    overview = ParameterOverview()
    with caplog.at_level("DEBUG", logger="flaxtrainer"):
        _train(args, [overview])
    assert f"Model parameters:\n{overview.text}" in caplog.text
