"""Checkpointer: sharded round trip, latest + best policy, damaged checkpoints, resume lookup,
the legacy two-folder layout."""

import json
import logging
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from flaxtrainer.checkpointing.checkpointer import (
    Checkpointer,
    CheckpointLocation,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    find_checkpoint,
    restore_checkpoint,
)

LOGGER = "flaxtrainer.checkpointing.checkpointer"


@pytest.fixture(scope="module")
def mesh():
    assert jax.device_count() == 8, "tests/conftest.py should give 8 host CPU devices"
    return jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))


def make_state(mesh, seed: int) -> dict:
    """A train-state-like pytree: replicated params/optimizer/step/key, one batch-sharded array."""
    rng = np.random.default_rng(seed)
    replicated = NamedSharding(mesh, P())
    by_data = NamedSharding(mesh, P("data"))
    tree = {
        "params": {
            "kernel": rng.standard_normal((4, 6), dtype=np.float32),
            "bias": jnp.asarray(rng.standard_normal(6), dtype=jnp.bfloat16),
        },
        "opt_state": {
            "count": np.int32(seed),
            "mu": rng.standard_normal((4, 6)).astype(np.float32),
        },
        "step": np.int32(100 * seed),
        "rng": jax.random.key(seed),
    }
    state = jax.device_put(tree, replicated)
    state["per_device"] = jax.device_put(
        np.arange(16, dtype=np.int32).reshape(8, 2) + seed, by_data
    )
    return state


def meta_for(step: int) -> dict:
    return {
        "trainer_state": {"global_step": step, "best_metric": None, "log_history": [{"loss": 0.5}]},
        "epoch": step // 10,
        "sampler": {"epoch": 1, "position": 7 * step},
        "callbacks": {"EarlyStopping": {"patience_counter": np.int64(2)}},
    }


def raw(x) -> np.ndarray:
    """Host copy of an array; PRNG keys as their key data."""
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    return np.asarray(x)


def assert_same_state(restored, expected) -> None:
    assert jax.tree.structure(restored) == jax.tree.structure(expected)
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(expected)):
        assert got.dtype == want.dtype
        assert got.sharding == want.sharding
        assert raw(got).tobytes() == raw(want).tobytes()  # bitwise


def steps_on_disk(folder: Path) -> list[int]:
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def restore(ckpt: Checkpointer, target, step: int | None = None):
    """Restore from a Checkpointer's folder of steps as the trainer's resume does."""
    ckpt.wait_until_finished()  # a step still being written is not readable yet
    return restore_checkpoint(CheckpointLocation(ckpt.latest_dir, step), target)


def save_steps(directory, mesh, steps, **kwargs) -> dict[int, dict]:
    states = {}
    with Checkpointer(directory, **kwargs) as ckpt:
        for step in steps:
            states[step] = make_state(mesh, step)
            assert ckpt.save(step, states[step], meta_for(step))
    return states


# ------------------------------------------------------------------------------ round trip
def test_round_trip_on_mesh_is_bitwise_with_same_shardings(tmp_path, mesh):
    state = make_state(mesh, 3)
    with Checkpointer(tmp_path) as ckpt:
        assert ckpt.save(30, state, meta_for(30))
        ckpt.wait_until_finished()
        assert ckpt.all_steps() == [30] and ckpt.latest_step() == 30
        assert ckpt.step_path(30).is_dir()

        target = make_state(mesh, 0)  # same structure, other values
        restored, meta, step = restore(ckpt, target)
    assert step == 30
    assert_same_state(restored, state)
    assert all(len(x.sharding.device_set) == 8 for x in jax.tree.leaves(restored))
    assert meta["trainer_state"] == meta_for(30)["trainer_state"]
    assert meta["sampler"] == {"epoch": 1, "position": 210}
    assert meta["callbacks"] == {"EarlyStopping": {"patience_counter": 2}}  # numpy -> JSON


def test_restore_onto_abstract_target(tmp_path, mesh):
    state = make_state(mesh, 2)
    with Checkpointer(tmp_path, async_save=False) as ckpt:
        ckpt.save(5, state, meta_for(5))
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
        )
        restored, _, _ = restore(ckpt, abstract, step=5)
    assert_same_state(restored, state)


def test_save_returns_before_the_write_and_tolerates_donation(tmp_path, mesh):
    state = make_state(mesh, 4)
    expected = jax.tree.map(raw, state)
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, state, meta_for(1))
        for x in jax.tree.leaves(state):  # what donating the state to the next step does
            x.delete()
        ckpt.wait_until_finished()
        restored, _, _ = restore(ckpt, state)  # a donated state still works as the target
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(expected)):
        assert raw(got).tobytes() == want.tobytes()


