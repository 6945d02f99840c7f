"""The trackers that ``report_to`` may name, and the packages each one needs.

One table for both readers: ``TrainingArguments`` (which names exist, and which ``all`` picks:
the installed ones) and the tracker callbacks (what to install when a named one is missing).
"""

from __future__ import annotations

import importlib.util
from typing import NamedTuple


class TrackerPackage(NamedTuple):
    """What a tracker imports, and the command that installs it."""

    module: str
    install: str


#: report_to name -> its package, in the order ``report_to="all"`` lists them.
TRACKER_PACKAGES: dict[str, TrackerPackage] = {
    "tensorboard": TrackerPackage("tensorboardX", "pip install 'flaxtrainer[tensorboard]'"),
    "mlflow": TrackerPackage(
        "mlflow", "pip install 'flaxtrainer[mlflow]'  (or: pip install mlflow-skinny)"
    ),
    "wandb": TrackerPackage("wandb", "pip install 'flaxtrainer[wandb]'  (or: pip install wandb)"),
}
#: Trackers that ``report_to`` may name, besides ``all`` (every installed one) and ``none``.
REPORT_TO: tuple[str, ...] = tuple(TRACKER_PACKAGES)


def is_installed(module: str) -> bool:
    """Whether ``module`` can be imported (looked up without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: sys.modules[module] is None
        return False


def tracker_installed(name: str) -> bool:
    """Whether the package of the tracker ``name`` (a key of ``TRACKER_PACKAGES``) is there."""
    return is_installed(TRACKER_PACKAGES[name].module)
