"""The folder layout of flaxtrainer's checkpoints, shared by the writer
(``checkpointing.checkpointer``) and the reader (``checkpointing.restore``)::

    <output_dir>/checkpoints/latest/<step>/{state,meta,metrics,commit_success.txt}

A step folder holds the two items ``state`` (the arrays) and ``meta`` (JSON); orbax writes a
step into ``<step>.orbax-checkpoint-tmp`` and renames it when complete.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import orbax.checkpoint as ocp

CHECKPOINTS_DIRNAME = "checkpoints"
"""Sub-folder of ``output_dir`` that the trainer gives to its ``Checkpointer``."""
LATEST_DIRNAME = "latest"
"""The folder of steps inside a ``Checkpointer``'s root (named when it held the newest only)."""

STATE_ITEM, META_ITEM = "state", "meta"
"""The items of a step: the pytree of arrays, and the JSON dict beside it."""
ITEMS = (STATE_ITEM, META_ITEM)
# orbax 0.12.8 names an unfinished save `<step>.orbax-checkpoint-tmp` (older releases appended
# `-<timestamp>`), and writes `commit_success.txt` into a step folder just before finalizing it.
TMP_MARKER = ocp.path.atomicity_types.TMP_DIR_SUFFIX
COMMIT_FILE = ocp.path.atomicity_types.COMMIT_SUCCESS_FILE


def is_step_dir(path: Path) -> bool:
    """Whether ``path`` is a step folder (``<digits>/state``), finished or not."""
    return path.is_dir() and path.name.isdigit() and (path / STATE_ITEM).is_dir()


@dataclass(frozen=True)
class CheckpointLocation:
    """A folder of steps and a step in it (None: the newest usable one)."""

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
