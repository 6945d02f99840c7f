"""The C allocator against XLA:CPU's per-step page faults: glibc settings or mimalloc; opt-in.

What the profile shows (``benchmarks/profile_run.py``, numbers in ``benchmarks/README.md``,
"Allocator"): each MiniLM train step on CPU takes ~88,000 minor page faults (~350 MB touched
anew), ~15% of the step's CPU time in the kernel. The faults are taken by XLA's compiled code
writing its step buffers, and the buffers are fresh pages because XLA's runtime threads allocate
them in glibc's per-thread arenas: a per-thread heap is at most 64 MiB, so the step's large
buffers (well over 64 MiB for MiniLM) are ``mmap``-ed on every step and ``munmap``-ed when freed,
whatever ``M_MMAP_THRESHOLD`` / ``M_MMAP_MAX`` / ``M_TRIM_THRESHOLD`` say (measured: those
alone leave the faults unchanged). Only a single arena (``M_ARENA_MAX=1``) with ``mmap`` off
serves them from the main heap and keeps them: faults drop 2.5-4.5x and kernel time 2.5-4x,
but peak RSS grows by ~600 MiB (the main heap keeps its high-water mark); transparent huge
pages for malloc (``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``) remove the faults but raise kernel
time (2 MiB pages zeroed every step) and slow compilation. Neither is the default.

``configure()`` runs at ``import flaxtrainer`` (before anything starts the XLA runtime and its
threads, which matters for ``M_ARENA_MAX``) and applies ``$FLAXTRAINER_MALLOC``:

- unset, ``off``, ``0``, ``none``: glibc's defaults (nothing is called);
- ``single_arena``: ``arena_max=1,mmap_max=0,trim_threshold=1G,top_pad=64M``, the measured
  setting above (fewer faults and less kernel time for ~600 MiB more peak memory);
- a comma-separated list ``name=value`` of ``mmap_threshold``, ``trim_threshold``, ``top_pad``,
  ``mmap_max``, ``arena_max``, ``arena_test`` with optional ``K``/``M``/``G`` suffixes, e.g.
  ``FLAXTRAINER_MALLOC=arena_max=1,mmap_max=0``;
- ``mimalloc``: another allocator instead of glibc's (below).

These have no effect off glibc (macOS, musl).

**mimalloc.** A different malloc removes the churn at its source: mimalloc keeps freed pages
of a thread's heap for reuse (with ``MIMALLOC_PURGE_DELAY=-1``, never returned to the kernel
during the run; ``MIMALLOC_ALLOW_THP=0`` keeps it from backing them with huge pages, which
cost start-up time and zeroing), so a step's buffers land on pages that are already mapped:
1,600-5,000 faults a step instead of ~94,000, kernel time per step -90% or more, no user-time
cost, for +400-500 MiB of peak RSS (measured numbers in ``benchmarks/README.md``). An
allocator must be in place before the process allocates anything, i.e. ``LD_PRELOAD``-ed at
process start, so:

- the command line (``flaxtrainer ...`` / ``python -m flaxtrainer ...``) with
  ``FLAXTRAINER_MALLOC=mimalloc`` re-executes itself once, at the start of ``cli.main``, with
  ``LD_PRELOAD`` set to the library of the ``mimalloc`` extra
  (``pip install 'flaxtrainer[mimalloc]'``: the ``cmeel-mimalloc`` wheel) or a system
  ``libmimalloc``; if neither is found it warns and runs on glibc's malloc;
- a script of your own calls ``flaxtrainer.runtime.allocator.reexec_with_preload()`` at its top (it
  starts the script again the same way), or sets ``LD_PRELOAD`` itself.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

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

#: Allocators ``$FLAXTRAINER_MALLOC`` can preload: name -> (library file name, pip
#: distribution that ships it, environment it runs with unless the user set those variables).
PRELOADS: dict[str, tuple[str, str, dict[str, str]]] = {
    "mimalloc": (
        "libmimalloc.so",
        "cmeel-mimalloc",
        {"MIMALLOC_PURGE_DELAY": "-1", "MIMALLOC_ALLOW_THP": "0"},
    ),
}
#: Set in the re-executed process: a second start never re-executes again.
REEXEC_MARK = "FLAXTRAINER_MALLOC_REEXEC"

#: Named settings for ``$FLAXTRAINER_MALLOC``.
PRESETS = {"single_arena": "arena_max=1,mmap_max=0,trim_threshold=1G,top_pad=64M"}
DEFAULT = "off"

_SUFFIX = {"K": 2**10, "M": 2**20, "G": 2**30}

#: What the last ``configure()`` applied ({name: value}); empty if nothing.
applied: dict[str, int] = {}


def parse(spec: str) -> dict[str, int]:
    """``"mmap_threshold=32M,arena_max=2"`` -> ``{"mmap_threshold": 33554432, "arena_max": 2}``;
    ``off`` / ``0`` / ``none`` / empty and a preloaded allocator (``mimalloc``) -> ``{}``."""
    spec = PRESETS.get(spec.strip(), spec).strip()
    if spec.lower() in ("", "off", "0", "none", "false", "default", *PRELOADS):
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


# ------------------------------------------------------------------------- preloaded allocators
def preload_name(spec: str | None = None) -> str | None:
    """The preloaded allocator ``spec`` (default ``$FLAXTRAINER_MALLOC``) asks for, or None."""
    spec = os.environ.get(ENV, DEFAULT) if spec is None else spec
    name = spec.strip().lower()
    return name if name in PRELOADS else None


def find_library(name: str) -> str | None:
    """The path of ``name``'s shared library: the one its pip distribution installed, else the
    system's (a soname the dynamic loader resolves), else None."""
    import importlib.metadata

    library, distribution, _ = PRELOADS[name]
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name == library:
            path = str(file.locate())
            if os.path.exists(path):
                return path
    import ctypes.util

    return ctypes.util.find_library(name)


