"""MLflow: parameters, metrics and the final model of a run in an MLflow tracking store.

Needs ``pip install flaxtrainer[mlflow]`` (``mlflow-skinny``: the tracking client without the
server; the full ``mlflow`` package works too).
"""

from __future__ import annotations

import logging
import numbers
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax

from flaxtrainer.callbacks.base import Callback

if TYPE_CHECKING:
    from flaxtrainer.callbacks.view import TrainerView

logger = logging.getLogger(__name__)

MLFLOW_EXTRA = "pip install 'flaxtrainer[mlflow]'  (or: pip install mlflow-skinny)"
_MAX_PARAM_LENGTH = 6000  # MLflow's limit on a parameter's value
_BATCH = 100  # MLflow takes at most 100 params (1000 metrics) per log_batch call
_BAD_KEY_CHARS = re.compile(r"[^\w\-. /]")


def import_mlflow() -> Any:
    """``mlflow``, or an ImportError that names the extra to install."""
    try:
        import mlflow
    except ImportError as exc:
        raise ImportError(
            f"report_to=mlflow needs the MLflow client, which is not installed: {MLFLOW_EXTRA}"
        ) from exc
    return mlflow


class MLflow(Callback):
    """Report a run to MLflow (process 0 only), as Hugging Face's MLflowCallback does.

    - at train begin: every ``TrainingArguments`` field (and the model's config, prefixed
      ``model.``) as parameters; a resumed run continues its MLflow run (the run id is kept in
      the checkpoints) and does not log them again;
    - at each log: the numbers logged, at the global step (``loss``, ``learning_rate``,
      ``grad_norm``, ``eval_f1``, ``eval_loss``, ...), and the prediction metrics (``test_*``);
    - at train end: the final ``train_*`` metrics and, with ``log_artifacts``, the files of the
      exported model folder (``config.json``, ``model.safetensors``, tokenizer,
      ``trainer_state.json``) as the artifact folder ``model``; the run is marked FINISHED
      (FAILED / KILLED when training raises). Evaluation and prediction after training are
      still logged to the same run.

    The store is ``tracking_uri``, else ``MLFLOW_TRACKING_URI``, else the local file store
    ``<output_dir>/mlruns`` (offline; ``mlflow ui --backend-store-uri <output_dir>/mlruns``).
    For ``file:`` stores ``MLFLOW_ALLOW_FILE_STORE=true`` is set unless set already: MLflow 3
    otherwise refuses them, and mlflow-skinny has no database backend. The experiment is
    ``experiment_name``, else ``MLFLOW_EXPERIMENT_NAME``, else ``flaxtrainer``; ``run_name``
    defaults to ``MLFLOW_RUN_NAME``; ``MLFLOW_RUN_ID`` names an existing run to log into.
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment_name: str | None = None,
        run_name: str | None = None,
        log_artifacts: bool = True,
    ) -> None:
        self.mlflow = import_mlflow()
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.log_artifacts = log_artifacts
        self.run_id: str | None = None
        self.client: Any = None
        self._params_logged = False

    # ------------------------------------------------------------------------------- events
    def on_train_begin(self, trainer: TrainerView) -> None:
        if not self._is_main():
            return
        resumed = self.run_id is not None and trainer.state.global_step > 0
        self._ensure_run(trainer)
        self.client.update_run(self.run_id, status="RUNNING")  # again, for a resumed run
        if not resumed and not self._params_logged:
            self._log_params(trainer)
        self._params_logged = True

    def on_log(self, trainer: TrainerView, logs: dict[str, float]) -> None:
        if self._is_main():
            self._log_metrics(trainer, logs)

    def on_predict(self, trainer: TrainerView, metrics: dict[str, float]) -> None:
        if self._is_main():
            self._log_metrics(trainer, metrics)

    def on_train_end(self, trainer: TrainerView) -> None:
        if not self._is_main() or self.run_id is None:
            return
        final = trainer.state.log_history[-1] if trainer.state.log_history else {}
        self._log_metrics(trainer, {k: v for k, v in final.items() if k != "step"})
        if self.log_artifacts:
            self._log_model_folder(Path(trainer.args.output_dir))
        self.client.set_terminated(self.run_id, "FINISHED")

    def on_exception(self, trainer: TrainerView, exc: BaseException) -> None:
        if not self._is_main() or self.run_id is None:
            return
        interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit))
        self.client.set_terminated(self.run_id, "KILLED" if interrupted else "FAILED")

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run_id = state.get("run_id") or self.run_id
        self._params_logged = self.run_id is not None

    # ---------------------------------------------------------------------------- internals
    @staticmethod
    def _is_main() -> bool:
        return jax.process_index() == 0

    def resolved_tracking_uri(self, output_dir: str) -> str:
        uri = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            uri = Path(output_dir, "mlruns").resolve().as_uri()
        if uri.startswith("file:") or "://" not in uri:
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        return uri

    def _ensure_run(self, trainer: TrainerView) -> str:
        """The MLflow run to log into: this callback's, MLFLOW_RUN_ID's, or a new one."""
        if self.client is None:
            uri = self.resolved_tracking_uri(trainer.args.output_dir)
            self.client = self.mlflow.MlflowClient(tracking_uri=uri)
        if self.run_id is None:
            self.run_id = os.environ.get("MLFLOW_RUN_ID") or None
        if self.run_id is not None:
            return self.run_id
        name = self.experiment_name or os.environ.get("MLFLOW_EXPERIMENT_NAME") or "flaxtrainer"
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = (
            experiment.experiment_id if experiment else self.client.create_experiment(name)
        )
        run = self.client.create_run(
            experiment_id,
            run_name=self.run_name or os.environ.get("MLFLOW_RUN_NAME") or None,
            tags={"mlflow.source.name": "flaxtrainer"},
        )
        self.run_id = run.info.run_id
        logger.info(
            "MLflow run %s (experiment %r) at %s", self.run_id, name, self.client.tracking_uri
        )
        return self.run_id

    def _log_params(self, trainer: TrainerView) -> None:
        from mlflow.entities import Param

        params = {k: _param_value(v) for k, v in trainer.args.to_dict().items()}
        config = getattr(getattr(trainer.model, "config", None), "to_hf_dict", None)
        if callable(config):
            params.update({f"model.{k}": _param_value(v) for k, v in config().items()})
        items = [Param(_key(k), v) for k, v in params.items()]
        for start in range(0, len(items), _BATCH):
            self.client.log_batch(self.run_id, params=items[start : start + _BATCH])

    def _log_metrics(self, trainer: TrainerView, logs: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        run_id = self._ensure_run(trainer)
        step = trainer.state.global_step
        stamp = _now_ms()
        metrics = [
            Metric(_key(k), float(v), stamp, step)
            for k, v in logs.items()
            if isinstance(v, numbers.Real) and not isinstance(v, bool)
        ]
        for start in range(0, len(metrics), 10 * _BATCH):
            self.client.log_batch(run_id, metrics=metrics[start : start + 10 * _BATCH])
        if not trainer.is_training:  # a stand-alone evaluate/predict: the run is done again
            self.client.set_terminated(run_id, "FINISHED")

    def _log_model_folder(self, folder: Path) -> None:
        """The exported model's files (the folder's top level: no checkpoints, logs, runs)."""
        files = [p for p in sorted(folder.iterdir()) if p.is_file()] if folder.is_dir() else []
        for path in files:
            self.client.log_artifact(self.run_id, str(path), artifact_path="model")
        logger.info("Logged %d files of %s to MLflow (artifacts/model).", len(files), folder)


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def _key(name: str) -> str:
    """MLflow keys allow letters, digits, ``_ - . / `` and space; anything else becomes ``_``."""
    return _BAD_KEY_CHARS.sub("_", str(name))


def _param_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= _MAX_PARAM_LENGTH else text[: _MAX_PARAM_LENGTH - 3] + "..."
