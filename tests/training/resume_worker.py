"""A tiny, fully seeded fine-tuning run for the resume tests, as a library and as a script.

A random 2-layer, 32-wide BERT (dropout on) tags generated IOB2 sentences; with 8 host
devices and 2 rows per device a step takes 16 sentences, so the 56 training sentences make 4
steps per epoch (the last one padded). Everything that varies between runs (weights, data,
dropout, order) is seeded, so two runs of the same arguments are bitwise equal on CPU.

As a script (``python tests/training/resume_worker.py --output_dir DIR --result FILE ...``) it trains,
then writes ``FILE`` (JSON: the training-window logs, the step it started at, the final step)
and ``FILE.npz`` (the final parameters). ``--pause_at P`` stops at the end of step ``P`` (once
earlier checkpoints are on disk), writes ``<output_dir>/paused`` and waits there for ``--release FILE``
to appear, so a test can kill or signal the process at a known point.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()

import numpy as np  # noqa: E402

LABELS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")
NAMES = {"PER": ["John", "Mary", "Anna", "Lee"], "LOC": ["Paris", "Rome", "York", "Texas"]}
FILLER = ["the", "a", "met", "in", "at", "said", "today", "and", "visited", "."]
LOG_KEYS = ("step", "epoch", "loss", "learning_rate", "grad_norm")
PAUSED_FILE = "paused"


def sentences(n: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """``n`` random sentences (words, IOB2 tags) of 3-9 words with one or two entities."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        words: list[str] = []
        tags: list[str] = []
        for _ in range(int(rng.integers(1, 3))):
            for _ in range(int(rng.integers(1, 4))):
                words.append(str(rng.choice(FILLER)))
                tags.append("O")
            kind = str(rng.choice(list(NAMES)))
            for j in range(int(rng.integers(1, 3))):
                words.append(str(rng.choice(NAMES[kind])))
                tags.append(("B-" if j == 0 else "I-") + kind)
        out.append((words, tags))
    return out


def make_dataset(n: int, seed: int) -> Any:
    """A ``datasets.Dataset`` with ``tokens`` and ClassLabel ``tags``, as the readers return."""
    import datasets

    rows = sentences(n, seed)
    features = datasets.Features(
        {
            "tokens": datasets.Sequence(datasets.Value("string")),
            "tags": datasets.Sequence(datasets.ClassLabel(names=list(LABELS))),
        }
    )
    return datasets.Dataset.from_dict(
        {"tokens": [w for w, _ in rows], "tags": [[LABELS.index(t) for t in ts] for _, ts in rows]},
        features=features,
    )


def make_tokenizer() -> Any:
    """A WordPiece tokenizer over the generated words (whole words and single characters)."""
    from transformers import BertTokenizerFast

    words = sorted({w for names in NAMES.values() for w in names} | set(FILLER))
    chars = sorted({c for w in words for c in w})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *chars]
    vocab += [f"##{c}" for c in chars]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "vocab.txt"
        path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
        return BertTokenizerFast(vocab_file=str(path), do_lower_case=False)


def make_model(vocab_size: int, seed: int = 0, dropout: float = 0.1) -> Any:
    """A random BERT for token classification: hidden 32, 2 layers, 2 heads."""
    from flax import nnx

    from flaxtrainer.models import BertConfig, BertForTokenClassification

    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        labels=LABELS,
    )
    return BertForTokenClassification(config, rngs=nnx.Rngs(seed))


