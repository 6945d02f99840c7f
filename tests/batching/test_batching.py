"""Length buckets, packing, the pure resumable sampler, and evaluation plans."""

import numpy as np
import pytest

from flaxtrainer.batching.batchers import (
    Batcher,
    PackingBatcher,
    PackingGrid,
    bucket_widths,
    first_fit_decreasing,
)
from flaxtrainer.batching.input_pipeline import Placement, PreparedData
from flaxtrainer.batching.layouts import PackedLayout
from flaxtrainer.batching.sampler import (
    LengthGroupedSampler,
    balanced_plan,
    deal_balanced,
    eval_plan,
)


def _features(lengths, with_mask=True):
    out = []
    for i, n in enumerate(lengths):
        f = {
            "input_ids": np.arange(1, n + 1, dtype=np.int32),
            "labels": np.full(n, i % 5, np.int32),
            "meta": i,
        }
        if with_mask:
            f["attention_mask"] = np.ones(n, np.int32)
        out.append(f)
    return out


def test_bucket_widths_bounded_and_cover_max_length():
    assert bucket_widths(128) == (16, 32, 48, 64, 80, 96, 112, 128)
    assert bucket_widths(100) == (16, 32, 48, 64, 80, 96, 100)
    wide = bucket_widths(512)
    assert len(wide) <= 8 and wide[-1] == 512 and all(w % 16 == 0 for w in wide)
    assert list(wide) == sorted(set(wide))
    assert bucket_widths(10) == (10,)
    assert bucket_widths(512, max_buckets=1) == (512,)


def test_batch_pads_rows_and_positions():
    feats = _features([3, 17, 5])
    batcher = Batcher(
        feats,
        ("input_ids", "attention_mask", "token_type_ids"),
        bucket_widths(64),
        {"input_ids": 9},
    )
    batch = batcher.batch(np.array([2, 1, 0]), rows=4)
    assert batch.shape == (4, 32)  # 17 tokens -> width 32; 4 rows, one of padding
    assert set(batch.arrays) == {"input_ids", "attention_mask", "labels", "example_ids"}
    np.testing.assert_array_equal(batch.indices, [2, 1, 0, -1])
    # every token carries its feature index (dropout is keyed by it), -1 on padding
    assert batch.arrays["example_ids"][0].tolist() == [2] * 5 + [-1] * 27
    assert batch.arrays["example_ids"][1].tolist() == [1] * 17 + [-1] * 15
    assert (batch.arrays["example_ids"][3] == -1).all()
    assert batch.arrays["input_ids"][0, 5:].tolist() == [9] * 27
    assert (
        batch.arrays["labels"][3].tolist() == [-100] * 32
        and batch.arrays["attention_mask"][3].sum() == 0
    )
    assert batch.real_tokens == 25 and batch.computed_tokens == 128
    stacked = batcher.batch(np.array([0, 1]), rows=4, leading=(2,))
    assert stacked.shape == (2, 2, 32)


def test_attention_mask_is_synthesised_when_missing():
    batcher = Batcher(_features([2, 4], with_mask=False), ("input_ids", "attention_mask"), (8,))
    batch = batcher.batch(np.array([0, 1]), rows=2)
    assert batch.arrays["attention_mask"].tolist() == [
        [1, 1, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0, 0],
    ]


def test_bad_features_are_reported():
    with pytest.raises(ValueError, match="feature 1 has 70 tokens"):
        Batcher(_features([3, 70]), ("input_ids",), (16, 64))
    bad = _features([3, 4])
    bad[1]["labels"] = bad[1]["labels"][:2]
    with pytest.raises(ValueError, match="feature 1 has arrays of unequal lengths"):
        Batcher(bad, ("input_ids",), (16,))
    with pytest.raises(ValueError, match="none of the model inputs"):
        Batcher(_features([3]), ("pixel_values",), (16,))


