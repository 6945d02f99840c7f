"""Guard an output_dir that already holds a run: refuse, overwrite, or resume it.

A new run written over an old one would resume from, prune or rank the old run's checkpoints,
and mix two runs' files. ``FlaxTrainer.train()`` therefore checks first: an ``output_dir`` with
checkpoints or an exported model is refused unless ``overwrite_output_dir`` (the old
checkpoints and TensorBoard logs are deleted; the other files get overwritten) or
``resume_from_checkpoint`` (the run continues, appending to its TensorBoard logs) is set.
Other files are left alone; a lone ``trainer_state.json`` (what a run
without checkpoints of a model with no export leaves) is only a log and gets overwritten.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import numpy as np

from flaxtrainer.checkpointing.checkpointer import CHECKPOINTS_DIRNAME

if TYPE_CHECKING:
    from flaxtrainer.config.training_args import TrainingArguments

logger = logging.getLogger(__name__)

#: Files of an exported model (a training run's final export).
RUN_FILES = ("model.safetensors", "config.json")
_NO_RESUME = ("", "false", "none")


class OutputDirExistsError(FileExistsError):
    """``output_dir`` holds an earlier run; ``message`` and ``hint`` are one line each."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(f"{message}. {hint}.")
        self.message = message
        self.hint = hint


def previous_run(output_dir: str | Path) -> list[str]:
    """What marks ``output_dir`` as holding a run: a non-empty ``checkpoints/`` and
    ``RUN_FILES`` present, by name (empty when there is none)."""
    root = Path(output_dir).expanduser()
    if not root.is_dir():
        return []
    found = []
    checkpoints = root / CHECKPOINTS_DIRNAME
    if checkpoints.is_dir() and any(p.is_file() for p in checkpoints.rglob("*")):
        found.append(f"{CHECKPOINTS_DIRNAME}/")
    found += [name for name in RUN_FILES if (root / name).is_file()]
    return found


def wants_resume(resume_from_checkpoint: str | bool | None) -> bool:
    """Whether a ``resume_from_checkpoint`` value asks to resume ("false"/"none"/"" do not)."""
    if resume_from_checkpoint is None or resume_from_checkpoint is False:
        return False
    return str(resume_from_checkpoint).strip().lower() not in _NO_RESUME


def prepare_output_dir(args: TrainingArguments) -> None:
    """Refuse to train into an earlier run unless told what to do with it (see module doc).

    Raises OutputDirExistsError; with ``overwrite_output_dir`` (and no resume) deletes the old
    checkpoints and the TensorBoard ``logging_dir`` inside ``output_dir``, whatever else is
    there (a run killed before its first checkpoint leaves only logs).
    Multi-process: process 0 decides and deletes, the others follow its decision.
    """
    if wants_resume(args.resume_from_checkpoint):
        return  # the run goes on: its checkpoints and TensorBoard files are kept
    found = previous_run(args.output_dir) if jax.process_index() == 0 else []
    if not args.overwrite_output_dir:
        if not _agreed(bool(found)):
            return
        raise OutputDirExistsError(
            f"output_dir {args.output_dir} already holds a training run ({', '.join(found)})"
            if found
            else f"output_dir {args.output_dir} already holds a training run",
            "Pass --overwrite_output_dir (overwrite_output_dir=True) to start a new run there, "
            "--resume_from_checkpoint latest (resume_from_checkpoint='latest') to continue it, "
            "or choose another output_dir",
        )
    if jax.process_index() == 0:
        for stale in _stale_folders(args):
            logger.warning("overwrite_output_dir: deleting the previous run's %s.", stale)
            shutil.rmtree(stale)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("flaxtrainer_prepare_output_dir")


def _stale_folders(args: TrainingArguments) -> list[Path]:
    """What ``overwrite_output_dir`` deletes: ``checkpoints/`` and the TensorBoard
    ``logging_dir`` (so that two runs' curves never mix), the latter only when it lies inside
    ``output_dir`` (a ``logging_dir`` elsewhere may hold other runs: it is left alone)."""
    root = Path(args.output_dir).expanduser().absolute()
    folders = [root / CHECKPOINTS_DIRNAME]
    if args.logging_dir:
        logs = Path(args.logging_dir).expanduser().absolute()
        if logs != root and logs.is_relative_to(root):
            folders.append(logs)
        elif logs.is_dir() and any(logs.iterdir()):
            logger.warning(
                "overwrite_output_dir: logging_dir %s is outside output_dir and is kept; "
                "TensorBoard will show the earlier runs' curves there too.",
                logs,
            )
    return [folder for folder in folders if folder.is_dir()]


def _agreed(flag: bool) -> bool:
    """Process 0's ``flag`` on every process (output_dir may be on process 0's disk only)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.int32(flag)))
