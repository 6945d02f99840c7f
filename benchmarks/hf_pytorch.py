"""Run 3: Hugging Face's PyTorch `Trainer` on the benchmark job, the way `run_ner.py` does it.

`AutoModelForTokenClassification`, `DataCollatorForTokenClassification` (dynamic padding to the
longest sentence of each batch), first-subword labels (-100 elsewhere), seqeval, CPU, torch
threads = cores. The harness only watches: a callback times the loop and its first step, and a
wrapper around the collator counts real (attention-mask) against computed (batch x width)
tokens. Started by `run.py` as its own process; writes one JSON result.

    python benchmarks/hf_pytorch.py --data_dir D --model_dir M --result_json R
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import spec

_PROCESS_START = time.perf_counter()


class CountingCollator:
    """Wraps a collator and counts the tokens of the batches it builds while `recording`."""

    def __init__(self, collator) -> None:
        self.collator = collator
        self.recording = True
        self.real_tokens = 0
        self.computed_tokens = 0
        self.sentences = 0
        self.shapes: set[tuple[int, ...]] = set()
        self.first_batch: tuple[int, int] | None = None  # (sentences, real tokens)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collator(features)
        if self.recording:
            real = int(batch["attention_mask"].sum())
            self.real_tokens += real
            self.computed_tokens += int(batch["input_ids"].numel())
            self.sentences += int(batch["input_ids"].shape[0])
            self.shapes.add(tuple(batch["input_ids"].shape))
            if self.first_batch is None:
                self.first_batch = (int(batch["input_ids"].shape[0]), real)
        return batch


def _timer_callback(collator: CountingCollator):
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Wall clock at train begin, at the end of the first step, and at the end of the last
        step (at train end if training stops early), as the flaxtrainer runs measure."""

        begin = first_step_end = end = None
        begin_unix = first_step_end_unix = None
        rusage_begin = rusage_first = rusage_end = None
        steps = 0

        def on_train_begin(self, args, state, control, **kwargs):
            self.rusage_begin = spec.rusage_now()
            self.begin, self.begin_unix = time.perf_counter(), time.time()

        def on_step_end(self, args, state, control, **kwargs):
            self.steps += 1
            if self.first_step_end is None:
                self.first_step_end = time.perf_counter()
                self.first_step_end_unix = time.time()
                self.rusage_first = spec.rusage_now()
            if state.global_step >= state.max_steps:
                self._stop()

        def on_train_end(self, args, state, control, **kwargs):
            if self.end is None:
                self._stop()
            collator.recording = False  # evaluation reuses the collator

        def _stop(self):
            self.end = time.perf_counter()
            self.rusage_end = spec.rusage_now()

    return StepTimer()


def tokenize_and_align_labels(examples, tokenizer, max_seq_length: int) -> dict[str, Any]:
    """run_ner.py's alignment (label_all_tokens=False), keeping word ids for decoding."""
    tokenized = tokenizer(
        examples["tokens"],
        padding=False,
        truncation=True,
        max_length=max_seq_length,
        is_split_into_words=True,
    )
    all_labels, all_word_ids = [], []
    for i, word_labels in enumerate(examples["tags"]):
        word_ids = tokenized.word_ids(batch_index=i)
        labels, previous = [], None
        for word in word_ids:
            labels.append(-100 if word is None or word == previous else word_labels[word])
            previous = word
        all_labels.append(labels)
        all_word_ids.append([-1 if w is None else w for w in word_ids])
    tokenized["labels"] = all_labels
    tokenized["word_ids"] = all_word_ids
    return tokenized


