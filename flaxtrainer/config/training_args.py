"""TrainingArguments: every knob of a run, with run_flax_ner.py's flag names and defaults.

Each field carries ``metadata={"help": ...}`` so the command line can build its parser from
this dataclass. Values are validated in ``__post_init__``; derived defaults (``logging_dir``,
``eval_steps``, ``eval_strategy``, ``metric_for_best_model``, ``greater_is_better``) are
resolved there too, so the trainer reads one consistent set of values.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from flaxtrainer.runtime.compilation import resolve_cache_dir
from flaxtrainer.runtime.distributed import check_settings

SchedulerType = Literal["linear", "cosine", "constant", "constant_with_warmup"]
DType = Literal["float32", "bfloat16"]
EvalStrategy = Literal["steps", "epoch", "no"]
SaveStrategy = Literal["steps", "epoch", "no"]
ReportTo = Literal["tensorboard", "mlflow", "wandb"]
DropoutRng = Literal["hash", "threefry"]
LogLevel = Literal["passive", "debug", "info", "warning", "error", "critical"]
LR_SCHEDULER_TYPES: tuple[str, ...] = get_args(SchedulerType)
DTYPES: tuple[str, ...] = get_args(DType)
EVAL_STRATEGIES: tuple[str, ...] = get_args(EvalStrategy)
SAVE_STRATEGIES: tuple[str, ...] = get_args(SaveStrategy)
#: Trackers that ``report_to`` may name, besides ``all`` (every one) and ``none``.
REPORT_TO: tuple[str, ...] = get_args(ReportTo)
DROPOUT_RNGS: tuple[str, ...] = get_args(DropoutRng)
LOG_LEVELS: tuple[str, ...] = get_args(LogLevel)


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class TrainingArguments:
    """Arguments of a training/evaluation/prediction run (see each field's ``help``)."""

    output_dir: str = field(
        metadata=_help("Where checkpoints, logs and the final model are written.")
    )
    overwrite_output_dir: bool = field(
        default=False, metadata=_help("Overwrite the content of output_dir if it exists.")
    )
    do_train: bool = field(default=False, metadata=_help("Run training."))
    do_eval: bool = field(
        default=False,
        metadata=_help(
            "Run evaluation on the validation set (and during training, see eval_strategy)."
        ),
    )
    do_predict: bool = field(default=False, metadata=_help("Run prediction on the test set."))
    per_device_train_batch_size: int = field(
        default=8, metadata=_help("Training batch size per device (global = this x device count).")
    )
    per_device_eval_batch_size: int = field(
        default=8,
        metadata=_help("Evaluation batch size per device (global = this x device count)."),
    )
    learning_rate: float = field(
        default=5e-5, metadata=_help("Peak learning rate of AdamW/Adafactor.")
    )
    weight_decay: float = field(
        default=0.0,
        metadata=_help("Decoupled weight decay (never applied to biases or norm scales)."),
    )
    adam_beta1: float = field(default=0.9, metadata=_help("Beta1 of AdamW."))
    adam_beta2: float = field(default=0.999, metadata=_help("Beta2 of AdamW."))
    adam_epsilon: float = field(default=1e-8, metadata=_help("Epsilon of AdamW."))
    adafactor: bool = field(default=False, metadata=_help("Use Adafactor instead of AdamW."))
    num_train_epochs: float = field(
        default=3.0, metadata=_help("Number of training epochs (may be fractional).")
    )
    max_steps: int = field(
        default=-1,
        metadata=_help("If > 0: total number of optimizer updates; overrides num_train_epochs."),
    )
    warmup_steps: int = field(
        default=0, metadata=_help("Linear warmup over this many optimizer updates.")
    )
    warmup_ratio: float = field(
        default=0.0,
        metadata=_help(
            "Linear warmup over this fraction of all updates (use instead of warmup_steps)."
        ),
    )
    lr_scheduler_type: SchedulerType = field(
        default="linear",
        metadata=_help(f"Decay after warmup: one of {', '.join(LR_SCHEDULER_TYPES)}."),
    )
    max_grad_norm: float = field(
        default=1.0, metadata=_help("Clip gradients to this global norm (0 disables clipping).")
    )
    crf_learning_rate_multiplier: float = field(
        default=1.0,
        metadata=_help(
            "With --crf: the CRF's transition scores learn at this multiple of the learning rate "
            "(the emissions and encoder at the learning rate itself)."
        ),
    )
    gradient_accumulation_steps: int = field(
        default=1,
        metadata=_help(
            "Micro-batches per optimizer update; the update equals one batch this many times larger."
        ),
    )
    dtype: DType = field(
        default="float32",
        metadata=_help(
            "Compute dtype: float32, or bfloat16 (bf16 compute, float32 master weights and loss)."
        ),
    )
    bf16: bool = field(
        default=False,
        metadata=_help("Hugging Face's name for dtype=bfloat16 (bf16 compute)."),
    )
    logging_steps: int = field(default=500, metadata=_help("Log every X optimizer updates."))
    save_steps: int = field(
        default=500,
        metadata=_help(
            "With save_strategy=steps: save a checkpoint every X updates (0: only at the end)."
        ),
    )
    save_strategy: SaveStrategy = field(
        default="steps",
        metadata=_help(
            "When to save checkpoints: steps (every save_steps and at the end of training), "
            "epoch (each epoch's end and the end of training) or no."
        ),
    )
    eval_strategy: EvalStrategy | None = field(
        default=None,
        metadata=_help(
            "When to evaluate during training: steps, epoch or no "
            "(default: steps if do_eval else no)."
        ),
    )
    eval_steps: int | None = field(
        default=None,
        metadata=_help(
            "Evaluate every X updates when eval_strategy=steps (default: logging_steps)."
        ),
    )
    save_total_limit: int | None = field(
        default=None, metadata=_help("Keep at most this many latest checkpoints (None: all).")
    )
    metric_for_best_model: str | None = field(
        default=None,
        metadata=_help(
            "Evaluation metric that ranks checkpoints, e.g. f1 or loss "
            "(default: loss when load_best_model_at_end). With several evaluation sets, the "
            "full key of one set's metric, e.g. eval_dev_f1."
        ),
    )
    greater_is_better: bool | None = field(
        default=None,
        metadata=_help(
            "Whether a larger metric_for_best_model is better (default: False for *loss, else True)."
        ),
    )
    load_best_model_at_end: bool = field(
        default=False,
        metadata=_help("Load the best checkpoint (by metric_for_best_model) when training ends."),
    )
    logging_dir: str | None = field(
        default=None, metadata=_help("TensorBoard log directory (default: output_dir/runs).")
    )
    report_to: list[str] = field(
        default_factory=lambda: ["tensorboard"],
        metadata=_help(
            f"Where to report metrics: any of {', '.join(REPORT_TO)} (comma- or space-separated), "
            "'all' or 'none'. mlflow and wandb need the extras flaxtrainer[mlflow] / "
            "flaxtrainer[wandb]."
        ),
    )
    profile_steps: str | tuple[int, int] | None = field(
        default=None,
        metadata=_help(
            "Record a JAX profiler trace of training steps A to B (1-based, inclusive), given "
            "as 'A,B', into logging_dir (TensorBoard's Profile tab, xprof)."
        ),
    )
    log_level: LogLevel = field(
        default="passive",
        metadata=_help(
            "Level of flaxtrainer's log on process 0: debug, info, warning, error, critical, or "
            "passive (leave it as it is)."
        ),
    )
    log_level_replica: LogLevel = field(
        default="warning",
        metadata=_help("Like log_level, for the processes other than 0 of a multi-host run."),
    )
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata=_help(
            "Resume training exactly from this checkpoint directory, or 'latest' for the newest "
            "checkpoint in output_dir."
        ),
    )
    disable_tqdm: bool = field(default=False, metadata=_help("Disable the progress bar."))
    pad_to_max_length: bool = field(
        default=False,
        metadata=_help(
            "Pad every row to the task's max_seq_length (one compiled shape, as run_flax_ner.py); "
            "default: pack sentences (see packing) or pad to a few length buckets."
        ),
    )
    packing: bool | None = field(
        default=None,
        metadata=_help(
            "Pack several sentences into each row of up to max_seq_length tokens (one grid planned "
            "for the run: one compiled train shape, little padding; a batch still holds its "
            "batch size of sentences). Unset: "
            "on when the model reads attention_mask as segment ids and takes position_ids "
            "(flaxtrainer's encoders), on one process, without pad_to_max_length or "
            "bucket_widths; else length buckets."
        ),
    )
    bucket_widths: list[int] | None = field(
        default=None,
        metadata=_help(
            "Padded row widths for length bucketing (default: multiples of 16 up to the max length, "
            "at most max_buckets of them)."
        ),
    )
    max_buckets: int = field(
        default=8, metadata=_help("At most this many automatic bucket widths (compiled shapes).")
    )
    group_by_length: bool = field(
        default=False,
        metadata=_help(
            "Group sentences of similar length into each step (less padding in padded rows; "
            "suits --packing false). Default: token-balanced steps (each step about the same "
            "number of tokens, which packs well). The rule does not depend on the layout, so "
            "packed and padded runs train on the same steps."
        ),
    )
    dropout_rng: DropoutRng = field(
        default="hash",
        metadata=_help(
            "Dropout mask generator: hash (a keyed counter hash, a few integer operations per "
            "element) or threefry (JAX's default, a 20-round cipher per element). Either gives "
            "the same masks on any number of devices."
        ),
    )
    compilation_cache_dir: str | None = field(
        default="auto",
        metadata=_help(
            "JAX persistent compilation cache: later runs with the same shapes load the compiled "
            "steps from this directory instead of compiling them. auto (default): "
            "$FLAXTRAINER_COMPILATION_CACHE_DIR if set, else none if JAX_COMPILATION_CACHE_DIR is "
            "set (JAX uses that), else $XDG_CACHE_HOME/flaxtrainer/jax (~/.cache/flaxtrainer/jax, "
            "at most 2 GiB). none: off."
        ),
    )
    seed: int = field(
        default=42,
        metadata=_help("Seed of initialisation-independent randomness: shuffling, dropout."),
    )
    coordinator_address: str | None = field(
        default=None,
        metadata=_help(
            "Multi-host: HOST:PORT of process 0's coordinator, the same on every process "
            "(default: FLAXTRAINER_COORDINATOR_ADDRESS, or auto-detected on SLURM, Open MPI "
            "and TPU pods). See docs/multihost.md."
        ),
    )
    num_processes: int | None = field(
        default=None,
        metadata=_help(
            "Multi-host: number of processes (default: FLAXTRAINER_NUM_PROCESSES or auto)."
        ),
    )
    process_id: int | None = field(
        default=None,
        metadata=_help(
            "Multi-host: this process's index, 0..num_processes-1 "
            "(default: FLAXTRAINER_PROCESS_ID or auto)."
        ),
    )

    def __post_init__(self) -> None:
        errors: list[str] = []

        def check(ok: bool, message: str) -> None:
            if not ok:
                errors.append(message)

        if not self.output_dir:
            errors.append("output_dir is required: pass the directory for checkpoints and logs.")
        self.output_dir = os.fspath(self.output_dir) if self.output_dir else self.output_dir
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size"):
            check(
                _is_int(getattr(self, name), 1),
                f"{name} must be an integer >= 1, got {getattr(self, name)!r}.",
            )
        check(
            _is_int(self.gradient_accumulation_steps, 1),
            f"gradient_accumulation_steps must be an integer >= 1, got {self.gradient_accumulation_steps!r}.",
        )
        check(
            _is_int(self.logging_steps, 1),
            f"logging_steps must be an integer >= 1, got {self.logging_steps!r}.",
        )
        check(
            _is_int(self.save_steps, 0),
            f"save_steps must be an integer >= 0, got {self.save_steps!r}.",
        )
        check(
            _is_int(self.warmup_steps, 0),
            f"warmup_steps must be an integer >= 0, got {self.warmup_steps!r}.",
        )
        check(
            _is_int(self.max_steps, -1) and self.max_steps != 0,
            f"max_steps must be -1 (use num_train_epochs) or a positive integer, got {self.max_steps!r}.",
        )
        check(
            _is_real(self.num_train_epochs) and self.num_train_epochs > 0,
            f"num_train_epochs must be > 0, got {self.num_train_epochs!r}.",
        )
        check(
            _is_real(self.learning_rate) and self.learning_rate >= 0,
            f"learning_rate must be >= 0, got {self.learning_rate!r}.",
        )
        check(
            _is_real(self.weight_decay) and self.weight_decay >= 0,
            f"weight_decay must be >= 0, got {self.weight_decay!r}.",
        )
        for name in ("adam_beta1", "adam_beta2"):
            value = getattr(self, name)
            check(
                _is_real(value) and 0.0 <= value < 1.0, f"{name} must be in [0, 1), got {value!r}."
            )
        check(
            _is_real(self.adam_epsilon) and self.adam_epsilon > 0,
            f"adam_epsilon must be > 0, got {self.adam_epsilon!r}.",
        )
        check(
            _is_real(self.max_grad_norm) and self.max_grad_norm >= 0,
            f"max_grad_norm must be >= 0 (0 disables clipping), got {self.max_grad_norm!r}.",
        )
        check(
            _is_real(self.crf_learning_rate_multiplier) and self.crf_learning_rate_multiplier > 0,
            f"crf_learning_rate_multiplier must be > 0, got {self.crf_learning_rate_multiplier!r}.",
        )
        check(
            _is_real(self.warmup_ratio) and 0.0 <= self.warmup_ratio < 1.0,
            f"warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}.",
        )
        check(
            not (self.warmup_steps and self.warmup_ratio),
            "Set warmup_steps or warmup_ratio, not both.",
        )
        check(
            self.lr_scheduler_type in LR_SCHEDULER_TYPES,
            f"lr_scheduler_type must be one of {LR_SCHEDULER_TYPES}, got {self.lr_scheduler_type!r}.",
        )
        check(self.dtype in DTYPES, f"dtype must be one of {DTYPES}, got {self.dtype!r}.")
        if self.bf16:
            self.dtype = "bfloat16"
        self.bf16 = self.dtype == "bfloat16"
        self.report_to = _report_to_list(self.report_to, errors)
        self.profile_steps = _profile_steps(self.profile_steps, errors)
        for name in ("log_level", "log_level_replica"):
            check(
                getattr(self, name) in LOG_LEVELS,
                f"{name} must be one of {LOG_LEVELS}, got {getattr(self, name)!r}.",
            )
        check(
            self.save_total_limit is None or _is_int(self.save_total_limit, 1),
            f"save_total_limit must be None or an integer >= 1, got {self.save_total_limit!r}.",
        )
        check(
            _is_int(self.max_buckets, 1),
            f"max_buckets must be an integer >= 1, got {self.max_buckets!r}.",
        )
        if self.bucket_widths is not None:
            widths = list(self.bucket_widths)
            if not widths or not all(_is_int(w, 1) for w in widths):
                errors.append(
                    f"bucket_widths must be positive integers, got {self.bucket_widths!r}."
                )
            else:
                self.bucket_widths = sorted(set(int(w) for w in widths))
        check(
            self.packing is None or isinstance(self.packing, bool),
            f"packing must be true, false or unset, got {self.packing!r}.",
        )
        if self.packing:
            check(
                not self.pad_to_max_length and self.bucket_widths is None,
                "packing=True conflicts with pad_to_max_length / bucket_widths: choose one layout.",
            )
        check(
            self.dropout_rng in DROPOUT_RNGS,
            f"dropout_rng must be one of {DROPOUT_RNGS}, got {self.dropout_rng!r}.",
        )
        self.compilation_cache_dir = resolve_cache_dir(self.compilation_cache_dir)

        if self.eval_strategy is None:
            self.eval_strategy = "steps" if self.do_eval else "no"
        check(
            self.save_strategy in SAVE_STRATEGIES,
            f"save_strategy must be one of {SAVE_STRATEGIES}, got {self.save_strategy!r}.",
        )
        check(
            self.eval_strategy in EVAL_STRATEGIES,
            f"eval_strategy must be one of {EVAL_STRATEGIES}, got {self.eval_strategy!r}.",
        )
        if self.eval_steps is None:
            self.eval_steps = self.logging_steps
        check(
            _is_int(self.eval_steps, 1),
            f"eval_steps must be an integer >= 1, got {self.eval_steps!r}.",
        )

        if self.load_best_model_at_end and self.metric_for_best_model is None:
            self.metric_for_best_model = "loss"
        if self.metric_for_best_model is not None and self.greater_is_better is None:
            self.greater_is_better = not self.metric_for_best_model.endswith("loss")
        if self.load_best_model_at_end:
            check(
                self.eval_strategy != "no",
                "load_best_model_at_end needs evaluation during training: set eval_strategy "
                "to 'steps' or 'epoch'.",
            )
            check(
                self.save_strategy == self.eval_strategy or self.eval_strategy == "no",
                f"load_best_model_at_end needs save_strategy ({self.save_strategy!r}) to match "
                f"eval_strategy ({self.eval_strategy!r}), so that evaluated steps are saved.",
            )
            if self.save_strategy == self.eval_strategy == "steps" and _is_int(self.eval_steps, 1):
                check(
                    self.save_steps > 0 and self.save_steps % self.eval_steps == 0,
                    f"load_best_model_at_end: save_steps ({self.save_steps}) must be a multiple "
                    f"of eval_steps ({self.eval_steps}) so that evaluated steps are saved.",
                )
        if self.logging_dir is None and self.output_dir:
            self.logging_dir = os.path.join(self.output_dir, "runs")
        if self.resume_from_checkpoint is not None:
            self.resume_from_checkpoint = os.fspath(self.resume_from_checkpoint)
        try:
            check_settings(self.coordinator_address, self.num_processes, self.process_id)
        except ValueError as err:
            errors.append(str(err))

        if errors:
            raise ValueError("Invalid TrainingArguments:\n  - " + "\n  - ".join(errors))

    @property
    def best_metric_key(self) -> str | None:
        """``metric_for_best_model`` as it appears in evaluation metrics (``eval_`` prefixed)."""
        name = self.metric_for_best_model
        if name is None:
            return None
        return name if name.startswith("eval_") else f"eval_{name}"

    @property
    def profile_range(self) -> tuple[int, int] | None:
        """``profile_steps`` as ``(first, last)`` global steps, or None."""
        if not self.profile_steps:
            return None
        first, last = str(self.profile_steps).split(",")
        return int(first), int(last)

    def get_process_log_level(self, process_index: int | None = None) -> int:
        """The ``logging`` level for this process: ``log_level`` on process 0, else
        ``log_level_replica``; ``passive`` gives the ``flaxtrainer`` logger's current level."""
        if process_index is None:
            import jax

            process_index = jax.process_index()
        name = self.log_level if process_index == 0 else self.log_level_replica
        if name == "passive":
            return logging.getLogger("flaxtrainer").getEffectiveLevel()
        return logging.getLevelName(name.upper())

    def warmup_steps_for(self, total_steps: int) -> int:
        """Number of warmup updates for a run of ``total_steps`` updates."""
        if self.warmup_steps:
            return min(self.warmup_steps, total_steps)
        return int(math.ceil(self.warmup_ratio * total_steps))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every field (for hparams and checkpoints)."""
        return dataclasses.asdict(self)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _report_to_list(value: Any, errors: list[str]) -> list[str]:
    """``"tensorboard,mlflow"`` / ``["tensorboard", "mlflow"]`` / ``"all"`` / ``"none"`` / None ->
    the list of trackers, in the order given, without repeats; ``all`` is every tracker whose
    package is installed (as in Hugging Face)."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    names: list[str] = []
    for item in items:
        for name in str(item).replace(",", " ").split():
            name = name.strip().lower()
            if name == "all":
                names.extend(n for n in REPORT_TO if is_installed(_TRACKER_MODULES[n]))
            elif name in REPORT_TO:
                names.append(name)
            elif name != "none":
                errors.append(
                    f"report_to: unknown tracker {name!r}; choose from {', '.join(REPORT_TO)}, "
                    "all or none."
                )
    return list(dict.fromkeys(names))


_TRACKER_MODULES = {"tensorboard": "tensorboardX", "mlflow": "mlflow", "wandb": "wandb"}


def is_installed(module: str) -> bool:
    """Whether ``module`` can be imported (looked up without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: sys.modules[module] is None
        return False


def _profile_steps(value: Any, errors: list[str]) -> str | None:
    """``"A,B"`` or ``(A, B)`` with 1 <= A <= B -> the canonical string ``"A,B"``."""
    if value is None or value == "":
        return None
    parts = str(value).replace(" ", "").split(",") if isinstance(value, str) else list(value)
    try:
        first, last = (int(p) for p in parts)
    except (TypeError, ValueError):
        errors.append(f"profile_steps must be 'A,B' (two step numbers), got {value!r}.")
        return None
    if not 1 <= first <= last:
        errors.append(f"profile_steps A,B needs 1 <= A <= B, got {value!r}.")
        return None
    return f"{first},{last}"


def _is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
