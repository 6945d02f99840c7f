"""Checkpoints with orbax: the newest few for resuming, the best one for the final model.

A checkpoint holds two items: ``state``, a pytree of arrays (parameters, optimizer state, step,
RNG keys, ...) written with orbax's ``StandardSave``, and ``meta``, a JSON dict (trainer state,
epoch, sampler position, callbacks' ``state_dict()``...). Two orbax ``CheckpointManager``s keep
them under one root::

    <directory>/latest/<step>/{state,meta}   newest ``save_total_limit`` steps, for resuming
    <directory>/best/<step>/{state,meta}     the best step by ``metric_for_best_model``

Two managers because orbax's ``best_fn`` keeps the best N instead of the newest N.

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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from flaxtrainer.checkpoint_noise import (
    forget_failed_reads,
    quiet_read_only_notices,
    silence_closed_loop_callbacks,
)

logger = logging.getLogger(__name__)

CHECKPOINTS_DIRNAME = "checkpoints"
"""Sub-folder of ``output_dir`` that the trainer gives to its ``Checkpointer``."""
LATEST_DIRNAME = "latest"
BEST_DIRNAME = "best"

_STATE, _META = "state", "meta"
_ITEMS = (_STATE, _META)
# orbax 0.12.8 names an unfinished save `<step>.orbax-checkpoint-tmp` (older releases appended
# `-<timestamp>`), and writes `commit_success.txt` into a step folder just before finalizing it.
_TMP_MARKER = ocp.path.atomicity_types.TMP_DIR_SUFFIX
_COMMIT_FILE = ocp.path.atomicity_types.COMMIT_SUCCESS_FILE
# Fragments of orbax's errors for a target that does not fit the checkpoint (a user error,
# not a damaged checkpoint: falling back to an older step would not help).
_MISMATCH_MARKERS = ("structures do not match", "not compatible with the stored shape")

_RESUME_NEWEST = ("latest", "true")
_RESUME_NONE = ("", "false", "none")


class CheckpointNotFoundError(FileNotFoundError):
    """No (usable) checkpoint where one was asked for."""


class CheckpointMismatchError(ValueError):
    """The restore target does not fit the saved state (another model or optimizer)."""


@dataclass(frozen=True)
class CheckpointLocation:
    """Where to resume from: a ``latest``/``best`` folder and a step (None: newest usable)."""

    directory: Path
    step: int | None = None

    def __post_init__(self) -> None:
        # orbax refuses relative paths ("Checkpoint path should be absolute"): resolve here,
        # against the working directory of the run, so `--output_dir ./out` works.
        object.__setattr__(self, "directory", Path(self.directory).expanduser().absolute())

    @property
    def path(self) -> Path:
        """The step folder, or the folder of steps when the step is not fixed."""
        return self.directory if self.step is None else self.directory / str(self.step)

    def __str__(self) -> str:
        return str(self.path)


class Checkpointer:
    """Saves and restores training checkpoints under ``directory`` (see the module docstring).

    Args:
        directory: root folder; ``latest/`` and ``best/`` are created inside it.
        save_total_limit: how many of the newest checkpoints to keep (None: all).
        metric_for_best_model: metric that ranks checkpoints for ``best/`` (looked up as given,
            then with an ``eval_`` prefix, as in Hugging Face). None: no ``best/``.
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
        self.metric_for_best_model = metric_for_best_model
        if greater_is_better is None and metric_for_best_model is not None:
            greater_is_better = not metric_for_best_model.endswith("loss")
        self.greater_is_better = greater_is_better
        self._last_saved_step: int | None = None
        self._closed = False

        self._latest = _open_manager(
            self.directory / LATEST_DIRNAME,
            max_to_keep=save_total_limit,
            async_save=async_save,
        )
        self._best: ocp.CheckpointManager | None = None
        self._best_value: float | None = None
        if metric_for_best_model is not None:
            self._best = _open_manager(
                self.directory / BEST_DIRNAME,
                max_to_keep=1,
                async_save=async_save,
                best_fn=self._rank_value,
                best_mode="max" if greater_is_better else "min",
            )
        # Kept in memory: orbax reads metrics from the step folder, which does not exist yet
        # while that step is written in the background.
        self._best_value = self._read_best_value()

    # ----------------------------------------------------------------------------- queries
    @property
    def latest_dir(self) -> Path:
        return self.directory / LATEST_DIRNAME

    @property
    def best_dir(self) -> Path:
        return self.directory / BEST_DIRNAME

    def step_path(self, step: int) -> Path:
        """The folder of ``step`` in ``latest/`` (for messages and ``on_save``)."""
        return self.latest_dir / str(step)

    def all_steps(self) -> list[int]:
        """Steps in ``latest/``, oldest first."""
        return sorted(self._latest.all_steps())

    def latest_step(self) -> int | None:
        """Newest step in ``latest/`` (not checked for damage; ``restore`` does that)."""
        return self._latest.latest_step()

    def best_step(self) -> int | None:
        """Step held in ``best/``, or None when there is none (or no metric is set)."""
        return None if self._best is None else self._best.best_step()

    @property
    def last_saved_step(self) -> int | None:
        """The step this Checkpointer saved last (None before its first save)."""
        return self._last_saved_step

    def best_metric(self) -> float | None:
        """The ``metric_for_best_model`` value of the best checkpoint, if any."""
        return self._best_value

    # -------------------------------------------------------------------------------- save
    def save(
        self,
        step: int,
        state: Any,
        meta: Mapping[str, Any],
        metrics: Mapping[str, Any] | None = None,
        force: bool = False,
    ) -> bool:
        """Save ``state`` and ``meta`` as checkpoint ``step``; returns whether anything was written.

        Always saves to ``latest/``; also to ``best/`` when ``metrics`` hold the metric and it
        beats the best so far (strictly, so ties keep the earlier checkpoint). Returns once the
        arrays are on the host; the files are written in the background.

        Saving a step that this Checkpointer has just saved is skipped (the end-of-training save
        often coincides with a periodic one) unless ``force``, which replaces it. Checkpoints at
        or after ``step`` left by an earlier run (after resuming from an older checkpoint) belong
        to an abandoned timeline: they are deleted, with a warning, before saving.
        """
        self._check_open()
        step = int(step)
        if step < 0:
            raise ValueError(f"Checkpoint step must be >= 0, got {step}.")
        meta = _to_json(meta)
        repeated = step == self._last_saved_step and not force
        written = False
        if not repeated:
            self._drop_steps_from(step)
            self._latest.save(step, args=_save_args(state, meta), force=True)
            written = True
        metric = self._metric_value(metrics)
        if self._best is not None and metric is not None and self._improves(metric, step):
            best_metrics = _numeric(metrics)
            best_metrics[self.metric_for_best_model] = metric
            self._best.save(step, args=_save_args(state, meta), metrics=best_metrics, force=True)
            self._best_value = metric
            written = True
        self._last_saved_step = step
        return written

    def wait_until_finished(self) -> None:
        """Block until every pending write is on disk (raises if a background write failed)."""
        for manager in self._managers():
            manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending writes and release orbax's threads. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for manager in self._managers():
            manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ----------------------------------------------------------------------------- restore
    def restore(self, target: Any, step: int | None = None) -> tuple[Any, dict, int]:
        """Restore ``(state, meta, step)`` from ``latest/``; ``step=None``: newest usable one.

        ``target`` is a pytree like the saved state: concrete arrays or ``jax.ShapeDtypeStruct``
        with shardings; restored arrays get the target's shardings. With ``step=None`` a damaged
        newest checkpoint (partial, truncated or missing files) is reported with a warning and
        the one before it is used.
        """
        self._check_open()
        self.wait_until_finished()  # a step still being written is listed but not readable
        return _restore(self._latest, target, step)

    def restore_best(self, target: Any) -> tuple[Any, dict, int]:
        """Restore ``(state, meta, step)`` of the best checkpoint."""
        self._check_open()
        if self._best is None:
            raise CheckpointNotFoundError(
                f"No best checkpoint in {self.directory}: metric_for_best_model is not set."
            )
        step = self._best.best_step()
        if step is None:
            raise CheckpointNotFoundError(
                f"No best checkpoint in {self.best_dir}: no save received metrics containing "
                f"{self.metric_for_best_model!r} (is evaluation run before saving?)."
            )
        self.wait_until_finished()
        return _restore(self._best, target, step)

    # ----------------------------------------------------------------------------- helpers
    def _managers(self) -> list[ocp.CheckpointManager]:
        return [m for m in (self._latest, self._best) if m is not None]

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"Checkpointer for {self.directory} is closed.")

    def _rank_value(self, metrics: Mapping[str, Any]) -> float:
        """orbax's best_fn: the metric, or the worst possible value when missing or NaN."""
        value = _as_float(metrics.get(self.metric_for_best_model))
        if value is None or math.isnan(value):
            return -math.inf if self.greater_is_better else math.inf
        return value

    def _metric_value(self, metrics: Mapping[str, Any] | None) -> float | None:
        if not metrics or self.metric_for_best_model is None:
            return None
        name = self.metric_for_best_model
        for key in (name, f"eval_{name}"):
            if key in metrics:
                value = _as_float(metrics[key])
                return None if value is None or math.isnan(value) else value
        return None

    def _improves(self, value: float, step: int) -> bool:
        if step in self._best.all_steps():
            return False
        best = self._best_value
        if best is None:
            return True
        return value > best if self.greater_is_better else value < best

    def _read_best_value(self) -> float | None:
        """The metric of the best step on disk (call with no save in flight)."""
        step = self.best_step()
        if step is None:
            return None
        return _as_float((self._best.metrics(step) or {}).get(self.metric_for_best_model))

    def _drop_steps_from(self, step: int) -> None:
        """Delete checkpoints at or after ``step``: they are from an abandoned timeline."""
        for manager in self._managers():
            stale = sorted(s for s in manager.all_steps() if s >= step)
            if not stale:
                continue
            logger.warning(
                "Deleting checkpoint(s) %s in %s: saving step %d supersedes them (training "
                "resumed from an earlier step, or a forced save).",
                stale,
                manager.directory,
                step,
            )
            manager.wait_until_finished()
            for s in stale:
                manager.delete(s)
            if manager is self._best:
                self._best_value = self._read_best_value()


