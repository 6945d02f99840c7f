"""Callbacks: hooks into the events of a run (see ``flaxtrainer.callbacks.base``)."""

from flaxtrainer.callbacks.base import EVENTS, Callback, CallbackList
from flaxtrainer.callbacks.early_stopping import EarlyStopping
from flaxtrainer.callbacks.error_report import ErrorReport
from flaxtrainer.callbacks.lr_monitor import LRMonitor
from flaxtrainer.callbacks.mlflow_tracker import MLflow
from flaxtrainer.callbacks.nan_guard import TerminateOnNaN
from flaxtrainer.callbacks.parameters import ParameterOverview
from flaxtrainer.callbacks.profiler import Profiler
from flaxtrainer.callbacks.progress import LogPrinter, ProgressBar
from flaxtrainer.callbacks.tensorboard import TensorBoard
from flaxtrainer.callbacks.trackers import tracker_callbacks
from flaxtrainer.callbacks.view import TrainerView
from flaxtrainer.callbacks.wandb_tracker import WandB

__all__ = [
    "EVENTS",
    "Callback",
    "CallbackList",
    "EarlyStopping",
    "ErrorReport",
    "LRMonitor",
    "LogPrinter",
    "MLflow",
    "ParameterOverview",
    "Profiler",
    "ProgressBar",
    "TensorBoard",
    "TerminateOnNaN",
    "TrainerView",
    "WandB",
    "tracker_callbacks",
]
