"""glibc malloc settings that stop the C allocator's per-step churn (applied at package import).

XLA:CPU allocates its step buffers (activations, gradients: a few KiB to tens of MiB each) with
``malloc`` and frees them at the end of each step. With glibc's defaults, buffers above the
dynamic mmap threshold are ``mmap``-ed and ``munmap``-ed every step, and the free memory at the
top of each arena is given back to the kernel (``trim``) and taken again on the next step: tens
of thousands of minor page faults per step and a fifth of the run's CPU time in the kernel.

``configure()`` (called by ``import flaxtrainer``, before the XLA runtime starts its threads)
sets, with ``mallopt``:

- ``M_MMAP_THRESHOLD`` = 32 MiB (glibc's maximum): buffers up to 32 MiB come from the arenas,
  whose freed chunks are reused by the next step; setting it also freezes glibc's sliding
  threshold;
- ``M_TRIM_THRESHOLD`` = 1 GiB: free memory at an arena's top is kept, not returned and
  faulted in again;
- ``M_TOP_PAD`` = 64 MiB: an arena grows in large steps (fewer ``brk`` / ``mprotect`` calls).

Set ``FLAXTRAINER_MALLOC`` to change it: ``off`` (or ``0``, ``none``) leaves glibc's defaults;
otherwise a comma-separated list ``name=value`` of ``mmap_threshold``, ``trim_threshold``,
``top_pad``, ``mmap_max``, ``arena_max``, ``arena_test`` with optional ``K``/``M``/``G``
suffixes, e.g. ``FLAXTRAINER_MALLOC=mmap_threshold=32M,trim_threshold=1G,arena_max=2``.
It has no effect off glibc (macOS, musl). The measurements behind the default are in
``benchmarks/README.md`` ("Allocator").
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

logger = logging.getLogger(__name__)

ENV = "FLAXTRAINER_MALLOC"

#: glibc's mallopt parameter numbers (malloc.h).
PARAMS = {
    "trim_threshold": -1,
    "top_pad": -2,
    "mmap_threshold": -3,
    "mmap_max": -4,
    "arena_test": -7,
    "arena_max": -8,
}

RECOMMENDED = "mmap_threshold=32M,trim_threshold=1G,top_pad=64M"
DEFAULT = "off"  # under measurement

_SUFFIX = {"K": 2**10, "M": 2**20, "G": 2**30}

#: What the last ``configure()`` applied ({name: value}); empty if nothing.
applied: dict[str, int] = {}


def parse(spec: str) -> dict[str, int]:
    """``"mmap_threshold=32M,arena_max=2"`` -> ``{"mmap_threshold": 33554432, "arena_max": 2}``;
    ``off`` / ``0`` / ``none`` / empty -> ``{}``."""
    spec = spec.strip()
    if spec.lower() in ("", "off", "0", "none", "false", "default"):
        return {}
    settings: dict[str, int] = {}
    for item in spec.split(","):
        name, sep, value = item.strip().partition("=")
        name = name.strip().lower()
        if not sep or name not in PARAMS:
            raise ValueError(
                f"{ENV}: {item!r} is not name=value with a name out of {', '.join(PARAMS)}"
            )
        value = value.strip().upper()
        scale = _SUFFIX.get(value[-1:], 1)
        number = value[:-1] if scale > 1 else value
        try:
            settings[name] = int(number) * scale
        except ValueError:
            raise ValueError(f"{ENV}: {item!r}: {value!r} is not an integer") from None
    return settings


def configure(spec: str | None = None) -> dict[str, int]:
    """Apply ``spec`` (default: ``$FLAXTRAINER_MALLOC``, else ``DEFAULT``) with ``mallopt``.

    Returns the settings glibc accepted. Does nothing (returns ``{}``) off Linux/glibc or when
    switched off. Never raises on a platform problem; a malformed spec is logged and ignored.
    """
    if spec is None:
        spec = os.environ.get(ENV, DEFAULT)
    try:
        settings = parse(spec)
    except ValueError as exc:
        logger.warning("%s; allocator left at its defaults", exc)
        return {}
    if not settings or not sys.platform.startswith("linux"):
        return {}
    try:
        libc = ctypes.CDLL(None)  # the process's own symbols: libc's (no ldconfig lookup)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018  (glibc only; musl has no mallopt semantics)
    except (OSError, AttributeError):
        return {}
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done: dict[str, int] = {}
    for name, value in settings.items():
        value = min(value, 2**31 - 1)  # mallopt takes an int
        if mallopt(PARAMS[name], value) == 1:
            done[name] = value
        else:
            logger.debug("mallopt(%s, %d) refused", name, value)
    applied.clear()
    applied.update(done)
    return done
