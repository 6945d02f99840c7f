"""What a run leaves in output_dir besides the model: results JSON files and predictions.

File names follow Hugging Face's example scripts: `<split>_results.json` per split, all of them
merged into `all_results.json`, and `test_predictions.txt` in CoNLL layout (one
`word gold predicted` line per word, or `word predicted` when the test split has no labels, and
a blank line between sentences).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ALL_RESULTS = "all_results.json"
PREDICTIONS_FILE = "test_predictions.txt"
TRAINER_STATE = "trainer_state.json"
TASK_FILE = "flaxtrainer_task.json"

_WHITESPACE = re.compile(r"\s+")


def to_builtin(value: Any) -> Any:
    """numpy / jax scalars and arrays -> plain Python, recursively (for json.dump)."""
    if isinstance(value, Mapping):
        return {str(k): to_builtin(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_builtin(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_builtin(dataclasses.asdict(value))
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # numpy or jax array
        return np.asarray(value).tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # NaN/inf are not JSON; keep them visible rather than crash
    return value


def write_json(path: str | Path, data: Any) -> Path:
    """Write `data` as indented, key-sorted JSON (creating parent folders)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_builtin(data), indent=2, sort_keys=True) + "\n", "utf-8")
    return path


def save_metrics(output_dir: str | Path, split: str, metrics: Mapping[str, Any]) -> Path:
    """Write `<split>_results.json` and merge the same metrics into `all_results.json`."""
    output_dir = Path(output_dir)
    path = write_json(output_dir / f"{split}_results.json", metrics)
    all_path = output_dir / ALL_RESULTS
    merged: dict[str, Any] = {}
    if all_path.is_file():
        try:
            merged = json.loads(all_path.read_text("utf-8"))
        except json.JSONDecodeError:
            merged = {}  # a run killed mid-write: start over rather than fail the new run
    merged.update(to_builtin(dict(metrics)))
    write_json(all_path, merged)
    return path


def format_metrics(split: str, metrics: Mapping[str, Any]) -> str:
    """The `***** eval metrics *****` block of HF scripts, with aligned keys."""
    lines = [f"***** {split} metrics *****"]
    width = max((len(k) for k in metrics), default=0)
    for key in sorted(metrics):
        value = to_builtin(metrics[key])
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        lines.append(f"  {key:<{width}} = {shown}")
    return "\n".join(lines)


def _conll_word(word: str) -> str:
    """A word as one CoNLL column: inner whitespace becomes '_', an empty word '_'."""
    return _WHITESPACE.sub("_", word.strip()) or "_"


def write_predictions(
    path: str | Path,
    words: Sequence[Sequence[str]],
    predictions: Sequence[Sequence[str]],
    gold: Sequence[Sequence[str]] | None = None,
) -> Path:
    """Write CoNLL predictions: `word gold predicted` (or `word predicted`) per word.

    Every word of every sentence gets exactly one line, in dataset order; an empty sentence
    gives just its blank separator line.
    """
    if len(predictions) != len(words) or (gold is not None and len(gold) != len(words)):
        raise ValueError(
            f"predictions for {len(predictions)} sentences, gold for "
            f"{'-' if gold is None else len(gold)}, but {len(words)} sentences"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for index, (sentence, predicted) in enumerate(zip(words, predictions)):
            if len(predicted) != len(sentence):
                raise ValueError(
                    f"sentence {index}: {len(sentence)} words but {len(predicted)} predictions"
                )
            if gold is None:
                for word, tag in zip(sentence, predicted):
                    out.write(f"{_conll_word(word)} {tag}\n")
            else:
                for word, gold_tag, tag in zip(sentence, gold[index], predicted):
                    out.write(f"{_conll_word(word)} {gold_tag} {tag}\n")
            out.write("\n")
    return path


def read_predictions(path: str | Path) -> list[list[list[str]]]:
    """Read a predictions file back: sentences of rows of columns (for tests and tools)."""
    sentences: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in Path(path).read_text("utf-8").splitlines():
        if line.strip():
            current.append(line.split(" "))
        else:
            sentences.append(current)
            current = []
    if current:
        sentences.append(current)
    return sentences


def read_task_file(folder: str | Path) -> dict[str, Any] | None:
    """The `flaxtrainer_task.json` saved with a fine-tuned model, or None when there is none."""
    from flaxtrainer.cli_args import UserError

    path = Path(folder) / TASK_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text("utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{path}:{exc.lineno}: not valid JSON ({exc.msg})",
            "re-export the model, or delete the file and pass --task_name",
        ) from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object", "re-export the model")
    return data
