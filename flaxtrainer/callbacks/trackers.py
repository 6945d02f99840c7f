"""The callbacks that TrainingArguments ask for (besides the progress bar).

``tracker_callbacks(args)`` gives, in this order: the trackers of ``report_to`` (TensorBoard,
MLflow, W&B), the ``Profiler`` when ``profile_steps`` is set, ``LogPrinter`` when
``disable_tqdm`` (plain log lines instead of the bar, as Hugging Face's PrinterCallback), and
``ParameterOverview``. The trainer puts them before the user's callbacks, skipping any class the
user passed an instance of.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from flaxtrainer.callbacks.base import Callback
from flaxtrainer.config.trackers import TRACKER_PACKAGES, tracker_installed

if TYPE_CHECKING:
    from flaxtrainer.config.training_args import TrainingArguments


def missing_trackers(report_to: Iterable[str]) -> list[tuple[str, str]]:
    """``(tracker, install command)`` for each tracker of ``report_to`` whose package is absent."""
    return [
        (name, TRACKER_PACKAGES[name].install)
        for name in report_to
        if name in TRACKER_PACKAGES and not tracker_installed(name)
    ]


def require_trackers(report_to: Iterable[str], *, cli: bool = False) -> None:
    """Raise when a tracker of ``report_to`` is not installed: an ImportError naming the extra,
    or with ``cli=True`` a ``UserError`` (one ``error:`` and one ``hint:`` line)."""
    missing = missing_trackers(report_to)
    if not missing:
        return
    names = ", ".join(name for name, _ in missing)
    installs = "; ".join(command for _, command in missing)
    message = f"--report_to {names}: not installed"
    if cli:
        from flaxtrainer.errors import UserError

        raise UserError(message, f"{installs}; or drop {names} from --report_to")
    raise ImportError(f"report_to={names!r} needs packages that are not installed: {installs}")


def tracker_callbacks(args: TrainingArguments, existing: Sequence[Callback] = ()) -> list[Callback]:
    """New instances of the callbacks ``args`` asks for, except classes in ``existing``.

    Raises ImportError (naming the extra to install) for a ``report_to`` tracker whose package
    is missing.
    """
    require_trackers(args.report_to)
    from flaxtrainer.callbacks.progress import LogPrinter, ParameterOverview

    factories: list[tuple[type[Callback], Callable[[], Callback]]] = []
    for name in args.report_to:
        if name == "tensorboard":
            from flaxtrainer.callbacks.tensorboard import TensorBoard

            factories.append((TensorBoard, TensorBoard))
        elif name == "mlflow":
            from flaxtrainer.callbacks.mlflow_tracker import MLflow

            factories.append((MLflow, MLflow))
        elif name == "wandb":
            from flaxtrainer.callbacks.wandb_tracker import WandB

            factories.append((WandB, WandB))
    profile = args.profile_range
    if profile is not None:
        from flaxtrainer.callbacks.profiler import Profiler

        factories.append((Profiler, lambda: Profiler(*profile)))
    if args.disable_tqdm:
        factories.append((LogPrinter, LogPrinter))
    factories.append((ParameterOverview, ParameterOverview))
    return [make() for cls, make in factories if not any(isinstance(c, cls) for c in existing)]
