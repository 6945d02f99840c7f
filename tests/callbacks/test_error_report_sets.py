"""Several evaluation sets: each pass in ``trainer.last_evaluations`` gets its own error report
(JSON file and TensorBoard table + image); without that attribute, the last pass only."""

from __future__ import annotations

import json
from types import SimpleNamespace

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from flaxtrainer.callbacks import ErrorReport
from flaxtrainer.callbacks.tensorboard import TensorBoard
from flaxtrainer.tasks.error_report import entity_error_report
from flaxtrainer.tasks.schemes import get_scheme
from flaxtrainer.training.evaluation import EvalLoopOutput

GOLD = [["B-PER", "I-PER", "O", "B-LOC"]]


def _trainer(tmp_path, passes, keep_all=True):
    trainer = SimpleNamespace(
        args=SimpleNamespace(logging_dir=str(tmp_path / "runs"), output_dir=str(tmp_path)),
        state=SimpleNamespace(global_step=3),
        task=SimpleNamespace(),
        last_evaluation=passes[-1],
        is_training=False,
    )
    if keep_all:
        trainer.last_evaluations = tuple(passes)
    return trainer


def _passes():
    scheme = get_scheme("IOB2")
    dev = entity_error_report(GOLD, [["B-PER", "I-PER", "O", "O"]], scheme)
    ood = entity_error_report(GOLD, [["O", "O", "O", "B-LOC"]], scheme)
    return [
        EvalLoopOutput(None, [], [], {}, dev, "eval_dev"),
        EvalLoopOutput(None, [], [], {}, None, "eval_pos"),  # a set without entities
        EvalLoopOutput(None, [], [], {}, ood, "eval_ood"),
    ]


def test_each_set_gets_its_own_json_and_tensorboard_report(tmp_path):
    trainer = _trainer(tmp_path, _passes())
    ErrorReport().on_evaluate(trainer, {})
    TensorBoard().on_evaluate(trainer, {"eval_dev_f1": 0.5})
    dev = json.loads((tmp_path / "eval_dev_error_report.json").read_text())
    ood = json.loads((tmp_path / "eval_ood_error_report.json").read_text())
    assert (dev["total"]["exact"], dev["total"]["missed"]) == (1, 1)
    assert (ood["total"]["exact"], ood["total"]["missed"]) == (1, 1)
    assert dev["per_type"] != ood["per_type"]
    assert not (tmp_path / "eval_pos_error_report.json").exists()
    events = EventAccumulator(str(tmp_path / "runs"), size_guidance={"images": 0})
    events.Reload()
    assert set(events.Tags()["images"]) == {
        "eval_dev/entity_confusion",
        "eval_ood/entity_confusion",
    }


def test_without_last_evaluations_the_last_pass_is_reported(tmp_path):
    ErrorReport().on_evaluate(_trainer(tmp_path, _passes(), keep_all=False), {})
    assert [p.name for p in tmp_path.glob("*_error_report.json")] == ["eval_ood_error_report.json"]
