"""Checks of what a `FlaxTrainer` is built from, failing fast with a clear message."""

from __future__ import annotations

from typing import Any


def position_table_length(model: Any) -> int | None:
    """Longest row `model` can take with default position ids (`model.config.max_length`);
    None for a model without that attribute (a user's own module: nothing to check)."""
    value = getattr(getattr(model, "config", None), "max_length", None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def check_sequence_length(model: Any, task: Any, args: Any = None) -> None:
    """Refuse a padded row width longer than the model's position table.

    The contract between task, trainer and model: every row the trainer pads is at most
    `task.max_seq_length` tokens wide (or the widest of `args.bucket_widths` when given), and
    that must not exceed `model.config.max_length` (`max_position_embeddings`, less RoBERTa's
    `padding_idx + 1` offset). The model cannot check this itself: inside `jit` a position id
    past the table is not an error, its embedding lookup (`jnp.take`) gives NaN, and attention
    spreads that NaN to every token of the row, so loss, logits and metrics turn NaN silently.
    The command line clamps `--max_seq_length` to the table with a warning before it builds
    the task; a task built in Python is checked here. A task without `max_seq_length` pads to
    its longest feature and must keep its features within `model.config.max_length` itself.

    Raises:
        ValueError: naming both lengths and the fix.
    """
    limit = position_table_length(model)
    if limit is None:
        return
    config = model.config
    table = f"max_position_embeddings={getattr(config, 'max_position_embeddings', '?')}"
    offset = int(getattr(config, "position_offset", 0) or 0)
    if offset:
        table += f" less the position offset {offset}"
    wanted = getattr(task, "max_seq_length", None)
    if isinstance(wanted, int) and wanted > limit:
        raise ValueError(
            f"FlaxTrainer: task.max_seq_length={wanted} is longer than the model's position "
            f"table ({limit} positions: {table}); rows that wide would give NaN logits. Build "
            f"the task with max_seq_length <= {limit} (longer sentences are split into windows)."
        )
    widths = getattr(args, "bucket_widths", None) or ()
    too_wide = [int(w) for w in widths if int(w) > limit]
    if too_wide:
        raise ValueError(
            f"FlaxTrainer: bucket_widths {too_wide} are longer than the model's position table "
            f"({limit} positions: {table}); rows that wide would give NaN logits. Use widths "
            f"<= {limit}."
        )