def test_mismatched_target_fails_at_once_without_fallback(tmp_path, mesh, caplog):
    save_steps(tmp_path, mesh, [1, 2])
    target = make_state(mesh, 0)
    target["params"]["extra"] = jnp.zeros(3)
    with Checkpointer(tmp_path) as ckpt, caplog.at_level(logging.WARNING, logger=LOGGER):
        with pytest.raises(CheckpointMismatchError, match="does not match checkpoint"):
            restore(ckpt, target)
    assert "unusable" not in caplog.text


def test_meta_must_be_json(tmp_path, mesh):
    with Checkpointer(tmp_path) as ckpt:
        with pytest.raises(TypeError, match="JSON cannot store"):
            ckpt.save(1, make_state(mesh, 1), {"callback": object()})
        with pytest.raises(TypeError, match="must be a dict"):
            ckpt.save(1, make_state(mesh, 1), [1, 2])


# ----------------------------------------------------------------------- latest and best
def test_save_total_limit_keeps_the_newest(tmp_path, mesh):
    states = save_steps(tmp_path, mesh, [10, 20, 30, 40], save_total_limit=2)
    assert steps_on_disk(tmp_path / "latest") == [30, 40]
    with Checkpointer(tmp_path, save_total_limit=2) as ckpt:
        assert ckpt.all_steps() == [30, 40]
        restored, _, step = restore(ckpt, make_state(mesh, 0))
    assert step == 40
    assert_same_state(restored, states[40])


@pytest.mark.parametrize(
    ("metric", "greater_is_better", "values", "best"),
    [
        ("f1", True, {1: 0.5, 2: 0.8, 3: 0.7, 4: 0.8}, 2),  # a tie keeps the earlier
        ("loss", None, {1: 0.9, 2: 0.4, 3: 0.6, 4: 0.5}, 2),  # "loss" defaults to lower-better
        ("accuracy", False, {1: 0.3, 2: 0.2, 3: 0.1, 4: 0.4}, 3),
    ],
)
def test_best_is_kept_in_addition_to_the_latest(
    tmp_path, mesh, metric, greater_is_better, values, best
):
    """save_total_limit=1 keeps the newest step and, as in Hugging Face, the best one too;
    each step is written once, in one folder."""
    states = {s: make_state(mesh, s) for s in values}
    with Checkpointer(
        tmp_path,
        save_total_limit=1,
        metric_for_best_model=metric,
        greater_is_better=greater_is_better,
    ) as ckpt:
        for step, value in values.items():
            # the trainer's evaluate() prefixes metric names with "eval_"
            ckpt.save(step, states[step], meta_for(step), metrics={f"eval_{metric}": value})
        ckpt.wait_until_finished()
        assert ckpt.all_steps() == [best, 4]
        assert ckpt.best_step() == best
        assert ckpt.best_location() == CheckpointLocation(tmp_path / "latest", best)
        assert ckpt.best_metric() == pytest.approx(values[best])
        restored, meta, step = restore_checkpoint(ckpt.best_location(), make_state(mesh, 0))
    assert step == best and meta["epoch"] == best // 10
    assert_same_state(restored, states[best])
    assert steps_on_disk(tmp_path / "latest") == [best, 4]
    assert not (tmp_path / "best").exists()


def test_best_reopens_with_its_metric(tmp_path, mesh):
    kwargs = dict(metric_for_best_model="f1")
    with Checkpointer(tmp_path, **kwargs) as ckpt:
        ckpt.save(1, make_state(mesh, 1), meta_for(1), metrics={"f1": 0.6})
        ckpt.save(2, make_state(mesh, 2), meta_for(2), metrics={"f1": np.float32(0.9)})
    with Checkpointer(tmp_path, **kwargs) as ckpt:
        assert ckpt.best_step() == 2
        assert ckpt.save(3, make_state(mesh, 3), meta_for(3), metrics={"f1": 0.7})
        ckpt.wait_until_finished()
        assert ckpt.best_step() == 2 and ckpt.best_metric() == pytest.approx(0.9)


def test_each_step_is_written_once_and_ranked_while_saves_are_in_flight(
    tmp_path, mesh, monkeypatch
):
    # orbax writes the metrics with the step folder, which an async save has not made yet
    with Checkpointer(tmp_path, save_total_limit=1, metric_for_best_model="f1") as ckpt:
        writes = []
        real_save = ckpt._manager.save
        monkeypatch.setattr(
            ckpt._manager, "save", lambda step, **kw: writes.append(step) or real_save(step, **kw)
        )
        for step, f1 in [(1, 0.5), (2, 0.4), (3, 0.6), (4, 0.6), (5, 0.1)]:
            ckpt.save(step, make_state(mesh, step), meta_for(step), metrics={"eval_f1": f1})
            assert ckpt.best_step() == (1 if step < 3 else 3)  # known before the write ends
        assert writes == [1, 2, 3, 4, 5]
        assert ckpt.best_step() == 3 and ckpt.best_metric() == pytest.approx(0.6)
        ckpt.wait_until_finished()
        assert ckpt.all_steps() == [3, 5]


