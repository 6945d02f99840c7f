"""Length buckets, the pure resumable sampler, and evaluation plans."""

import numpy as np
import pytest

from flaxtrainer.batching import Batcher, LengthGroupedSampler, bucket_widths, eval_plan


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
    assert set(batch.arrays) == {"input_ids", "attention_mask", "labels"}
    np.testing.assert_array_equal(batch.indices, [2, 1, 0, -1])
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
