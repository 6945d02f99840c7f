"""Restoring checkpoints: damaged steps fall back to an older one (one warning, no traceback),
leftovers of interrupted saves, and ``--resume_from_checkpoint`` resolution."""

import logging
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from checkpoint_helpers import (
    LOGGER,
    assert_same_state,
    data_mesh,
    make_state,
    meta_for,
    restore,
    save_steps,
)

from flaxtrainer.checkpointing.checkpointer import (
    Checkpointer,
    CheckpointLocation,
    CheckpointNotFoundError,
    find_checkpoint,
    restore_checkpoint,
)


@pytest.fixture(scope="module")
def mesh():
    return data_mesh()


# ------------------------------------------------------------------ damage and leftovers
def _truncate_array_data(step_dir: Path) -> None:
    chunks = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert chunks, "expected orbax/ocdbt data files under state/**/d/"
    for chunk in chunks:
        chunk.write_bytes(chunk.read_bytes()[:3])


def _delete_array_manifests(step_dir: Path) -> None:
    manifests = list((step_dir / "state").rglob("manifest.ocdbt"))
    assert manifests, "expected ocdbt manifests under state/"
    for manifest in manifests:
        manifest.unlink()


def _garble_meta(step_dir: Path) -> None:
    (step_dir / "meta" / "metadata").write_text('{"trainer_state": {"glo')


def _drop_commit_marker(step_dir: Path) -> None:
    (step_dir / "commit_success.txt").unlink()


# A failed tensorstore read reports to orbax's event loop after it closed; harmless noise.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize(
    "damage", [_truncate_array_data, _delete_array_manifests, _garble_meta, _drop_commit_marker]
)
def test_damaged_newest_falls_back_to_the_previous(tmp_path, mesh, caplog, damage):
    states = save_steps(tmp_path, mesh, [1, 2])
    damage(tmp_path / "latest" / "2")
    with Checkpointer(tmp_path) as ckpt, caplog.at_level(logging.WARNING, logger=LOGGER):
        restored, meta, step = restore(ckpt, make_state(mesh, 0))
        assert step == 1 and meta["sampler"]["position"] == 7
        assert_same_state(restored, states[1])
        with pytest.raises(CheckpointNotFoundError, match="cannot be restored"):
            restore(ckpt, make_state(mesh, 0), step=2)  # an explicit step never falls back
    assert "Checkpoint step 2" in caplog.text and "unusable" in caplog.text


_DAMAGED_RESTORE = textwrap.dedent(
    """
    import logging, os, sys
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax, jax.numpy as jnp
    from pathlib import Path
    from flaxtrainer.checkpointing.checkpointer import (
        Checkpointer, CheckpointLocation, find_checkpoint, restore_checkpoint
    )

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s:%(name)s:%(message)s")
    root = Path(sys.argv[1])
    # as many arrays as a small model: each pending read of a failed restore used to print
    # an "Event loop is closed" traceback
    state = {f"layer{i}": jnp.arange(512.0) + i for i in range(200)}
    with Checkpointer(root) as ckpt:
        ckpt.save(1, state, {"step": 1})
        ckpt.save(2, state, {"step": 2})
    for chunk in (root / "latest" / "2" / "state").rglob("*"):
        if chunk.is_file() and chunk.parent.name == "d":
            chunk.write_bytes(chunk.read_bytes()[:3])
    for _ in range(3):
        with Checkpointer(root) as ckpt:
            _, meta, step = restore_checkpoint(CheckpointLocation(ckpt.latest_dir), state)
            assert step == 1 and meta == {"step": 1}
    # as a resume does it (read-only): orbax's read-only notices are no news either
    _, meta, step = restore_checkpoint(find_checkpoint(root, str(root)), state)
    assert step == 1 and meta == {"step": 1}
    print("RESTORED", file=sys.stderr, flush=True)
    """
)


