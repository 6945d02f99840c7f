"""The one rule for "is this evaluation better than the best so far".

Four places rank evaluations and must agree on which step is best: the checkpoint kept as the
best (``checkpointing.Checkpointer``), ``trainer_state.json``'s ``best_metric`` /
``best_global_step`` (``training.checkpoints.record_best``), the model loaded by
``load_best_model_at_end``, and early stopping (``callbacks.EarlyStopping``). All of them use
:class:`BestMetric`:

- **lookup**: the metric is read under its name, then with the ``eval_`` prefix that
  ``FlaxTrainer.evaluate`` adds (``"f1"`` finds ``eval_f1``; ``"eval_f1"`` is found as given);
- **direction**: ``greater_is_better``, by default True unless the name ends with ``loss``
  (Hugging Face's default);
- **strict**: a value must beat the best by more than ``threshold`` (0 by default), so a tie
  keeps the earlier step;
- **NaN** (or a missing / non-numeric value) never improves, and is never the best.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

EVAL_PREFIX = "eval_"


def default_greater_is_better(name: str) -> bool:
    """Hugging Face's default direction: lower is better for a ``*loss`` metric, else higher."""
    return not name.endswith("loss")


def eval_metric_name(name: str) -> str:
    """``name`` as evaluation metrics spell it: ``eval_``-prefixed unless it already is."""
    return name if name.startswith(EVAL_PREFIX) else f"{EVAL_PREFIX}{name}"


def metric_key(metrics: Mapping[str, Any] | None, name: str) -> str | None:
    """The key under which ``metrics`` holds the metric ``name``: ``name`` itself, else
    ``eval_<name>``; None when neither is there (the lookup every ranking uses)."""
    for key in (name, f"{EVAL_PREFIX}{name}"):
        if metrics and key in metrics:
            return key
    return None


def metric_value(metrics: Mapping[str, Any] | None, name: str) -> float | None:
    """``name`` (then ``eval_<name>``) in ``metrics`` as a float; None when absent or not a
    number. NaN is returned as NaN (it is a value, one that never improves)."""
    key = metric_key(metrics, name)
    if key is None:
        return None
    try:
        return float(metrics[key])
    except (TypeError, ValueError):
        return None


def improves(
    value: float | None, best: float | None, greater_is_better: bool, threshold: float = 0.0
) -> bool:
    """Whether ``value`` beats ``best`` by more than ``threshold`` (strictly: ties do not).

    None or NaN never improves; anything else improves on no best (None, or a NaN best that an
    older checkpoint may have recorded).
    """
    if value is None or math.isnan(value):
        return False
    if best is None or math.isnan(best):
        return True
    return value > best + threshold if greater_is_better else value < best - threshold


@dataclass(frozen=True)
class BestMetric:
    """How evaluations are ranked: the metric's ``name``, its direction and the margin.

    ``greater_is_better=None`` takes :func:`default_greater_is_better`.
    """

    name: str
    greater_is_better: bool | None = None
    threshold: float = 0.0

    def __post_init__(self) -> None:
        if self.greater_is_better is None:
            object.__setattr__(self, "greater_is_better", default_greater_is_better(self.name))
        if self.threshold < 0:
            raise ValueError(f"BestMetric threshold must be >= 0, got {self.threshold}.")

    @classmethod
    def from_args(cls, args: Any) -> BestMetric | None:
        """The rule of ``TrainingArguments`` (``metric_for_best_model``, ``greater_is_better``);
        None when no metric is set."""
        name = getattr(args, "metric_for_best_model", None)
        if name is None:
            return None
        return cls(name, getattr(args, "greater_is_better", None))

    def value(self, metrics: Mapping[str, Any] | None) -> float | None:
        """This metric in ``metrics`` (see :func:`metric_value`)."""
        return metric_value(metrics, self.name)

    def improves(self, value: float | None, best: float | None) -> bool:
        """Whether ``value`` beats ``best`` (see :func:`improves`)."""
        return improves(value, best, bool(self.greater_is_better), self.threshold)

    def best_of(self, candidates: Iterable[tuple[int, Mapping[str, Any] | None]]) -> int | None:
        """The best step of ``(step, metrics)`` pairs, folding :meth:`improves` in step order
        (so a tie keeps the earlier step); None when no step has a usable value."""
        best_step, best_value = None, None
        for step, metrics in sorted(candidates, key=lambda item: item[0]):
            value = self.value(metrics)
            if self.improves(value, best_value):
                best_step, best_value = step, value
        return best_step

    def rank(self, metrics: Mapping[str, Any] | None) -> float:
        """A sort key, larger is better; missing or NaN ranks last (for orbax's ``best_fn``)."""
        value = self.value(metrics)
        if value is None or math.isnan(value):
            return -math.inf
        return value if self.greater_is_better else -value
