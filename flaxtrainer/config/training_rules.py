"""The rules of TrainingArguments: the values each field accepts, and the defaults derived from
other fields (``logging_dir``, ``eval_steps``, ``eval_strategy``, ``metric_for_best_model``,
``greater_is_better``).

:func:`check_and_resolve` applies them all to one ``TrainingArguments`` when it is made, so the
trainer reads one consistent set of values, and a bad set is refused with every problem named.
(The functions take the arguments as ``args: Any``: this module sits below ``training_args.py``,
which imports it, and does not import it back.)
"""

from __future__ import annotations

import math
import os
from typing import Any, Literal, get_args

from flaxtrainer.config.trackers import REPORT_TO, tracker_installed
from flaxtrainer.runtime.compilation import resolve_cache_dir
from flaxtrainer.runtime.distributed import check_settings

SchedulerType = Literal["linear", "cosine", "constant", "constant_with_warmup"]
DType = Literal["float32", "bfloat16"]
EvalStrategy = Literal["steps", "epoch", "no"]
SaveStrategy = Literal["steps", "epoch", "no"]
DropoutRng = Literal["hash", "threefry"]
LogLevel = Literal["passive", "debug", "info", "warning", "error", "critical"]
LR_SCHEDULER_TYPES: tuple[str, ...] = get_args(SchedulerType)
DTYPES: tuple[str, ...] = get_args(DType)
EVAL_STRATEGIES: tuple[str, ...] = get_args(EvalStrategy)
SAVE_STRATEGIES: tuple[str, ...] = get_args(SaveStrategy)
DROPOUT_RNGS: tuple[str, ...] = get_args(DropoutRng)
LOG_LEVELS: tuple[str, ...] = get_args(LogLevel)

#: Fields that name one of a few values, and those values.
CHOICES: dict[str, tuple[str, ...]] = {
    "lr_scheduler_type": LR_SCHEDULER_TYPES,
    "dtype": DTYPES,
    "log_level": LOG_LEVELS,
    "log_level_replica": LOG_LEVELS,
    "dropout_rng": DROPOUT_RNGS,
    "save_strategy": SAVE_STRATEGIES,
    "eval_strategy": EVAL_STRATEGIES,
}
#: Integer fields and their least value.
INTEGER_MINIMUMS: dict[str, int] = {
    "per_device_train_batch_size": 1,
    "per_device_eval_batch_size": 1,
    "gradient_accumulation_steps": 1,
    "logging_steps": 1,
    "save_steps": 0,
    "warmup_steps": 0,
    "max_buckets": 1,
    "eval_steps": 1,
}
#: Real-valued fields: the range they must lie in, as the error message says it.
REAL_RANGES: dict[str, str] = {
    "num_train_epochs": "> 0",
    "learning_rate": ">= 0",
    "weight_decay": ">= 0",
    "adam_beta1": "in [0, 1)",
    "adam_beta2": "in [0, 1)",
    "adam_epsilon": "> 0",
    "max_grad_norm": ">= 0",
    "crf_learning_rate_multiplier": "> 0",
    "warmup_ratio": "in [0, 1)",
}
_IN_RANGE = {
    "> 0": lambda v: v > 0,
    ">= 0": lambda v: v >= 0,
    "in [0, 1)": lambda v: 0.0 <= v < 1.0,
}
_RANGE_NOTES = {"max_grad_norm": " (0 disables clipping)"}


def check_and_resolve(args: Any) -> None:
    """Fills the derived defaults of ``args`` in place and checks every field; raises one
    ValueError listing every problem."""
    errors: list[str] = []
    if not args.output_dir:
        errors.append("output_dir is required: pass the directory for checkpoints and logs.")
    args.output_dir = os.fspath(args.output_dir) if args.output_dir else args.output_dir
    if args.eval_strategy is None:
        args.eval_strategy = "steps" if args.do_eval else "no"
    if args.eval_steps is None:
        args.eval_steps = args.logging_steps
    errors += _value_problems(args)
    if args.bf16:
        args.dtype = "bfloat16"
    args.bf16 = args.dtype == "bfloat16"
    args.report_to = _report_to_list(args.report_to, errors)
    args.profile_steps = _profile_steps(args.profile_steps, errors)
    args.compilation_cache_dir = resolve_cache_dir(args.compilation_cache_dir)
    errors += _layout_problems(args)
    errors += _best_model_problems(args)
    if args.logging_dir is None and args.output_dir:
        args.logging_dir = os.path.join(args.output_dir, "runs")
    if args.resume_from_checkpoint is not None:
        args.resume_from_checkpoint = os.fspath(args.resume_from_checkpoint)
    try:
        check_settings(args.coordinator_address, args.num_processes, args.process_id)
    except ValueError as err:
        errors.append(str(err))
    if errors:
        raise ValueError("Invalid TrainingArguments:\n  - " + "\n  - ".join(errors))


