"""Packing is a pure speed choice: packed and padded training are one computation.

The sampler is chosen independently of the layout and every dropout mask is keyed by (example,
position in the example), so a run with ``packing=True`` and one with ``packing=False`` (same
seed, same data, dropout on, 4 devices) end with the same weights up to float rounding.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from flaxtrainer import FlaxTrainer

from .test_packing import tiny_bert
from .toy import ToyTask, make_dataset, toy_args

DEVICES = 4
STEPS = 6


def _is_key_bias(path: tuple) -> bool:
    """Attention key biases: softmax is invariant to them, their gradient is rounding noise."""
    names = [str(getattr(p, "key", p)) for p in path]
    return len(names) >= 2 and names[-2] == "key" and names[-1] == "bias"


def _run(tmp_path, packing: bool, accum: int):
    data = make_dataset(96, seed=11, min_len=1, max_len=30)
    eval_data = make_dataset(24, seed=12, min_len=1, max_len=30)
    args = toy_args(
        str(tmp_path / f"p{int(packing)}a{accum}"),
        per_device_train_batch_size=4 // accum,
        gradient_accumulation_steps=accum,
        max_steps=STEPS,
        packing=packing,
        learning_rate=1e-3,
    )
    trainer = FlaxTrainer(
        tiny_bert(dropout=0.1, seed=5),
        ToyTask(),
        args,
        train_dataset=data,
        devices=jax.devices()[:DEVICES],
    )
    assert trainer.packing is packing
    trainer.train()
    eval_loss = trainer.evaluate(eval_data)["eval_loss"]
    params = jax.tree_util.tree_leaves_with_path(nnx.state(trainer.model, nnx.Param))
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in params if not _is_key_bias(p)}, (
        eval_loss
    )


@pytest.mark.parametrize("accum", [1, 2])
def test_packed_training_equals_padded_training(tmp_path, accum):
    packed, packed_loss = _run(tmp_path, True, accum)
    padded, padded_loss = _run(tmp_path, False, accum)
    assert packed.keys() == padded.keys()
    worst = max(float(np.abs(packed[k] - padded[k]).max()) for k in packed)
    print(f"accum={accum}: max |dw| = {worst:.3g}, eval loss {packed_loss} vs {padded_loss}")
    assert worst < 2e-5
    assert packed_loss == pytest.approx(padded_loss, rel=1e-5)
