"""What a run leaves in output_dir besides the model: results JSON files and predictions.

File names follow Hugging Face's example scripts: `<split>_results.json` per split, all of them
merged into `all_results.json`, and `test_predictions.txt` in CoNLL layout (one
`word gold predicted` line per word, or `word predicted` when the test split has no labels, and
a blank line between sentences).
"""

from __future__ import annotations

import dataclasses
import json
import logging
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
TRAINING_ARGS = "training_args.json"

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
    """Write `<split>_results.json` and merge the same metrics into `all_results.json`, with
    Hugging Face's names added alongside (`hf_metric_aliases`)."""
    output_dir = Path(output_dir)
    metrics = {**metrics, **hf_metric_aliases(metrics)}
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


def error_report_path(output_dir: str | Path, split: str) -> Path:
    """`<split>_error_report.json`: the entity error report of a split (`eval`, `test`), see
    `flaxtrainer.tasks.error_report`."""
    return Path(output_dir) / f"{split}_error_report.json"


def save_error_report(output_dir: str | Path, split: str, report: Mapping[str, Any]) -> Path:
    """Write a split's entity error report (`EntityErrorReport.to_dict()`) as JSON."""
    return write_json(error_report_path(output_dir, split), report)


_HF_OVERALL = ("precision", "recall", "f1", "accuracy")
_SPLIT_PREFIXES = ("eval", "test", "predict")


def hf_metric_aliases(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Hugging Face run_ner.py's names for the same numbers, for a split with entity-level
    metrics (`<split>_<TYPE>_support` keys; without them HF's names are flaxtrainer's):
    `<split>_overall_<m>` for `<split>_<m>` (m in precision, recall, f1, accuracy) and
    `<split>_<TYPE>_number` (an int) for `<split>_<TYPE>_support`. Keys already present stay."""
    entity_level = {
        key.partition("_")[0] for key in metrics if key.endswith("_support") and key.count("_") > 1
    }
    aliases: dict[str, Any] = {}
    for key, value in metrics.items():
        prefix, _, name = key.partition("_")
        if prefix not in _SPLIT_PREFIXES or prefix not in entity_level:
            continue
        if name in _HF_OVERALL:
            aliases[f"{prefix}_overall_{name}"] = value
        elif name.endswith("_support") and len(name) > len("_support"):
            number = to_builtin(value)
            if isinstance(number, float) and number.is_integer():
                number = int(number)
            aliases[f"{prefix}_{name[: -len('_support')]}_number"] = number
    return {k: v for k, v in aliases.items() if k not in metrics}


#: The fields of `transformers.TrainerState` (v5) and the value written where flaxtrainer's
#: TrainerState has none. `TrainerState.load_from_json` passes every key to the dataclass, so
#: trainer_state.json holds exactly these keys.
HF_TRAINER_STATE_FIELDS: dict[str, Any] = {
    "epoch": 0.0,
    "global_step": 0,
    "max_steps": 0,
    "logging_steps": 500,
    "eval_steps": 500,
    "save_steps": 500,
    "train_batch_size": None,
    "num_train_epochs": 0,
    "num_input_tokens_seen": 0,
    "total_flos": 0.0,
    "log_history": [],
    "best_metric": None,
    "best_global_step": None,
    "best_model_checkpoint": None,
    "is_local_process_zero": True,
    "is_world_process_zero": True,
    "is_hyper_param_search": False,
    "trial_name": None,
    "trial_params": None,
    "stateful_callbacks": {},
}


def hf_trainer_state(state: Any) -> dict[str, Any]:
    """flaxtrainer's `TrainerState` (or its `to_dict()`) as Hugging Face's `trainer_state.json`
    content: HF's fields only (the resume-only fields `epoch_index`, `step_in_epoch`,
    `steps_per_epoch`, `num_compilations` live in the checkpoints); `flaxtrainer`'s
    `TrainerState.load_from_json` reads it too."""
    data = state.to_dict() if hasattr(state, "to_dict") else dict(state)
    return {name: data.get(name, default) for name, default in HF_TRAINER_STATE_FIELDS.items()}


def write_trainer_state(path: str | Path, state: Any) -> Path:
    """Write `trainer_state.json` as `transformers.TrainerState.save_to_json` does (NaN kept as
    NaN, like HF), atomically: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = hf_trainer_state(state)
    text = json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, "utf-8")
    tmp.replace(path)
    return path