def is_loaded(name: str) -> bool:
    """Whether ``name``'s library is mapped into this process (Linux: ``/proc/self/maps``)."""
    stem = PRELOADS[name][0].removesuffix(".so")
    try:
        with open("/proc/self/maps") as maps:
            return any(stem in line for line in maps)
    except OSError:
        return False


def preload_environment(
    name: str, library: str, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """``environ`` (default ``os.environ``) with ``library`` first in ``LD_PRELOAD``, the
    allocator's settings where the user set none, and the re-exec mark."""
    env = dict(os.environ if environ is None else environ)
    earlier = env.get("LD_PRELOAD", "")
    if library not in earlier.split():
        env["LD_PRELOAD"] = f"{library} {earlier}".strip()
    for key, value in PRELOADS[name][2].items():
        env.setdefault(key, value)
    env[REEXEC_MARK] = name
    return env


def reexec_with_preload() -> None:
    """Start this process again, same interpreter and command line (``sys.orig_argv``), under
    the allocator ``$FLAXTRAINER_MALLOC`` names.

    Called first thing by ``cli.main`` for a real process start; a script of your own calls it
    before it builds anything (what ran before is run again). Returns (running on as it is)
    when no preload is asked for, when it is in place already, after a re-exec that did not
    take (warns), or when the library is missing (warns); otherwise it does not return
    (``os.execve``).
    """
    name = preload_name()
    if name is None or is_loaded(name) or not sys.platform.startswith("linux"):
        return
    if os.environ.get(REEXEC_MARK) == name:
        _warn(f"{ENV}={name}: LD_PRELOAD={os.environ.get('LD_PRELOAD', '')!r} did not load it")
        return
    library = find_library(name)
    if library is None:
        _warn(
            f"{ENV}={name}: no {PRELOADS[name][0]} found; install it with "
            f"`pip install 'flaxtrainer[{name}]'` (or your system's package)"
        )
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, preload_environment(name, library))


def describe() -> str:
    """One line for the log: the allocator this process runs with."""
    name = preload_name()
    if name is not None and is_loaded(name):
        settings = " ".join(f"{k}={os.environ.get(k, '')}" for k in PRELOADS[name][2])
        return f"allocator: {name} (preloaded; {settings})"
    if applied:
        return "allocator: glibc malloc with " + ",".join(f"{k}={v}" for k, v in applied.items())
    return "allocator: glibc malloc, default settings"


def _warn(message: str) -> None:
    print(f"warning: {message}; running with glibc's malloc", file=sys.stderr, flush=True)
