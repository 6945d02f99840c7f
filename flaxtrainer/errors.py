"""The user-facing error types of flaxtrainer, in one light module.

Library code (data readers, checkpointing, the pipeline, the runner) raises these; the command
line (``flaxtrainer.cli.main``) maps each type to an exit code and a one-line hint. Keeping them
here means the library never imports the command-line modules, and the command line can
name every type without importing jax, orbax or ``datasets`` (``--help`` stays instant).

``flaxtrainer.data.DataError`` and ``flaxtrainer.models.ModelLoadError`` are these same classes,
handed on by their packages. ``one_line`` and ``import_object`` live here too: the rules for a
one-line message and for resolving a user's ``module:Name`` reference, shared by the library
(task and callback factories) and the command line.
"""

from __future__ import annotations

import difflib
import json
import re
import sys
from pathlib import Path
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


class ModelLoadError(ValueError):
    """A model folder, hub id, ``config.json`` or checkpoint cannot be used.

    The message names the file (or hub id) and says what is wrong and what to do about it.
    """


class CheckpointMismatchError(ValueError):
    """The restore target does not fit the saved state (another model or optimizer)."""


class MetricForBestModelError(UserError, ValueError):
    """``metric_for_best_model`` names no metric of the evaluation (or, with several evaluation
    sets, no set): a ValueError for the API, a one-line error plus hint on the command line."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "give --metric_for_best_model one of the keys named above")


def one_line(text: str) -> str:
    """Fold a multi-line message ("Header:\n  - a\n  - b") into one line ("Header: a; b")."""
    lines = [re.sub(r"^[-*] ", "", line.strip()) for line in text.strip().splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return text.strip()
    if len(lines) > 1 and lines[0].endswith(":"):
        return f"{lines[0]} " + "; ".join(lines[1:])
    return "; ".join(lines)


def import_object(reference: str, *, flag: str) -> Any:
    """Resolve a user's `module:Name` (or `path/to/file.py:Name`) reference given with `flag`.

    Modules are imported from the current directory first (as `python -m` would), then the
    Python path; a `.py` path is loaded as a file. Every failure is a `UserError`.
    """
    import importlib
    import importlib.util
    import os

    module_name, sep, attr = reference.strip().rpartition(":")
    example = f"{flag} my_module:MyClass (my_module.py in the current directory)"
    if not sep or not module_name or not attr:
        raise UserError(f"{flag} {reference!r} is not of the form module:Class", example)
    try:
        if module_name.endswith(".py") or os.sep in module_name or "/" in module_name:
            path = Path(module_name)
            if not path.is_file():
                raise UserError(f"{flag} {reference!r}: file {path} does not exist", example)
            spec = importlib.util.spec_from_file_location(f"_flaxtrainer_user_{path.stem}", path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
        else:
            cwd = os.getcwd()
            if cwd not in sys.path and "" not in sys.path:
                sys.path.insert(0, cwd)
            module = importlib.import_module(module_name)
    except UserError:
        raise
    except ModuleNotFoundError as exc:
        top = module_name.split(".")[0]
        # `examples.bioes_task` lives in a folder `examples/`; `my_module` in `my_module.py`.
        holding = f"the {top}/ folder" if "." in module_name else f"{top}.py"
        raise UserError(
            f"{flag} {reference!r}: cannot import module {exc.name!r}",
            f"run from the folder that holds {holding}, add that folder to PYTHONPATH, or give "
            "a file path: path/to/file.py:Class",
        ) from None
    except Exception as exc:  # the user's module raised while importing
        raise UserError(
            f"{flag} {reference!r}: importing {module_name} failed: "
            f"{type(exc).__name__}: {exc}".splitlines()[0],
            f"run `python -c 'import {module_name}'` to see the full error",
        ) from None
    try:
        return getattr(module, attr)
    except AttributeError:
        names = [n for n in dir(module) if not n.startswith("_")]
        close = difflib.get_close_matches(attr, names, n=1)
        raise UserError(
            f"{flag} {reference!r}: module {module_name} has no attribute {attr!r}",
            f"did you mean {module_name}:{close[0]}?" if close else example,
        ) from None
