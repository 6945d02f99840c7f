"""Layouts: how the features of a batch become rows of one compiled shape.

The :class:`Layout` protocol is what the input pipeline (``input_pipeline.py``) calls; it
never asks which layout it holds. :class:`PaddedLayout` gives every feature a row, padded to a
few bucket widths (``batching.Batcher``); :class:`PackedLayout` lays several features end to
end in each row, first-fit decreasing, with segment ids in ``attention_mask`` and restarting
``position_ids`` (``batching.PackingBatcher``), in one grid planned for the whole run
(:func:`plan_packed_grid`). The packing of a micro-batch is decided from the global lengths, the
same on every process and for every process count; a packed row may hold features of several
processes, each of which places its own (``input_pipeline.Placement``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from flaxtrainer.batching.batchers import (
    WIDTH_MULTIPLE,
    Batcher,
    PackingBatcher,
    PackingGrid,
    RowPlacement,
    first_fit_decreasing,
)
from flaxtrainer.batching.sampler import balanced_plan, eval_plan

#: Micro-batches on which packing candidates are scored (the chosen grid covers every one).
PLAN_SAMPLE_BATCHES = 256


class Layout(Protocol):
    """How the features of a batch become rows (see the module docstring).

    ``arrange`` decides, for a micro-batch's features (global lengths), each one's row and
    start; ``build`` places one process's features there (``batching.RowPlacement``: its rows
    index the rows that process's features touch, ascending global rows). A process leaves the
    rest of a shared row padded.
    """

    #: True when several features share a row (segment ids in ``attention_mask``).
    packed: bool
    #: The padded widths a batch may take (one for packing).
    widths: tuple[int, ...]

    def describe(self, grid: PackingGrid | None) -> str: ...

    def eval_batches(
        self, lengths: np.ndarray, batch_size: int, grid: PackingGrid | None = None
    ) -> tuple[list[np.ndarray], PackingGrid | None]: ...

    def plan(
        self,
        batches: Sequence[np.ndarray],
        lengths: np.ndarray,
        *,
        micro_size: int | None = None,
        multiple: int = 1,
    ) -> PackingGrid | None: ...

    def width(self, lengths: np.ndarray, grid: PackingGrid | None) -> int: ...

    def height(self, slots: int, rows_used: int, grid: PackingGrid | None) -> int: ...

    def arrange(self, lengths: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray, int]: ...

    def build(self, placement: RowPlacement) -> dict[str, np.ndarray]: ...

    def pad_value(self, name: str) -> int: ...

    @property
    def array_names(self) -> tuple[str, ...]: ...


class PaddedLayout:
    """One feature per row, padded to the smallest bucket width that fits the batch's longest
    feature (``batching.Batcher``): one compiled shape per width used."""

    packed = False

    def __init__(self, local: Batcher) -> None:
        self.local = local
        self.widths = local.widths

    @property
    def array_names(self) -> tuple[str, ...]:
        return self.local.array_names

    def describe(self, grid: PackingGrid | None) -> str:
        return f"padded to widths {list(self.widths)}, one feature per row"

    def eval_batches(
        self, lengths: np.ndarray, batch_size: int, grid: PackingGrid | None = None
    ) -> tuple[list[np.ndarray], None]:
        """``batch_size`` features per batch (by length with several widths)."""
        return eval_plan(lengths, batch_size, sort_by_length=len(self.widths) > 1), None

    def plan(
        self,
        batches: Sequence[np.ndarray],
        lengths: np.ndarray,
        *,
        micro_size: int | None = None,
        multiple: int = 1,
    ) -> None:
        return None  # the width follows each batch

    def width(self, lengths: np.ndarray, grid: PackingGrid | None) -> int:
        return self.local.width_for(int(lengths.max()))

    def height(self, slots: int, rows_used: int, grid: PackingGrid | None) -> int:
        return slots

    def arrange(self, lengths: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Feature ``k`` of the group in row ``k``, at its start."""
        return np.arange(lengths.size), np.zeros(lengths.size, np.int64), int(lengths.size)

    def build(self, placement: RowPlacement) -> dict[str, np.ndarray]:
        """One row per feature, in order (the rows are ``0..n-1``: never shared)."""
        return self.local.batch(placement.indices, placement.num_rows).arrays

    def pad_value(self, name: str) -> int:
        return self.local.pad_value(name)


