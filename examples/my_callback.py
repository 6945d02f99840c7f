"""A tiny user callback, attached from the command line with

    flaxtrainer ... --callbacks examples/my_callback.py:EventRecorder

(or `--callbacks my_callback:EventRecorder` when examples/ is the current directory or on
PYTHONPATH). It prints one line per evaluation and appends every event it sees, with the step,
to `<output_dir>/callback_events.jsonl`.
"""

from __future__ import annotations

import json
import os
from typing import Any

from flaxtrainer.callbacks import Callback


class EventRecorder(Callback):
    """Records train/epoch/log/evaluate/save/predict events; prints evaluation metrics."""

    def __init__(self, filename: str = "callback_events.jsonl") -> None:
        self.filename = filename
        self.evaluations = 0  # saved in checkpoints, restored on resume

    def _record(self, trainer: Any, event: str, **payload: Any) -> None:
        os.makedirs(trainer.args.output_dir, exist_ok=True)
        line = {"event": event, "step": trainer.state.global_step, **payload}
        with open(os.path.join(trainer.args.output_dir, self.filename), "a") as f:
            f.write(json.dumps(line) + "\n")

    def on_train_begin(self, trainer: Any) -> None:
        self._record(trainer, "on_train_begin")

    def on_epoch_end(self, trainer: Any) -> None:
        self._record(trainer, "on_epoch_end", epoch=trainer.state.epoch)

    def on_log(self, trainer: Any, logs: dict[str, float]) -> None:
        self._record(trainer, "on_log", keys=sorted(logs))

    def on_evaluate(self, trainer: Any, metrics: dict[str, float]) -> None:
        self.evaluations += 1
        f1 = metrics.get("eval_f1", metrics.get("eval_accuracy"))
        print(f"[EventRecorder] evaluation {self.evaluations} at step "
              f"{trainer.state.global_step}: {f1}")  # fmt: skip
        self._record(trainer, "on_evaluate", keys=sorted(metrics))

    def on_save(self, trainer: Any, checkpoint_dir: str | None) -> None:
        self._record(trainer, "on_save", checkpoint_dir=checkpoint_dir)

    def on_predict(self, trainer: Any, metrics: dict[str, float]) -> None:
        self._record(trainer, "on_predict", keys=sorted(metrics))

    def on_train_end(self, trainer: Any) -> None:
        self._record(trainer, "on_train_end")

    def state_dict(self) -> dict[str, Any]:
        return {"evaluations": self.evaluations}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.evaluations = int(state.get("evaluations", 0))
