"""Shared by the checkpointing tests: a sharded train-state-like pytree, its meta, bitwise
comparison, and saving / restoring steps as the trainer does."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from flaxtrainer.checkpointing.checkpointer import (
    Checkpointer,
    CheckpointLocation,
    restore_checkpoint,
)

LOGGER = "flaxtrainer.checkpointing.checkpointer"


def data_mesh() -> jax.sharding.Mesh:
    """The 8-device ``data`` mesh of tests/conftest.py's host CPU devices."""
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
