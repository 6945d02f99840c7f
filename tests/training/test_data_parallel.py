"""Data parallelism: 8 devices and 1 device give the same run (dropout on); bucketing bounds
compilations and reports padding efficiency; the trained parameters land back in the model."""

import jax
import numpy as np
import pytest
from flax import nnx

from flaxtrainer import FlaxTrainer
from flaxtrainer.batching.sampler import LengthGroupedSampler

from .toy import ToyTagger, ToyTask, make_dataset, masked_cross_entropy, reference_logits

STEPS = 20


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same 20-step run (dropout 0.1) on a mesh of 8 devices and on a single device."""
    from .toy import toy_args

    data = make_dataset(100, seed=0)
    out = {}
    for name, devices, per_device in (("8", None, 2), ("1", jax.devices()[:1], 16)):
        args = toy_args(
            str(tmp_path_factory.mktemp(f"dp{name}")),
            per_device_train_batch_size=per_device,
            max_steps=STEPS,
            pad_to_max_length=True,  # one compiled shape: compiling dropout is slow on CPU
        )
        model = ToyTagger(dropout=0.1, seed=0)
        trainer = FlaxTrainer(model, ToyTask(), args, train_dataset=data, devices=devices)
        out[name] = (trainer, trainer.train())
    return out


def test_device_count_does_not_change_the_run(runs):
    assert jax.config.jax_threefry_partitionable  # dropout bits independent of sharding
    (t8, out8), (t1, out1) = runs["8"], runs["1"]
    assert t8.num_devices == 8 and t1.num_devices == 1
    assert t8.train_batch_size == t1.train_batch_size == 16
    loss8 = np.array([h["loss"] for h in t8.state.log_history if "loss" in h])
    loss1 = np.array([h["loss"] for h in t1.state.log_history if "loss" in h])
    assert len(loss8) == len(loss1) == STEPS
    np.testing.assert_allclose(loss8, loss1, rtol=1e-5)
    assert loss8[-1] < loss8[0] * 0.8  # it does learn
    p8 = jax.tree.leaves(nnx.state(t8.model, nnx.Param))
    p1 = jax.tree.leaves(nnx.state(t1.model, nnx.Param))
    for a, b in zip(p8, p1):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    assert out8.global_step == STEPS and out8.training_loss == pytest.approx(
        out1.training_loss, rel=1e-5
    )


def test_dropout_is_active_in_training(runs):
    """Step 1's logged loss differs from the deterministic loss of the same rows and params."""
    trainer, _ = runs["8"]
    task = trainer.task
    features = task.prepare(trainer.train_dataset)
    lengths = np.array([len(f["labels"]) for f in features])
    rows = LengthGroupedSampler(lengths, 16, seed=trainer.args.seed).epoch(0)[0]
    initial = ToyTagger(dropout=0.1, seed=0)
    chosen = [features[i] for i in rows]
    loss_sum, count = masked_cross_entropy(
        reference_logits(initial, chosen), [f["labels"] for f in chosen]
    )
    first = next(h["loss"] for h in trainer.state.log_history if "loss" in h)
    assert abs(first - loss_sum / count) > 1e-3


def test_bucketing_bounds_compilations_and_reports_padding(make_args):
    # NER-like lengths: mostly short sentences, a few long ones
    data = make_dataset(80, seed=1, max_len=12) + make_dataset(20, seed=2, min_len=13, max_len=30)
    trainer = FlaxTrainer(
        ToyTagger(),
        ToyTask(),
        make_args(max_steps=12, logging_steps=4, group_by_length=True),
        train_dataset=data,
    )
    out = trainer.train()
    widths = trainer.inputs.prepare(trainer.train_dataset).widths
    assert widths == (16, 32)
    compiled = out.metrics["train_compiled_shapes"]
    run = trainer.training_run
    assert compiled == len(run.batch_shapes) and 1 <= compiled <= len(widths)
    assert run.train_step._cache_size() == compiled  # distinct shapes == real compilations
    lengths = np.array([len(x["ids"]) for x in trainer.train_dataset])
    assert (
        out.metrics["padding_efficiency"] > lengths.mean() / 32 * 1.2
    )  # well above padding to max
    assert 0 < out.metrics["padding_efficiency"] <= 1
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert [h["step"] for h in logs] == [4, 8, 12] and all(
        0 < h["padding_efficiency"] <= 1 for h in logs
    )


def test_pad_to_max_length_compiles_one_shape(make_args):
    args = make_args(pad_to_max_length=True, max_steps=3)
    trainer = FlaxTrainer(
        ToyTagger(), ToyTask(max_seq_length=48), args, train_dataset=make_dataset(40)
    )
    out = trainer.train()
    assert out.metrics["train_compiled_shapes"] == 1
    assert trainer.training_run.batch_shapes == {(1, 16, 48)}
    # 40 examples = 3 steps of 16 rows (the last with 8 padding rows), each row 48 wide
    real = sum(len(x["ids"]) for x in trainer.train_dataset)
    assert out.metrics["padding_efficiency"] == pytest.approx(real / (3 * 16 * 48))


def test_trained_params_are_written_back_and_usable(runs):
    trainer, _ = runs["8"]
    model = trainer.model
    before = ToyTagger(dropout=0.1, seed=0)
    assert not np.allclose(np.asarray(model.head.kernel[...]), np.asarray(before.head.kernel[...]))
    logits = model(np.ones((3, 5), np.int32), deterministic=True)  # plain host inputs still work
    assert logits.shape == (3, 5, 5) and np.isfinite(np.asarray(logits)).all()
    assert model.head.kernel[...].dtype == np.float32
