"""Checkpoints with orbax: the newest few for resuming, plus the best one for the final model.

A checkpoint holds two items: ``state``, a pytree of arrays (parameters, optimizer state, step,
RNG keys, ...) written with orbax's ``StandardSave``, and ``meta``, a JSON dict (trainer state,
epoch, sampler position, callbacks' ``state_dict()``...). One orbax ``CheckpointManager`` keeps
every step once, with the step's evaluation metrics, under::

    <directory>/latest/<step>/{state,meta,metrics}

Its preservation policy keeps the newest ``save_total_limit`` steps (for resuming) and, in
addition, the best step by ``metric_for_best_model`` (as Hugging Face does), ranked by the one
rule of :mod:`flaxtrainer.checkpointing.best_metric`. Resume and ``load_best_model_at_end``
restore the same way, from a :class:`CheckpointLocation` (:func:`restore_checkpoint`, in
``checkpointing/restore.py`` with :func:`find_checkpoint`; the folder layout is
``checkpointing/layout.py``).

Runs saved by flaxtrainer before this layout also have ``<directory>/best/<step>`` (a second
copy of the best step, with its metrics). Such a folder still counts: its step competes for the
best (restored from there if it stays the best) until a new step beats it, when it is deleted.

Saves are asynchronous: ``save`` returns once the arrays are copied to host memory (so the
caller may donate or delete them), and the files are written in the background; the next save,
``wait_until_finished`` or ``close`` waits for them. orbax writes each step into
``<step>.orbax-checkpoint-tmp`` and renames it when complete, so a save killed half-way never
replaces a usable checkpoint; such leftovers are removed when a ``Checkpointer`` opens the root.

Every process of a multi-host run must make the same calls: orbax coordinates the writes (each
host writes its shards, the primary host writes JSON and metadata).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from flaxtrainer.checkpointing import layout
from flaxtrainer.checkpointing.best_metric import BestMetric
from flaxtrainer.checkpointing.layout import CHECKPOINTS_DIRNAME, CheckpointLocation
from flaxtrainer.checkpointing.restore import find_checkpoint, restore_checkpoint
from flaxtrainer.errors import CheckpointMismatchError, CheckpointNotFoundError

__all__ = [
    "CHECKPOINTS_DIRNAME",
    "CheckpointLocation",
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "Checkpointer",
    "find_checkpoint",
    "restore_checkpoint",
]

logger = logging.getLogger(__name__)

LEGACY_BEST_DIRNAME = "best"
"""Where flaxtrainer's two-manager layout kept a copy of the best step (read, never written)."""
# orbax keeps a step's metrics in <step>/metrics/metrics (a JSON file).
_METRICS_FILE = Path("metrics") / "metrics"


@dataclass
class _KeepBest:
    """orbax preservation policy: keep the best step by ``rule`` among those with metrics.

    Folding :meth:`BestMetric.improves` in step order makes ties keep the earlier step and
    NaN or missing values never count, exactly as the trainer and early stopping rank them.
    """

    rule: BestMetric

    def should_preserve(self, checkpoints: Sequence[Any], *, context: Any) -> list[bool]:
        best = self.rule.best_of((info.step, info.metrics) for info in checkpoints)
        return [info.step == best for info in checkpoints]


