"""Finding and restoring checkpoints: ``--resume_from_checkpoint`` values resolved to a
:class:`CheckpointLocation` in the folder layout that ``checkpointing.Checkpointer`` writes
(``checkpointing.layout``), and the restore that falls back past damaged steps (one warning
naming them) but never past a state that does not fit (:class:`CheckpointMismatchError`: a
user error).

``checkpointing.checkpointer`` re-exports :func:`find_checkpoint` and
:func:`restore_checkpoint`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from flaxtrainer.checkpointing.layout import (
    CHECKPOINTS_DIRNAME,
    COMMIT_FILE,
    ITEMS,
    LATEST_DIRNAME,
    META_ITEM,
    STATE_ITEM,
    TMP_MARKER,
    CheckpointLocation,
    is_step_dir,
)
from flaxtrainer.checkpointing.noise import (
    forget_failed_reads,
    quiet_read_only_notices,
    silence_closed_loop_callbacks,
)
from flaxtrainer.errors import CheckpointMismatchError, CheckpointNotFoundError

# One logger for everything about checkpoints, wherever the code lives.
logger = logging.getLogger("flaxtrainer.checkpointing.checkpointer")

# Fragments of orbax's errors for a target that does not fit the checkpoint (a user error,
# not a damaged checkpoint: falling back to an older step would not help).
_MISMATCH_MARKERS = ("structures do not match", "not compatible with the stored shape")

_RESUME_NEWEST = ("latest", "true")
_RESUME_NONE = ("", "false", "none")


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
    if TMP_MARKER in path.name:
        raise CheckpointNotFoundError(
            f"--resume_from_checkpoint {path} is the temporary folder of a save that never "
            f"finished and cannot be used; pass {path.parent} to resume from the newest complete "
            f"checkpoint."
        )
    if is_step_dir(path):
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
    skipped, with one warning naming them.
    """
    with quiet_read_only_notices():
        manager = ocp.CheckpointManager(
            Path(location.directory).expanduser().absolute(),
            options=ocp.CheckpointManagerOptions(
                read_only=True, create=False, save_interval_steps=0
            ),
            item_names=ITEMS,
        )
    try:
        return _restore(manager, target, location.step)
    finally:
        manager.close()


# ----------------------------------------------------------------------------- internals
def _find_steps_folder(path: Path) -> Path | None:
    """The first of ``path/checkpoints/latest``, ``path/latest``, ``path`` holding a step."""
    for candidate in (path / CHECKPOINTS_DIRNAME / LATEST_DIRNAME, path / LATEST_DIRNAME, path):
        if candidate.is_dir() and any(is_step_dir(p) for p in candidate.iterdir()):
            return candidate
    return None


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
    if not (path / COMMIT_FILE).is_file():
        raise OSError(f"{path / COMMIT_FILE} is missing: the save did not complete")
    for item in ITEMS:
        if not (path / item).is_dir():
            raise OSError(f"{path / item} is missing")
    try:
        out = manager.restore(
            step,
            args=ocp.args.Composite(
                **{
                    STATE_ITEM: ocp.args.StandardRestore(abstract),
                    META_ITEM: ocp.args.JsonRestore(),
                }
            ),
        )
    except ValueError as err:
        if any(marker in str(err) for marker in _MISMATCH_MARKERS):
            raise CheckpointMismatchError(
                f"The state to restore does not match checkpoint {path} (a different model, "
                f"optimizer or number of labels?): {err}"
            ) from err
        raise
    meta = out[META_ITEM]
    if not isinstance(meta, dict):
        raise ValueError(f"{path / META_ITEM} holds {type(meta).__name__}, expected a JSON object")
    return out[STATE_ITEM], meta


def _short(err: BaseException, limit: int = 300) -> str:
    """First line of an error, cut short (tensorstore errors embed kilobytes of spec)."""
    text = (str(err).strip().splitlines() or [""])[0]
    if len(text) > limit:
        text = text[:limit] + "..."
    return f"{type(err).__name__}: {text}"
