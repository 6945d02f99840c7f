"""Runs 1 and 2: flaxtrainer as shipped (length buckets) and in seed mode (every row padded to 128).

Both build the model with `flaxtrainer.models.from_pretrained`, the task with
`TokenClassificationTask(label_names, tokenizer, max_seq_length=128)` and train with
`FlaxTrainer`; seed mode only sets `pad_to_max_length=True`, as run_flax_ner.py pads. The
harness watches through a callback: wall clock at train begin, after the first step (with a
device sync, so its time includes running the step, not only compiling it) and at train end;
padding efficiency and compiled shapes come from the trainer's train metrics. As in the
PyTorch run, `save_strategy="no"`: no checkpoint is written.
Started by `run.py` as its own process; writes one JSON result.

    python benchmarks/flax_runs.py --mode bucketed|seed --data_dir D --model_dir M --result_json R
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

_PROCESS_START = time.perf_counter()

MODES = {
    "bucketed": ("flaxtrainer", "flaxtrainer as shipped: length-bucketed dynamic padding"),
    "seed": ("flaxtrainer-seed", "flaxtrainer, seed mode: every row padded to max_seq_length 128"),
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
        """Wall clock at train begin, after step 1 has run, and at train end."""

        begin = first_step_end = end = None
        first_step_tokens = 0
        steps = 0

        def on_train_begin(self, trainer) -> None:
            clock.phase = "train"
            self.begin = time.perf_counter()

        def on_step_end(self, trainer) -> None:
            self.steps += 1
            if self.first_step_end is None:
                _sync(trainer)
                self.first_step_end = time.perf_counter()
                self.first_step_tokens = trainer.state.num_input_tokens_seen

        def on_train_end(self, trainer) -> None:
            _sync(trainer)
            self.end = time.perf_counter()
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
    mode: str, data_dir: Path, model_dir: Path, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Train one epoch, predict on validation, and return the result fields.

    `overrides` are extra `TrainingArguments` (e.g. `max_buckets=4`) for exploring settings;
    the job's own (batch, learning rate, epochs, seed, seed mode's padding) cannot be changed.
    """
    import jax
    from transformers import AutoTokenizer

    from flaxtrainer import FlaxTrainer, TrainingArguments
    from flaxtrainer.models import from_pretrained
    from flaxtrainer.tasks import TokenClassificationTask

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
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    task = TokenClassificationTask(data.label_names, tokenizer, max_seq_length=spec.MAX_SEQ_LENGTH)

    # Time the task's tokenization wherever the trainer calls it (train() and predict()).
    prepare, tokenize = task.prepare, {"s": 0.0}

    def timed_prepare(dataset):
        t0 = time.perf_counter()
        features = prepare(dataset)
        tokenize["s"] += time.perf_counter() - t0
        return features

    task.prepare = timed_prepare
    model = from_pretrained(model_dir, num_labels=task.num_labels, id2label=task.id2label)

    clock = CompileClock().install()
    timer = _step_timer(clock)
    with tempfile.TemporaryDirectory(prefix="bench_flax_") as output_dir:
        job = {
            "output_dir": output_dir,
            "do_train": True,
            "per_device_train_batch_size": spec.GLOBAL_TRAIN_BATCH // devices,
            "per_device_eval_batch_size": spec.GLOBAL_EVAL_BATCH // devices,
            "num_train_epochs": spec.NUM_EPOCHS,
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

    train_runtime_s = timer.end - timer.begin
    first_step_s = timer.first_step_end - timer.begin
    real_tokens = int(trainer.state.num_input_tokens_seen)
    computed_tokens = round(real_tokens / metrics["padding_efficiency"])
    return {
        "name": name,
        "description": description,
        "train_sentences": len(data.train_tokens),
        "train_steps": timer.steps,
        "train_runtime_s": train_runtime_s,
        "first_step_s": first_step_s,
        **spec.rates(
            sentences=len(data.train_tokens),
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
        "environment": {
            **spec.environment(),
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
    args = parser.parse_args(argv)
    overrides = parse_overrides(args.training_arg)
    spec.write_result(args.result_json, run(args.mode, args.data_dir, args.model_dir, overrides))


if __name__ == "__main__":
    sys.exit(main())
