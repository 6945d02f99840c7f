"""Optimizer pieces, sharding helpers and TrainerState serialisation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flaxtrainer import TrainingArguments
from flaxtrainer.batching.batch_format import DEFAULT_PAD_VALUES
from flaxtrainer.callbacks.state import TrainerControl, TrainerState
from flaxtrainer.runtime.sharding import DATA_AXIS, make_mesh, pad_rows, put_batch
from flaxtrainer.training.optim import decay_mask, make_optimizer, make_schedule, path_names

from .toy import ToyTagger


def _args(**kw):
    return TrainingArguments(output_dir="o", learning_rate=1.0, **kw)


def test_decay_mask_spares_biases_and_norm_scales_by_kind():
    params = nnx.state(ToyTagger(), nnx.Param)
    flat = {
        path_names(p): m for p, m in jax.tree_util.tree_flatten_with_path(decay_mask(params))[0]
    }
    assert flat[("norm", "scale")] is False and flat[("norm", "bias")] is False
    assert flat[("dense", "bias")] is False and flat[("head", "bias")] is False
    assert flat[("dense", "kernel")] is True and flat[("embed", "embedding")] is True


def test_weight_decay_applies_only_where_masked():
    params = {"layer": {"kernel": jnp.ones(3), "bias": jnp.ones(3)}}
    tx = make_optimizer(
        _args(weight_decay=0.5, lr_scheduler_type="constant", max_grad_norm=0.0), lambda _: 0.1
    )
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = jax.jit(tx.update)(zeros, tx.init(params), params)
    np.testing.assert_allclose(updates["layer"]["kernel"], -0.05)  # -lr * wd * p
    np.testing.assert_allclose(updates["layer"]["bias"], 0.0)


@pytest.mark.parametrize("kind", ["linear", "cosine", "constant_with_warmup"])
def test_schedule_warmup_then_decay(kind):
    schedule = make_schedule(_args(warmup_steps=10, lr_scheduler_type=kind), total_steps=110)
    assert float(schedule(0)) == 0.0
    assert float(schedule(5)) == pytest.approx(0.5)
    assert float(schedule(10)) == pytest.approx(1.0)
    end = float(schedule(110))
    assert (
        end == pytest.approx(1.0)
        if kind == "constant_with_warmup"
        else end == pytest.approx(0.0, abs=1e-6)
    )
    if kind == "linear":
        assert float(schedule(60)) == pytest.approx(0.5)


def test_adafactor_and_clipping_build_and_step():
    params = {"w": jnp.ones((4, 4)), "bias": jnp.ones(4)}
    for args in (_args(adafactor=True, weight_decay=0.1), _args(max_grad_norm=1.0)):
        tx = make_optimizer(args, make_schedule(args, 10))
        grads = jax.tree.map(lambda p: 100 * jnp.ones_like(p), params)
        updates, _ = jax.jit(tx.update)(grads, jax.jit(tx.init)(params), params)
        assert all(np.isfinite(np.asarray(u)).all() for u in jax.tree.leaves(updates))


def test_mesh_put_batch_and_pad_rows():
    mesh = make_mesh()
    assert mesh.shape[DATA_AXIS] == len(jax.devices()) == 8
    batch = pad_rows(
        {"input_ids": np.ones((5, 4), np.int32), "labels": np.ones((5, 4), np.int32)},
        8,
        DEFAULT_PAD_VALUES,
    )
    assert batch["labels"][5:].tolist() == [[-100] * 4] * 3 and batch["input_ids"][5:].sum() == 0
    arrays = put_batch(batch, mesh)
    assert len(arrays["labels"].addressable_shards) == 8 and arrays["labels"].addressable_shards[
        0
    ].data.shape == (1, 4)
    with pytest.raises(ValueError, match="more than 4"):
        pad_rows({"x": np.ones((5, 1))}, 4, DEFAULT_PAD_VALUES)


def test_trainer_state_json_round_trip(tmp_path):
    state = TrainerState(
        global_step=7, epoch=1.5, best_metric=0.25, log_history=[{"loss": 1.0, "step": 1}]
    )
    path = tmp_path / "trainer_state.json"
    state.save_to_json(path)
    assert TrainerState.load_from_json(path) == state
    assert TrainerState.from_dict({**state.to_dict(), "unknown_future_key": 1}) == state
    control = TrainerControl(should_log=True, should_save=True, should_training_stop=True)
    control._new_step()
    assert not (control.should_log or control.should_save) and control.should_training_stop