# --------------------------------------------------------------------------- resume lookup
def find_checkpoint(
    output_dir: str | os.PathLike, spec: str | bool | os.PathLike | None
) -> CheckpointLocation | None:
    """Resolve a ``--resume_from_checkpoint`` value to a :class:`CheckpointLocation`.

    ``spec`` may be None/False/"false" (no resume: returns None), True/"true"/"latest" (the
    newest usable checkpoint of ``output_dir``), or a path: a step folder
    (``<run>/checkpoints/latest/<step>``), a folder of steps (``.../latest``), a checkpoints
    root (``.../checkpoints``) or a run's output_dir. Raises CheckpointNotFoundError otherwise.
    """
    if spec is None or spec is False:
        return None
    if spec is True or (isinstance(spec, str) and spec.strip().lower() in _RESUME_NEWEST):
        found = _find_steps_folder(Path(output_dir).expanduser().absolute())
        if found is None:
            raise CheckpointNotFoundError(
                f"--resume_from_checkpoint={spec!r}: no checkpoint in output_dir {output_dir} "
                f"(looked for {Path(output_dir) / CHECKPOINTS_DIRNAME / LATEST_DIRNAME}/<step>). "
                f"Train without --resume_from_checkpoint, or pass the path of a checkpoint."
            )
        return CheckpointLocation(found)
    if isinstance(spec, str) and spec.strip().lower() in _RESUME_NONE:
        return None

    path = Path(spec).expanduser().absolute()
    if not path.exists():
        raise CheckpointNotFoundError(
            f"--resume_from_checkpoint {path}: no such file or directory. Pass a checkpoint step "
            f"folder, a checkpoints folder, a run's output_dir, or 'latest'."
        )
    if not path.is_dir():
        raise CheckpointNotFoundError(
            f"--resume_from_checkpoint {path} is a file; pass a checkpoint step folder "
            f"(<output_dir>/{CHECKPOINTS_DIRNAME}/{LATEST_DIRNAME}/<step>) or a run's output_dir."
        )
    if _TMP_MARKER in path.name:
        raise CheckpointNotFoundError(
            f"--resume_from_checkpoint {path} is the temporary folder of a save that never "
            f"finished and cannot be used; pass {path.parent} to resume from the newest complete "
            f"checkpoint."
        )
    if _is_step_dir(path):
        return CheckpointLocation(path.parent, int(path.name))
    found = _find_steps_folder(path)
    if found is None:
        raise CheckpointNotFoundError(
            f"--resume_from_checkpoint {path}: no checkpoint found there. Expected a step folder "
            f"(<output_dir>/{CHECKPOINTS_DIRNAME}/{LATEST_DIRNAME}/<step>) or a folder holding "
            f"them (a run's output_dir, its {CHECKPOINTS_DIRNAME}/ or {LATEST_DIRNAME}/)."
        )
    return CheckpointLocation(found)


