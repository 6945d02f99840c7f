"""The persistent compilation cache option: programs are written, and found again after the
in-memory caches are gone."""

import jax
import jax.monitoring
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.compilation_cache import compilation_cache

from flaxtrainer.runtime.compilation import enable_compilation_cache


@pytest.fixture
def restore_cache_config():
    """The cache is process-wide JAX configuration: put it back as it was."""
    saved = (
        jax.config.jax_compilation_cache_dir,
        jax.config.jax_persistent_cache_min_compile_time_secs,
    )
    yield
    jax.config.update("jax_compilation_cache_dir", saved[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", saved[1])
    compilation_cache.reset_cache()


def test_cache_stores_programs_and_serves_them_again(tmp_path, restore_cache_config):
    jnp.ones(3).block_until_ready()  # something compiled before the cache is enabled
    path = enable_compilation_cache(tmp_path / "jax")
    assert path == str(tmp_path / "jax") and jax.config.jax_compilation_cache_dir == path
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)

    hits: list[str] = []

    def listen(event: str, **kwargs) -> None:
        if event == "/jax/compilation_cache/cache_hits":
            hits.append(event)

    jax.monitoring.register_event_listener(listen)
    try:

        def program(x):
            return jnp.tanh(x @ x.T).sum(0) * 3

        x = np.arange(12.0, dtype=np.float32).reshape(3, 4)
        first = np.asarray(jax.jit(program)(x))
        assert any((tmp_path / "jax").iterdir())  # written to disk
        assert not hits
        jax.clear_caches()  # as a new process would start
        again = np.asarray(jax.jit(program)(x))
        assert hits  # read back instead of compiled
        np.testing.assert_array_equal(first, again)
    finally:
        jax.monitoring.unregister_event_listener(listen)
