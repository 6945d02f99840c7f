"""glibc malloc settings against XLA:CPU's per-step page faults: measured, switchable, off by default.

What the profile shows (``benchmarks/profile_run.py``, numbers in ``benchmarks/README.md``,
"Allocator"): each MiniLM train step on CPU takes ~88,000 minor page faults (~350 MB touched
anew), ~15% of the step's CPU time in the kernel. The faults are taken by XLA's compiled code
writing its step buffers, and the buffers are fresh pages because XLA's runtime threads allocate
them in glibc's per-thread arenas: a per-thread heap is at most 64 MiB, so the step's large
buffers (well over 64 MiB for MiniLM) are ``mmap``-ed on every step and ``munmap``-ed when freed,
whatever ``M_MMAP_THRESHOLD`` / ``M_MMAP_MAX`` / ``M_TRIM_THRESHOLD`` say (measured: those
alone leave the faults unchanged). Only a single arena (``M_ARENA_MAX=1``) with ``mmap`` off
serves them from the main heap and keeps them: faults drop 2.5-4.5x and kernel time 2.5-4x, but peak
RSS grows by ~600 MiB (the main heap keeps its high-water mark), which is the cost the issue
named; transparent huge pages for malloc (``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``) remove the
faults but raise kernel time (2 MiB pages zeroed every step) and slow compilation. Neither is the
default.

``configure()`` runs at ``import flaxtrainer`` (before anything starts the XLA runtime and its
threads, which matters for ``M_ARENA_MAX``) and applies ``$FLAXTRAINER_MALLOC``:

- unset, ``off``, ``0``, ``none``: glibc's defaults (nothing is called);
- ``single_arena``: ``arena_max=1,mmap_max=0,trim_threshold=1G,top_pad=64M``, the measured
  setting above (fewer faults and less kernel time for ~600 MiB more peak memory);
- a comma-separated list ``name=value`` of ``mmap_threshold``, ``trim_threshold``, ``top_pad``,
  ``mmap_max``, ``arena_max``, ``arena_test`` with optional ``K``/``M``/``G`` suffixes, e.g.
  ``FLAXTRAINER_MALLOC=arena_max=1,mmap_max=0``.

It has no effect off glibc (macOS, musl).
"""

from __future__ import annotations

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

#: Named settings for ``$FLAXTRAINER_MALLOC``.
PRESETS = {"single_arena": "arena_max=1,mmap_max=0,trim_threshold=1G,top_pad=64M"}
DEFAULT = "off"

_SUFFIX = {"K": 2**10, "M": 2**20, "G": 2**30}

#: What the last ``configure()`` applied ({name: value}); empty if nothing.
applied: dict[str, int] = {}


def parse(spec: str) -> dict[str, int]:
    """``"mmap_threshold=32M,arena_max=2"`` -> ``{"mmap_threshold": 33554432, "arena_max": 2}``;
    ``off`` / ``0`` / ``none`` / empty -> ``{}``."""
    spec = PRESETS.get(spec.strip(), spec).strip()
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
    import ctypes

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