def test_damaged_checkpoint_fallback_prints_one_warning_and_no_traceback(tmp_path):
    """What a user sees on stderr: one warning per restore naming the damaged step, nothing else
    (the failed reads' "Event loop is closed" tracebacks and orbax's notices are dropped)."""
    script = tmp_path / "restore.py"
    script.write_text(_DAMAGED_RESTORE)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "ckpt")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    err = done.stderr
    assert "RESTORED" in err
    assert "Traceback" not in err and "Event loop is closed" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip()]
    warnings = [
        line for line in lines if line.startswith("WARNING:flaxtrainer.checkpointing.checkpointer:")
    ]
    assert [line for line in lines if line not in warnings] == ["RESTORED"], err[-3000:]
    assert len(warnings) == 4, warnings  # one per restore
    assert all("Checkpoint step 2 in " in w and "unusable" in w for w in warnings)
    assert all("resuming from checkpoint step 1 instead" in w for w in warnings)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_no_usable_checkpoint_lists_every_failure(tmp_path, mesh):
    save_steps(tmp_path, mesh, [1, 2])
    _garble_meta(tmp_path / "latest" / "1")
    _drop_commit_marker(tmp_path / "latest" / "2")
    with Checkpointer(tmp_path) as ckpt:
        with pytest.raises(CheckpointNotFoundError, match="No usable checkpoint") as info:
            restore(ckpt, make_state(mesh, 0))
    assert "step 1: JSONDecodeError" in str(info.value)
    assert "step 2: OSError" in str(info.value)


def test_restore_without_checkpoints_is_a_clear_error(tmp_path, mesh):
    with Checkpointer(tmp_path) as ckpt:
        assert ckpt.latest_step() is None and ckpt.all_steps() == []
        with pytest.raises(CheckpointNotFoundError, match="No checkpoint to restore"):
            restore(ckpt, make_state(mesh, 0))
        with pytest.raises(CheckpointNotFoundError, match="available steps: none"):
            restore(ckpt, make_state(mesh, 0), step=3)


@pytest.mark.parametrize(
    "tmp_name", ["3.orbax-checkpoint-tmp", "3.orbax-checkpoint-tmp-1718000000"]
)
def test_leftover_of_an_interrupted_save_is_removed(tmp_path, mesh, caplog, tmp_name):
    states = save_steps(tmp_path, mesh, [1, 2])
    # what a save killed half-way leaves (orbax 0.12.8 names it `<step>.orbax-checkpoint-tmp`)
    leftover = tmp_path / "latest" / tmp_name
    shutil.copytree(tmp_path / "latest" / "2", leftover)
    (leftover / "commit_success.txt").unlink()
    with caplog.at_level(logging.WARNING, logger=LOGGER), Checkpointer(tmp_path) as ckpt:
        assert not leftover.exists()
        assert ckpt.all_steps() == [1, 2]
        restored, _, step = restore(ckpt, make_state(mesh, 0))
        ckpt.save(3, make_state(mesh, 3), meta_for(3))
        assert ckpt.all_steps() == [1, 2, 3]
    assert tmp_name in caplog.text
    assert step == 2
    assert_same_state(restored, states[2])


# -------------------------------------------------------------------- resume resolution
def test_find_checkpoint_resolves_every_form(tmp_path, mesh):
    run = tmp_path / "run"
    states = save_steps(run / "checkpoints", mesh, [1, 2])
    latest = run / "checkpoints" / "latest"
    for spec in (None, False, "", "False"):
        assert find_checkpoint(run, spec) is None
    for spec in (True, "true", "latest", "LATEST"):
        assert find_checkpoint(run, spec) == CheckpointLocation(latest)
    assert find_checkpoint(tmp_path, str(latest / "1")) == CheckpointLocation(latest, 1)
    for folder in (run, run / "checkpoints", latest):
        assert find_checkpoint(tmp_path, str(folder)) == CheckpointLocation(latest)
    assert str(CheckpointLocation(latest, 1)) == str(latest / "1")

    restored, _, step = restore_checkpoint(
        find_checkpoint(tmp_path, latest / "1"), make_state(mesh, 0)
    )
    assert step == 1
    assert_same_state(restored, states[1])
    _garble_meta(latest / "2")
    restored, _, step = restore_checkpoint(find_checkpoint(run, "latest"), make_state(mesh, 0))
    assert step == 1


def test_find_checkpoint_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("x")
    interrupted = tmp_path / "checkpoints" / "latest" / "7.orbax-checkpoint-tmp"
    (interrupted / "state").mkdir(parents=True)
    cases = [
        (tmp_path / "empty", "latest", "no checkpoint in output_dir"),
        (tmp_path, str(tmp_path / "missing"), "no such file or directory"),
        (tmp_path, str(tmp_path / "file.txt"), "is a file"),
        (tmp_path, str(tmp_path / "empty"), "no checkpoint found there"),
        (tmp_path, str(interrupted), "save that never finished"),
        (tmp_path, "latest", "no checkpoint in output_dir"),  # only an interrupted save inside
    ]
    for output_dir, spec, message in cases:
        with pytest.raises(CheckpointNotFoundError, match=message):
            find_checkpoint(output_dir, spec)
