"""The hashed-counter dropout PRNG: uniform, uncorrelated, pure, and sharding-independent."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from flaxtrainer.config import training_rules
from flaxtrainer.models.dropout_rng import HASH_PRNG, dropout_key
from flaxtrainer.runtime.sharding import make_mesh


def _uniform(key, shape=(512, 512)) -> np.ndarray:
    return np.asarray(jax.random.uniform(key, shape))


def test_bits_are_uniform_and_uncorrelated():
    key = jax.random.fold_in(dropout_key(42), 3)
    u = _uniform(key)
    assert abs(u.mean() - 0.5) < 3e-3 and abs(u.var() - 1 / 12) < 2e-3
    counts, _ = np.histogram(u, bins=64, range=(0, 1))
    expected = u.size / 64
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 120  # 63 degrees of freedom: p ~ 1e-5 at 120
    assert abs(np.corrcoef(u[:, :-1].ravel(), u[:, 1:].ravel())[0, 1]) < 0.01  # neighbours
    assert abs(np.corrcoef(u[:-1].ravel(), u[1:].ravel())[0, 1]) < 0.01  # rows
    other = _uniform(jax.random.fold_in(dropout_key(42), 4))
    assert abs(np.corrcoef(u.ravel(), other.ravel())[0, 1]) < 0.01  # keys one step apart
    keep = np.asarray(jax.random.bernoulli(key, 0.9, (64, 4, 32, 32)))
    assert abs(keep.mean() - 0.9) < 3e-3


def test_keys_are_pure_and_distinct():
    base = dropout_key(7)
    assert jax.random.key_impl(base) == HASH_PRNG
    a, b = jax.random.fold_in(base, 1), jax.random.fold_in(base, 1)
    assert np.array_equal(jax.random.key_data(a), jax.random.key_data(b))
    derived = [jax.random.key_data(jax.random.fold_in(base, i)) for i in range(200)]
    derived += list(jax.random.key_data(jax.random.split(base, 200)))
    assert len({tuple(np.asarray(k).tolist()) for k in derived}) == 400
    # a different seed, the same counters: different bits
    assert not np.array_equal(_uniform(dropout_key(8), (64,)), _uniform(base, (64,)))
    # every bit width JAX may ask for
    for dtype in (jnp.uint8, jnp.uint16, jnp.uint32):
        bits = np.asarray(jax.random.bits(base, (4096,), dtype))
        assert bits.dtype == dtype and len(np.unique(bits)) > 200
    with pytest.raises(ValueError, match="dropout_rng must be one of"):
        dropout_key(0, "philox")
    for kind in training_rules.DROPOUT_RNGS:  # every name TrainingArguments accepts has a key
        assert dropout_key(0, kind) is not None


def test_masks_do_not_depend_on_sharding():
    mesh = make_mesh()
    assert len(mesh.devices.flat) == 8  # conftest: 8 host devices
    key = jax.random.fold_in(dropout_key(0), 11)
    shape = (16, 3, 24, 24)

    def mask(key):
        return jax.random.bernoulli(key, 0.9, shape)

    whole = np.asarray(jax.jit(mask)(key))
    split = jax.jit(mask, out_shardings=NamedSharding(mesh, P("data")))(key)
    assert len(split.sharding.device_set) == 8
    np.testing.assert_array_equal(np.asarray(split), whole)
    # driven by a sharded operand, as inside the train step
    x = jax.device_put(jnp.ones(shape), NamedSharding(mesh, P("data")))
    dropped = jax.jit(lambda k, x: jnp.where(jax.random.bernoulli(k, 0.9, x.shape), x, 0))
    np.testing.assert_array_equal(np.asarray(dropped(key, x)), whole.astype(np.float32))


def test_threefry_option_is_jax_default_generator():
    key = dropout_key(5, "threefry")
    assert str(jax.random.key_impl(key)) == str(jax.random.key_impl(jax.random.key(5)))
    np.testing.assert_array_equal(_uniform(key, (32,)), _uniform(jax.random.key(5), (32,)))
