"""Runs 1 and 2: flaxtrainer as shipped (packed rows) and in seed mode (every row padded to 128).

Both build the model with `flaxtrainer.models.from_pretrained`, the task with
`TokenClassificationTask(label_names, tokenizer, max_seq_length=128)` and train with
`FlaxTrainer`; seed mode only sets `pad_to_max_length=True`, as run_flax_ner.py pads. The
harness watches through a callback: wall clock at train begin, after the first step and after
the last one (each with a device sync, so the time includes running the steps, not only
dispatching them); padding efficiency and compiled shapes come from the trainer's train
metrics. The clock stops at the last step, before `train()` exports the model (the PyTorch
`Trainer.train()` exports nothing). As in the PyTorch run, `save_strategy="no"`: no checkpoint
is written. `--mode warm` is the shipped configuration run again with a JAX persistent
compilation cache that an earlier run filled (`run.py --only warm` does both).
Started by `run.py` as its own process; writes one JSON result.

    python benchmarks/flax_runs.py --mode bucketed|seed|warm --data_dir D --model_dir M --result_json R
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import spec
from gpu_models import flops_per_token, parameter_counts

_PROCESS_START = time.perf_counter()

MODES = {
    "bucketed": ("flaxtrainer", "flaxtrainer as shipped: sentences packed into 128-token rows"),
    "seed": ("flaxtrainer-seed", "flaxtrainer, seed mode: every row padded to max_seq_length 128"),
    "warm": (
        "flaxtrainer-warm-cache",
        "flaxtrainer as shipped, compiled steps loaded from a filled persistent cache",
    ),
}


def _sync(trainer) -> None:
    """Wait until every step dispatched so far has run (JAX dispatches asynchronously)."""
    import jax

    jax.block_until_ready(trainer._train_state)  # the trainer has no public handle on it


class CompileClock:
    """Sums the time JAX reports for tracing, lowering and compiling, per phase of the run.

    Listens to `jax.monitoring` duration events under `/jax/core/compile/` (every jitted
    function and every eager op compiled for the first time); `phase` names where the time goes.
    """

    PREFIX = "/jax/core/compile/"

    def __init__(self) -> None:
        self.phase: str | None = None
        self.seconds: dict[str, float] = {}

    def __call__(self, event: str, duration_secs: float, **kwargs: Any) -> None:
        if self.phase is not None and event.startswith(self.PREFIX):
            self.seconds[self.phase] = self.seconds.get(self.phase, 0.0) + duration_secs

    def install(self) -> CompileClock:
        import jax.monitoring

        jax.monitoring.register_event_duration_secs_listener(self)
        return self


def _step_timer(clock: CompileClock):
    from flaxtrainer.callbacks import Callback

    class StepTimer(Callback):
        """Wall clock at train begin, after step 1 has run, and after the last step has run
        (at train end if training stops early)."""

        begin = first_step_end = end = None
        begin_unix = first_step_end_unix = None
        rusage_begin = rusage_first = rusage_end = None
        first_step_tokens = 0
        steps = 0

        def on_train_begin(self, trainer) -> None:
            clock.phase = "train"
            self.rusage_begin = spec.rusage_now()
            self.begin, self.begin_unix = time.perf_counter(), time.time()

        def on_step_end(self, trainer) -> None:
            self.steps += 1
            if self.first_step_end is None:
                _sync(trainer)
                self.first_step_end = time.perf_counter()
                self.first_step_end_unix = time.time()
                self.rusage_first = spec.rusage_now()
                self.first_step_tokens = trainer.state.num_input_tokens_seen
            if trainer.state.global_step >= trainer.state.max_steps:
                self._stop(trainer)

        def on_train_end(self, trainer) -> None:
            if self.end is None:
                self._stop(trainer)

        def _stop(self, trainer) -> None:
            _sync(trainer)
            self.end = time.perf_counter()
            self.rusage_end = spec.rusage_now()
            clock.phase = None

    return StepTimer()


#: TrainingArguments that define the job (or the measurement): not open to overrides.
JOB_ARGS = frozenset(
    {
        "output_dir",
        "do_train",
        "per_device_train_batch_size",
        "per_device_eval_batch_size",
        "num_train_epochs",
        "learning_rate",
        "seed",
        "pad_to_max_length",
        "report_to",
        "disable_tqdm",
        "save_strategy",
    }
)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` strings -> TrainingArguments overrides; VALUE is JSON when it parses."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise spec.BenchmarkError(f"{item!r}: expected KEY=VALUE")
        if key in JOB_ARGS:
            raise spec.BenchmarkError(f"{item!r}: {key} is part of the benchmark job; not changed")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def run(
    mode: str,
    data_dir: Path,
    model_dir: Path,
    overrides: dict[str, Any] | None = None,
    epochs: float = spec.NUM_EPOCHS,
) -> dict[str, Any]:
    """Train one epoch, predict on validation, and return the result fields.

    `overrides` are extra `TrainingArguments` (e.g. `max_buckets=4`) for exploring settings;
    the job's own (batch, learning rate, epochs, seed, seed mode's padding) cannot be changed.
    """
    import jax
    from transformers import AutoTokenizer

    from flaxtrainer import FlaxTrainer, TrainingArguments
    from flaxtrainer.models import from_pretrained
    from flaxtrainer.runtime import allocator
    from flaxtrainer.tasks import TokenClassificationTask

    marks = {"imports": time.time()}

    name, description = MODES[mode]
    devices = jax.device_count()
    for batch in (spec.GLOBAL_TRAIN_BATCH, spec.GLOBAL_EVAL_BATCH):
        if batch % devices:
            raise spec.BenchmarkError(
                f"{name}: global batch {batch} does not split over {devices} devices"
            )

    data = spec.read_data(data_dir)
    train_ds = spec.to_hf_dataset(data.train_tokens, data.train_tags, data.label_names)
    val_ds = spec.to_hf_dataset(data.val_tokens, data.val_tags, data.label_names)
    marks["data"] = time.time()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    task = TokenClassificationTask(data.label_names, tokenizer, max_seq_length=spec.MAX_SEQ_LENGTH)
    marks["tokenizer"] = time.time()

    # Time the task's tokenization wherever the trainer calls it (train() and predict()).
    prepare, tokenize = task.prepare, {"s": 0.0}

    def timed_prepare(dataset):
        t0 = time.perf_counter()
        features = prepare(dataset)
        tokenize["s"] += time.perf_counter() - t0
        return features

    task.prepare = timed_prepare
    model = from_pretrained(model_dir, num_labels=task.num_labels, id2label=task.id2label)
    marks["model"] = time.time()
    matmul_params = parameter_counts(model)[1]

    clock = CompileClock().install()
    timer = _step_timer(clock)
    with tempfile.TemporaryDirectory(prefix="bench_flax_") as output_dir:
        job = {
            "output_dir": output_dir,
            "do_train": True,
            "per_device_train_batch_size": spec.GLOBAL_TRAIN_BATCH // devices,
            "per_device_eval_batch_size": spec.GLOBAL_EVAL_BATCH // devices,
            "num_train_epochs": epochs,
            "learning_rate": spec.LEARNING_RATE,
            "seed": spec.SEED,
            "pad_to_max_length": mode == "seed",
            "report_to": "none",
            "disable_tqdm": True,
            "save_strategy": "no",
        }
        assert set(job) == JOB_ARGS, "keep JOB_ARGS in step with the job"
        args = TrainingArguments(**job, **(overrides or {}))
        trainer = FlaxTrainer(
            model, task, args, train_dataset=train_ds, callbacks=[timer], tokenizer=tokenizer
        )
        train_output = trainer.train()
        if timer.end is None or timer.first_step_end is None:
            raise spec.BenchmarkError(f"{name}: the trainer ran no training step")
        metrics = train_output.metrics

        train_tokenize_s = tokenize["s"]
        t0 = time.perf_counter()
        clock.phase = "eval"
        prediction = trainer.predict(val_ds)  # word-level tags (task.decode), dataset order
        val_f1 = spec.word_f1(data.val_tags, prediction.predictions)
        clock.phase = None
        eval_s = time.perf_counter() - t0 - (tokenize["s"] - train_tokenize_s)
        eval_shapes = len(trainer._eval_shapes)  # no public count of eval compilations
        lengths = trainer.inputs.prepare(train_ds).lengths  # cached: tokenized once

    # sentences trained on (every epoch), as the PyTorch run counts them
    sentences = round(metrics["train_samples_per_second"] * metrics["train_runtime"])
    train_runtime_s = timer.end - timer.begin
    first_step_s = timer.first_step_end - timer.begin
    real_tokens = int(trainer.state.num_input_tokens_seen)
    computed_tokens = round(real_tokens / metrics["padding_efficiency"])
    return {
        "name": name,
        "description": description,
        "train_sentences": sentences,
        "train_steps": timer.steps,
        "train_runtime_s": train_runtime_s,
        "first_step_s": first_step_s,
        **spec.rates(
            sentences=sentences,
            real_tokens=real_tokens,
            train_runtime_s=train_runtime_s,
            first_step_s=first_step_s,
            first_batch_sentences=min(spec.GLOBAL_TRAIN_BATCH, len(data.train_tokens)),
            first_batch_tokens=timer.first_step_tokens,
        ),
        "train_compile_s": clock.seconds.get("train", 0.0),
        "tokens_per_s_without_compile": real_tokens
        / (train_runtime_s - clock.seconds.get("train", 0.0)),
        "real_tokens": real_tokens,
        "computed_tokens": computed_tokens,
        "padding_efficiency": metrics["padding_efficiency"],
        "train_compiled_shapes": metrics["train_compiled_shapes"],
        "eval_compiled_shapes": eval_shapes,
        "distinct_batch_shapes": metrics["train_compiled_shapes"],
        "tokenize_s": tokenize["s"],
        "train_loss": float(train_output.training_loss),
        "eval_sentences": len(data.val_tokens),
        "eval_s": eval_s,
        "eval_compile_s": clock.seconds.get("eval", 0.0),
        "val_f1": val_f1,
        "trainer_reported_f1": prediction.metrics.get("test_f1"),
        "peak_rss_mib": spec.peak_rss_mib(),
        "process_wall_s": time.perf_counter() - _PROCESS_START,
        "train_rusage": spec.rusage_delta(timer.rusage_begin, timer.rusage_end),
        "train_rusage_after_first_step": spec.rusage_delta(timer.rusage_first, timer.rusage_end),
        "first_step_end_unix_s": timer.first_step_end_unix,
        "train_begin_unix_s": timer.begin_unix,
        "startup_marks_unix_s": marks,
        # Model FLOPs (matmuls + attention scores, forward + backward) per real token: the
        # same for any trainer of this model on these sentences (gpu_models.flops_per_token).
        "model_flops_per_token": flops_per_token(
            model.config,
            matmul_params,
            [int(n) for n in lengths],
            real_tokens / max(timer.steps, 1),
        )["total"],
        "environment": {
            **spec.environment(),
            "malloc": dict(allocator.applied),
            "allocator": allocator.describe(),
            "jax": jax.__version__,
            "backend": jax.default_backend(),
            "devices": devices,
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=sorted(MODES), required=True)
    parser.add_argument("--data_dir", type=Path, required=True)
    parser.add_argument("--model_dir", type=Path, required=True)
    parser.add_argument("--result_json", type=Path, required=True)
    parser.add_argument(
        "--training_arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra TrainingArguments, e.g. max_buckets=4 (repeatable)",
    )
    parser.add_argument("--num_train_epochs", type=float, default=spec.NUM_EPOCHS)
    parser.add_argument(
        "--compilation_cache_dir",
        default="none",
        help="JAX persistent compilation cache folder (required by --mode warm); default none: "
        "no cache, every run compiles (flaxtrainer's own default, auto, would use ~/.cache)",
    )
    args = parser.parse_args(argv)
    overrides = parse_overrides(args.training_arg)
    if args.mode == "warm" and args.compilation_cache_dir == "none":
        parser.error("--mode warm needs --compilation_cache_dir (filled by an earlier run)")
    overrides["compilation_cache_dir"] = args.compilation_cache_dir
    result = run(args.mode, args.data_dir, args.model_dir, overrides, args.num_train_epochs)
    spec.write_result(args.result_json, result)


if __name__ == "__main__":
    from flaxtrainer.runtime import allocator

    allocator.reexec_with_preload()  # FLAXTRAINER_MALLOC=mimalloc: start again under it
    sys.exit(main())
