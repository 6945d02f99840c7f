"""One process of the multi-host tests: a small seeded NER fine-tuning run through FlaxTrainer.

Run as ``python tests/training/multihost_worker.py --output_dir DIR --result FILE [--coordinator_address
HOST:PORT --num_processes N --process_id I] [--resume_from STEP_DIR]``, with the host device
count in ``XLA_FLAGS``. It trains a random 2-layer, 32-wide BERT (dropout on) on generated
IOB2 sentences through the real data path (WordPiece tokenizer, TokenClassificationTask with
windows for long sentences, length buckets, gradient accumulation), evaluating and saving
every 3 steps, with TensorBoard on; then evaluates and predicts, and process 0 writes the
result files and the exported model, as the command line does.

Every process writes ``FILE`` (JSON: its log history, metrics, predictions, and the writes it
made under ``--output_dir``, recorded with an audit hook) and ``FILE.npz`` (final parameters).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Importing JAX is fine; initialize_distributed() must come before any JAX *call*.
from flaxtrainer.callbacks import Callback  # noqa: E402
from flaxtrainer.runtime.distributed import initialize_distributed  # noqa: E402

LABELS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG")
NAMES = {
    "PER": ["john", "mary", "anna", "lee", "tzvetanova"],
    "LOC": ["paris", "rome", "new", "york", "ouagadougou"],
    "ORG": ["acme", "reuters", "globex", "initech"],
}
FILLER = ["the", "a", "met", "in", "at", "said", "today", "and", "visited", "works", "for"]
#: Keys of log entries that measure time, and so differ between any two runs.
TIMING_KEYS = ("runtime", "per_second", "tokens_per_second")
_WRITE_EVENTS = ("os.mkdir", "os.rename", "os.remove", "os.rmdir", "shutil.rmtree", "os.truncate")


def sentences(n: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """``n`` seeded sentences (words, IOB2 tags): mostly short, every 7th long enough to be
    split into windows at ``max_seq_length=32``; rare names become several word pieces."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        words: list[str] = []
        tags: list[str] = []
        for _ in range(int(rng.integers(4, 9) if i % 7 == 3 else rng.integers(1, 3))):
            k = int(rng.integers(1, 4))
            words += [str(w) for w in rng.choice(FILLER, size=k)]
            tags += ["O"] * k
            kind = str(rng.choice(list(NAMES)))
            for j in range(int(rng.integers(1, 3))):
                words.append(str(rng.choice(NAMES[kind])))
                tags.append(("B-" if j == 0 else "I-") + kind)
        out.append((words, tags))
    return out


def dataset(n: int, seed: int) -> Any:
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


def tokenizer(folder: Path) -> Any:
    """WordPiece over the words, their first letters and all ``##letters`` (so rare names split)."""
    from transformers import BertTokenizerFast

    common = sorted({*FILLER, *(w for names in NAMES.values() for w in names[:3])})
    letters = sorted(
        {c for w in [*FILLER, *(w for names in NAMES.values() for w in names)] for c in w}
    )
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = list(dict.fromkeys([*specials, *common, *letters, *(f"##{c}" for c in letters)]))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=True)


class WriteLog:
    """Records this process's file writes, renames, deletions and new folders under ``root``
    (Python-level: ``sys.addaudithook`` sees every ``open`` and ``os`` call)."""

    def __init__(self, root: Path) -> None:
        self.root = str(root.resolve())
        self.paths: set[str] = set()
        sys.addaudithook(self._hook)

    def _hook(self, event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            writing = (
                any(c in mode for c in "wax+")
                if isinstance(mode, str)
                else bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            )
            if writing:
                self._add(path)
        elif event in _WRITE_EVENTS and args:
            self._add(args[0])
            if event == "os.rename" and len(args) > 1:
                self._add(args[1])

    def _add(self, path: Any) -> None:
        if isinstance(path, (str, os.PathLike)):
            full = os.path.abspath(os.fspath(path))
            if full.startswith(self.root + os.sep):
                self.paths.add(os.path.relpath(full, self.root))


class StartStep(Callback):
    """Records the step training starts from (after a resume: the checkpoint's)."""

    step: int | None = None

    def on_train_begin(self, trainer: Any) -> None:
        self.step = trainer.state.global_step


def run(args: argparse.Namespace) -> None:
    info = initialize_distributed(args.coordinator_address, args.num_processes, args.process_id)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    writes = WriteLog(output_dir)

    import jax
    import numpy as np
    from flax import nnx

    from flaxtrainer import FlaxTrainer, TrainingArguments
    from flaxtrainer.models import BertConfig, BertForTokenClassification, save_pretrained
    from flaxtrainer.runtime.distributed import is_main_process
    from flaxtrainer.tasks import TokenClassificationTask

    tok = tokenizer(Path(args.result).parent / f"vocab-{info.process_index}")
    train, dev, test = dataset(61, 0), dataset(23, 1), dataset(17, 2)
    task = TokenClassificationTask(list(LABELS), tok, max_seq_length=32)
    config = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        labels=LABELS,
    )
    model = BertForTokenClassification(config, rngs=nnx.Rngs(0))
    training_args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=2,
        per_device_eval_batch_size=3,
        gradient_accumulation_steps=2,
        learning_rate=3e-2,
        warmup_steps=2,
        max_steps=6,
        logging_steps=1,
        eval_strategy="steps",
        eval_steps=3,
        save_steps=3,
        metric_for_best_model="f1",
        bucket_widths=[16, 32],
        seed=7,
        disable_tqdm=True,
        resume_from_checkpoint=args.resume_from,
        coordinator_address=args.coordinator_address,
        num_processes=args.num_processes,
        process_id=args.process_id,
    )
    start = StartStep()
    trainer = FlaxTrainer(
        model, task, training_args, train_dataset=train, eval_dataset=dev, callbacks=[start]
    )
    trainer.train()
    eval_metrics = trainer.evaluate()
    prediction = trainer.predict(test)

    if is_main_process():  # result files and the exported model: once, from process 0
        results = {"eval": eval_metrics, "test": prediction.metrics}
        (output_dir / "all_results.json").write_text(json.dumps(results, indent=2))
        trainer.state.save_to_json(output_dir / "trainer_state.json")
        save_pretrained(trainer.model, output_dir / "model", tok)

    params = nnx.state(trainer.model, nnx.Param)
    flat = {
        jax.tree_util.keystr(path): np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(params)
    }
    np.savez(args.result + ".npz", **flat)
    result = {
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "device_count": jax.device_count(),
        "log_history": _untimed(trainer.state.log_history),
        "eval": _untimed([eval_metrics])[0],
        "test": _untimed([prediction.metrics])[0],
        "predictions": prediction.predictions,
        "best_step": trainer.state.best_global_step,
        "start_step": start.step,
        "writes": sorted(writes.paths),
    }
    Path(args.result).write_text(json.dumps(result, indent=1))
    if info.process_count > 1:
        jax.distributed.shutdown()


def _untimed(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in entry.items() if not any(t in k for t in TIMING_KEYS)}
        for entry in entries
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--coordinator_address")
    parser.add_argument("--num_processes", type=int)
    parser.add_argument("--process_id", type=int)
    parser.add_argument("--resume_from")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
