"""Loss normalisation: logged loss is the exact masked mean; gradient accumulation equals one
large batch; bf16 compute keeps fp32 master weights."""

import jax
import numpy as np
import pytest
from flax import nnx

from flaxtrainer import FlaxTrainer
from flaxtrainer.batching.sampler import LengthGroupedSampler

from .toy import ToyTagger, ToyTask, make_dataset, masked_cross_entropy, reference_logits


def test_logged_and_eval_loss_equal_numpy_masked_cross_entropy(make_args):
    task = ToyTask()
    train = make_dataset(12, seed=3)  # one step of 16 rows holds all 12 (4 padding rows)
    evald = make_dataset(37, seed=4)  # 3 eval batches of 16, the last one partial
    model = ToyTagger(dropout=0.0, seed=1)
    train_features, eval_features = task.prepare(train), task.prepare(evald)

    eval_logits = reference_logits(model, eval_features)
    eval_sum, eval_count = masked_cross_entropy(eval_logits, [f["labels"] for f in eval_features])
    train_sum, train_count = masked_cross_entropy(
        reference_logits(model, train_features), [f["labels"] for f in train_features]
    )

    args = make_args(max_steps=1, pad_to_max_length=True)
    trainer = FlaxTrainer(model, task, args, train_dataset=train, eval_dataset=evald)
    metrics = trainer.evaluate()
    assert metrics["eval_loss"] == pytest.approx(eval_sum / eval_count, rel=1e-5)
    assert metrics["eval_labelled_tokens"] == eval_count
    # a mean of per-batch means would be measurably different: the test can fail
    per_batch = [
        masked_cross_entropy(
            eval_logits[i : i + 16], [f["labels"] for f in eval_features[i : i + 16]]
        )
        for i in range(0, 37, 16)
    ]
    assert abs(np.mean([s / c for s, c in per_batch]) - eval_sum / eval_count) > 1e-4

    trainer.train()
    logged = next(h for h in trainer.state.log_history if "loss" in h)
    assert logged["step"] == 1 and logged["loss"] == pytest.approx(
        train_sum / train_count, rel=1e-5
    )


def test_gradient_accumulation_equals_one_big_batch(make_args):
    data = make_dataset(160, seed=5, min_len=1, max_len=30)
    task = ToyTask()
    finals, losses = [], []
    for per_device, accum in ((2, 4), (8, 1)):  # 4 micro-batches of 16 rows vs one of 64
        args = make_args(
            per_device_train_batch_size=per_device,
            gradient_accumulation_steps=accum,
            max_steps=2,
            pad_to_max_length=True,
        )
        trainer = FlaxTrainer(ToyTagger(dropout=0.0, seed=2), task, args, train_dataset=data)
        trainer.train()
        finals.append([np.asarray(x) for x in jax.tree.leaves(nnx.state(trainer.model, nnx.Param))])
        losses.append([h["loss"] for h in trainer.state.log_history if "loss" in h])
        shapes = trainer.training_run.batch_shapes
        assert shapes and {s[:2] for s in shapes} == {(accum, 16 * per_device // 2)}
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
    for a, b in zip(*finals):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)

    # The micro-batches of step 1 hold different numbers of labelled tokens, so a mean of
    # micro-batch means (optax.MultiSteps) would give another loss and update.
    features = task.prepare(data)
    lengths = np.array([len(f["labels"]) for f in features])
    step_rows = LengthGroupedSampler(
        lengths, 64, seed=42, balance_tokens=True, micro_batches=4
    ).epoch(0)[0]
    micro = [step_rows[i : i + 16] for i in range(0, 64, 16)]
    model = ToyTagger(dropout=0.0, seed=2)
    sums = [
        masked_cross_entropy(
            reference_logits(model, [features[j] for j in m]), [features[j]["labels"] for j in m]
        )
        for m in micro
    ]
    counts = [c for _, c in sums]
    assert len(set(counts)) > 1
    global_mean = sum(s for s, _ in sums) / sum(counts)
    assert losses[0][0] == pytest.approx(global_mean, rel=1e-5)
    assert abs(np.mean([s / c for s, c in sums]) - global_mean) > 1e-3


def test_bfloat16_compute_keeps_fp32_master_weights(make_args):
    import jax.numpy as jnp

    data = make_dataset(64, seed=6)
    runs = {}
    for dtype in ("float32", "bfloat16"):
        model = ToyTagger(
            dropout=0.0, seed=3, dtype=jnp.bfloat16 if dtype == "bfloat16" else jnp.float32
        )
        args = make_args(dtype=dtype, max_steps=8, pad_to_max_length=True)
        trainer = FlaxTrainer(model, ToyTask(), args, train_dataset=data)
        runs[dtype] = [
            h["loss"] for h in trainer.train() and trainer.state.log_history if "loss" in h
        ]
        assert all(
            p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(trainer.model, nnx.Param))
        )
    assert np.isfinite(runs["bfloat16"]).all()
    np.testing.assert_allclose(runs["bfloat16"], runs["float32"], rtol=3e-2)
    assert runs["bfloat16"] != runs["float32"]  # bf16 compute did happen
