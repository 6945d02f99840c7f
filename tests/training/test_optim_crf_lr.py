"""`--crf_learning_rate_multiplier`: the CRF's transition scores learn at a multiple of the lr."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flaxtrainer.config.training_args import TrainingArguments
from flaxtrainer.training.optim import is_crf_param, make_optimizer


def _params():
    ones = jnp.ones((3, 3))
    return {
        "crf": {"transitions": ones, "start_transitions": ones[0], "end_transitions": ones[0]},
        "classifier": {"kernel": ones, "transitions": ones},  # a same-named leaf elsewhere
    }


@pytest.mark.parametrize("multiplier", [1.0, 10.0])
def test_crf_updates_scale_by_the_multiplier(tmp_path, multiplier):
    args = TrainingArguments(
        output_dir=str(tmp_path), crf_learning_rate_multiplier=multiplier, max_grad_norm=0.0
    )
    tx = make_optimizer(args, optax.constant_schedule(1e-3))
    params = _params()
    grads = {k: {n: 0.5 * jnp.ones_like(v) for n, v in d.items()} for k, d in params.items()}
    updates, _ = tx.update(grads, tx.init(params), params)
    other = np.asarray(updates["classifier"]["kernel"])
    np.testing.assert_allclose(np.asarray(updates["classifier"]["transitions"]), other)
    for name in ("transitions", "start_transitions", "end_transitions"):
        crf = np.asarray(updates["crf"][name])
        np.testing.assert_allclose(
            crf, multiplier * other.reshape(-1)[: crf.size].reshape(crf.shape), rtol=1e-6
        )


def test_only_the_crf_module_is_matched():
    from jax.tree_util import DictKey

    assert is_crf_param((DictKey("crf"), DictKey("transitions")))
    assert not is_crf_param((DictKey("classifier"), DictKey("transitions")))
    assert not is_crf_param((DictKey("crf"), DictKey("kernel")))


def test_the_multiplier_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="crf_learning_rate_multiplier must be > 0"):
        TrainingArguments(output_dir=str(tmp_path), crf_learning_rate_multiplier=0.0)
