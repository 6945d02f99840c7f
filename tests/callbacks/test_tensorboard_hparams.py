"""TensorBoard's HPARAMS tab carries the options that change what is trained: ``crf`` and
``context_size`` (the task's) and ``classifier_init`` (the command line's), read back from the
event file of a real CLI run."""

from __future__ import annotations

import contextlib
import io
from types import SimpleNamespace

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from flaxtrainer.callbacks import ProgressBar
from flaxtrainer.callbacks.tensorboard import TensorBoard, with_hparams


def _session_hparams(logdir: str) -> dict:
    events = EventAccumulator(logdir, size_guidance={"tensors": 0})
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    data = plugin_data_pb2.HParamsPluginData.FromString(content)
    out = {}
    for name, value in data.session_start_info.hparams.items():
        kind = value.WhichOneof("kind")
        out[name] = getattr(value, kind)
    return out


def test_a_cli_run_writes_crf_context_size_and_classifier_init(tmp_path):
    from cli.conftest import build_tiny_bert, fast_flags, make_sentences, write_conll

    from flaxtrainer.cli.main import main

    model = build_tiny_bert(tmp_path / "model")
    train = write_conll(tmp_path / "train.conll", make_sentences(8, 0))
    output_dir = tmp_path / "out"
    argv = fast_flags(output_dir, model) + [
        "--train_file", str(train), "--do_train", "--max_steps", "1",
        "--report_to", "tensorboard",
        "--crf", "--context_size", "8", "--classifier_init", "hf",
    ]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0
    hparams = _session_hparams(str(output_dir / "runs"))
    assert hparams["crf"] is True
    assert hparams["context_size"] == 8
    assert hparams["classifier_init"] == "hf"
    assert hparams["learning_rate"] == 1e-3  # the training arguments are still there


def test_with_hparams_reuses_the_users_board_or_adds_one():
    own = TensorBoard(hparams={"classifier_init": "mine"})
    bar = ProgressBar()
    assert with_hparams([bar, own], ["tensorboard"], {"classifier_init": "lecun", "x": 1}) == [
        bar,
        own,
    ]
    assert own.hparams == {"classifier_init": "mine", "x": 1}  # the user's value wins
    added = with_hparams([bar], ["tensorboard"], {"classifier_init": "lecun"})
    assert isinstance(added[0], TensorBoard) and added[1:] == [bar]
    assert added[0].hparams == {"classifier_init": "lecun"}
    assert with_hparams([bar], ["mlflow"], {"classifier_init": "lecun"}) == [bar]


def test_a_library_trainer_gets_the_tasks_settings():
    task = SimpleNamespace(crf=True, context_size=16)
    trainer = SimpleNamespace(args=SimpleNamespace(to_dict=lambda: {"seed": 1}), task=task)
    board = TensorBoard(hparams={"classifier_init": "hf"})
    assert board.run_hparams(trainer) == {
        "seed": 1,
        "crf": True,
        "context_size": 16,
        "classifier_init": "hf",
    }
    plain = SimpleNamespace(args=trainer.args, task=SimpleNamespace())
    assert TensorBoard().run_hparams(plain) == {"seed": 1}
