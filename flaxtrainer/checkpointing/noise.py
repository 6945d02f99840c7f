"""Keep what orbax and tensorstore print about a damaged checkpoint off the user's screen.

A restore that fails on one array (a truncated or missing file) leaves the reads of the other
arrays pending: each then prints an "Event loop is closed" traceback (through
``sys.unraisablehook``), asyncio logs "Task/Future exception was never retrieved" with a
traceback for each abandoned read, and Python warns of coroutines never awaited: hundreds of
tracebacks for one damaged checkpoint, which ``flaxtrainer.checkpointing.checkpointer`` reports in one
warning naming the step. Opening a checkpoint read-only (a resume) also makes orbax announce
that it is read-only. Every filter here drops only those exact messages.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger("flaxtrainer.checkpointing.checkpointer")


class _DropReadOnlyNotices(logging.Filter):
    """orbax announces on stderr that a read-only manager is read-only ("Given directory is
    read only=...", "read_only=True, setting ..."): noise at every resume."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not (
            message.startswith("Given directory is read only")
            or message.startswith("CheckpointManagerOptions.read_only=True")
        )


@contextlib.contextmanager
def quiet_read_only_notices() -> Iterator[None]:
    """While opening a read-only ``CheckpointManager``: drop orbax's read-only notices."""
    absl_logger = logging.getLogger("absl")
    notice_filter = _DropReadOnlyNotices()
    absl_logger.addFilter(notice_filter)
    try:
        yield
    finally:
        absl_logger.removeFilter(notice_filter)


def _is_closed_loop_callback(unraisable: Any) -> bool:
    """Whether an unraisable exception is a tensorstore read reporting to orbax's event loop
    after that loop closed (the other reads of a restore that failed on one array)."""
    exc = unraisable.exc_value
    return isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"


class _DropAbandonedReads(logging.Filter):
    """asyncio's "Task/Future exception was never retrieved" for the reads of a damaged
    checkpoint: when one array of a restore fails, orbax abandons the reads of the others, and
    asyncio logs each failed one, with its traceback, when it is garbage-collected. Only
    records whose error names a step folder in ``paths`` (those that failed) are dropped."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith(
            ("Task exception was never retrieved", "Future exception was never retrieved")
        ):
            return True
        error = record.exc_info[1] if record.exc_info else None
        text = f"{message}\n{error}"
        return not any(path in text for path in self.paths)


_ABANDONED_READS = _DropAbandonedReads()


def forget_failed_reads(step_dir: Path) -> None:
    """After a failed restore of ``step_dir``: drop asyncio's reports of its abandoned reads."""
    _ABANDONED_READS.paths.add(str(step_dir))
    asyncio_logger = logging.getLogger("asyncio")
    if _ABANDONED_READS not in asyncio_logger.filters:
        asyncio_logger.addFilter(_ABANDONED_READS)
    # ... and the coroutines it never awaited, when collected inside orbax
    warnings.filterwarnings(
        "ignore",
        message=r"coroutine '.*' was never awaited",
        category=RuntimeWarning,
        module=r"(orbax|tensorstore|asyncio)(\.|$)",
    )


#: The hooks :func:`silence_closed_loop_callbacks` installed (one per hook it found on top).
_INSTALLED_HOOKS: weakref.WeakSet[Any] = weakref.WeakSet()


def silence_closed_loop_callbacks() -> None:
    """Drop the "Event loop is closed" tracebacks that the pending reads of a failed restore
    print (one per array, hundreds for a model) through ``sys.unraisablehook``; with
    :func:`forget_failed_reads`, a damaged checkpoint shows as the one warning of
    ``checkpointing.restore``.

    A failed read ends orbax's ``asyncio`` loop while tensorstore still completes the reads of
    the other arrays; each completion calls ``loop.call_soon_threadsafe`` on the closed loop and
    Python prints the RuntimeError as unraisable, during the restore or long after it returned.
    Installed before every restore, the filter stays (those callbacks may come at any later
    time) and drops only that exact error; any other reaches the previous hook.
    """
    previous = sys.unraisablehook
    if previous in _INSTALLED_HOOKS:
        return

    def hook(unraisable: Any) -> None:
        if _is_closed_loop_callback(unraisable):
            logger.debug("Ignored a read callback of a failed checkpoint restore.")
            return
        previous(unraisable)

    _INSTALLED_HOOKS.add(hook)
    sys.unraisablehook = hook
