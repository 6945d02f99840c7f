"""flaxtrainer: fine-tune Transformer encoders for token classification with JAX/Flax NNX.

``FlaxTrainer``, ``TrainingArguments``, ``TrainOutput`` and ``PredictionOutput`` are imported
lazily on first access, so that light modules (e.g. the command line's ``--help``) do not pay
for importing JAX.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from flaxtrainer.runtime import allocator as _allocator

__version__ = "0.1.0"

# Before anything starts the XLA runtime: glibc malloc settings from FLAXTRAINER_MALLOC (unset: none).
_allocator.configure()

_LAZY = {
    "FlaxTrainer": "flaxtrainer.training.trainer",
    "TrainOutput": "flaxtrainer.training.trainer",
    "PredictionOutput": "flaxtrainer.training.trainer",
    "TrainingArguments": "flaxtrainer.config.training_args",
}

__all__ = ["FlaxTrainer", "PredictionOutput", "TrainOutput", "TrainingArguments", "__version__"]

if TYPE_CHECKING:
    from flaxtrainer.config.training_args import TrainingArguments
    from flaxtrainer.training.trainer import FlaxTrainer, PredictionOutput, TrainOutput


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'flaxtrainer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
