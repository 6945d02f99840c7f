"""FlaxTrainer: data-parallel train / evaluate / predict loops around an NNX model and a Task.

The trainer owns the loop, the mesh, the jitted steps, precision, the optimizer and schedule,
checkpoint I/O and the callback events; the ``Task`` owns everything problem-specific
(features, loss, metrics, decoding) and the model only computes logits.

How a run flows (see ``docs/internals.md`` for the contracts):

- ``nnx.split(model, nnx.Param, ...)`` gives ``(graphdef, params, rest)``; parameters (fp32
  master weights) and optimizer state are replicated over a 1-D ``"data"`` mesh, each batch is
  split over it, and the pure step functions (``steps.py``) merge the model inside ``jit``.
- Features from ``task.prepare`` are packed several to a row in one grid planned for the whole
  run (flaxtrainer encoders, one process: ``args.packing``), else padded to a few bucket
  widths (``batching.py``); either way a batch holds the batch size of sentences; the training
  order is a pure function of ``(seed, epoch)``; evaluation sees every feature once.
- Step metrics (loss sum, label count, grad norm) accumulate on device and reach the host only
  at logging steps; the host runs at most two steps ahead of the device.
- After ``train()`` the trained parameters are written back into ``self.model``.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from flaxtrainer.batching.batchers import PackingGrid
from flaxtrainer.batching.input_pipeline import InputPipeline, PlacedBatch, PreparedData
from flaxtrainer.batching.sampler import LengthGroupedSampler
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
from flaxtrainer.runtime.sharding import (
    data_parallel_size,
    make_mesh,
    prefetch_to_device,
    replicate,
    replicated,
    to_host,
)
from flaxtrainer.training.checks import check_sequence_length
from flaxtrainer.training.evaluation import (
    EvalLoopOutput,
    PredictionOutput,
    TrainerEvaluation,
    check_eval_sets,
)
from flaxtrainer.training.optim import make_optimizer, make_schedule
from flaxtrainer.training.preemption import InterruptGuard
from flaxtrainer.training.steps import (
    TrainState,
    jit_eval_step,
    jit_train_step,
    make_eval_step,
    make_train_step,
    zero_metrics,
)
from flaxtrainer.training.totals import Totals
from flaxtrainer.training.trainer_checkpoints import CHECKPOINT_META_VERSION, TrainerCheckpointing

if TYPE_CHECKING:
    from flaxtrainer.checkpointing.checkpointer import Checkpointer
    from flaxtrainer.tasks import Task

logger = logging.getLogger(__name__)


class TrainOutput(NamedTuple):
    global_step: int
    training_loss: float
    metrics: dict[str, float]


class FlaxTrainer(TrainerEvaluation, TrainerCheckpointing):
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
        self.checkpointer: Checkpointer | None = None
        self._interrupt = InterruptGuard()

        self._gold_free: dict[int, tuple[Any, Any]] = {}
        self._train_shapes: set[tuple[int, ...]] = set()
        self._eval_shapes: set[tuple[int, ...]] = set()
        self._train_state: TrainState | None = None
        self._train_step: Any = None
        self._metrics: dict[str, jax.Array] | None = None
        self._schedule = None
        self._totals = Totals()
        self._window = Totals()
        self._step_metrics: dict[str, float] | None = None
        self._session_start_step = 0
        self._step_metrics_at: int | None = None
        self._input_names = tuple(task.model_input_names)
        #: Dataset -> features -> layout -> placement (``flaxtrainer.batching.input_pipeline``).
        self.inputs = InputPipeline(task, model, args, self.mesh, tokenizer)
        self.packing = self.inputs.packing
        self._train_grid: PackingGrid | None = None
        self._eval_step = jit_eval_step(
            make_eval_step(
                self.graphdef,
                task.loss,
                task.predict_step,
                input_names=self._model_inputs(),
                compute_dtype=self.compute_dtype,
            ),
            self.mesh,
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
        return len(self._train_shapes)

    def learning_rate_at(self, updates_done: int) -> float:
        """Learning rate of the update applied after ``updates_done`` updates (host-side)."""
        if self._schedule is None:
            return float(self.args.learning_rate)
        return float(self._schedule(max(updates_done, 0)))

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

        sampler, batcher = self._init_training()
        prepare_output_dir(self.args)
        self._maybe_resume()
        start_step, session, start = self.state.global_step, Totals(), time.perf_counter()
        self._session_start_step = start_step
        self.is_training = True
        try:
            self.callbacks.on_train_begin(self)
            with self._interrupt:
                self._train_loop(sampler, batcher, session)
                self._finish_training()  # a stop from on_epoch_end: its step is done already
            if self.args.load_best_model_at_end:
                self._load_best_model()
        except BaseException as exc:
            self.is_training = False
            self.callbacks.on_exception(self, exc)
            self._close_checkpointer()
            raise
        self.is_training = False
        self._close_checkpointer()
        nnx.update(self.model, self._train_state.params)

        runtime = time.perf_counter() - start
        training_loss = self._totals.loss_sum / max(self._totals.count, 1)
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
        if self.is_training and self._train_state is not None:
            model = nnx.merge(self.graphdef, self._train_state.params, self._rest)
        export_run(
            model, output_dir or self.args.output_dir, tokenizer=self.tokenizer, state=self.state
        )

    def _init_training(self) -> tuple[LengthGroupedSampler, PreparedData]:
        """Check inputs; build sampler, schedule, optimizer, jitted step, train state, TrainerState."""
        args = self.args
        if self.train_dataset is None:
            raise ValueError(
                "FlaxTrainer.train() needs a train_dataset; pass it to FlaxTrainer(...)."
            )
        if args.eval_strategy != "no" and self.eval_dataset is None:
            raise ValueError(
                f"eval_strategy={args.eval_strategy!r} evaluates during training but no "
                "eval_dataset was given: pass eval_dataset, or set eval_strategy='no'."
            )
        check_eval_sets(args, self.eval_dataset)  # several sets: which one picks the best?
        batcher = self.inputs.prepare(self.train_dataset)
        accum = args.gradient_accumulation_steps
        sampler = LengthGroupedSampler(
            batcher.lengths,
            self.train_batch_size * accum,
            args.seed,
            group_by_length=args.group_by_length,  # the same rule for either layout
            balance_tokens=not args.group_by_length,
            micro_batches=accum,
        )
        steps_per_epoch = len(sampler)
        if args.max_steps > 0:
            max_steps = args.max_steps
        else:
            max_steps = max(1, math.ceil(args.num_train_epochs * steps_per_epoch))
        epochs = range(math.ceil(max_steps / steps_per_epoch))
        self._train_grid = batcher.plan(  # packing: one grid for the whole run, one shape
            (b for e in epochs for b in sampler.epoch(e)),  # read only by a layout that plans
            micro_size=self.train_batch_size,
            multiple=self.num_devices,
        )
        logger.info("Training batches: %s.", batcher.layout.describe(self._train_grid))
        self._schedule = make_schedule(args, max_steps)
        tx = make_optimizer(args, self._schedule)
        self._train_step = jit_train_step(
            make_train_step(
                self.graphdef,
                self.task.loss,
                tx,
                input_names=self._model_inputs(),
                seed=args.seed,
                compute_dtype=self.compute_dtype,
                dropout_rng=args.dropout_rng,
            ),
            self.mesh,
        )
        # A fresh copy: the train state is donated, and must never alias the model's arrays.
        params = jax.device_put(self._master_params(), replicated(self.mesh), may_alias=False)
        self._train_state = replicate(TrainState.create(params, tx), self.mesh)
        self._metrics = replicate(zero_metrics(), self.mesh)
        self._train_shapes = set()
        self._totals = Totals()
        self.state = TrainerState(
            max_steps=max_steps,
            num_train_epochs=math.ceil(max_steps / steps_per_epoch),
            steps_per_epoch=steps_per_epoch,
            logging_steps=args.logging_steps,
            eval_steps=args.eval_steps,
            save_steps=args.save_steps,
            train_batch_size=self.train_batch_size * accum,
            is_world_process_zero=jax.process_index() == 0,
        )
        self.control.reset()
        return sampler, batcher

    def _train_loop(
        self, sampler: LengthGroupedSampler, batcher: PreparedData, session: Totals
    ) -> None:
        """Epochs of steps until ``max_steps`` or a stop; log / evaluate / save on the cadence."""
        state, control, train_step = self.state, self.control, self._train_step
        accum = self.args.gradient_accumulation_steps
        rows = self.train_batch_size * accum
        self._window = Totals()
        in_flight: deque[jax.Array] = deque()
        while (
            state.global_step < state.max_steps
            and state.epoch_index < state.num_train_epochs
            and not control.should_training_stop
        ):
            epoch = state.epoch_index
            control._new_epoch()
            self.callbacks.on_epoch_begin(self)
            host_batches = (
                batcher.batch(indices, rows, (accum,), self._train_grid)
                for _, indices in sampler.iter_epoch(epoch, state.step_in_epoch)
            )
            for host, device in prefetch_to_device(host_batches, self._put_train_batch, size=2):
                self.callbacks.on_step_begin(self)
                self._train_state, self._metrics, done = train_step(
                    self._train_state, self._rest, self._metrics, device
                )
                self._record_shape(self._train_shapes, host.shape)
                # Run at most 2 steps ahead of the device: keeps host memory bounded and the
                # progress bar honest; unbounded dispatch of collective programs also
                # deadlocked XLA:CPU with 8 host devices (observed, rendezvous timeout).
                in_flight.append(done)
                if len(in_flight) > 2:
                    in_flight.popleft().block_until_ready()
                state.global_step += 1
                state.step_in_epoch += 1
                state.epoch = epoch + state.step_in_epoch / state.steps_per_epoch
                state.num_input_tokens_seen += host.real_tokens
                self._window.add_batch(host)
                session.add_batch(host)
                self._set_cadence_flags(end_of_epoch=state.step_in_epoch == state.steps_per_epoch)
                self.callbacks.on_step_end(self)
                if control.should_epoch_stop and state.step_in_epoch < state.steps_per_epoch:
                    self._end_epoch_early()
                self._act_on_flags()
                if self._interrupt.should_stop(state.global_step):
                    raise self._stop_for_interrupt()
                if (
                    control.should_training_stop
                    or state.global_step >= state.max_steps
                    or (control.should_epoch_stop and epoch + 1 >= state.num_train_epochs)
                ):
                    self._finish_training()  # the last step of the run
                    break
                if control.should_epoch_stop:
                    break
            if state.step_in_epoch >= state.steps_per_epoch:
                state.epoch_index += 1
                state.step_in_epoch = 0
            self.callbacks.on_epoch_end(self)

    def _end_epoch_early(self) -> None:
        """A callback set ``should_epoch_stop``: this step ends the epoch as its last step
        would (``epoch`` whole, epoch-strategy evaluation and save), and the next epoch starts
        at its beginning, in this run or in one resumed from this step's checkpoint. The run
        still ends after ``num_train_epochs`` epochs (or ``max_steps`` updates)."""
        state, args, control = self.state, self.args, self.control
        state.step_in_epoch = state.steps_per_epoch
        state.epoch = float(state.epoch_index + 1)
        if args.eval_strategy == "epoch":
            control.should_evaluate = True
        if args.save_strategy == "epoch":
            control.should_save = True

    def _finish_training(self) -> None:
        """At the run's last step: log the steps since the last logging step (so ``train_loss``
        is the exact mean over every step run), and, when training ends before ``max_steps`` (a
        callback's stop, or ``should_epoch_stop`` using up the epochs), save a final checkpoint
        unless this step was just saved, saving is off, or a callback cleared
        ``control.should_save_at_end`` (``TerminateOnNaN``: the state is bad). Does nothing
        when called again at the same step."""
        state, control = self.state, self.control
        if int(to_host(self._metrics)["steps"]) > 0:
            self._log_window()
        if (
            state.global_step > self._session_start_step
            and state.global_step < state.max_steps
            and self.args.save_strategy != "no"
            and control.should_save_at_end
            and self._get_checkpointer().last_saved_step != state.global_step
        ):
            metrics = self._step_metrics if self._step_metrics_at == state.global_step else None
            self._save_checkpoint(metrics)

    def _act_on_flags(self) -> None:
        """Log, then evaluate, then save, as the flags say; then clear the per-step flags."""
        control = self.control
        if control.should_log:
            self._log_window()
        paused = time.perf_counter()
        metrics = None
        if control.should_evaluate:
            metrics = self.evaluate()
            self._update_best(metrics)
            self._step_metrics, self._step_metrics_at = metrics, self.state.global_step
        if control.should_save:
            self._save_checkpoint(metrics)
        self._window.start += time.perf_counter() - paused  # throughput excludes eval and save
        control._new_step()

    def _set_cadence_flags(self, end_of_epoch: bool) -> None:
        """Flags from the arguments' cadence, set before ``on_step_end`` so callbacks may veto."""
        args, step, control = self.args, self.state.global_step, self.control
        last = step >= self.state.max_steps
        if step % args.logging_steps == 0 or last:
            control.should_log = True
        if args.eval_strategy == "steps" and step % args.eval_steps == 0:
            control.should_evaluate = True
        if args.eval_strategy == "epoch" and (end_of_epoch or last):
            control.should_evaluate = True
        if args.save_strategy == "steps" and (
            (args.save_steps and step % args.save_steps == 0) or last
        ):
            control.should_save = True
        if args.save_strategy == "epoch" and (end_of_epoch or last):
            control.should_save = True

    def _log_window(self) -> None:
        """Fetch the on-device window sums (the only per-window sync), log them, start a new
        window."""
        metrics = to_host(self._metrics)
        window, seconds = self._window, time.perf_counter() - self._window.start
        self._metrics = replicate(zero_metrics(), self.mesh)
        self._window = Totals()
        loss_sum, count = float(metrics["loss_sum"]), int(metrics["count"])
        self._totals.loss_sum += loss_sum
        self._totals.count += count
        self.log(
            {
                "loss": loss_sum / max(count, 1),
                "learning_rate": self.learning_rate_at(self.state.global_step - 1),
                "grad_norm": float(metrics["grad_norm_sum"]) / max(int(metrics["steps"]), 1),
                "tokens_per_second": window.real_tokens / max(seconds, 1e-9),
                "padding_efficiency": window.padding_efficiency,
                "compiled_shapes": self.train_compiled_shapes,
            }
        )

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

    def _model_inputs(self) -> tuple[str, ...]:
        """Model inputs passed to the model: the task's names (filtered per dataset by Batcher)."""
        return self._input_names

    def _put_train_batch(self, host: PlacedBatch) -> dict[str, jax.Array]:
        return host.put(self.mesh, batch_axis=1)

    def _record_shape(self, shapes: set[tuple[int, ...]], shape: tuple[int, ...]) -> None:
        shapes.add(tuple(shape))
        self.state.num_compilations = len(self._train_shapes) + len(self._eval_shapes)

    def _master_params(self) -> Any:
        """The model's parameters as fp32 master weights, replicated on the mesh."""
        params = nnx.state(self.model, nnx.Param)
        params = jax.tree.map(
            lambda x: (
                x.astype(jnp.float32)
                if jnp.issubdtype(x.dtype, jnp.floating) and x.dtype != jnp.float32
                else x
            ),
            params,
        )
        return replicate(params, self.mesh)

    def _eval_params(self) -> Any:
        if self.is_training and self._train_state is not None:
            return self._train_state.params
        return self._master_params()


__all__ = ["CHECKPOINT_META_VERSION", "FlaxTrainer", "PredictionOutput", "TrainOutput"]