def _value_problems(args: Any) -> list[str]:
    """Fields outside their choices, integer minimums and real ranges, each on its own."""
    problems = []
    for name, minimum in INTEGER_MINIMUMS.items():
        value = getattr(args, name)
        if not _is_int(value, minimum):
            problems.append(f"{name} must be an integer >= {minimum}, got {value!r}.")
    if not (_is_int(args.max_steps, -1) and args.max_steps != 0):
        problems.append(
            "max_steps must be -1 (use num_train_epochs) or a positive integer, "
            f"got {args.max_steps!r}."
        )
    for name, allowed in REAL_RANGES.items():
        value = getattr(args, name)
        if not (_is_real(value) and _IN_RANGE[allowed](value)):
            note = _RANGE_NOTES.get(name, "")
            problems.append(f"{name} must be {allowed}{note}, got {value!r}.")
    if args.warmup_steps and args.warmup_ratio:
        problems.append("Set warmup_steps or warmup_ratio, not both.")
    for name, choices in CHOICES.items():
        value = getattr(args, name)
        if value not in choices:
            problems.append(f"{name} must be one of {choices}, got {value!r}.")
    if not (args.save_total_limit is None or _is_int(args.save_total_limit, 1)):
        problems.append(
            f"save_total_limit must be None or an integer >= 1, got {args.save_total_limit!r}."
        )
    return problems


def _layout_problems(args: Any) -> list[str]:
    """``bucket_widths`` (sorted, without repeats) and ``packing``, which excludes the other
    layouts."""
    problems = []
    if args.bucket_widths is not None:
        widths = list(args.bucket_widths)
        if not widths or not all(_is_int(w, 1) for w in widths):
            problems.append(f"bucket_widths must be positive integers, got {args.bucket_widths!r}.")
        else:
            args.bucket_widths = sorted(set(int(w) for w in widths))
    if not (args.packing is None or isinstance(args.packing, bool)):
        problems.append(f"packing must be true, false or unset, got {args.packing!r}.")
    if args.packing and (args.pad_to_max_length or args.bucket_widths is not None):
        problems.append(
            "packing=True conflicts with pad_to_max_length / bucket_widths: choose one layout."
        )
    return problems


def _best_model_problems(args: Any) -> list[str]:
    """``metric_for_best_model`` / ``greater_is_better`` defaults (as Hugging Face), and what
    ``load_best_model_at_end`` needs: evaluated steps that are saved."""
    if args.load_best_model_at_end and args.metric_for_best_model is None:
        args.metric_for_best_model = "loss"
    if args.metric_for_best_model is not None and args.greater_is_better is None:
        args.greater_is_better = not args.metric_for_best_model.endswith("loss")
    if not args.load_best_model_at_end:
        return []
    problems = []
    if args.eval_strategy == "no":
        problems.append(
            "load_best_model_at_end needs evaluation during training: set eval_strategy "
            "to 'steps' or 'epoch'."
        )
    elif args.save_strategy != args.eval_strategy:
        problems.append(
            f"load_best_model_at_end needs save_strategy ({args.save_strategy!r}) to match "
            f"eval_strategy ({args.eval_strategy!r}), so that evaluated steps are saved."
        )
    elif args.save_strategy == "steps" and _is_int(args.eval_steps, 1):
        if not (args.save_steps > 0 and args.save_steps % args.eval_steps == 0):
            problems.append(
                f"load_best_model_at_end: save_steps ({args.save_steps}) must be a multiple "
                f"of eval_steps ({args.eval_steps}) so that evaluated steps are saved."
            )
    return problems


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
                names.extend(n for n in REPORT_TO if tracker_installed(n))
            elif name in REPORT_TO:
                names.append(name)
            elif name != "none":
                errors.append(
                    f"report_to: unknown tracker {name!r}; choose from {', '.join(REPORT_TO)}, "
                    "all or none."
                )
    return list(dict.fromkeys(names))


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
