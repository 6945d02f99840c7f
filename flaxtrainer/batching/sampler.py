"""Which examples form step k: the sampler alone decides, the same for every layout and process count.

Token-balanced steps by default (every step about the same number of tokens, each micro-batch
balanced within its step), length-grouped steps with ``group_by_length``; ``eval_plan`` packs
an evaluation set into batches, first-fit decreasing.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Iterator, Sequence

import numpy as np


def deal_balanced(
    indices: np.ndarray, lengths: np.ndarray, sizes: Sequence[int]
) -> list[np.ndarray]:
    """Split ``indices`` into groups of ``sizes`` with nearly equal token sums: longest first,
    each to the group with the fewest tokens that still has room (ties: the lower group)."""
    groups: list[list[int]] = [[] for _ in sizes]
    heap = [(0, g) for g, size in enumerate(sizes) if size > 0]
    heapq.heapify(heap)
    for item in indices[np.argsort(-lengths[indices], kind="stable")]:
        total, g = heapq.heappop(heap)
        groups[g].append(int(item))
        if len(groups[g]) < sizes[g]:
            heapq.heappush(heap, (total + int(lengths[item]), g))
    return [np.array(group, np.int64) for group in groups]


@dataclasses.dataclass(eq=False)
class LengthGroupedSampler:
    """Training order: which features form each batch of an epoch.

    A pure function of ``(seed, epoch)``: shuffle all features with
    ``np.random.default_rng((seed, epoch))``, cut the order into mega-chunks of
    ``mega_batches`` batches, arrange each chunk into batches, then shuffle the batch order.
    Within a chunk:

    - ``balance_tokens`` (the trainer's default, for either layout): deal the chunk into
      batches with nearly equal token sums (:func:`deal_balanced`), so every batch packs into
      about the same number of rows; with ``micro_batches`` > 1 each batch is then dealt into
      its micro-batches (consecutive runs of ``batch_size / micro_batches``), balanced too:
      only the order *within* a batch depends on ``micro_batches``, not which features form it;
    - else ``group_by_length`` (``TrainingArguments.group_by_length``): sort by length (longest
      first) and cut, so rows in a batch have similar lengths (little padding in padded rows);
    - else: cut in the shuffled order.

    The trainer picks the rule from the arguments alone, never from the layout, so which
    features form each step is a pure function of ``(seed, epoch, lengths, global batch size)``
    and packed and padded runs train on the same batches.

    The last batch may be partial; it is padded with rows that count nowhere. A position in an
    epoch is a batch index.
    """

    lengths: np.ndarray = dataclasses.field(repr=False)
    batch_size: int
    seed: int
    group_by_length: bool = True
    mega_batches: int = 50
    _: dataclasses.KW_ONLY
    balance_tokens: bool = False
    micro_batches: int = 1

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(
                f"LengthGroupedSampler: batch_size must be >= 1, got {self.batch_size}."
            )
        if self.micro_batches < 1 or self.batch_size % self.micro_batches:
            raise ValueError(
                f"LengthGroupedSampler: batch_size {self.batch_size} is not a multiple of "
                f"micro_batches {self.micro_batches}."
            )
        self.lengths = np.asarray(self.lengths)

    def __len__(self) -> int:
        """Batches per epoch."""
        return -(-len(self.lengths) // self.batch_size)

    def epoch(self, epoch: int) -> list[np.ndarray]:
        """The batches (arrays of feature indices) of ``epoch``, in order."""
        rng = np.random.default_rng((self.seed, epoch))
        order = rng.permutation(len(self.lengths))
        if not (self.group_by_length or self.balance_tokens):
            return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        chunk = self.batch_size * self.mega_batches
        batches = []
        for start in range(0, len(order), chunk):
            part = order[start : start + chunk]
            if self.balance_tokens:
                batches += self._balanced(part)
            else:
                part = part[np.argsort(-self.lengths[part], kind="stable")]
                batches += [
                    part[i : i + self.batch_size] for i in range(0, len(part), self.batch_size)
                ]
        return [batches[i] for i in rng.permutation(len(batches))]

    def _balanced(self, part: np.ndarray) -> list[np.ndarray]:
        batches = deal_balanced(part, self.lengths, _sizes(len(part), self.batch_size))
        if self.micro_batches == 1:
            return batches
        micro = self.batch_size // self.micro_batches
        return [
            np.concatenate(deal_balanced(batch, self.lengths, _sizes(len(batch), micro)))
            for batch in batches
        ]

    def iter_epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        """``(position, indices)`` for the batches of ``epoch`` from position ``start``."""
        batches = self.epoch(epoch)
        for position in range(start, len(batches)):
            yield position, batches[position]


def _sizes(n: int, size: int) -> list[int]:
    """Group sizes that cut ``n`` items into runs of ``size`` (the last one smaller)."""
    return [size] * (n // size) + ([n % size] if n % size else [])


def balanced_plan(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Evaluation batches for packing: every feature once, batches of ``batch_size`` (the last
    one smaller) with nearly equal token sums (:func:`deal_balanced`)."""
    n = len(lengths)
    sizes = [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    return deal_balanced(np.arange(n), np.asarray(lengths), sizes)


def eval_plan(lengths: np.ndarray, batch_size: int, sort_by_length: bool) -> list[np.ndarray]:
    """Evaluation batches covering every feature exactly once.

    With ``sort_by_length`` rows are grouped by length (less padding); the caller puts outputs
    back in feature order through ``HostBatch.indices``.
    """
    order = np.argsort(lengths, kind="stable") if sort_by_length else np.arange(len(lengths))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