def test_no_best_without_metric_or_metrics(tmp_path, mesh):
    with Checkpointer(tmp_path, save_total_limit=1) as ckpt:
        ckpt.save(1, make_state(mesh, 1), meta_for(1), metrics={"eval_f1": 0.5})
        ckpt.save(2, make_state(mesh, 2), meta_for(2), metrics={"eval_f1": 0.1})
        assert ckpt.best_step() is None and ckpt.best_location() is None
        ckpt.wait_until_finished()
        assert ckpt.all_steps() == [2]  # no metric set: nothing is kept as the best
    assert not (tmp_path / "best").exists()
    with Checkpointer(tmp_path / "b", save_total_limit=1, metric_for_best_model="f1") as ckpt:
        ckpt.save(1, make_state(mesh, 1), meta_for(1))
        ckpt.save(2, make_state(mesh, 2), meta_for(2), metrics={"eval_f1": float("nan")})
        ckpt.save(3, make_state(mesh, 3), meta_for(3), metrics={"eval_loss": 0.1})
        assert ckpt.best_location() is None and ckpt.best_metric() is None
        ckpt.wait_until_finished()
        assert ckpt.all_steps() == [3]


def test_saving_the_same_step_twice(tmp_path, mesh):
    first, second, third = make_state(mesh, 1), make_state(mesh, 2), make_state(mesh, 3)
    with Checkpointer(tmp_path, metric_for_best_model="f1") as ckpt:
        assert ckpt.save(5, first, meta_for(5))
        # end-of-training save at the step just saved: skipped...
        assert not ckpt.save(5, second, meta_for(5))
        assert not ckpt.save(5, second, meta_for(5), metrics={"eval_loss": 0.5})
        assert_same_state(restore(ckpt, make_state(mesh, 0))[0], first)
        # ... unless it brings the metric (the step is written again, with it) or is forced
        assert ckpt.save(5, second, meta_for(5), metrics={"eval_f1": 0.5})
        assert ckpt.best_step() == 5
        assert_same_state(restore(ckpt, make_state(mesh, 0))[0], second)
        assert ckpt.save(5, third, meta_for(5), force=True)
        assert_same_state(restore(ckpt, make_state(mesh, 0))[0], third)
        assert ckpt.all_steps() == [5]


def test_resuming_from_an_older_step_replaces_the_abandoned_ones(tmp_path, mesh, caplog):
    save_steps(tmp_path, mesh, [1, 2, 3])
    new_two = make_state(mesh, 22)
    with Checkpointer(tmp_path) as ckpt, caplog.at_level(logging.WARNING, logger=LOGGER):
        _, _, step = restore(ckpt, make_state(mesh, 0), step=1)
        assert step == 1
        assert ckpt.save(2, new_two, meta_for(2))
        assert ckpt.all_steps() == [1, 2]
        restored, _, step = restore(ckpt, make_state(mesh, 0))
    assert "[2, 3]" in caplog.text
    assert step == 2
    assert_same_state(restored, new_two)


# ------------------------------------------------------------------- legacy layout
def write_legacy_run(root: Path, mesh, values: dict[int, float]) -> dict[int, dict]:
    """What flaxtrainer wrote before one manager: ``latest/`` (the newest step, no metrics)
    and ``best/`` (a second copy of the best step, with its metrics), by orbax directly."""

    def manager(folder: Path, **options) -> ocp.CheckpointManager:
        return ocp.CheckpointManager(
            folder,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=1, enable_async_checkpointing=False, **options
            ),
            item_names=("state", "meta"),
        )

    latest = manager(root / "latest")
    best = manager(root / "best", best_fn=lambda m: m["eval_f1"], best_mode="max")
    states = {}
    for step, f1 in values.items():
        states[step] = make_state(mesh, step)
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(states[step]),
            meta=ocp.args.JsonSave(json.loads(json.dumps(meta_for(step), default=int))),
        )
        latest.save(step, args=args)
        best.save(step, args=args, metrics={"eval_f1": f1})
    latest.close()
    best.close()
    assert steps_on_disk(root / "latest") == [max(values)]
    assert len(steps_on_disk(root / "best")) == 1
    return states


