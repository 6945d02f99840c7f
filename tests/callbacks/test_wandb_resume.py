"""W&B and resuming: a run stopped at a checkpoint and resumed from it continues the same W&B
run (same id), and W&B's step goes on from the checkpoint instead of restarting at 0.

Offline mode (no network): each ``wandb.init`` writes ``offline-run-<time>-<id>/run-<id>.wandb``
under ``WANDB_DIR``; the test reads those record files back (LevelDB log blocks of protobuf
``Record``s, the format ``wandb sync`` uploads) to see what W&B would show.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from flaxtrainer.callbacks import Callback, WandB

from .test_trackers import _args, _train

_BLOCK = 32768  # LevelDB log: records never straddle a block header
_HEADER = 7  # file header (":W&B" magic + version), and each chunk's crc32, length, type
_FULL, _FIRST, _LAST = 1, 2, 4


class StopAt(Callback):
    """Ends training after ``step`` (the trainer saves a checkpoint there): a run cut short."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer) -> None:
        if trainer.state.global_step == self.step:
            trainer.control.should_training_stop = True


def _records(path: Path) -> Iterator[object]:
    """The protobuf ``Record``s of an offline run file, in order."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, pending = _HEADER, b""
    while pos + _HEADER <= len(data):
        if _BLOCK - pos % _BLOCK < _HEADER:  # block trailer too short for a chunk header
            pos += _BLOCK - pos % _BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        chunk = data[pos + _HEADER : pos + _HEADER + length]
        pos += _HEADER + length
        pending = chunk if kind in (_FULL, _FIRST) else pending + chunk
        if kind in (_FULL, _LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def _history(path: Path) -> list[dict[str, str]]:
    """History rows of a run file: key -> JSON text of the value."""
    return [
        {item.key or "/".join(item.nested_key): item.value_json for item in record.history.item}
        for record in _records(path)
        if record.WhichOneof("record_type") == "history"
    ]


def _run_ids(path: Path) -> set[str]:
    return {r.run.run_id for r in _records(path) if r.WhichOneof("record_type") == "run"}


def test_a_resumed_run_continues_its_wandb_run_and_its_steps(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    wandb_dir = tmp_path / "wandb_dir"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(wandb_dir))
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    monkeypatch.delenv("WANDB_RESUME", raising=False)
    output_dir = tmp_path / "out"
    common = dict(
        report_to="none", max_steps=4, logging_steps=1, save_strategy="steps", save_steps=2
    )

    first = WandB()
    stopped = _train(_args(output_dir, **common), [first, StopAt(2)])
    assert stopped.state.global_step == 2
    first.finish()  # what the end of the process does; the resumed run is a new process
    wandb.teardown()

    again = WandB()  # a fresh callback: its run id can only come from the checkpoint
    resumed = _train(_args(output_dir, resume_from_checkpoint="latest", **common), [again])
    assert resumed.state.global_step == 4
    again.finish()
    wandb.teardown()

    assert again.run_id == first.run_id is not None
    folders = sorted((wandb_dir / "wandb").glob("offline-run-*"))
    assert [f.name.rsplit("-", 1)[1] for f in folders] == [first.run_id] * 2
    files = [folder / f"run-{first.run_id}.wandb" for folder in folders]
    assert [_run_ids(f) for f in files] == [{first.run_id}] * 2

    rows = [_history(f) for f in files]
    steps = [[int(row["_step"]) for row in run] for run in rows]
    assert steps == [[1, 2], [3, 4]]  # one row per step (training and evaluation merged)
    for run in rows:
        for row in run:
            assert int(row["train/global_step"]) == int(row["_step"])
    logged = {
        e["step"]: e["eval_accuracy"] for e in resumed.state.log_history if "eval_accuracy" in e
    }
    assert [float(run[-1]["eval/accuracy"]) for run in rows] == pytest.approx(
        [logged[2], logged[4]]
    )