def test_sampler_is_pure_covers_everything_and_groups_by_length():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 120, size=1003)
    sampler = LengthGroupedSampler(lengths, batch_size=16, seed=3, mega_batches=8)
    epoch0 = sampler.epoch(0)
    assert len(epoch0) == len(sampler) == 63
    assert sorted(np.concatenate(epoch0).tolist()) == list(range(1003))
    again = LengthGroupedSampler(lengths, batch_size=16, seed=3, mega_batches=8).epoch(0)
    assert all(np.array_equal(a, b) for a, b in zip(epoch0, again))
    assert not all(np.array_equal(a, b) for a, b in zip(epoch0, sampler.epoch(1)))
    # grouping: rows of a batch have similar lengths, far less spread than random batches
    spread = np.mean([np.ptp(lengths[b]) for b in epoch0])
    random_spread = np.mean(
        [
            np.ptp(lengths[b])
            for b in LengthGroupedSampler(lengths, 16, 3, group_by_length=False).epoch(0)
        ]
    )
    assert spread < random_spread / 4
    # resuming at a position yields exactly the remaining batches
    rest = list(sampler.iter_epoch(0, start=40))
    assert [p for p, _ in rest] == list(range(40, 63))
    assert all(np.array_equal(b, epoch0[p]) for p, b in rest)


def test_eval_plan_covers_each_feature_once():
    lengths = np.array([5, 1, 9, 3, 3, 7, 2])
    for sort in (False, True):
        plan = eval_plan(lengths, batch_size=3, sort_by_length=sort)
        assert sorted(np.concatenate(plan).tolist()) == list(range(7))
        assert [len(b) for b in plan] == [3, 3, 1]
    assert np.concatenate(eval_plan(lengths, 3, False)).tolist() == list(range(7))


# ------------------------------------------------------------------------------------ packing
def _packing_features(lengths):
    out = []
    for i, n in enumerate(lengths):
        out.append(
            {
                "input_ids": np.arange(1, n + 1, dtype=np.int32) + 100 * i,
                "token_type_ids": np.full(n, i % 2, np.int32),
                "attention_mask": np.ones(n, np.int32),
                "labels": np.full(n, i % 5, np.int32),
            }
        )
    return out