class Checkpointer:
    """Saves training checkpoints under ``directory`` (see the module docstring).

    Args:
        directory: root folder; the steps go to ``directory/latest/``.
        save_total_limit: how many of the newest checkpoints to keep (None: all); the best
            one is kept in addition.
        metric_for_best_model: metric that ranks checkpoints (see
            :mod:`flaxtrainer.checkpointing.best_metric`). None: no best is tracked.
        greater_is_better: whether a larger metric is better; None means True unless the
            metric name ends with ``loss``.
        async_save: write in a background thread (the default) or block until written.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        save_total_limit: int | None = None,
        metric_for_best_model: str | None = None,
        greater_is_better: bool | None = None,
        async_save: bool = True,
    ) -> None:
        if save_total_limit is not None and save_total_limit < 1:
            raise ValueError(
                f"save_total_limit must be a positive number of checkpoints or None (keep all), "
                f"got {save_total_limit}."
            )
        self.directory = Path(directory).expanduser().absolute()
        self.rule = (
            None
            if metric_for_best_model is None
            else BestMetric(metric_for_best_model, greater_is_better)
        )
        self._last_saved_step: int | None = None
        self._closed = False
        self._manager = _open_manager(
            self.latest_dir,
            save_total_limit=save_total_limit,
            rule=self.rule,
            async_save=async_save,
        )
        # Kept in memory: orbax writes a step's metrics in the background, so the step being
        # written cannot be read back yet.
        self._best: tuple[CheckpointLocation, float] | None = self._read_best()

    # ----------------------------------------------------------------------------- queries
    @property
    def latest_dir(self) -> Path:
        """The folder of steps."""
        return self.directory / layout.LATEST_DIRNAME

    def step_path(self, step: int) -> Path:
        """The folder of ``step`` (for messages and ``on_save``)."""
        return self.latest_dir / str(step)

    def all_steps(self) -> list[int]:
        """Steps kept (the newest ones and the best), oldest first."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """Newest step (not checked for damage; ``restore_checkpoint`` does that)."""
        return self._manager.latest_step()

    def best_location(self) -> CheckpointLocation | None:
        """Where the best checkpoint is (None when no save had the metric, or none is set)."""
        return None if self._best is None else self._best[0]

    def best_step(self) -> int | None:
        """The best step, or None (see :meth:`best_location`)."""
        return None if self._best is None else self._best[0].step

    def best_metric(self) -> float | None:
        """The ``metric_for_best_model`` value of the best checkpoint, if any."""
        return None if self._best is None else self._best[1]

    @property
    def last_saved_step(self) -> int | None:
        """The step this Checkpointer saved last (None before its first save)."""
        return self._last_saved_step

    # -------------------------------------------------------------------------------- save
    def save(
        self,
        step: int,
        state: Any,
        meta: Mapping[str, Any],
        metrics: Mapping[str, Any] | None = None,
        force: bool = False,
    ) -> bool:
        """Save ``state``, ``meta`` and ``metrics`` as checkpoint ``step``, once; returns
        whether anything was written.

        ``metrics`` (the evaluation at this step, if any) rank the step for the best one.
        Returns once the arrays are on the host; the files are written in the background.

        Saving the step this Checkpointer has just saved is skipped (the end-of-training save
        often coincides with a periodic one) unless ``force`` or new ``metrics`` come with it:
        then the step is written again. Checkpoints at or after ``step`` left by an earlier run
        (after resuming from an older checkpoint) belong to an abandoned timeline: they are
        deleted, with a warning, before saving.
        """
        self._check_open()
        step = int(step)
        if step < 0:
            raise ValueError(f"Checkpoint step must be >= 0, got {step}.")
        meta = _to_json(meta)
        value = None if self.rule is None else self.rule.value(metrics)
        if step == self._last_saved_step and not force and value is None:
            return False
        self._drop_steps_from(step)
        best = None if self._best is None else self._best[1]
        if self.rule is not None and self.rule.improves(value, best):
            self._drop_legacy_best()
            self._best = (CheckpointLocation(self.latest_dir, step), float(value))
        self._manager.save(
            step, args=_save_args(state, meta), metrics=_numeric(metrics or {}), force=True
        )
        self._last_saved_step = step
        return True

    def wait_until_finished(self) -> None:
        """Block until every pending write is on disk (raises if a background write failed)."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending writes and release orbax's threads. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ----------------------------------------------------------------------------- helpers
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"Checkpointer for {self.directory} is closed.")

    def _read_best(self) -> tuple[CheckpointLocation, float] | None:
        """The best step on disk and its value (call with no save in flight): ranked by the
        steps' metrics, a legacy ``best/`` folder's step competing too."""
        if self.rule is None:
            return None
        candidates: dict[int, tuple[CheckpointLocation, Any]] = {
            step: (CheckpointLocation(self.latest_dir, step), self._manager.metrics(step))
            for step in self._manager.all_steps()
        }
        legacy = _legacy_best(self.directory / LEGACY_BEST_DIRNAME)
        if legacy is not None:
            step = legacy[0].step
            if step not in candidates or self.rule.value(candidates[step][1]) is None:
                candidates[step] = legacy  # the legacy latest/ steps have no metrics
        best = self.rule.best_of((step, metrics) for step, (_, metrics) in candidates.items())
        if best is None:
            return None
        location, metrics = candidates[best]
        return location, float(self.rule.value(metrics))

    def _drop_legacy_best(self) -> None:
        """A new best supersedes a legacy ``best/`` folder: delete it (primary process)."""
        if self._best is None or self._best[0].directory == self.latest_dir:
            return
        folder = self._best[0].directory
        logger.info("Deleting %s: a newer checkpoint is better.", folder)
        if jax.process_index() == 0:
            shutil.rmtree(folder, ignore_errors=True)

    def _drop_steps_from(self, step: int) -> None:
        """Delete checkpoints at or after ``step``: they are from an abandoned timeline."""
        stale = sorted(s for s in self._manager.all_steps() if s >= step)
        legacy_stale = self._best is not None and self._best[0].step >= step
        if not stale and not legacy_stale:
            return
        if stale:
            logger.warning(
                "Deleting checkpoint(s) %s in %s: saving step %d supersedes them (training "
                "resumed from an earlier step, or a forced save).",
                stale,
                self.latest_dir,
                step,
            )
            self._manager.wait_until_finished()
            for s in stale:
                self._manager.delete(s)
        if legacy_stale:
            self._drop_legacy_best()
        self._best = self._read_best()