class PackedLayout:
    """A micro-batch's features packed first-fit decreasing into ``grid.width``-token rows
    (``batching.PackingBatcher``), in one grid for the whole run; the packing depends on the
    global lengths only, not on which process holds which feature.

    ``width_cost``: the row width at which attention costs about as much as the rest of a
    layer (the model's ``d_model``; see :func:`plan_packed_grid`).
    """

    packed = True

    def __init__(self, local: PackingBatcher, width_cost: float | None = None) -> None:
        self.local = local
        self.widths = (local.max_width,)
        self.width_cost = width_cost

    @property
    def array_names(self) -> tuple[str, ...]:
        return self.local.array_names

    def describe(self, grid: PackingGrid | None) -> str:
        if grid is None:
            return f"packed into rows of up to {self.local.max_width} tokens"
        return f"packed, {grid.rows} rows x {grid.width} tokens per micro-batch"

    def eval_batches(
        self, lengths: np.ndarray, batch_size: int, grid: PackingGrid | None = None
    ) -> tuple[list[np.ndarray], PackingGrid | None]:
        """With ``grid`` (the training grid) and every feature fitting its width: batches that
        fill it (:func:`fill_grid`), so evaluation runs in the training shape, whatever the
        evaluation set (one more compiled shape for all of them: the eval step's). Else
        ``batch_size`` features per batch with similar token counts, grid planned later."""
        if grid is not None and (lengths.size == 0 or int(lengths.max()) <= grid.width):
            return fill_grid(lengths, grid), grid
        return balanced_plan(lengths, batch_size), None

    def plan(
        self,
        batches: Sequence[np.ndarray],
        lengths: np.ndarray,
        *,
        micro_size: int | None = None,
        multiple: int = 1,
    ) -> PackingGrid:
        return plan_packed_grid(
            self,
            batches,
            lengths,
            micro_size=micro_size,
            multiple=multiple,
            width_cost=self.width_cost,
        )

    def width(self, lengths: np.ndarray, grid: PackingGrid | None) -> int:
        return grid.width if grid is not None else self.local.max_width

    def height(self, slots: int, rows_used: int, grid: PackingGrid | None) -> int:
        """The grid's rows; a micro-batch that needs more gets them (another compiled shape)."""
        return max(grid.rows if grid is not None else 1, rows_used)

    def arrange(self, lengths: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray, int]:
        """First-fit decreasing over the whole micro-batch, whoever holds the features."""
        return first_fit_decreasing(lengths, width)

    def build(self, placement: RowPlacement) -> dict[str, np.ndarray]:
        return self.local.place(placement)

    def pad_value(self, name: str) -> int:
        return self.local.pad_value(name)


def plan_packed_grid(
    layout: Layout,
    batches: Sequence[np.ndarray],
    lengths: np.ndarray,
    *,
    micro_size: int | None = None,
    multiple: int = 1,
    width_cost: float | None = None,
    sample: int = PLAN_SAMPLE_BATCHES,
) -> PackingGrid:
    """The grid for ``batches`` (global feature indices): every micro-batch fits, with the
    least estimated compute; the same on every process (global ``lengths``).

    A batch's micro-batches are its consecutive runs of ``micro_size`` features (default: the
    whole batch). A micro-batch needs the rows that :meth:`Layout.arrange` gives it; rows are rounded up to a multiple of ``multiple`` (the
    device count). Candidate widths: multiples of ``WIDTH_MULTIPLE`` from the longest feature
    up to the layout's widest, and the widest; each is scored on up to ``sample`` micro-batches
    as ``rows * width * (1 + width / width_cost)``: attention's cost per token grows with the
    row width, about as ``width / d_model`` relative to the rest of an encoder layer (measured
    on CPU; ``width_cost=None`` scores computed tokens only). The rows of the chosen width
    then cover every micro-batch.
    """
    max_width = layout.widths[-1]
    step = micro_size or None
    parts = [
        part
        for indices in batches
        for part in _runs(np.asarray(indices, np.int64), step)
        if part.size
    ]
    if not parts:
        return PackingGrid(multiple, max_width)
    longest = int(lengths.max())
    candidates = sorted(
        set(range(-(-longest // WIDTH_MULTIPLE) * WIDTH_MULTIPLE, max_width, WIDTH_MULTIPLE))
        | {max_width}
    )
    scored = parts[:: max(1, -(-len(parts) // sample))]

    def rows_for(width: int, group: Sequence[np.ndarray]) -> int:
        most = max(layout.arrange(lengths[part], width)[2] for part in group)
        return -(-most // multiple) * multiple

    def cost(width: int) -> float:
        scale = 1 + width / width_cost if width_cost else 1.0
        return rows_for(width, scored) * width * scale

    width = min(candidates, key=lambda w: (cost(w), -w))
    return PackingGrid(rows_for(width, parts), width)


def fill_grid(lengths: np.ndarray, grid: PackingGrid) -> list[np.ndarray]:
    """Every feature once, in batches that each fill ``grid``: first-fit decreasing over all the
    features into ``grid.width``-token rows, cut into batches of ``grid.rows`` rows. A batch
    lists its features longest first (as the packing visited them), so first-fit decreasing
    over the batch alone (what ``PackedLayout.arrange`` does) lays them out in the same rows."""
    lengths = np.asarray(lengths)
    rows, _, _ = first_fit_decreasing(lengths, grid.width)
    order = np.argsort(-lengths, kind="stable")
    batch_of = rows[order] // grid.rows
    return [order[batch_of == k] for k in np.unique(batch_of)]


def _runs(indices: np.ndarray, size: int | None) -> list[np.ndarray]:
    """``indices`` cut into consecutive runs of ``size`` (``None``: one run)."""
    step = size or max(indices.size, 1)
    return [indices[i : i + step] for i in range(0, indices.size, step)]