def restore_checkpoint(location: CheckpointLocation, target: Any) -> tuple[Any, dict, int]:
    """Restore ``(state, meta, step)`` from a location given by :func:`find_checkpoint`.

    Opens the folder read-only; with ``location.step`` None, damaged newest checkpoints are
    skipped as in :meth:`Checkpointer.restore`.
    """
    with quiet_read_only_notices():
        manager = ocp.CheckpointManager(
            Path(location.directory).expanduser().absolute(),
            options=ocp.CheckpointManagerOptions(
                read_only=True, create=False, save_interval_steps=0
            ),
            item_names=_ITEMS,
        )
    try:
        return _restore(manager, target, location.step)
    finally:
        manager.close()


# ----------------------------------------------------------------------------- internals
def _open_manager(
    directory: Path, *, max_to_keep: int | None, async_save: bool, **options: Any
) -> ocp.CheckpointManager:
    _remove_interrupted_saves(directory)
    return ocp.CheckpointManager(
        directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            enable_async_checkpointing=async_save,
            # Both managers save the same step at once; without distinct prefixes their
            # multi-process barriers share names and collide ("barrier already ongoing").
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                barrier_sync_key_prefix=f"flaxtrainer_{directory.name}"
            ),
            **options,
        ),
        item_names=_ITEMS,
    )


