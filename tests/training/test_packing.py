"""Packing: sentences packed into rows give the same logits, losses and runs as unpacked ones,
on any number of devices, in one compiled shape; it is on by default only where supported."""

import jax
import numpy as np
import pytest
from flax import nnx

from flaxtrainer import FlaxTrainer, TrainingArguments
from flaxtrainer.batching.sampler import LengthGroupedSampler
from flaxtrainer.models import (
    BertConfig,
    BertForTokenClassification,
    RobertaConfig,
    RobertaForTokenClassification,
)

from .toy import (
    NUM_LABELS,
    VOCAB,
    ToyTagger,
    ToyTask,
    make_dataset,
    masked_cross_entropy,
    reference_logits,
)

LABELS = tuple(f"T{i}" for i in range(NUM_LABELS))
TINY = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=64,
    labels=LABELS,
)


def tiny_bert(dropout: float = 0.0, seed: int = 0) -> BertForTokenClassification:
    config = BertConfig(**TINY, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    return BertForTokenClassification(config, rngs=nnx.Rngs(seed))


def tiny_roberta() -> RobertaForTokenClassification:
    config = RobertaConfig(
        **{**TINY, "max_position_embeddings": 66},
        pad_token_id=1,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    assert config.position_offset == 2
    return RobertaForTokenClassification(config, rngs=nnx.Rngs(1))


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_packed_evaluation_equals_unpacked(make_args, family):
    """Block-diagonal attention and restarted positions: each sentence sees only itself."""
    model = tiny_bert() if family == "bert" else tiny_roberta()
    data = make_dataset(45, seed=7, min_len=1, max_len=30)
    results = {}
    for packing in (True, False):
        trainer = FlaxTrainer(model, ToyTask(), make_args(packing=packing))
        assert trainer.packing is packing
        metrics = trainer.evaluate(data)
        shapes = trainer.evaluator.batch_shapes
        results[packing] = (metrics, trainer.last_evaluation.outputs, shapes)
    (packed, packed_out, packed_shapes), (plain, plain_out, _) = results[True], results[False]
    assert len(packed_shapes) == 1
    assert packed["eval_loss"] == pytest.approx(plain["eval_loss"], rel=1e-5)
    assert packed["eval_labelled_tokens"] == plain["eval_labelled_tokens"]
    for a, b, example in zip(packed_out, plain_out, data):
        assert a["logits"].shape == (len(example["ids"]), NUM_LABELS)
        np.testing.assert_allclose(a["logits"], b["logits"], rtol=1e-4, atol=1e-5)


def test_packed_training_loss_is_the_unpacked_masked_mean(make_args):
    data = make_dataset(40, seed=3, min_len=1, max_len=30)
    task = ToyTask(max_seq_length=64)
    args = make_args(max_steps=3, logging_steps=1, per_device_train_batch_size=16)
    trainer = FlaxTrainer(
        tiny_bert(seed=4), task, args, train_dataset=data, devices=jax.devices()[:1]
    )
    out = trainer.train()
    assert trainer.packing and out.metrics["train_compiled_shapes"] == 1
    (shape,) = trainer.training_run.batch_shapes
    assert shape[0] == 1 and shape[2] in (32, 48, 64)
    lengths = np.array([len(x["ids"]) for x in data])
    # better than the best bucketing could do: every row padded only to a multiple of 16
    assert out.metrics["padding_efficiency"] > lengths.sum() / (16 * np.ceil(lengths / 16)).sum()
    # step 1's logged loss equals the masked mean over its 16 sentences, computed unpacked
    features = task.prepare(data)
    first = LengthGroupedSampler(lengths, 16, seed=args.seed, balance_tokens=True).epoch(0)[0]
    chosen = [features[i] for i in first]
    loss_sum, count = masked_cross_entropy(
        reference_logits(tiny_bert(seed=4), chosen), [f["labels"] for f in chosen]
    )
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert logged[0] == pytest.approx(loss_sum / count, rel=1e-5)
    assert len(logged) == 3


def test_evaluation_after_training_runs_in_the_training_grid(make_args):
    """After training, evaluation fills the training grid: every evaluation set runs in the
    training shape (one eval-step compilation for all of them), with the outputs of an
    evaluation planned on its own."""
    train = make_dataset(48, seed=5, min_len=1, max_len=30)
    sets = {"a": make_dataset(37, seed=6, min_len=1, max_len=30), "b": make_dataset(9, seed=8)}
    args = make_args(max_steps=2, per_device_train_batch_size=8, per_device_eval_batch_size=4)
    trainer = FlaxTrainer(
        tiny_bert(seed=2), ToyTask(), args, train_dataset=train, devices=jax.devices()[:2]
    )
    trainer.train()
    grid = trainer.train_grid
    assert grid is not None
    for name, data in sets.items():
        metrics = trainer.evaluate(data)
        assert trainer.evaluator.batch_shapes == {(grid.rows, grid.width)}, name
        filled = trainer.last_evaluation.outputs
        trainer.train_grid = None  # plan this set's own batches and grid, as before training
        alone = trainer.evaluate(data)
        trainer.train_grid = grid
        assert metrics["eval_loss"] == pytest.approx(alone["eval_loss"], rel=1e-5)
        for a, b in zip(filled, trainer.last_evaluation.outputs):
            np.testing.assert_allclose(a["logits"], b["logits"], rtol=1e-4, atol=1e-5)
        trainer.evaluator.batch_shapes.clear()
    assert trainer.evaluator.eval_step._cache_size() <= 1 + len(sets)  # the grid's + each set's own


@pytest.fixture(scope="module")
def dropout_runs(tmp_path_factory):
    """The same packed 8-step run (dropout 0.1) on 8 devices and on one."""
    from .toy import toy_args

    data = make_dataset(64, seed=0)
    out = {}
    for name, devices, per_device in (("8", None, 2), ("1", jax.devices()[:1], 16)):
        args = toy_args(
            str(tmp_path_factory.mktemp(f"pack{name}")),
            per_device_train_batch_size=per_device,
            max_steps=8,
        )
        trainer = FlaxTrainer(
            tiny_bert(dropout=0.1), ToyTask(), args, train_dataset=data, devices=devices
        )
        out[name] = (trainer, trainer.train())
    return out


def test_packed_runs_do_not_depend_on_device_count(dropout_runs):
    (t8, out8), (t1, out1) = dropout_runs["8"], dropout_runs["1"]
    assert t8.packing and t1.packing and out8.global_step == out1.global_step == 8
    assert next(iter(t8.training_run.batch_shapes))[1] % 8 == 0  # grid rows split over 8 devices
    loss8 = [h["loss"] for h in t8.state.log_history if "loss" in h]
    loss1 = [h["loss"] for h in t1.state.log_history if "loss" in h]
    np.testing.assert_allclose(loss8, loss1, rtol=1e-5)
    assert loss8[-1] < loss8[0]
    # Adam turns float noise in near-zero gradients (other reduction order over 8 devices)
    # into updates of order lr; lr is 1e-2 here, differences stay far below it.
    for a, b in zip(
        jax.tree.leaves(nnx.state(t8.model, nnx.Param)),
        jax.tree.leaves(nnx.state(t1.model, nnx.Param)),
    ):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=2e-5)


def test_packing_is_on_only_where_supported(make_args, tmp_path):
    toy = FlaxTrainer(ToyTagger(), ToyTask(), make_args())  # no config.position_offset
    assert not toy.packing
    with pytest.raises(ValueError, match="not a flaxtrainer encoder"):
        FlaxTrainer(ToyTagger(), ToyTask(), make_args(packing=True))
    for layout in ({"pad_to_max_length": True}, {"bucket_widths": [16, 32]}, {"packing": False}):
        trainer = FlaxTrainer(tiny_bert(), ToyTask(), make_args(**layout))
        assert not trainer.packing
        assert not trainer.inputs.prepare(make_dataset(4)).packed
    with pytest.raises(ValueError, match="packing=True conflicts"):
        TrainingArguments(output_dir=str(tmp_path), packing=True, pad_to_max_length=True)