def _json_default(value: Any) -> Any:
    converted = to_builtin(value)
    if converted is value:
        raise TypeError(f"{type(value).__name__} is not JSON serialisable")
    return converted


#: Argument fields never written to training_args.json (secrets).
SECRET_ARGUMENTS = frozenset({"token", "hub_token", "use_auth_token"})


def run_arguments(*arguments: Any) -> dict[str, Any]:
    """Every field of the given argument dataclasses (e.g. model, data, plugin and training
    arguments) in one flat mapping of flag name -> value, secrets left out. Later dataclasses
    win for a shared name (e.g. `seed`)."""
    merged: dict[str, Any] = {}
    for args in arguments:
        if args is None:
            continue
        fields = dataclasses.asdict(args) if dataclasses.is_dataclass(args) else dict(args)
        merged.update({k: v for k, v in fields.items() if k not in SECRET_ARGUMENTS})
    return merged


def write_training_args(output_dir: str | Path, *arguments: Any) -> Path:
    """Write `training_args.json`: `run_arguments(*arguments)`, what Hugging Face pickles as
    `training_args.bin`. Its keys are flag names, so `flaxtrainer training_args.json` reruns
    the same configuration (drop `resume_from_checkpoint` / `overwrite_output_dir` as needed)."""
    return write_json(Path(output_dir) / TRAINING_ARGS, run_arguments(*arguments))


#: What a console shows of an evaluation pass, after its loss and the metric that picks the best
#: model: the entity scores, or the accuracy where there is no F1 (POS tagging).
HEADLINE_SCORES = ("f1", "precision", "recall")


def metric_prefixes(metrics: Mapping[str, Any], default: str = "eval") -> list[str]:
    """The passes whose metrics ``metrics`` holds, in order: every evaluation pass reports
    ``<prefix>_samples`` (``eval``, ``test``, ``eval_dev``, ``eval_ood``...); ``[default]``
    when none does."""
    prefixes = [k.removesuffix("_samples") for k in metrics if k.endswith("_samples")]
    return [p for p in prefixes if p] or [default]


def _best_metric_name(metrics: Mapping[str, Any], prefix: str, best: str | None) -> str | None:
    """The name (without ``prefix_``) under which ``prefix``'s pass holds ``best`` (the
    ``metric_for_best_model``: ``f1``, ``eval_f1``, ``eval_dev_f1``); None if it holds none."""
    if not best:
        return None
    if best.startswith(f"{prefix}_") and best in metrics:
        return best.removeprefix(f"{prefix}_")
    name = best.removeprefix("eval_")
    return name if f"{prefix}_{name}" in metrics else None


def headline_names(
    metrics: Mapping[str, Any], prefix: str, best_metric: str | None = None
) -> list[str]:
    """The names (without ``prefix_``) of ``prefix``'s headline numbers present in ``metrics``,
    in a fixed order whatever the dict's: ``loss``, the metric that picks the best model (when
    set and not one of the others), ``f1``, ``precision``, ``recall`` (``accuracy`` where there
    is no ``f1``)."""
    scores = HEADLINE_SCORES if f"{prefix}_f1" in metrics else ("accuracy",)
    names = ["loss"]
    best = _best_metric_name(metrics, prefix, best_metric)
    if best is not None and best not in (*names, *scores):
        names.append(best)
    names += scores
    return [n for n in names if _is_number(metrics.get(f"{prefix}_{n}"))]