def _remove_interrupted_saves(directory: Path) -> None:
    """Delete the temporary folders of saves that were killed before finishing.

    Synchronous, on the primary process only (the others never list temporary folders as
    steps, and orbax's save barrier orders this before any new write).
    """
    if jax.process_index() != 0 or not directory.is_dir():
        return
    for child in sorted(directory.iterdir()):
        if _TMP_MARKER in child.name:
            logger.warning("Removing %s, left by a checkpoint save that did not finish.", child)
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)


def _is_step_dir(path: Path) -> bool:
    return path.is_dir() and path.name.isdigit() and (path / _STATE).is_dir()


def _find_steps_folder(path: Path) -> Path | None:
    """The first of ``path/checkpoints/latest``, ``path/latest``, ``path`` holding a step."""
    for candidate in (path / CHECKPOINTS_DIRNAME / LATEST_DIRNAME, path / LATEST_DIRNAME, path):
        if candidate.is_dir() and any(_is_step_dir(p) for p in candidate.iterdir()):
            return candidate
    return None


def _save_args(state: Any, meta: dict) -> ocp.args.Composite:
    return ocp.args.Composite(
        **{_STATE: ocp.args.StandardSave(state), _META: ocp.args.JsonSave(meta)}
    )


def _abstract(target: Any) -> Any:
    """Shape/dtype/sharding skeleton of ``target``, so that nothing is read into it."""

    def leaf(x: Any) -> Any:
        if isinstance(x, jax.Array):
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
        return x

    return jax.tree.map(leaf, target)