def test_legacy_best_folder_still_restores_until_a_better_step_replaces_it(tmp_path, mesh):
    states = write_legacy_run(tmp_path, mesh, {1: 0.5, 2: 0.9, 3: 0.7})
    # resuming the old run: its newest step is where it always was
    _, meta, step = restore_checkpoint(
        find_checkpoint(tmp_path, str(tmp_path)), make_state(mesh, 0)
    )
    assert step == 3 and meta["epoch"] == 0
    with Checkpointer(tmp_path, save_total_limit=1, metric_for_best_model="f1") as ckpt:
        assert ckpt.best_location() == CheckpointLocation(tmp_path / "best", 2)
        assert ckpt.best_metric() == pytest.approx(0.9)
        restored, _, step = restore_checkpoint(ckpt.best_location(), make_state(mesh, 0))
        assert step == 2
        assert_same_state(restored, states[2])
        ckpt.save(4, make_state(mesh, 4), meta_for(4), metrics={"eval_f1": 0.8})  # worse
        assert ckpt.best_step() == 2 and (tmp_path / "best" / "2").is_dir()
        ckpt.save(5, make_state(mesh, 5), meta_for(5), metrics={"eval_f1": 0.95})
        assert ckpt.best_location() == CheckpointLocation(tmp_path / "latest", 5)
        assert not (tmp_path / "best").exists()  # superseded: deleted
        ckpt.wait_until_finished()
        assert ckpt.all_steps() == [5]
    with Checkpointer(tmp_path, metric_for_best_model="f1") as ckpt:
        assert ckpt.best_location() == CheckpointLocation(tmp_path / "latest", 5)


def test_legacy_best_folder_of_an_abandoned_timeline_is_dropped(tmp_path, mesh, caplog):
    write_legacy_run(tmp_path, mesh, {1: 0.5, 2: 0.9, 3: 0.7})
    with Checkpointer(tmp_path, metric_for_best_model="f1") as ckpt:
        ckpt.save(2, make_state(mesh, 22), meta_for(2), metrics={"eval_f1": 0.1})  # resumed at 1
        assert ckpt.best_location() == CheckpointLocation(tmp_path / "latest", 2)
        assert not (tmp_path / "best").exists()


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


def test_closed_checkpointer_refuses_work(tmp_path, mesh):
    ckpt = Checkpointer(tmp_path)
    ckpt.close()
    ckpt.close()
    with pytest.raises(RuntimeError, match="is closed"):
        ckpt.save(1, make_state(mesh, 1), meta_for(1))


# ------------------------------------------------------------------------------ multi-host
_WORKER = textwrap.dedent(
    """
    import json, os, sys
    pid, port, root = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid)
    import numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    from flaxtrainer.checkpointing.checkpointer import Checkpointer, CheckpointLocation, restore_checkpoint

    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))

    def make(seed):
        r = np.random.default_rng(seed)
        host = {"w": (r.standard_normal((4, 6)).astype(np.float32), P()),
                "batch": (np.arange(16, dtype=np.float32).reshape(8, 2) + seed, P("data"))}
        return {k: jax.make_array_from_callback(x.shape, NamedSharding(mesh, spec),
                                                lambda idx, x=x: x[idx])
                for k, (x, spec) in host.items()}

    def local(tree):
        return {k: [np.asarray(s.data).tolist() for s in v.addressable_shards]
                for k, v in tree.items()}

    with Checkpointer(root, save_total_limit=2, metric_for_best_model="f1") as ckpt:
        for step, f1 in ((1, 0.5), (2, 0.9), (3, 0.7), (4, 0.6)):
            ckpt.save(step, make(step), {"epoch": step}, metrics={"eval_f1": f1})
        ckpt.wait_until_finished()
        state, meta, step = restore_checkpoint(CheckpointLocation(ckpt.latest_dir), make(0))
        best, _, best_step = restore_checkpoint(ckpt.best_location(), make(0))
        print("RESULT " + json.dumps({
            "steps": ckpt.all_steps(), "step": step, "meta": meta, "best_step": best_step,
            "latest_ok": local(state) == local(make(4)), "best_ok": local(best) == local(make(2)),
        }), flush=True)
    jax.distributed.shutdown()
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_save_and_restore_together(tmp_path):
    """All processes call save/restore (no process-0 guards); the newest two and the best
    are kept."""
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(pid), str(port), str(tmp_path / "ckpt")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for pid in (0, 1)
    ]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=120)[0])
    finally:
        for proc in procs:
            proc.kill()
    for pid, (proc, out) in enumerate(zip(procs, outputs)):
        assert proc.returncode == 0, f"process {pid} failed:\n{out[-3000:]}"
        lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
        assert lines, f"process {pid} printed no result:\n{out[-3000:]}"
        result = json.loads(lines[-1][len("RESULT ") :])
        assert result == {
            "steps": [2, 3, 4],
            "step": 4,
            "meta": {"epoch": 4},
            "best_step": 2,
            "latest_ok": True,
            "best_ok": True,
        }
    assert steps_on_disk(tmp_path / "ckpt" / "latest") == [2, 3, 4]
    assert not (tmp_path / "ckpt" / "best").exists()
