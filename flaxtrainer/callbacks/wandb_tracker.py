"""Weights & Biases: the run's config and metrics in a W&B run (online, or offline on disk).

Needs ``pip install flaxtrainer[wandb]``. ``WANDB_MODE=offline`` writes the run under
``<dir>/wandb/offline-run-*`` with no network; ``wandb sync`` uploads it later.
"""

from __future__ import annotations

import logging
import numbers
import os
from typing import TYPE_CHECKING, Any

import jax

from flaxtrainer.callbacks.base import Callback

if TYPE_CHECKING:
    from flaxtrainer.callbacks.view import TrainerView

logger = logging.getLogger(__name__)

WANDB_EXTRA = "pip install 'flaxtrainer[wandb]'  (or: pip install wandb)"


def import_wandb() -> Any:
    """``wandb``, or an ImportError that names the extra to install."""
    try:
        import wandb
    except ImportError as exc:
        raise ImportError(
            f"report_to=wandb needs Weights & Biases, which is not installed: {WANDB_EXTRA}"
        ) from exc
    return wandb


class WandB(Callback):
    """Report a run to Weights & Biases (process 0 only), as Hugging Face's WandbCallback does.

    - at train begin: ``wandb.init`` with every ``TrainingArguments`` field (and the model's
      config under ``model``) as the run's config; a resumed run (``resume_from_checkpoint``)
      continues the same W&B run: its id is in every checkpoint (this callback's
      ``state_dict``), and ``wandb.init`` gets ``id=`` and ``resume="allow"``;
    - at each log: the numbers, renamed as Hugging Face does (``loss`` -> ``train/loss``,
      ``eval_f1`` -> ``eval/f1``, ``eval_dev_f1`` -> ``eval/dev_f1``, ``test_f1`` ->
      ``test/f1``), with ``train/global_step`` as their x axis; prediction metrics likewise.
      W&B's own step is the global step too (``run.log(..., step=)``): a resumed run goes on
      from the checkpoint's step instead of restarting W&B's counter at 0 (offline, wandb cannot
      ask the server where the run stopped), and the training and evaluation numbers of one
      step share one history row. Resuming from a checkpoint older than the run's last logged
      step: W&B ignores, with a warning, the steps it already has;
    - at train end: the final ``train_*`` metrics in the run summary; the run stays open for
      evaluation and prediction after training and is finished when the process exits (or
      with ``finish()``); it is finished at once, failed, when training raises.

    ``project`` defaults to ``WANDB_PROJECT``, else ``flaxtrainer``; ``dir`` to ``WANDB_DIR``,
    else ``output_dir``; the other ``WANDB_*`` variables (``WANDB_MODE``, ``WANDB_ENTITY``,
    ``WANDB_RUN_ID``...) are read by wandb itself.
    """

    def __init__(
        self, project: str | None = None, name: str | None = None, dir: str | None = None
    ) -> None:
        self.wandb = import_wandb()
        self.project = project
        self.name = name
        self.dir = dir
        self.run: Any = None
        self.run_id: str | None = None

    def on_train_begin(self, trainer: TrainerView) -> None:
        if jax.process_index() == 0:
            self._ensure_run(trainer)

    def on_log(self, trainer: TrainerView, logs: dict[str, float]) -> None:
        if jax.process_index() == 0:
            self._log(trainer, logs)

    def on_predict(self, trainer: TrainerView, metrics: dict[str, float]) -> None:
        if jax.process_index() == 0:
            self._log(trainer, metrics)

    def on_train_end(self, trainer: TrainerView) -> None:
        if jax.process_index() != 0 or self.run is None:
            return
        final = trainer.state.log_history[-1] if trainer.state.log_history else {}
        for key, value in final.items():
            if key != "step" and _is_number(value):
                self.run.summary[key] = value

    def on_exception(self, trainer: TrainerView, exc: BaseException) -> None:
        if self.run is not None:
            self.run.finish(exit_code=1)
            self.run = None

    def finish(self) -> None:
        """Finish the W&B run (flushes an offline run's files)."""
        if self.run is not None:
            self.run.finish()
            self.run = None

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run_id = state.get("run_id") or self.run_id

    def _ensure_run(self, trainer: TrainerView) -> Any:
        if self.run is not None:
            return self.run
        config: dict[str, Any] = dict(trainer.args.to_dict())
        to_hf_dict = getattr(getattr(trainer.model, "config", None), "to_hf_dict", None)
        if callable(to_hf_dict):
            config["model"] = to_hf_dict()
        kwargs: dict[str, Any] = {
            "project": self.project or os.environ.get("WANDB_PROJECT") or "flaxtrainer",
            "name": self.name,
            "dir": self.dir or os.environ.get("WANDB_DIR") or trainer.args.output_dir,
            "config": config,
            "reinit": "create_new",  # one run per trainer, even several in one process
        }
        if self.run_id is not None:  # resumed from a checkpoint: continue that run
            kwargs.update(id=self.run_id, resume="allow")
        os.makedirs(kwargs["dir"], exist_ok=True)
        self.run = self.wandb.init(**kwargs)
        self.run_id = self.run.id
        self.run.define_metric("train/global_step")
        self.run.define_metric("*", step_metric="train/global_step", step_sync=True)
        return self.run

    def _log(self, trainer: TrainerView, logs: dict[str, Any]) -> None:
        run = self._ensure_run(trainer)
        data = {_rename(k): v for k, v in logs.items() if _is_number(v)}
        step = trainer.state.global_step
        data["train/global_step"] = step
        run.log(data, step=step)  # W&B's step: monotonic across a resume (see the class doc)
        # A row is written when a later step is logged; the summary shows this log at once.
        run.summary.update(data)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _rename(key: str) -> str:
    """Hugging Face's ``rewrite_logs``: ``eval_f1`` -> ``eval/f1``, ``loss`` -> ``train/loss``."""
    for prefix in ("eval_", "test_"):
        if key.startswith(prefix):
            return f"{prefix[:-1]}/{key[len(prefix) :]}"
    return f"train/{key}"
