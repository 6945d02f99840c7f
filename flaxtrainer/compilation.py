"""XLA compilation across runs: JAX's persistent compilation cache.

Compiling one train step of a small encoder takes seconds on CPU (MiniLM: ~5 s), as long as
tens of steps of a short fine-tuning run, so the trainer compiles as few shapes as it can
(packing: one) and can keep the compiled programs across runs:
``TrainingArguments(compilation_cache_dir=...)`` turns on JAX's persistent cache, which stores
every program that took over ``jax_persistent_cache_min_compile_time_secs`` (1 s by default)
to compile, keyed by the program, the jax/jaxlib versions, the XLA flags and the devices. A
later run with the same model, batch shapes and settings loads them in well under a second.

The cache is process-wide JAX configuration: enabling it in one trainer enables it for every
later compilation of the process. It is trusted code: do not point it at a directory others
can write to.
"""

from __future__ import annotations

import logging
import os

import jax
from jax.experimental.compilation_cache import compilation_cache

logger = logging.getLogger(__name__)


def enable_compilation_cache(directory: str | os.PathLike[str]) -> str:
    """Store compiled programs in ``directory`` (created if missing) and reuse them.

    Safe to call after earlier compilations: JAX decides whether to use the cache at its first
    compilation, so the decision is reset here. Returns the absolute path.
    """
    path = os.path.abspath(os.path.expanduser(os.fspath(directory)))
    if jax.config.jax_compilation_cache_dir != path:
        os.makedirs(path, exist_ok=True)
        compilation_cache.set_cache_dir(path)
        compilation_cache.reset_cache()
        logger.info("JAX persistent compilation cache: %s", path)
    return path
