"""The user-facing error types of flaxtrainer, in one light module.

Library code (data readers, checkpointing, the pipeline, the runner) raises these; the command
line (``flaxtrainer.cli``) maps each type to an exit code and a one-line hint. Keeping them
here means the library never imports the command-line modules, and the command line can
name every type without importing jax, orbax or ``datasets`` (``--help`` stays instant).

The old import paths still work: ``flaxtrainer.cli_args.UserError``,
``flaxtrainer.data.DataError`` / ``flaxtrainer.data.errors.DataError`` and
``flaxtrainer.checkpointing.CheckpointNotFoundError`` / ``CheckpointMismatchError`` are these
same classes.
"""

from __future__ import annotations

import json
from typing import Any


class UserError(Exception):
    """A mistake the user can fix: printed as `error: <message>` and `hint: <hint>`, exit 2."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def parse_json(text: str, where: str, hint: str, line: int | None = None) -> Any:
    """``json.loads(text)``, or a :class:`UserError` naming ``where``, the line (``line`` for a
    one-line document, e.g. of a JSON-lines file; else the error's own) and the problem."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"{where}:{line if line is not None else exc.lineno}"
        raise UserError(f"{where}: not valid JSON ({exc.msg})", hint) from None


class DataError(ValueError):
    """Bad or unreadable input data.

    The message names the file (or hub dataset), the line or row, the problem and what to do.
    """


class CheckpointNotFoundError(FileNotFoundError):
    """No (usable) checkpoint where one was asked for."""


class CheckpointMismatchError(ValueError):
    """The restore target does not fit the saved state (another model or optimizer)."""