def _is_number(value: Any) -> bool:
    value = to_builtin(value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def format_number(value: Any, digits: int = 4) -> str:
    """A metric for the console: floats with ``digits`` decimals (large ones with thousands
    separators), integers with separators, anything else as it is."""
    value = to_builtin(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return str(value)
    return f"{value:,.{digits}f}" if abs(value) < 1000 else f"{value:,.1f}"


def format_rate(value: Any, unit: str) -> str:
    """A throughput: ``1,234 tok/s``, ``6.2 samples/s``."""
    value = float(to_builtin(value))
    if not math.isfinite(value):
        return f"{value} {unit}"
    return f"{value:,.0f} {unit}" if abs(value) >= 100 else f"{value:.1f} {unit}"


def headline(metrics: Mapping[str, Any], prefix: str, best_metric: str | None = None) -> str:
    """One evaluation pass in one line, e.g. ``loss 0.2315 | f1 0.6123 | precision 0.6012 |
    recall 0.6238 | 512 samples/s`` (see :func:`headline_names` for the order)."""
    parts = [
        f"{name} {format_number(metrics[f'{prefix}_{name}'])}"
        for name in headline_names(metrics, prefix, best_metric)
    ]
    rate = metrics.get(f"{prefix}_samples_per_second")
    if _is_number(rate):
        parts.append(format_rate(rate, "samples/s"))
    return " | ".join(parts)


def evaluation_lines(
    metrics: Mapping[str, Any], where: str = "", best_metric: str | None = None
) -> list[str]:
    """One line per evaluation pass in ``metrics`` (several named sets: one each), e.g.
    ``eval step 40/100 | loss 0.2315 | f1 0.6123 | ...`` for ``where="step 40/100"``."""
    lines = []
    for prefix in metric_prefixes(metrics):
        label = f"{prefix} {where}" if where else prefix
        numbers = headline(metrics, prefix, best_metric)
        lines.append(f"{label} | {numbers}" if numbers else label)
    return lines


def pass_summary(metrics: Mapping[str, Any], prefix: str, best_metric: str | None = None) -> str:
    """One pass in one line for the end of a run: its headline numbers, then its size and
    time, e.g. ``loss 0.2315 | f1 0.6123 | precision 0.6012 | recall 0.6238 | 240 samples |
    5.12 s (46.9 samples/s)``. (``train_samples`` is the training set's size, not what a run
    cut short by ``max_steps`` read: the two are separate parts.)"""
    parts = [
        f"{name} {format_number(metrics[f'{prefix}_{name}'])}"
        for name in headline_names(metrics, prefix, best_metric)
    ]
    samples, runtime = metrics.get(f"{prefix}_samples"), metrics.get(f"{prefix}_runtime")
    if _is_number(samples):
        parts.append(f"{format_number(samples)} samples")
    rates = [
        format_rate(metrics[f"{prefix}_{key}"], unit)
        for key, unit in (("samples_per_second", "samples/s"), ("tokens_per_second", "tok/s"))
        if _is_number(metrics.get(f"{prefix}_{key}"))
    ]
    timing = f"{float(to_builtin(runtime)):.3g} s" if _is_number(runtime) else ""
    if rates:
        timing = f"{timing} ({', '.join(rates)})".strip()
    if timing:
        parts.append(timing)
    return " | ".join(parts)


def format_metrics(
    split: str,
    metrics: Mapping[str, Any],
    *,
    full: bool | None = None,
    best_metric: str | None = None,
    results_file: str | None = None,
) -> str:
    """The `***** eval metrics *****` block of HF scripts.

    Short by default: the header names the file holding every metric (``results_file``,
    default ``<split>_results.json``), then one line per pass (:func:`pass_summary`; several
    evaluation sets: one each), e.g.::

        ***** eval metrics ***** (all: eval_results.json, or --log_level debug)
          eval: loss 0.2315 | f1 0.6123 | precision 0.6012 | recall 0.6238 | 240 samples | ...

    ``full=True`` lists every key, sorted and aligned (``key = value``, as HF prints them);
    ``full=None`` does so when the ``flaxtrainer`` logger is at DEBUG (``--log_level debug``).
    """
    if full is None:
        full = logging.getLogger("flaxtrainer").isEnabledFor(logging.DEBUG)
    if full:
        lines = [f"***** {split} metrics *****"]
        width = max((len(k) for k in metrics), default=0)
        for key in sorted(metrics):
            value = to_builtin(metrics[key])
            shown = f"{value:.4f}" if isinstance(value, float) else str(value)
            lines.append(f"  {key:<{width}} = {shown}")
        return "\n".join(lines)
    where = results_file or f"{split}_results.json"
    lines = [f"***** {split} metrics ***** (all: {where}, or --log_level debug)"]
    for prefix in metric_prefixes(metrics, default=split):
        line = pass_summary(metrics, prefix, best_metric)
        if prefix == split and _is_number(metrics.get("epoch")):
            line += f" | epoch {float(to_builtin(metrics['epoch'])):.2f}"
        if line:
            lines.append(f"  {prefix}: {line}")
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
    from flaxtrainer.errors import UserError, parse_json

    path = Path(folder) / TASK_FILE
    if not path.is_file():
        return None
    hint = "re-export the model, or delete the file and pass --task_name"
    data = parse_json(path.read_text("utf-8"), str(path), hint)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object", "re-export the model")
    return data
