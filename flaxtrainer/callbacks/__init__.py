"""Callbacks: hooks into the events of a run (see ``flaxtrainer.callbacks.base``)."""

from flaxtrainer.callbacks.base import EVENTS, Callback, CallbackList
from flaxtrainer.callbacks.early_stopping import EarlyStopping
from flaxtrainer.callbacks.lr_monitor import LRMonitor
from flaxtrainer.callbacks.nan_guard import TerminateOnNaN
from flaxtrainer.callbacks.progress import ProgressBar
from flaxtrainer.callbacks.tensorboard import TensorBoard

__all__ = [
    "EVENTS",
    "Callback",
    "CallbackList",
    "EarlyStopping",
    "LRMonitor",
    "ProgressBar",
    "TensorBoard",
    "TerminateOnNaN",
]
