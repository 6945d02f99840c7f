"""A task from a name or a class reference, built with the keywords its class accepts.

``--task_name ner|pos|chunk`` names a built-in task; ``--task_class module:Class`` (or
``path/to/file.py:Class``) a user's subclass of :class:`flaxtrainer.tasks.Task`. The command line
and the raw-text pipeline both build their task here.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from flaxtrainer.errors import UserError, import_object, one_line

TASK_CLASSES = {
    "ner": "flaxtrainer.tasks:TokenClassificationTask",
    "pos": "flaxtrainer.tasks:PosTaggingTask",
    "chunk": "flaxtrainer.tasks:ChunkingTask",
}


def task_class_for(
    task_name: str, task_class: str | None = None, *, flag: str = "--task_class"
) -> type:
    """The Task subclass of a run: `--task_class module:Class`, else the one `--task_name` names.

    `flag` names where a `task_class` reference came from, for the error message.
    """
    from flaxtrainer.tasks import Task

    if task_class:
        cls = import_object(task_class, flag=flag)
        if not (isinstance(cls, type) and issubclass(cls, Task)):
            raise UserError(
                f"{flag} {task_class!r} is not a subclass of flaxtrainer.tasks.Task",
                "subclass flaxtrainer.tasks.TokenClassificationTask (or Task) in your module",
            )
        return cls
    reference = TASK_CLASSES.get(task_name)
    if reference is None:
        raise UserError(
            f"unknown --task_name {task_name!r}",
            f"use one of {', '.join(TASK_CLASSES)}, or --task_class module:Class for your own task",
        )
    return import_object(reference, flag="--task_name")


def class_reference(cls: type) -> str:
    """`module:Qualname` of a class; a class from a file module keeps that file's path."""
    module = sys.modules.get(cls.__module__)
    path = getattr(module, "__file__", None)
    if cls.__module__.startswith("_flaxtrainer_user_") and path:
        return f"{os.path.abspath(path)}:{cls.__qualname__}"
    return f"{cls.__module__}:{cls.__qualname__}"


def builtin_base(cls: type) -> str:
    """The first flaxtrainer task class in `cls`'s MRO (the fallback at inference)."""
    for base in cls.__mro__:
        if base.__module__.startswith("flaxtrainer.tasks"):
            return class_reference(base)
    return TASK_CLASSES["ner"]


def build_task(
    cls: type, label_names: Sequence[str], tokenizer: Any, task_kwargs: Mapping[str, Any]
) -> Any:
    """`cls(label_names, tokenizer, **task_kwargs)`, passing only the keywords `cls` accepts."""
    accepted = inspect.signature(cls).parameters
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    kwargs = {k: v for k, v in task_kwargs.items() if takes_kwargs or k in accepted}
    try:
        return cls(list(label_names), tokenizer, **kwargs)
    except ValueError as exc:
        hint = "check --task_name / --task_class against the data's tags"
        if "scheme" in str(exc) or "mode" in str(exc):
            hint = (
                "give the data's scheme with --label_scheme (auto detects it), --seqeval_mode "
                "default for IO tags; word classes such as POS tags need --task_name pos"
            )
        raise UserError(f"{cls.__name__}: {one_line(str(exc))}", hint) from None
