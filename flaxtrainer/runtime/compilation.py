"""XLA compilation across runs: JAX's persistent compilation cache.

Compiling one train step of a small encoder takes seconds on CPU (MiniLM: ~5 s), as long as
tens of steps of a short fine-tuning run, so the trainer compiles as few shapes as it can
(packing: one) and can keep the compiled programs across runs:
``TrainingArguments(compilation_cache_dir=...)`` turns on JAX's persistent cache, which stores
every program that took over ``jax_persistent_cache_min_compile_time_secs`` (1 s by default)
to compile, keyed by the program, the jax/jaxlib versions, the XLA flags and the devices. A
later run with the same model, batch shapes and settings loads them in well under a second.

The cache is on by default (``compilation_cache_dir="auto"``): ``$FLAXTRAINER_COMPILATION_CACHE_DIR``
if set (``none`` there turns it off), else nothing of ours when ``JAX_COMPILATION_CACHE_DIR``
is set (JAX then uses that one itself), else ``$XDG_CACHE_HOME/flaxtrainer/jax`` (by default
``~/.cache/flaxtrainer/jax``), capped at ``DEFAULT_MAX_SIZE`` bytes (least recently used
entries go first). ``compilation_cache_dir="none"`` (``--compilation_cache_dir none``) turns
it off for a run.

The cache is process-wide JAX configuration: enabling it in one trainer enables it for every
later compilation of the process. It is trusted code: do not point it at a directory others
can write to.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)

#: Environment variable overriding the default cache folder; ``none`` turns the default off.
ENV = "FLAXTRAINER_COMPILATION_CACHE_DIR"
#: Values of ``compilation_cache_dir`` (and of ``ENV``) that mean "no cache".
OFF = frozenset({"", "none", "off", "false", "0", "no"})
#: Size cap of the default folder (not of a folder the user names): 2 GiB.
DEFAULT_MAX_SIZE = 2 * 2**30


def default_cache_dir() -> str | None:
    """The folder ``compilation_cache_dir="auto"`` stands for, or None for no cache of ours."""
    override = os.environ.get(ENV)
    if override is not None:
        return None if override.strip().lower() in OFF else os.path.expanduser(override)
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return None  # JAX reads it itself
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return os.path.join(os.path.expanduser(base), "flaxtrainer", "jax")


def resolve_cache_dir(value: str | os.PathLike[str] | None) -> str | None:
    """``compilation_cache_dir`` as given -> the folder to use, or None (off).

    ``"auto"`` -> ``default_cache_dir()``; None, ``"none"``, ``"off"``, ``""`` -> None;
    anything else -> that path, ``~`` expanded.
    """
    if value is None:
        return None
    text = os.fspath(value)
    if text.strip().lower() in OFF:
        return None
    if text == "auto":
        return default_cache_dir()
    return os.path.expanduser(text)


def enable_compilation_cache(directory: str | os.PathLike[str]) -> str:
    """Store compiled programs in ``directory`` (created if missing) and reuse them.

    Safe to call after earlier compilations: JAX decides whether to use the cache at its first
    compilation, so the decision is reset here. Returns the absolute path.
    """
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    path = os.path.abspath(os.path.expanduser(os.fspath(directory)))
    if jax.config.jax_compilation_cache_dir != path:
        if path == default_cache_dir() and jax.config.jax_compilation_cache_max_size == -1:
            jax.config.update("jax_compilation_cache_max_size", DEFAULT_MAX_SIZE)
        os.makedirs(path, exist_ok=True)
        compilation_cache.set_cache_dir(path)
        compilation_cache.reset_cache()
        logger.info("JAX persistent compilation cache: %s", path)
    return path