# ----------------------------------------------------------------------------- internals
def _open_manager(
    directory: Path, *, save_total_limit: int | None, rule: BestMetric | None, async_save: bool
) -> ocp.CheckpointManager:
    """One manager for every step: keeps the newest ``save_total_limit`` and, with a ``rule``,
    the best step too; with a rule orbax also writes each step's metrics (``best_fn`` is what
    turns that on; flaxtrainer ranks with ``rule`` itself, never with orbax's ``best_step``)."""
    _remove_interrupted_saves(directory)
    keep: Any = ocp.checkpoint_managers.LatestN(n=save_total_limit)
    best: dict[str, Any] = {}
    if rule is not None:
        keep = ocp.checkpoint_managers.AnyPreservationPolicy([keep, _KeepBest(rule)])
        best = {"best_fn": rule.rank, "best_mode": "max"}
    return ocp.CheckpointManager(
        directory,
        options=ocp.CheckpointManagerOptions(
            preservation_policy=keep,
            enable_async_checkpointing=async_save,
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                barrier_sync_key_prefix="flaxtrainer_checkpoints"
            ),
            **best,
        ),
        item_names=layout.ITEMS,
    )


def _legacy_best(folder: Path) -> tuple[CheckpointLocation, dict] | None:
    """The step in a legacy ``best/`` folder (two-manager layout) and its metrics, or None
    when there is none (or it is unfinished, or its metrics are unreadable)."""
    if not folder.is_dir():
        return None
    steps = sorted(
        (
            int(p.name)
            for p in folder.iterdir()
            if layout.is_step_dir(p) and (p / layout.COMMIT_FILE).is_file()
        ),
        reverse=True,
    )
    for step in steps:
        try:
            metrics = json.loads((folder / str(step) / _METRICS_FILE).read_text("utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(metrics, dict):
            return CheckpointLocation(folder, step), metrics
    return None


def _remove_interrupted_saves(directory: Path) -> None:
    """Delete the temporary folders of saves that were killed before finishing.

    Synchronous, on the primary process only (the others never list temporary folders as
    steps, and orbax's save barrier orders this before any new write).
    """
    if jax.process_index() != 0 or not directory.is_dir():
        return
    for child in sorted(directory.iterdir()):
        if layout.TMP_MARKER in child.name:
            logger.warning("Removing %s, left by a checkpoint save that did not finish.", child)
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)


def _save_args(state: Any, meta: dict) -> ocp.args.Composite:
    return ocp.args.Composite(
        **{
            layout.STATE_ITEM: ocp.args.StandardSave(state),
            layout.META_ITEM: ocp.args.JsonSave(meta),
        }
    )


def _to_json(meta: Mapping[str, Any]) -> dict:
    """A JSON-clean copy of ``meta`` (numpy/jax scalars and arrays become numbers and lists)."""
    if not isinstance(meta, Mapping):
        raise TypeError(f"Checkpoint meta must be a dict, got {type(meta).__name__}.")

    def default(obj: Any) -> Any:
        if isinstance(obj, (np.generic, np.ndarray, jax.Array)):
            return np.asarray(obj).tolist()
        if isinstance(obj, os.PathLike):
            return os.fspath(obj)
        if isinstance(obj, (set, frozenset)):
            return sorted(obj)
        raise TypeError(
            f"checkpoint meta holds a {type(obj).__name__} ({obj!r:.80}), which JSON cannot "
            f"store; trainer and callback state_dict() values must be numbers, strings, lists, "
            f"dicts or None."
        )

    return json.loads(json.dumps(dict(meta), default=default))


def _as_float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        number = _as_float(value)
        if number is not None and math.isfinite(number):
            out[str(key)] = number
    return out
