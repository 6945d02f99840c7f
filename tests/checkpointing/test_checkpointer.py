"""Checkpointer: sharded round trip, latest + best policy, the legacy two-folder layout, saving
from two processes. Damaged checkpoints and resume lookup: test_restore.py."""

import json
import logging
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
from checkpoint_helpers import (
    LOGGER,
    assert_same_state,
    data_mesh,
    make_state,
    meta_for,
    raw,
    restore,
    save_steps,
    steps_on_disk,
)

from flaxtrainer.checkpointing.checkpointer import (
    Checkpointer,
    CheckpointLocation,
    CheckpointMismatchError,
    find_checkpoint,
    restore_checkpoint,
)


@pytest.fixture(scope="module")
def mesh():
    return data_mesh()


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
