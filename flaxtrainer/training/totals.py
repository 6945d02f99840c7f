"""Host counters of a span of training: the run, a session, a logging window."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flaxtrainer.batching.input_pipeline import PlacedBatch


@dataclass
class Totals:
    """Host counters over a span of training (the run, a session, a logging window)."""

    loss_sum: float = 0.0
    count: int = 0
    real_tokens: int = 0
    computed_tokens: int = 0
    samples: int = 0
    start: float = field(default_factory=time.perf_counter, compare=False)

    def add_batch(self, batch: PlacedBatch) -> None:
        self.real_tokens += batch.real_tokens
        self.computed_tokens += batch.computed_tokens
        self.samples += int((batch.indices >= 0).sum())

    def counters(self) -> dict[str, float]:
        """The counters, for checkpoint meta (``start`` is a clock reading: not saved)."""
        return {k: v for k, v in asdict(self).items() if k != "start"}

    @property
    def padding_efficiency(self) -> float:
        return self.real_tokens / self.computed_tokens if self.computed_tokens else float("nan")
