"""The multi-host pieces that one process can check: starting (or not starting) the runtime,
settings, cluster detection, data shards, and the row plan that rebuilds single-process batches
from each process's own rows. tests/training/test_multihost.py runs real multi-process training."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from training.toy import ToyTask, make_dataset

from flaxtrainer import TrainingArguments
from flaxtrainer.batching.batch_format import DEFAULT_PAD_VALUES
from flaxtrainer.batching.batchers import Batcher, PackingBatcher
from flaxtrainer.batching.input_pipeline import Placement, PreparedData
from flaxtrainer.batching.layouts import PackedLayout, PaddedLayout
from flaxtrainer.batching.sampler import LengthGroupedSampler
from flaxtrainer.batching.sharded_data import (
    capacity_levels,
    num_examples,
    shard_bounds,
    shard_dataset,
    together,
)
from flaxtrainer.runtime.distributed import (
    ENV_NUM_PROCESSES,
    ENV_PROCESS_ID,
    allgather_objects,
    check_runtime,
    check_settings,
    decode_object,
    detect_cluster,
    encode_object,
    initialize_distributed,
)
from flaxtrainer.runtime.sharding import assemble_rows, make_mesh, process_rows

CLUSTER_VARS = (
    "SLURM_JOB_ID",
    "SLURM_STEP_NODELIST",
    "SLURM_NTASKS",
    "SLURM_PROCID",
    "SLURM_LOCALID",
    "OMPI_MCA_orte_hnp_uri",
    "KUBERNETES_SERVICE_HOST",
    "FLAXTRAINER_COORDINATOR_ADDRESS",
    "FLAXTRAINER_NUM_PROCESSES",
    "FLAXTRAINER_PROCESS_ID",
    "FLAXTRAINER_LOCAL_DEVICE_IDS",
)


@pytest.fixture
def plain_machine(monkeypatch):
    for name in CLUSTER_VARS:
        monkeypatch.delenv(name, raising=False)
    jax.devices()  # JAX is running, as in any test process


def test_plain_machine_is_a_no_op(plain_machine, monkeypatch):
    info = initialize_distributed()
    assert (info.process_index, info.process_count, info.source) == (0, 1, None)
    assert initialize_distributed(num_processes=1).process_count == 1
    monkeypatch.setenv(ENV_NUM_PROCESSES, "1")
    assert initialize_distributed().source is None
    assert detect_cluster() is None


def test_multi_host_settings_after_jax_started_fail_clearly(plain_machine, monkeypatch):
    with pytest.raises(RuntimeError, match="must run before any other JAX call"):
        initialize_distributed("127.0.0.1:12345", 2, 0)
    monkeypatch.setenv("FLAXTRAINER_COORDINATOR_ADDRESS", "10.0.0.1:1234")
    monkeypatch.setenv(ENV_NUM_PROCESSES, "2")
    monkeypatch.setenv(ENV_PROCESS_ID, "1")
    with pytest.raises(RuntimeError, match="must run before"):
        initialize_distributed()


def test_incomplete_settings_name_what_is_missing(plain_machine):
    with pytest.raises(ValueError, match="coordinator_address.*process_id") as err:
        initialize_distributed(num_processes=2)
    assert "num_processes N" not in str(err.value)


@pytest.mark.parametrize(
    "settings, message",
    [
        (("localhost", None, None), "HOST:PORT"),
        (("host:0", None, None), "HOST:PORT"),
        ((None, 0, None), "num_processes must be an integer >= 1"),
        ((None, 2, 2), "process_id must be below num_processes"),
        ((None, None, -1), "process_id must be an integer >= 0"),
    ],
)
def test_bad_settings_are_named(settings, message):
    with pytest.raises(ValueError, match=message):
        check_settings(*settings)
    coordinator, processes, process = settings
    with pytest.raises(ValueError, match=message):
        TrainingArguments(
            output_dir="out",
            coordinator_address=coordinator,
            num_processes=processes,
            process_id=process,
        )


def test_bad_environment_is_named(plain_machine, monkeypatch):
    monkeypatch.setenv(ENV_PROCESS_ID, "first")
    with pytest.raises(ValueError, match=f"{ENV_PROCESS_ID} must be an integer"):
        initialize_distributed()


def test_slurm_job_of_several_tasks_is_detected(plain_machine, monkeypatch):
    slurm = {
        "SLURM_JOB_ID": "4242",
        "SLURM_STEP_NODELIST": "node[01-02]",
        "SLURM_NTASKS": "1",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
    }
    for name, value in slurm.items():
        monkeypatch.setenv(name, value)
    assert detect_cluster() is None  # one task: nothing to join
    assert initialize_distributed().process_count == 1
    monkeypatch.setenv("SLURM_NTASKS", "2")
    assert detect_cluster() == "slurm"
    with pytest.raises(RuntimeError, match="must run before"):  # it would join the job
        initialize_distributed()


def test_trainer_refuses_multi_host_flags_without_the_runtime(tmp_path):
    check_runtime(TrainingArguments(output_dir=str(tmp_path), num_processes=1, process_id=0))
    with pytest.raises(
        RuntimeError, match="call flaxtrainer.runtime.distributed.initialize_distributed"
    ):
        check_runtime(TrainingArguments(output_dir=str(tmp_path), num_processes=2))


def test_single_process_collectives_are_trivial():
    assert allgather_objects({"a": [1, 2]}) == [{"a": [1, 2]}]

    def fail():
        raise KeyError("bad row")

    with pytest.raises(KeyError, match="bad row"):
        together(fail, "preparing")
    assert together(lambda: 3, "preparing") == 3


# ----------------------------------------------------------------------------------- data
def _same(a, b) -> bool:
    """Equal values of equal types (arrays: dtype, shape and bits; NaN equals NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(a, np.generic):
        return a.dtype == b.dtype and a.tobytes() == b.tobytes()
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and np.isnan(a):
        return np.isnan(b)
    return a == b


def test_gathered_objects_travel_as_json_and_come_back_equal():
    features = ToyTask().prepare(make_dataset(3, seed=1))  # what ShardedBatcher gathers
    value = {
        "features": features,
        "lengths": np.array([[1, 2], [3, 4]], np.int64),
        "mask": np.array([True, False]),
        "scores": np.array([0.5, np.nan], np.float32),
        "scalar": np.int32(7),
        "pair": (1, "two", None),
        "by_id": {3: "x", "__flaxtrainer__": 1.5},
        "inf": float("inf"),
        "error": None,
    }
    data = encode_object(value)
    assert isinstance(data, bytes)
    assert data.decode("utf-8").startswith("{")  # plain JSON text
    assert _same(decode_object(data), value)
    assert not _same(decode_object(encode_object(np.arange(3, dtype=np.int32))), np.arange(3))


def test_gathered_objects_refuse_what_json_cannot_hold():
    with pytest.raises(TypeError, match="cannot send a set"):
        encode_object({"x": {1, 2}})
    with pytest.raises(TypeError, match="cannot send a numpy array of object"):
        encode_object(np.array([object()]))
    import pickle

    with pytest.raises(UnicodeDecodeError):  # a pickle payload is never unpickled
        decode_object(pickle.dumps(object()))


def test_the_package_has_no_pickle_eval_or_exec():
    import re
    from pathlib import Path

    import flaxtrainer

    root = Path(flaxtrainer.__file__).parent
    pattern = re.compile(
        r"^\s*(import pickle|from pickle)|pickle\.loads?\(|(?<![.\w])(eval|exec)\(|yaml\.load\("
        r"|trust_remote_code\s*=\s*True",
        re.MULTILINE,
    )
    found = [
        f"{path.relative_to(root)}: {match.group(0).strip()}"
        for path in sorted(root.rglob("*.py"))
        for match in pattern.finditer(path.read_text("utf-8"))
    ]
    assert found == []


def test_shards_are_contiguous_and_balanced():
    for n, p in [(61, 2), (10, 3), (7, 7), (2, 4)]:
        bounds = shard_bounds(n, p)
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
        sizes = [stop - start for start, stop in bounds]
        assert max(sizes) - min(sizes) <= 1


def test_shard_dataset_keeps_the_kind():
    import datasets

    rows = {"tokens": [["a"], ["b", "c"], ["d"]], "tags": [[0], [1, 0], [0]]}
    ds = datasets.Dataset.from_dict(rows)
    assert num_examples(ds) == num_examples(rows) == num_examples(list(range(3))) == 3
    assert shard_dataset(ds, 1, 3)["tokens"] == [["b", "c"], ["d"]]
    assert shard_dataset(rows, 0, 1) == {"tokens": [["a"]], "tags": [[0]]}
    assert shard_dataset([1, 2, 3], 2, 3) == [3]
    with pytest.raises(TypeError, match="sized dataset"):
        num_examples(iter(rows["tokens"]))


def test_capacity_levels():
    assert capacity_levels(share=4, unit=2, limit=8) == [4, 6, 8]
    assert capacity_levels(share=2, unit=1, limit=16) == [2, 3, 4, 6, 8, 12, 16]
    assert capacity_levels(share=3, unit=3, limit=6) == [3, 6]


def _interleaved_rows(processes: int, devices: int):
    """Row layout of a mesh whose devices alternate between processes (process p holds device
    blocks p, p + processes, ...): harder than contiguous blocks."""

    def positions(num_rows: int) -> list[np.ndarray]:
        block = num_rows // (processes * devices)
        rows = np.arange(num_rows).reshape(processes * devices, block)
        return [rows[p::processes].reshape(-1) for p in range(processes)]

    return positions


def _assemble(blocks, positions, pad_values, segment_name=None):
    """What assemble_rows computes on devices, in numpy: stack the process blocks at their
    rows, then merge each global row from its sources (-1: none; a token no source holds, or a
    row with none: padding)."""
    source = blocks[0].source_rows
    stacked = {}
    for name in blocks[0].arrays:
        parts = [b.arrays[name] for b in blocks]
        capacity = parts[0].shape[-2]
        stacked[name] = np.zeros((*parts[0].shape[:-2], len(parts) * capacity, parts[0].shape[-1]))
        for part, rows in zip(parts, positions(len(parts) * capacity)):
            stacked[name][..., rows, :] = part

    def take(name, k):
        return np.take_along_axis(stacked[name], np.maximum(source[..., k], 0)[..., None], axis=-2)

    out = {name: np.full(take(name, 0).shape, pad_values.get(name, 0)) for name in stacked}
    for k in range(source.shape[-1]):
        held = source[..., k][..., None] >= 0
        if segment_name is not None:
            held = held & (take(segment_name, k) != 0)
        for name in stacked:
            out[name] = np.where(held, take(name, k), out[name])
    return out


def _fake_processes(features, layout_for, split, positions):
    """The single-process data and two fake processes holding ``features[:split]`` and
    ``features[split:]``, as ``InputPipeline.prepare`` builds them."""
    lengths = np.array([len(f["labels"]) for f in features], np.int64)
    full = PreparedData(features, layout_for(features), Placement.single(lengths))
    counts = (split, len(features) - split)
    parts = (features[:split], features[split:])
    fakes = []
    for p, part in enumerate(parts):
        layout = layout_for(part)
        layout.local.example_id_offset = split * p  # as InputPipeline sets it
        placement = Placement(
            lengths, counts, process_index=p, local_devices=2, row_positions=positions
        )
        fakes.append(PreparedData(part, layout, placement))
    return full, fakes


def _plans(full, batch_size=16, accum=2, eval_size=12):
    sampler = LengthGroupedSampler(full.lengths, batch_size, seed=1, balance_tokens=full.packed)
    plans = [(batch, batch_size, (accum,)) for batch in sampler.epoch(0)]
    assert len(plans[-1][0]) < batch_size or any(len(b) < batch_size for b, _, _ in plans)
    train_grid = full.plan([b for b, _, _ in plans], micro_size=batch_size // accum, multiple=4)
    eval_batches, eval_grid = full.eval_plan(eval_size, multiple=4)
    return [(b, r, lead, train_grid) for b, r, lead in plans] + [
        (b, eval_size, (), eval_grid) for b in eval_batches
    ]


def test_process_blocks_rebuild_the_single_process_batches():
    """Padded layout: each of 2 fake processes holds a contiguous slice of the features;
    assembling their blocks gives exactly the single-process batch (row order included) for
    every training batch of an epoch (gradient accumulation, a last partial batch) and every
    eval batch."""
    task = ToyTask()
    features = task.prepare(make_dataset(37, seed=3, max_len=30))
    pads = {"input_ids": 0}
    positions = _interleaved_rows(processes=2, devices=2)
    full, fakes = _fake_processes(
        features,
        lambda fs: PaddedLayout(Batcher(fs, task.model_input_names, (16, 32), pads)),
        15,
        positions,
    )
    capacities = set()
    for indices, rows, leading, grid in _plans(full):
        want = full.batch(indices, rows, leading, grid)
        blocks = [fake.batch(indices, rows, leading, grid) for fake in fakes]
        for block in blocks:
            assert block.shape == want.shape
            assert (block.real_tokens, block.computed_tokens) == (
                want.real_tokens,
                want.computed_tokens,
            )
            np.testing.assert_array_equal(block.indices, want.indices)
            np.testing.assert_array_equal(block.rows, want.rows)
        np.testing.assert_array_equal(blocks[0].source_rows, blocks[1].source_rows)
        got = _assemble(blocks, positions, blocks[0].pad_values)
        assert got.keys() == want.arrays.keys()
        for name, array in want.arrays.items():
            np.testing.assert_array_equal(got[name], array, err_msg=name)
        capacities.add(blocks[0].arrays["input_ids"].shape[-2])
    assert min(capacities) < 16  # blocks smaller than batches


def test_packed_process_blocks_rebuild_the_single_process_batches():
    """Packed layout on 2 fake processes: a micro-batch is packed from the global lengths, so
    rows hold features of both processes; each process builds partial rows with its own
    features, and merging them gives exactly the single-process batch (same rows, segment ids,
    positions, padding), in the planned (single) shape, with no more padding than one process."""
    task = ToyTask()
    features = task.prepare(make_dataset(53, seed=4, max_len=30))
    names = (*task.model_input_names, "attention_mask")
    positions = _interleaved_rows(processes=2, devices=2)
    full, fakes = _fake_processes(
        features,
        lambda fs: PackedLayout(PackingBatcher(fs, names, 32, {"input_ids": 0})),
        20,
        positions,
    )
    shapes, shared = set(), 0
    for indices, rows, leading, grid in _plans(full):
        want = full.batch(indices, rows, leading, grid)
        blocks = [fake.batch(indices, rows, leading, grid) for fake in fakes]
        assert blocks[0].shape == blocks[1].shape == want.shape == (*leading, grid.rows, grid.width)
        shapes.add(want.shape)
        for block in blocks:
            np.testing.assert_array_equal(block.rows, want.rows)
            np.testing.assert_array_equal(block.starts, want.starts)
        np.testing.assert_array_equal(blocks[0].source_rows, blocks[1].source_rows)
        shared += int(((blocks[0].source_rows >= 0).sum(-1) == 2).sum())
        got = _assemble(blocks, positions, blocks[0].pad_values, blocks[0].segment_name)
        assert got.keys() == want.arrays.keys()
        for name, array in want.arrays.items():
            np.testing.assert_array_equal(got[name], array, err_msg=name)
        flat = {k: v.reshape(-1, v.shape[-1]) for k, v in got.items()}
        for index, row, start in zip(want.indices, *want.placements()):
            if index < 0:
                continue
            feature = features[index]
            end = start + len(feature["labels"])
            for name in ("input_ids", "labels"):
                np.testing.assert_array_equal(flat[name][row, start:end], feature[name])
            assert (flat["position_ids"][row, start:end] == np.arange(end - start)).all()
            segment = flat["attention_mask"][row, start:end]
            assert segment.min() == segment.max() > 0
        real = sum(len(features[i]["labels"]) for i in indices)
        assert (flat["attention_mask"] > 0).sum() == real == blocks[0].real_tokens
    assert shared > 0  # rows holding features of both processes were merged
    assert len({s for s in shapes if len(s) == 3}) == 1  # one training shape


def test_assemble_rows_on_devices():
    """The jitted gather: rows in the requested order, padding rows filled, batch sharded;
    partial rows merged token by token by their segment ids."""
    mesh = make_mesh()
    rng = np.random.default_rng(0)
    local = {
        "input_ids": rng.integers(1, 50, (2, 8, 5)).astype(np.int32),
        "labels": rng.integers(0, 3, (2, 8, 5)).astype(np.int32),
    }
    source = np.array([[7, 6, 5, 4, 3, 2, 1, -1], [0, -1, -1, 2, 4, 6, 1, 3]], np.int32)
    pads = {**DEFAULT_PAD_VALUES, "input_ids": 9}
    out = assemble_rows(local, source[..., None], mesh, batch_axis=1, pad_values=pads)
    (rows,) = process_rows(mesh, 8)  # one process holds every row
    np.testing.assert_array_equal(rows, np.arange(8))
    for name, array in local.items():
        want = np.take_along_axis(array, np.maximum(source, 0)[..., None], axis=1)
        pad = 9 if name == "input_ids" else -100
        want = np.where(source[..., None] >= 0, want, pad)
        np.testing.assert_array_equal(np.asarray(out[name]), want)
        assert out[name].sharding.spec == jax.sharding.PartitionSpec(None, "data")
    flat = assemble_rows(
        {"labels": local["labels"][0]}, source[0][:, None], mesh, pad_values=DEFAULT_PAD_VALUES
    )
    np.testing.assert_array_equal(np.asarray(flat["labels"])[:7], local["labels"][0][7:0:-1])
    assert (np.asarray(flat["labels"])[7] == -100).all()

    # Two partial rows per row: row r of the result takes tokens from rows 2r and 2r + 1
    # wherever their segment ids are nonzero; tokens neither holds are padding.
    segments = np.zeros((8, 6), np.int32)
    segments[0::2, :2] = 1  # the first sentence of each row in one partial row
    segments[1::2, 3:5] = 2  # the second in the other; column 2 and 5: padding
    ids = rng.integers(1, 50, (8, 6)).astype(np.int32)
    pairs = np.stack([np.arange(0, 8, 2), np.arange(1, 8, 2)], axis=-1)
    merged = assemble_rows(
        {"attention_mask": segments, "input_ids": ids},
        np.concatenate([pairs, np.full((4, 2), -1)]),
        mesh,
        pad_values={"input_ids": 9},
        segment_name="attention_mask",
    )
    got_ids, got_segments = np.asarray(merged["input_ids"]), np.asarray(merged["attention_mask"])
    np.testing.assert_array_equal(got_ids[:4, :2], ids[0::2, :2])
    np.testing.assert_array_equal(got_ids[:4, 3:5], ids[1::2, 3:5])
    assert (got_ids[:4, [2, 5]] == 9).all() and (got_ids[4:] == 9).all()
    np.testing.assert_array_equal(got_segments[:4], segments[0::2] + segments[1::2])