def make_trainer(
    output_dir: str | os.PathLike,
    *,
    max_steps: int = 10,
    save_steps: int = 2,
    eval_steps: int | None = None,
    callbacks: Sequence[Any] = (),
    model_seed: int = 0,
    dropout: float = 0.1,
    **overrides: Any,
) -> Any:
    """The seeded run: ``max_steps`` updates, a checkpoint every ``save_steps``, a log every step,
    evaluation every ``eval_steps`` (none if None), TensorBoard on; ``overrides`` go to
    TrainingArguments. Dropout 0 compiles faster (no random bits)."""
    from flaxtrainer import FlaxTrainer, TrainingArguments
    from flaxtrainer.tasks import TokenClassificationTask

    tokenizer = make_tokenizer()
    task = TokenClassificationTask(list(LABELS), tokenizer, max_seq_length=24)
    values: dict[str, Any] = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=2,
        per_device_eval_batch_size=2,
        learning_rate=3e-3,
        warmup_steps=2,
        max_steps=max_steps,
        logging_steps=1,
        save_steps=save_steps,
        pad_to_max_length=True,  # one compiled shape
        disable_tqdm=True,
        eval_strategy="no" if eval_steps is None else "steps",
        eval_steps=eval_steps,
        seed=42,
    )
    values.update(overrides)
    return FlaxTrainer(
        make_model(len(tokenizer), model_seed, dropout),
        task,
        TrainingArguments(**values),
        train_dataset=make_dataset(56, seed=1),
        eval_dataset=make_dataset(16, seed=2) if eval_steps is not None else None,
        callbacks=list(callbacks),
        tokenizer=tokenizer,
    )


def window_logs(log_history: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The training-window entries of a log history, restricted to their deterministic keys."""
    return [{k: h[k] for k in LOG_KEYS} for h in log_history if "loss" in h]


def params_of(model: Any) -> dict[str, np.ndarray]:
    """The model's parameters as numpy, keyed by path."""
    from flax import nnx

    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return {"/".join(map(str, path)): np.asarray(value[...]) for path, value in flat}


def _pause_callback(step: int, release: Path | None, timeout: float) -> Any:
    from flaxtrainer.callbacks import Callback

    class Pause(Callback):
        """At the end of step ``step`` (before its log and save): wait until the earlier saves
        are on disk, write ``<output_dir>/paused``, then wait for ``release`` to appear."""

        def on_step_end(self, trainer: Any) -> None:
            if trainer.state.global_step != step:
                return
            if trainer.checkpointer is not None:
                trainer.checkpointer.wait_until_finished()  # the kill must not hit a save
            Path(trainer.args.output_dir, PAUSED_FILE).write_text(str(step))
            deadline = time.monotonic() + timeout
            while not (release is not None and release.exists()):
                if time.monotonic() > deadline:
                    sys.exit(f"resume_worker: nobody killed or released me after step {step}")
                time.sleep(0.02)

    return Pause()


def _start_recorder() -> Any:
    from flaxtrainer.callbacks import Callback

    class StartStep(Callback):
        """Remembers the step a ``train()`` call started at (after any resume)."""

        start_step: int | None = None

        def on_train_begin(self, trainer: Any) -> None:
            self.start_step = trainer.state.global_step

    return StartStep()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--result", required=True, type=Path)
    parser.add_argument("--max_steps", type=int, default=10)
    parser.add_argument("--save_steps", type=int, default=2)
    parser.add_argument("--resume_from_checkpoint")
    parser.add_argument("--pause_at", type=int)
    parser.add_argument("--release", type=Path)
    parser.add_argument("--pause_timeout", type=float, default=120.0)
    opts = parser.parse_args(argv)

    start = _start_recorder()
    callbacks = [start]
    if opts.pause_at is not None:
        callbacks.append(_pause_callback(opts.pause_at, opts.release, opts.pause_timeout))
    trainer = make_trainer(
        opts.output_dir,
        max_steps=opts.max_steps,
        save_steps=opts.save_steps,
        callbacks=callbacks,
        resume_from_checkpoint=opts.resume_from_checkpoint,
    )
    out = trainer.train()
    result = {
        "start_step": start.start_step,
        "global_step": out.global_step,
        "training_loss": out.training_loss,
        "logs": window_logs(trainer.state.log_history),
    }
    np.savez(opts.result.with_suffix(".npz"), **params_of(trainer.model))
    opts.result.write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