def _restore(
    manager: ocp.CheckpointManager, target: Any, step: int | None
) -> tuple[Any, dict, int]:
    """Restore ``step`` from ``manager``, or the newest step that restores cleanly."""
    silence_closed_loop_callbacks()  # before reading: a failed read reports at once
    directory = Path(manager.directory)
    steps = sorted(manager.all_steps(), reverse=True)
    abstract = _abstract(target)
    if step is not None:
        if step not in steps:
            raise CheckpointNotFoundError(
                f"No checkpoint for step {step} in {directory}; available steps: "
                f"{sorted(steps) or 'none'}."
            )
        try:
            return (*_restore_step(manager, abstract, step), step)
        except CheckpointMismatchError:
            raise
        except Exception as err:
            forget_failed_reads(directory / str(step))
            raise CheckpointNotFoundError(
                f"Checkpoint {directory / str(step)} cannot be restored: {_short(err)}"
            ) from err
    if not steps:
        raise CheckpointNotFoundError(
            f"No checkpoint to restore in {directory}. Train from scratch (without "
            f"--resume_from_checkpoint) or point it to a run's output_dir."
        )
    problems, damaged = [], []
    for candidate in steps:
        try:
            state, meta = _restore_step(manager, abstract, candidate)
        except CheckpointMismatchError:
            raise
        except Exception as err:
            forget_failed_reads(directory / str(candidate))
            problems.append(f"step {candidate}: {_short(err)}")
            damaged.append(candidate)
            logger.debug("Checkpoint step %d in %s failed to restore.", candidate, directory)
            continue
        if problems:  # one warning, naming every damaged step and the one used instead
            logger.warning(
                "Checkpoint %s in %s %s unusable (%s); resuming from checkpoint step %d instead.",
                f"step {damaged[0]}"
                if len(damaged) == 1
                else "steps " + ", ".join(map(str, damaged)),
                directory,
                "is" if len(damaged) == 1 else "are",
                "; ".join(problems),
                candidate,
            )
        return state, meta, candidate
    raise CheckpointNotFoundError(
        f"No usable checkpoint in {directory}; every step failed to restore:\n  "
        + "\n  ".join(problems)
    )


def _restore_step(manager: ocp.CheckpointManager, abstract: Any, step: int) -> tuple[Any, dict]:
    path = Path(manager.directory) / str(step)
    if not (path / _COMMIT_FILE).is_file():
        raise OSError(f"{path / _COMMIT_FILE} is missing: the save did not complete")
    for item in _ITEMS:
        if not (path / item).is_dir():
            raise OSError(f"{path / item} is missing")
    try:
        out = manager.restore(
            step,
            args=ocp.args.Composite(
                **{_STATE: ocp.args.StandardRestore(abstract), _META: ocp.args.JsonRestore()}
            ),
        )
    except ValueError as err:
        if any(marker in str(err) for marker in _MISMATCH_MARKERS):
            raise CheckpointMismatchError(
                f"The state to restore does not match checkpoint {path} (a different model, "
                f"optimizer or number of labels?): {err}"
            ) from err
        raise
    meta = out[_META]
    if not isinstance(meta, dict):
        raise ValueError(f"{path / _META} holds {type(meta).__name__}, expected a JSON object")
    return out[_STATE], meta


def _short(err: BaseException, limit: int = 300) -> str:
    """First line of an error, cut short (tensorstore errors embed kilobytes of spec)."""
    text = (str(err).strip().splitlines() or [""])[0]
    if len(text) > limit:
        text = text[:limit] + "..."
    return f"{type(err).__name__}: {text}"


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
