"""TrainerState (where a run is: step, epoch, best metric, log history) and TrainerControl.

``TrainerState`` is plain host data, saved as ``trainer_state.json`` (HF's format, a superset)
and in every checkpoint's metadata; together with the train-state pytree it is all that an
exact resume needs. ``TrainerControl`` carries the decisions callbacks make for the loop.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainerState:
    """Progress of a run.

    ``global_step`` counts optimizer updates. ``epoch`` is fractional (``epoch_index`` plus the
    fraction of that epoch done); ``epoch_index`` and ``step_in_epoch`` locate the next batch of
    the (seeded, pure) sampler, which is what an exact resume needs.
    """

    global_step: int = 0
    epoch: float = 0.0
    epoch_index: int = 0
    step_in_epoch: int = 0
    max_steps: int = 0
    num_train_epochs: int = 0
    steps_per_epoch: int = 0
    logging_steps: int = 500
    eval_steps: int | None = None
    save_steps: int = 500
    train_batch_size: int = 0
    best_metric: float | None = None
    best_global_step: int | None = None
    best_model_checkpoint: str | None = None
    num_compilations: int = 0
    num_input_tokens_seen: int = 0
    is_world_process_zero: bool = True
    log_history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_to_json(self, json_path: str | os.PathLike) -> None:
        """Write ``trainer_state.json`` (atomically: a crash never leaves half a file)."""
        path = os.fspath(json_path)
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(self.to_json_string())
        os.replace(tmp, path)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainerState:
        """Rebuild from ``to_dict`` output; unknown keys (from newer versions) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def load_from_json(cls, json_path: str | os.PathLike) -> TrainerState:
        with open(json_path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))


@dataclass
class TrainerControl:
    """Flags that the trainer and the callbacks set; the loop reads them after each event.

    The trainer sets ``should_log/should_evaluate/should_save`` from the cadence in
    ``TrainingArguments`` *before* firing ``on_step_end``, so a callback can both request and
    veto an action (e.g. ``TerminateOnNaN`` clears ``should_save``).

    ``should_epoch_stop`` ends the current epoch after this step (as if it were its last: its
    epoch-strategy evaluation and save happen) and training goes on with the next epoch; the
    run still ends after ``num_train_epochs`` epochs. ``should_save_at_end`` (default True):
    when training ends before ``max_steps`` (``should_training_stop``), ``train()`` saves a
    final checkpoint unless that step was just saved; a callback that stops training because
    the state is bad clears it (``TerminateOnNaN`` does).
    """

    should_training_stop: bool = False
    should_epoch_stop: bool = False
    should_log: bool = False
    should_evaluate: bool = False
    should_save: bool = False
    should_save_at_end: bool = True

    def _new_training(self) -> None:
        self.should_training_stop = False
        self.should_save_at_end = True

    def _new_epoch(self) -> None:
        self.should_epoch_stop = False

    def _new_step(self) -> None:
        self.should_log = False
        self.should_evaluate = False
        self.should_save = False

    def reset(self) -> None:
        """Clear every flag (at the start of a training run)."""
        self._new_training()
        self._new_epoch()
        self._new_step()
