"""output_dir guard: an earlier run is refused with a message naming the folder and both flags;
overwrite_output_dir deletes its checkpoints; resume_from_checkpoint continues it."""

from __future__ import annotations

import pytest

from flaxtrainer import TrainingArguments
from flaxtrainer.outputs.output_dir import (
    OutputDirExistsError,
    prepare_output_dir,
    previous_run,
    wants_resume,
)


def _args(output_dir, **overrides):
    return TrainingArguments(output_dir=str(output_dir), report_to="none", **overrides)


def _fake_run(root):
    step = root / "checkpoints" / "latest" / "4"
    step.mkdir(parents=True)
    (step / "commit_success.txt").write_text("ok")
    (root / "config.json").write_text("{}")
    (root / "model.safetensors").write_bytes(b"x")
    (root / "notes.txt").write_text("mine")
    return root


def test_what_counts_as_an_earlier_run(tmp_path):
    assert previous_run(tmp_path / "missing") == []
    (tmp_path / "notes.txt").write_text("a user's file is no run")
    (tmp_path / "trainer_state.json").write_text("{}")  # a log only: overwritten freely
    (tmp_path / "checkpoints" / "latest").mkdir(parents=True)  # empty folders: no run either
    assert previous_run(tmp_path) == []
    _fake_run(tmp_path / "run")
    assert previous_run(tmp_path / "run") == ["checkpoints/", "model.safetensors", "config.json"]


def test_an_earlier_run_is_refused_with_both_ways_out(tmp_path):
    root = _fake_run(tmp_path / "out")
    with pytest.raises(OutputDirExistsError) as info:
        prepare_output_dir(_args(root))
    err = info.value
    assert isinstance(err, FileExistsError)
    assert err.message == (
        f"output_dir {root} already holds a training run "
        "(checkpoints/, model.safetensors, config.json)"
    )
    assert "--overwrite_output_dir" in err.hint and "--resume_from_checkpoint latest" in err.hint
    assert "\n" not in str(err)
    assert (root / "checkpoints" / "latest" / "4").is_dir()  # refusing touches nothing


def test_overwrite_deletes_only_the_old_checkpoints(tmp_path):
    root = _fake_run(tmp_path / "out")
    prepare_output_dir(_args(root, overwrite_output_dir=True))
    assert not (root / "checkpoints").exists()
    assert (root / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("spec", ["latest", "true", "/some/checkpoint"])
def test_resuming_keeps_everything(tmp_path, spec):
    root = _fake_run(tmp_path / "out")
    prepare_output_dir(_args(root, resume_from_checkpoint=spec))
    assert (root / "checkpoints" / "latest" / "4").is_dir()


def test_empty_or_new_output_dir_is_fine(tmp_path):
    prepare_output_dir(_args(tmp_path / "new"))
    prepare_output_dir(_args(tmp_path))


def test_wants_resume():
    assert not any(wants_resume(v) for v in (None, False, "", "false", "None", " FALSE "))
    assert all(wants_resume(v) for v in (True, "latest", "true", "out/checkpoints"))
