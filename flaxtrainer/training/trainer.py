"""FlaxTrainer: data-parallel train / evaluate / predict loops around an NNX model and a Task.

The trainer owns the mesh, the jitted steps, precision, the optimizer and schedule, checkpoint
I/O and the callback events; the ``Task`` owns everything problem-specific (features, loss,
metrics, decoding) and the model only computes logits.

How a run flows (see ``docs/internals.md`` for the contracts):

- ``nnx.split(model, nnx.Param, ...)`` gives ``(graphdef, params, rest)``; parameters (fp32
  master weights) and optimizer state are replicated over a 1-D ``"data"`` mesh, each batch is
  split over it, and the pure step functions (``steps.py``) merge the model inside ``jit``.
- Features from ``task.prepare`` are packed several to a row in one grid planned for the whole
  run (flaxtrainer encoders, one process: ``args.packing``), else padded to a few bucket
  widths (``flaxtrainer.batching``); either way a batch holds the batch size of sentences; the
  training order is a pure function of ``(seed, epoch)``; evaluation sees every feature once.
- Step metrics (loss sum, label count, grad norm) accumulate on device and reach the host only
  at logging steps; the host runs at most two steps ahead of the device.
- After ``train()`` the trained parameters are written back into ``self.model``.

The trainer builds its collaborators and gives each what it works on; none reads the
trainer's private fields: ``plan.py`` (checks, sampler, steps, grid, initial state),
``run.TrainingRun`` (what the steps advance: train state, window sums, totals),
``loop.TrainingLoop`` (the epochs and steps of one ``train()``, driving the trainer's public
events, ``evaluate`` and ``log``), ``cadence.py`` (the log / evaluate / save flags),
``checkpoints.TrainingCheckpoints`` (saves what it is given, returns what it restores),
``evaluation.Evaluator`` (the compiled eval step over a dataset, called with the parameters
and the training grid) and ``gold.py`` (splits without gold tags).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from flaxtrainer.batching.input_pipeline import InputPipeline
from flaxtrainer.callbacks import (
    Callback,
    CallbackList,
    ErrorReport,
    ProgressBar,
    tracker_callbacks,
)
from flaxtrainer.callbacks.state import TrainerControl, TrainerState
from flaxtrainer.config.training_args import TrainingArguments
from flaxtrainer.runtime.compilation import enable_compilation_cache
from flaxtrainer.runtime.distributed import check_runtime
from flaxtrainer.runtime.sharding import data_parallel_size, make_mesh, replicate, replicated
from flaxtrainer.training.checkpoints import (
    CHECKPOINT_META_VERSION,
    TrainingCheckpoints,
    checkpoint_target,
)
from flaxtrainer.training.checks import check_sequence_length
from flaxtrainer.training.evaluation import (
    EvalLoopOutput,
    Evaluator,
    FinalEvaluation,
    PredictionOutput,
    check_best_metric,
    evaluate_sets,
)
from flaxtrainer.training.gold import GoldFreeDatasets
from flaxtrainer.training.loop import TrainingLoop
from flaxtrainer.training.optim import make_optimizer, make_schedule
from flaxtrainer.training.plan import (
    TrainingPlan,
    check_datasets,
    initial_state,
    master_params,
    plan_training,
)
from flaxtrainer.training.preemption import InterruptGuard
from flaxtrainer.training.run import TrainingRun
from flaxtrainer.training.steps import (
    TrainState,
    jit_eval_step,
    jit_train_step,
    make_eval_step,
    make_train_step,
)

if TYPE_CHECKING:
    from flaxtrainer.batching.batchers import PackingGrid
    from flaxtrainer.checkpointing.checkpointer import Checkpointer
    from flaxtrainer.tasks import Task

logger = logging.getLogger(__name__)


class TrainOutput(NamedTuple):
    global_step: int
    training_loss: float
    metrics: dict[str, float]


class FlaxTrainer:
    """Fine-tunes ``model`` on ``task`` with data parallelism over all devices.

    Args:
        model: an ``nnx.Module`` returning logits ``[batch, seq, num_labels]`` when called with
            the task's model inputs and ``deterministic=``/``rngs=`` (see docs/internals.md).
            Its non-``nnx.Param`` state is treated as constant.
        task: a ``Task``: ``prepare``, ``loss`` (sum, count), ``predict_step``,
            ``compute_metrics``, ``decode``; optional ``max_seq_length`` (largest padded width),
            ``pad_token_id`` and ``format_examples`` (markdown for TensorBoard).
        args: ``TrainingArguments``.
        train_dataset, eval_dataset: datasets given to ``task.prepare``; ``eval_dataset`` may
            be a dict of named sets (``{"dev": ds1, "ood": ds2}``), each evaluated at every
            evaluation with the prefix ``eval_<name>`` (``eval_dev_f1``), as in Hugging Face.
        callbacks: ``Callback`` instances or classes, after the defaults (TensorBoard unless
            ``report_to="none"``, ProgressBar unless ``disable_tqdm``; a default is skipped when
            an instance of its class is given).
        tokenizer: optional; its ``pad_token_id`` pads ``input_ids`` if the task has none.
        mesh / devices: override the mesh (default: every device), e.g. ``devices=jax.devices()[:1]``.

    With ``args.dtype="bfloat16"`` the forward and backward passes run on a bf16 copy of the fp32
    master parameters (build the model with ``dtype=jnp.bfloat16`` too, so activations are bf16);
    logits are cast to fp32 before the loss, and updates apply to the fp32 parameters.
    """

    def __init__(
        self,
        model: nnx.Module,
        task: Task,
        args: TrainingArguments,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        callbacks: Iterable[Callback | type[Callback]] | None = None,
        tokenizer: Any = None,
        *,
        mesh: Mesh | None = None,
        devices: Sequence[jax.Device] | None = None,
    ) -> None:
        if mesh is not None and devices is not None:
            raise ValueError("FlaxTrainer: pass mesh or devices, not both.")
        check_runtime(args)  # multi-host flags given, but jax.distributed not running?
        check_sequence_length(model, task, args)  # rows past the position table: NaN
        self.model = model
        self.task = task
        self.args = args
        self.train_dataset = train_dataset
        self.eval_dataset = eval_dataset
        self.tokenizer = tokenizer
        self.mesh = mesh if mesh is not None else make_mesh(devices)
        self.num_devices = data_parallel_size(self.mesh)
        self.compute_dtype = jnp.bfloat16 if args.dtype == "bfloat16" else None
        if args.compilation_cache_dir:
            enable_compilation_cache(args.compilation_cache_dir)

        if not jax.config.jax_threefry_partitionable:
            logger.warning(
                "jax_threefry_partitionable is off: dropout masks will depend on the device count. "
                "Enable it with jax.config.update('jax_threefry_partitionable', True)."
            )
        self.graphdef, _, rest = nnx.split(model, nnx.Param, ...)
        self._rest = replicate(rest, self.mesh)
        self.callbacks = CallbackList(self._with_defaults(CallbackList(callbacks or ()).callbacks))
        self.state = TrainerState()
        self.control = TrainerControl()
        self.is_training = False
        self.last_evaluation: EvalLoopOutput | None = None
        self.last_evaluations: tuple[EvalLoopOutput, ...] = ()  # every set of the last call
        self._final_evaluation: FinalEvaluation | None = None  # see FinalEvaluation
        #: The checkpoints of ``train()`` (``training.checkpoints``).
        self.checkpoints = TrainingCheckpoints(args)
        self._interrupt = InterruptGuard()
        self._gold_free = GoldFreeDatasets()

        #: What the current or last ``train()`` advances (``training.run``); None before.
        self.training_run: TrainingRun | None = None
        #: Dataset -> features -> layout -> placement (``flaxtrainer.batching.input_pipeline``).
        self.inputs = InputPipeline(task, model, args, self.mesh, tokenizer)
        self.packing = self.inputs.packing
        #: The packing grid of the training batches (None before ``train()`` or without
        #: packing); evaluation fills it too, so it runs in the training shape.
        self.train_grid: PackingGrid | None = None
        eval_step = make_eval_step(
            self.graphdef,
            task.loss,
            task.predict_step,
            input_names=tuple(task.model_input_names),
            compute_dtype=self.compute_dtype,
        )
        #: One pass of given parameters over a dataset (``training.evaluation``).
        self.evaluator = Evaluator(
            jit_eval_step(eval_step, self.mesh),
            rest=self._rest,
            mesh=self.mesh,
            inputs=self.inputs,
            task=task,
            batch_size=self.eval_batch_size,
            multiple=self.num_devices,
        )

    # ------------------------------------------------------------------------- properties
    @property
    def train_batch_size(self) -> int:
        """Global rows per micro-batch: per-device size times device count."""
        return self.args.per_device_train_batch_size * self.num_devices

    @property
    def eval_batch_size(self) -> int:
        return self.args.per_device_eval_batch_size * self.num_devices

    @property
    def train_compiled_shapes(self) -> int:
        """Distinct batch shapes given to the jitted train step, i.e. its compilations (its other
        inputs keep their shapes and shardings); ``train_step._cache_size()`` agrees."""
        run = self.training_run
        return 0 if run is None else len(run.batch_shapes)

    @property
    def eval_compiled_shapes(self) -> int:
        """Distinct batch shapes given to the jitted evaluation step: its compilations."""
        return len(self.evaluator.batch_shapes)

    @property
    def train_state(self) -> TrainState | None:
        """The train state (parameters, optimizer state, step) of the current or last
        ``train()``; None before. Its arrays are donated to the next step: read, never keep."""
        return None if self.training_run is None else self.training_run.train_state

    @property
    def checkpointer(self) -> Checkpointer | None:
        """The open ``Checkpointer`` during ``train()`` (None before its first use and after)."""
        return self.checkpoints.checkpointer

    # Read by code outside the package (benchmarks/, tests/cli); new code reads
    # ``train_state`` and ``evaluator.batch_shapes``.
    _train_state = train_state

    @property
    def _eval_shapes(self) -> set[tuple[int, ...]]:
        return self.evaluator.batch_shapes

    def learning_rate_at(self, updates_done: int) -> float:
        """Learning rate of the update applied after ``updates_done`` updates (host-side)."""
        if self.training_run is None:
            return float(self.args.learning_rate)
        return self.training_run.learning_rate_at(updates_done)

    # -------------------------------------------------------------------------------- train
    def train(self) -> TrainOutput:
        """Train for ``max_steps`` updates (or ``num_train_epochs``); returns loss and metrics.

        Evaluates, logs and saves on the ``TrainingArguments`` cadence; resumes exactly from
        ``args.resume_from_checkpoint``; writes the trained parameters back into ``self.model``
        and exports it with ``trainer_state.json`` to ``output_dir`` (``save_model``). Refuses
        an ``output_dir`` holding an earlier run unless ``overwrite_output_dir`` or a resume is
        asked for. SIGTERM/SIGINT end it after the current step with a checkpoint, by raising
        ``TrainingInterrupted`` (a ``SystemExit``; see ``flaxtrainer.training.preemption``).
        """
        from flaxtrainer.outputs.output_dir import prepare_output_dir

        plan = self._init_training()
        self._final_evaluation = None
        prepare_output_dir(self.args)
        self._maybe_resume()
        run, start = self.training_run, time.perf_counter()
        loop = TrainingLoop(
            self, run, plan, checkpoints=self.checkpoints, interrupt=self._interrupt
        )
        start_step, session = loop.start_step, loop.session
        self.is_training = True
        try:
            self.callbacks.on_train_begin(self)
            with self._interrupt:
                loop.run()
                loop.finish()  # a stop from on_epoch_end: its step is done already
            if self.args.load_best_model_at_end:
                self._load_best_model()
        except BaseException as exc:
            self.is_training = False
            self.callbacks.on_exception(self, exc)
            self.checkpoints.close()
            raise
        self.is_training = False
        self.checkpoints.close()
        nnx.update(self.model, run.train_state.params)

        runtime = time.perf_counter() - start
        training_loss = run.training_loss
        metrics = {
            "train_runtime": runtime,
            "train_samples_per_second": session.samples / runtime,
            "train_steps_per_second": (self.state.global_step - start_step) / runtime,
            "train_tokens_per_second": session.real_tokens / runtime,
            "train_loss": training_loss,
            "padding_efficiency": session.padding_efficiency,
            "train_compiled_shapes": self.train_compiled_shapes,
            "epoch": self.state.epoch,
        }
        self.state.log_history.append({**metrics, "step": self.state.global_step})
        self.save_model()
        self.callbacks.on_train_end(self)
        return TrainOutput(self.state.global_step, training_loss, metrics)

    def save_model(self, output_dir: str | None = None) -> None:
        """Export the model in Hugging Face format (config.json, model.safetensors, tokenizer)
        and ``trainer_state.json`` to ``output_dir`` (default ``args.output_dir``); process 0.

        ``train()`` calls it at the end, after ``load_best_model_at_end``. During training
        (e.g. from a callback) it exports the current parameters.
        """
        from flaxtrainer.training.export import export_run

        model = self.model
        if self.is_training and self.training_run is not None:
            model = nnx.merge(self.graphdef, self.training_run.train_state.params, self._rest)
        export_run(
            model, output_dir or self.args.output_dir, tokenizer=self.tokenizer, state=self.state
        )

    def _init_training(self) -> TrainingPlan:
        """Check inputs; plan the run; build schedule, optimizer, jitted step, the
        ``TrainingRun`` and the ``TrainerState``."""
        args = self.args
        check_datasets(args, self.train_dataset, self.eval_dataset)
        plan = plan_training(
            args,
            self.inputs.prepare(self.train_dataset),
            micro_size=self.train_batch_size,
            multiple=self.num_devices,
        )
        self.train_grid = plan.grid
        logger.info("Training batches: %s.", plan.batcher.layout.describe(plan.grid))
        schedule = make_schedule(args, plan.max_steps)
        tx = make_optimizer(args, schedule)
        train_step = jit_train_step(
            make_train_step(
                self.graphdef,
                self.task.loss,
                tx,
                input_names=tuple(self.task.model_input_names),
                seed=args.seed,
                compute_dtype=self.compute_dtype,
                dropout_rng=args.dropout_rng,
            ),
            self.mesh,
        )
        # A fresh copy: the train state is donated, and must never alias the model's arrays.
        params = master_params(self.model, self.mesh)
        params = jax.device_put(params, replicated(self.mesh), may_alias=False)
        self.training_run = TrainingRun(
            train_step,
            replicate(TrainState.create(params, tx), self.mesh),
            rest=self._rest,
            mesh=self.mesh,
            schedule=schedule,
        )
        self.state = initial_state(args, plan, self.train_batch_size)
        self.control.reset()
        return plan

    # ---------------------------------------------------------------------- evaluation
    def evaluate(self, dataset: Any = None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Metrics of the current parameters on ``dataset`` (default ``eval_dataset``).

        Returns the task's metrics plus ``loss``, ``samples`` (examples), ``runtime`` and
        ``samples_per_second``, each prefixed ``{metric_key_prefix}_``; logs them and fires
        ``on_evaluate``. A dict of named sets gives each set's metrics prefixed
        ``{metric_key_prefix}_{name}_``, merged into one log and one ``on_evaluate``
        (``flaxtrainer.training.evaluation.evaluate_sets``). During training, the metric
        ``metric_for_best_model`` names must be among them.
        """
        dataset = self.eval_dataset if dataset is None else dataset
        if dataset is None:
            raise ValueError(
                "FlaxTrainer.evaluate() needs a dataset: pass one, or eval_dataset to FlaxTrainer."
            )
        done = self._final_evaluation
        if done is not None and done.answers(dataset, metric_key_prefix, self.state):
            logger.info(
                "Evaluation: training evaluated these sets at its last step (%d) with the "
                "parameters it ended with; reusing those metrics.",
                done.step,
            )
            return dict(done.metrics)
        passes, metrics = evaluate_sets(self._evaluation_pass, dataset, metric_key_prefix)
        self._final_evaluation = (
            FinalEvaluation(dataset, metric_key_prefix, self.state.global_step, metrics)
            if self.is_training
            else None
        )
        self.last_evaluations = passes  # every set's pass, for the error report
        if self.is_training:
            check_best_metric(self.args, metrics)
        self.last_evaluation = passes[-1]
        self.log(metrics)
        self.callbacks.on_evaluate(self, metrics)
        return metrics

    def predict(self, dataset: Any, metric_key_prefix: str = "test") -> PredictionOutput:
        """Word-level predictions (``task.decode``) for ``dataset``, with metrics when it has labels.

        A split without gold tags (a ``tags`` column of -1 only, as the readers give it, or
        labels all -100 after ``task.prepare``) gets no loss and no task metrics: only
        ``{prefix}_samples``, ``_runtime`` and ``_samples_per_second``.
        """
        result = self._evaluation_pass(dataset, metric_key_prefix)
        self.last_evaluations = (result,)
        predictions = self.task.decode(result.dataset, result.features, result.outputs)
        label_ids = [np.asarray(f["labels"]) for f in result.features]
        self.callbacks.on_predict(self, result.metrics)
        return PredictionOutput(predictions, label_ids, result.metrics)

    def evaluation_loop(
        self, dataset: Any, metric_key_prefix: str = "eval", expect_gold: bool = True
    ) -> EvalLoopOutput:
        """One pass of the current parameters over ``dataset`` (``Evaluator.run``), in the
        training grid once there is one; kept as ``last_evaluation``. No logging, no events."""
        result = self.evaluator.run(
            dataset,
            metric_key_prefix,
            self._eval_params(),
            grid=self.train_grid,
            expect_gold=expect_gold,
        )
        self._count_compilations()
        self.last_evaluation = result
        return result

    def _evaluation_pass(self, dataset: Any, prefix: str) -> EvalLoopOutput:
        """:meth:`evaluation_loop` of ``dataset`` less its gold tags when they are all -1 (a
        split without gold, ``flaxtrainer.training.gold``): no made-up loss or metrics."""
        return self.evaluation_loop(self._gold_free.of(dataset), prefix)

    def _eval_params(self) -> Any:
        if self.is_training and self.training_run is not None:
            return self.training_run.train_state.params
        return master_params(self.model, self.mesh)

    # ------------------------------------------------------------------- checkpoints
    def _checkpoint_target(self) -> dict[str, Any]:
        """The arrays a checkpoint holds, as the current run has them."""
        run = self.training_run
        return checkpoint_target(None, None) if run is None else run.checkpoint_target()

    def _maybe_resume(self) -> None:
        """Restore train state, TrainerState and callbacks from ``args.resume_from_checkpoint``."""
        resumed = self.checkpoints.resume(self._checkpoint_target(), self.state)
        if resumed is None:
            return
        self.training_run.restore(resumed.train_state, resumed.metrics, resumed.totals)
        self.state = resumed.state
        self.callbacks.load_state_dict(resumed.callbacks)

    def _load_best_model(self) -> None:
        """Replace the train state by the best checkpoint's (``load_best_model_at_end``)."""
        best = self.checkpoints.load_best(self._checkpoint_target())
        if best is not None:
            self.training_run.train_state = best
            if self.state.best_global_step != self.state.global_step:
                self._final_evaluation = None  # other parameters than those it evaluated

    # ------------------------------------------------------------------------------ logging
    def log(self, logs: dict[str, float]) -> None:
        """Add ``epoch``, append to ``state.log_history`` (with ``step``) and fire ``on_log``."""
        logs = {**logs, "epoch": round(self.state.epoch, 4)}
        self.state.log_history.append({**logs, "step": self.state.global_step})
        self.callbacks.on_log(self, logs)

    # ---------------------------------------------------------------------------- internals
    def _with_defaults(self, callbacks: list[Callback]) -> list[Callback]:
        defaults: list[Callback] = tracker_callbacks(self.args, callbacks)
        # A task that reports entity errors (task.error_report) gets them logged and written.
        if hasattr(self.task, "error_report") and not any(
            isinstance(c, ErrorReport) for c in callbacks
        ):
            defaults.append(ErrorReport())
        if not self.args.disable_tqdm and not any(isinstance(c, ProgressBar) for c in callbacks):
            defaults.append(ProgressBar())
        return defaults + callbacks

    def _count_compilations(self) -> None:
        self.state.num_compilations = self.train_compiled_shapes + self.eval_compiled_shapes


__all__ = ["CHECKPOINT_META_VERSION", "FlaxTrainer", "PredictionOutput", "TrainOutput"]
