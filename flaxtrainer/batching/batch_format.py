"""The batch format: the names of batch arrays and what their padded positions hold.

A batch is a dict of int32 arrays ``[*leading, rows, width]`` by name: the task's model inputs
(``input_ids``, ``attention_mask``, ...), ``labels`` and ``example_ids``; packed rows add
``position_ids``. Tasks write labels in this format, the batchers pad with these values, and
the device code (``runtime.sharding``) fills padding with the values it is handed.
"""

from __future__ import annotations

INPUT_IDS = "input_ids"
LABELS = "labels"
ATTENTION_MASK = "attention_mask"
POSITION_IDS = "position_ids"
#: Per-token int32 id of the token's feature: its global index (the same on every process and
#: in every layout), -1 on padding. The train step keys dropout masks by it (and the position
#: within the feature), so a token draws the same mask in a padded and in a packed row.
EXAMPLE_IDS = "example_ids"

#: The label of a token that takes no loss and no metric (padding, special tokens, context,
#: continuation pieces): Hugging Face's ``ignore_index``.
IGNORE_INDEX = -100

#: Fill values for padded positions and padded rows, by array name; other names pad with 0.
#: ``labels`` pad with ``IGNORE_INDEX`` and ``example_ids`` with -1, so padded tokens and rows
#: count nowhere.
DEFAULT_PAD_VALUES: dict[str, int] = {
    LABELS: IGNORE_INDEX,
    ATTENTION_MASK: 0,
    INPUT_IDS: 0,
    EXAMPLE_IDS: -1,
}
#: Arrays that pad with 0 in packed rows whatever the task's pad values: segment ids (0 is
#: "no sentence") and positions.
ZERO_PADDED_WHEN_PACKED: tuple[str, ...] = (ATTENTION_MASK, POSITION_IDS)
