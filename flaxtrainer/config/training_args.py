"""TrainingArguments: every knob of a run, with run_flax_ner.py's flag names and defaults.

Each field carries ``metadata={"help": ...}`` so the command line can build its parser from
this dataclass. Making one applies ``training_rules.check_and_resolve``: the values are checked
and the derived defaults (``logging_dir``, ``eval_steps``, ``eval_strategy``,
``metric_for_best_model``, ``greater_is_better``) filled in, so the trainer reads one consistent
set of values.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any

from flaxtrainer.config.trackers import REPORT_TO
from flaxtrainer.config.training_rules import (
    LR_SCHEDULER_TYPES,
    DropoutRng,
    DType,
    EvalStrategy,
    LogLevel,
    SaveStrategy,
    SchedulerType,
    check_and_resolve,
)


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
        check_and_resolve(self)

    @property
    def best_metric_key(self) -> str | None:
        """``metric_for_best_model`` as it appears in evaluation metrics (``eval_`` prefixed)."""
        from flaxtrainer.checkpointing.best_metric import eval_metric_name

        name = self.metric_for_best_model
        return None if name is None else eval_metric_name(name)

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