def run(
    data_dir: Path, model_dir: Path, threads: int | None, epochs: float = spec.NUM_EPOCHS
) -> dict[str, Any]:
    """Train one epoch, predict on validation, and return the result fields."""
    import numpy as np
    import torch
    import transformers
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
    )

    marks = {"imports": time.time()}
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    transformers.set_seed(spec.SEED)
    data = spec.read_data(data_dir)
    marks["data"] = time.time()
    label_names = data.label_names
    id2label = dict(enumerate(label_names))

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    t0 = time.perf_counter()
    columns = ["tokens", "tags"]
    train_ds = spec.to_hf_dataset(data.train_tokens, data.train_tags, label_names).map(
        tokenize_and_align_labels,
        batched=True,
        remove_columns=columns,
        fn_kwargs={"tokenizer": tokenizer, "max_seq_length": spec.MAX_SEQ_LENGTH},
    )
    val_ds = spec.to_hf_dataset(data.val_tokens, data.val_tags, label_names).map(
        tokenize_and_align_labels,
        batched=True,
        remove_columns=columns,
        fn_kwargs={"tokenizer": tokenizer, "max_seq_length": spec.MAX_SEQ_LENGTH},
    )
    val_word_ids = val_ds["word_ids"]
    train_ds, val_ds = train_ds.remove_columns("word_ids"), val_ds.remove_columns("word_ids")
    tokenize_s = time.perf_counter() - t0
    marks["tokenizer"] = time.time()

    model = AutoModelForTokenClassification.from_pretrained(
        model_dir,
        num_labels=len(label_names),
        id2label=id2label,
        label2id={name: i for i, name in id2label.items()},
        ignore_mismatched_sizes=True,  # a checkpoint's own head is replaced, as flaxtrainer does
    )
    marks["model"] = time.time()
    collator = CountingCollator(DataCollatorForTokenClassification(tokenizer))
    timer = _timer_callback(collator)

    def compute_metrics(prediction):  # run_ner.py's: seqeval on tokens whose label != -100
        from seqeval.metrics import f1_score

        predictions = np.argmax(prediction.predictions, axis=2)
        gold, pred = [], []
        for p_row, l_row in zip(predictions, prediction.label_ids):
            keep = l_row != -100
            gold.append([id2label[int(x)] for x in l_row[keep]])
            pred.append([id2label[int(x)] for x in p_row[keep]])
        return {"f1": f1_score(gold, pred)}

    with tempfile.TemporaryDirectory(prefix="bench_hf_") as output_dir:
        args = TrainingArguments(
            output_dir=output_dir,
            per_device_train_batch_size=spec.GLOBAL_TRAIN_BATCH,
            per_device_eval_batch_size=spec.GLOBAL_EVAL_BATCH,
            num_train_epochs=epochs,
            learning_rate=spec.LEARNING_RATE,
            seed=spec.SEED,
            report_to=[],
            save_strategy="no",
            eval_strategy="no",
            logging_strategy="no",
            use_cpu=True,
            dataloader_num_workers=0,
            disable_tqdm=True,
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=train_ds,
            data_collator=collator,
            processing_class=tokenizer,
            compute_metrics=compute_metrics,
            callbacks=[timer],
        )
        train_output = trainer.train()
        if timer.end is None or timer.first_step_end is None:
            raise spec.BenchmarkError("hf-pytorch: the Trainer ran no training step")

        t0 = time.perf_counter()
        prediction = trainer.predict(val_ds)
        token_predictions = np.argmax(prediction.predictions, axis=2)
        predicted = [
            spec.first_subword_tags(
                [None if w < 0 else w for w in word_ids], row, len(words), id2label
            )
            for word_ids, row, words in zip(val_word_ids, token_predictions, data.val_tokens)
        ]
        val_f1 = spec.word_f1(data.val_tags, predicted)
        eval_s = time.perf_counter() - t0

    train_runtime_s = timer.end - timer.begin
    first_step_s = timer.first_step_end - timer.begin
    first_sentences, first_tokens = collator.first_batch
    return {
        "name": "hf-pytorch",
        "description": "transformers.Trainer (PyTorch, CPU), dynamic padding per batch",
        "train_sentences": collator.sentences,
        "train_steps": timer.steps,
        "train_runtime_s": train_runtime_s,
        "first_step_s": first_step_s,
        **spec.rates(
            sentences=collator.sentences,
            real_tokens=collator.real_tokens,
            train_runtime_s=train_runtime_s,
            first_step_s=first_step_s,
            first_batch_sentences=first_sentences,
            first_batch_tokens=first_tokens,
        ),
        "train_compile_s": None,  # eager: nothing to compile
        "tokens_per_s_without_compile": collator.real_tokens / train_runtime_s,
        "real_tokens": collator.real_tokens,
        "computed_tokens": collator.computed_tokens,
        "padding_efficiency": collator.real_tokens / collator.computed_tokens,
        "train_compiled_shapes": None,  # eager PyTorch compiles nothing
        "eval_compiled_shapes": None,
        "distinct_batch_shapes": len(collator.shapes),
        "tokenize_s": tokenize_s,
        "train_loss": float(train_output.training_loss),
        "eval_sentences": len(data.val_tokens),
        "eval_s": eval_s,
        "eval_compile_s": None,
        "val_f1": val_f1,
        "trainer_reported_f1": float(prediction.metrics["test_f1"]),
        "peak_rss_mib": spec.peak_rss_mib(),
        "process_wall_s": time.perf_counter() - _PROCESS_START,
        "train_rusage": spec.rusage_delta(timer.rusage_begin, timer.rusage_end),
        "train_rusage_after_first_step": spec.rusage_delta(timer.rusage_first, timer.rusage_end),
        "first_step_end_unix_s": timer.first_step_end_unix,
        "train_begin_unix_s": timer.begin_unix,
        "startup_marks_unix_s": marks,
        "model_flops_per_token": None,  # the model's, not the trainer's: the flax run reports it
        "environment": {
            **spec.environment(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "torch_threads": torch.get_num_threads(),
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", type=Path, required=True)
    parser.add_argument("--model_dir", type=Path, required=True)
    parser.add_argument("--result_json", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: cores)")
    parser.add_argument("--num_train_epochs", type=float, default=spec.NUM_EPOCHS)
    args = parser.parse_args(argv)
    result = run(args.data_dir, args.model_dir, args.threads, args.num_train_epochs)
    spec.write_result(args.result_json, result)


if __name__ == "__main__":
    sys.exit(main())