def test_first_fit_decreasing_places_every_item_once_within_rows():
    lengths = np.random.default_rng(0).integers(1, 60, size=40)
    rows, starts, n = first_fit_decreasing(lengths, 64)
    grid = np.zeros((n, 64), int)
    for length, row, start in zip(lengths, rows, starts):
        assert start + length <= 64
        grid[row, start : start + length] += 1
    assert grid.max() == 1 and grid.sum() == lengths.sum()  # no overlap, nothing lost
    assert n <= -(-lengths.sum() // 64) + 3  # close to the lower bound
    assert first_fit_decreasing(np.array([64, 1]), 64)[2] == 2


def test_deal_balanced_evens_out_tokens():
    rng = np.random.default_rng(1)
    lengths = rng.integers(3, 80, size=320)
    groups = deal_balanced(rng.permutation(320), lengths, [32] * 9 + [32])
    assert sorted(np.concatenate(groups).tolist()) == list(range(320))
    assert [len(g) for g in groups] == [32] * 10
    sums = [lengths[g].sum() for g in groups]
    random_sums = [lengths[i : i + 32].sum() for i in range(0, 320, 32)]
    assert np.ptp(sums) < np.ptp(random_sums) / 5
    uneven = deal_balanced(np.arange(10), lengths[:10], [4, 4, 2])
    assert [len(g) for g in uneven] == [4, 4, 2]


def test_token_balanced_sampler_is_pure_covers_everything_and_balances():
    rng = np.random.default_rng(2)
    lengths = rng.integers(3, 80, size=1003)
    sampler = LengthGroupedSampler(lengths, 32, seed=3, mega_batches=8, balance_tokens=True)
    epoch0 = sampler.epoch(0)
    assert len(epoch0) == len(sampler) == 32
    assert sorted(np.concatenate(epoch0).tolist()) == list(range(1003))
    again = LengthGroupedSampler(lengths, 32, seed=3, mega_batches=8, balance_tokens=True)
    assert all(np.array_equal(a, b) for a, b in zip(epoch0, again.epoch(0)))
    assert not all(np.array_equal(a, b) for a, b in zip(epoch0, sampler.epoch(1)))
    full = [b for b in epoch0 if len(b) == 32]
    spread = np.ptp([lengths[b].sum() for b in full])
    plain = LengthGroupedSampler(lengths, 32, 3, group_by_length=False).epoch(0)
    # (chunks are balanced inside; their means still differ a little)
    assert spread < np.ptp([lengths[b].sum() for b in plain if len(b) == 32]) / 3
    # micro-batches (gradient accumulation) are balanced one by one
    micro = LengthGroupedSampler(lengths, 32, 3, balance_tokens=True, micro_batches=4).epoch(0)
    quarters = [lengths[b[i : i + 8]].sum() for b in micro if len(b) == 32 for i in (0, 8, 16, 24)]
    assert np.ptp(quarters) < np.ptp([lengths[b[:8]].sum() for b in plain]) / 3
    with pytest.raises(ValueError, match="not a multiple of micro_batches"):
        LengthGroupedSampler(lengths, 30, 3, micro_batches=4)


def _packed(batcher, indices, rows, leading=(), grid=None):
    """A packed batch of ``indices`` on one process, as the trainer builds it."""
    layout = PackedLayout(batcher)
    data = PreparedData(batcher.features, layout, Placement.single(batcher.lengths))
    return data.batch(indices, rows, leading, grid)


def test_packed_batch_layout_segments_positions_and_placements():
    lengths = [5, 3, 7, 2, 6]
    batcher = PackingBatcher(
        _packing_features(lengths),
        ("input_ids", "attention_mask", "token_type_ids"),
        max_width=10,
        pad_values={"input_ids": 0},
        position_offset=2,
    )
    batch = _packed(batcher, np.array([0, 1, 2, 3, 4]), rows=6, grid=PackingGrid(4, 10))
    assert batch.shape == (4, 10) and batch.computed_tokens == 40 and batch.real_tokens == 23
    assert set(batch.arrays) == {
        "input_ids",
        "token_type_ids",
        "attention_mask",
        "position_ids",
        "labels",
        "example_ids",
    }
    np.testing.assert_array_equal(batch.indices, [0, 1, 2, 3, 4, -1])
    rows, starts = batch.placements()
    seen = np.zeros((4, 10), bool)
    for index, row, start in zip(batch.indices[:5], rows[:5], starts[:5]):
        n = lengths[index]
        window = slice(start, start + n)
        np.testing.assert_array_equal(
            batch.arrays["input_ids"][row, window], 100 * index + 1 + np.arange(n)
        )
        np.testing.assert_array_equal(batch.arrays["position_ids"][row, window], 2 + np.arange(n))
        segment = batch.arrays["attention_mask"][row, window]
        assert len(set(segment.tolist())) == 1 and segment[0] > 0
        assert (batch.arrays["labels"][row, window] == index % 5).all()
        assert (batch.arrays["example_ids"][row, window] == index).all()
        seen[row, window] = True
    # each row numbers its sentences 1, 2, ...; padding: mask 0, label -100, position 0
    for row in range(4):
        ids = batch.arrays["attention_mask"][row][seen[row]]
        assert sorted(set(ids.tolist())) == list(range(1, len(set(ids.tolist())) + 1))
    assert (batch.arrays["attention_mask"][~seen] == 0).all()
    assert (batch.arrays["labels"][~seen] == -100).all()
    assert (batch.arrays["position_ids"][~seen] == 0).all()
    assert (batch.arrays["example_ids"][~seen] == -1).all()
    assert first_fit_decreasing(batcher.lengths, 10)[2] == 3  # 7+3, 6+2, 5
    assert PackedLayout(batcher).plan([np.arange(5)], batcher.lengths, multiple=4) == PackingGrid(
        4, 10
    )


def test_packed_micro_batches_and_growing_grid():
    lengths = [4] * 8
    batcher = PackingBatcher(
        _packing_features(lengths), ("input_ids", "attention_mask"), max_width=8
    )
    batch = _packed(batcher, np.arange(7), rows=8, leading=(2,), grid=PackingGrid(2, 8))
    assert batch.shape == (2, 2, 8)
    rows, _ = batch.placements()
    # micro-batch 0 holds features 0-3 (flattened rows 0-1), micro-batch 1 features 4-6
    assert set(rows[:4].tolist()) <= {0, 1} and set(rows[4:7].tolist()) <= {2, 3}
    plan = PackedLayout(batcher).plan([np.arange(8)], batcher.lengths, micro_size=4)
    assert plan == PackingGrid(2, 8)
    # a batch that does not fit the planned grid gets the rows it needs (another shape)
    assert _packed(batcher, np.arange(8), rows=8, grid=PackingGrid(2, 8)).shape == (4, 8)
    with pytest.raises(ValueError, match="do not include it"):
        PackingBatcher(_packing_features([3]), ("input_ids",), max_width=8)


def test_plan_grid_trades_row_width_against_packing():
    # sentences of 20-40 tokens; rows up to 128
    lengths = np.random.default_rng(4).integers(20, 41, size=256)
    batcher = PackingBatcher(_packing_features(lengths), ("input_ids", "attention_mask"), 128)
    batches = [np.arange(i, i + 32) for i in range(0, 256, 32)]

    def rows_needed(indices: np.ndarray, width: int) -> int:
        return first_fit_decreasing(batcher.lengths[indices], width)[2]

    def computed(width: int) -> int:
        return width * max(rows_needed(b, width) for b in batches)

    tight = PackedLayout(batcher).plan(batches, batcher.lengths)  # computed tokens only
    assert computed(tight.width) == min(computed(w) for w in (48, 64, 80, 96, 112, 128))
    cheap = PackedLayout(batcher, width_cost=64).plan(batches, batcher.lengths)
    assert cheap.width < tight.width and cheap.width % 16 == 0 and cheap.width >= 40
    for grid in (tight, cheap):  # every batch fits the planned grid
        assert all(rows_needed(b, grid.width) <= grid.rows for b in batches)
        assert _packed(batcher, batches[0], 32, grid=grid).shape == (grid.rows, grid.width)
    assert PackedLayout(batcher).plan(batches, batcher.lengths, multiple=8).rows % 8 == 0


def test_balanced_plan_covers_each_feature_once():
    lengths = np.random.default_rng(3).integers(1, 50, size=23)
    plan = balanced_plan(lengths, 5)
    assert sorted(np.concatenate(plan).tolist()) == list(range(23))
    assert [len(b) for b in plan] == [5, 5, 5, 5, 3]


def test_sampler_micro_batches_only_reorder_within_a_batch():
    """Which features form each step depends on (seed, epoch, lengths, global batch size) only:
    gradient accumulation deals a batch into balanced micro-batches without changing it."""
    lengths = np.random.default_rng(4).integers(3, 80, size=203)
    whole = LengthGroupedSampler(lengths, 32, 3, balance_tokens=True).epoch(1)
    micro = LengthGroupedSampler(lengths, 32, 3, balance_tokens=True, micro_batches=4).epoch(1)
    assert [sorted(b.tolist()) for b in whole] == [sorted(b.tolist()) for b in micro]
    quarters = [lengths[b[i : i + 8]].sum() for b in micro if len(b) == 32 for i in (0, 8, 16, 24)]
    assert np.ptp(quarters) < 0.1 * np.mean(quarters)


def test_fill_grid_covers_each_feature_once_and_fits_the_grid():
    from flaxtrainer.batching.layouts import fill_grid

    lengths = np.random.default_rng(6).integers(1, 40, size=97)
    grid = PackingGrid(4, 48)
    batches = fill_grid(lengths, grid)
    assert sorted(np.concatenate(batches).tolist()) == list(range(97))
    for batch in batches:  # first-fit decreasing over a batch stays within the grid's rows
        assert first_fit_decreasing(lengths[batch], grid.width)[2] <= grid.rows
    used = sum(lengths[b].sum() for b in batches[:-1]) / (len(batches[:-1]) * 4 * 48)
    assert used > 0.9  # filled grids: little padding
    assert fill_grid(np.zeros(0, np.int64), grid) == []


def test_segment_numbers_count_from_each_row_start():
    from flaxtrainer.batching.batchers import segment_numbers

    rows, starts = np.array([2, 0, 2, 1, 0, 2]), np.array([5, 3, 0, 0, 0, 9])
    assert segment_numbers(rows, starts).tolist() == [2, 2, 1, 1, 1, 3]
    assert segment_numbers(np.zeros(0, np.int64), np.zeros(0, np.int64)).tolist() == []
