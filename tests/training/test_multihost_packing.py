"""Packing on several processes: the command line at its defaults on 2 processes x 2 CPU
devices trains like 1 process x 4 devices, and both pack.

Every micro-batch is packed from the global lengths into a grid planned from them
(``flaxtrainer.batching.input_pipeline``), so the rows are those of the single-process run, each process
placing its own sentences; only the summation order of cross-device reductions differs. Dropout
masks are keyed by each token's example id and position (``example_ids``), so they agree too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from cli.conftest import build_tiny_bert, make_sentences, write_conll

from .multihost_launch import cpu_env, launch, wait_all

pytestmark = pytest.mark.slow

TIMEOUT = 420  # seconds per run; a hung collective fails the test instead of stalling CI


def _model(root: Path, dropout: bool) -> Path:
    folder = build_tiny_bert(root / "model")
    if not dropout:
        config_file = folder / "config.json"
        config = json.loads(config_file.read_text())
        config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        config_file.write_text(json.dumps(config, indent=1))
    return folder


def _run(
    root: Path,
    name: str,
    model: Path,
    data: dict[str, Path],
    processes: int,
    devices: int = 4,
    extra: tuple[str, ...] = (),
) -> Path:
    """The CLI at its defaults (but a short run) on ``processes`` x ``devices // processes``
    devices; returns its output directory. Logs in ``root/name/log<pid>.txt``."""
    run_dir = root / name
    run_dir.mkdir()
    out = run_dir / "out"
    env = cpu_env(devices // processes, TOKENIZERS_PARALLELISM="false")
    command = [
        sys.executable, "-m", "flaxtrainer",
        "--model_name_or_path", str(model),
        "--train_file", str(data["train"]),
        "--validation_file", str(data["validation"]),
        "--output_dir", str(out),
        "--do_train", "--do_eval",
        "--per_device_train_batch_size", "4",
        "--num_train_epochs", "3",
        "--max_seq_length", "32",
        "--logging_steps", "1",
        "--disable_tqdm",
        "--report_to", "none",
        *extra,
    ]  # fmt: skip
    wait_all(launch(command, run_dir, processes, env), TIMEOUT, name)
    return out


def _weights(out: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(out / "model.safetensors"))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("packing-data")
    return {
        "train": write_conll(folder / "train.conll", make_sentences(61, 0)),
        "validation": write_conll(folder / "dev.conll", make_sentences(23, 1)),
    }


@pytest.mark.parametrize("dropout", [False, True])
def test_two_processes_pack_and_train_like_one(tmp_path, data, dropout):
    model = _model(tmp_path, dropout)
    single = _run(tmp_path, "single", model, data, processes=1)
    double = _run(tmp_path, "double", model, data, processes=2)

    for name in ("single", "double"):
        log = (tmp_path / name / "log0.txt").read_text()
        assert "Training batches: packed" in log, log[-3000:]

    want, have = _weights(single), _weights(double)
    assert want.keys() == have.keys()
    for key, value in want.items():
        if "key.bias" in key:
            continue  # attention is invariant to it: its updates are Adam-scaled rounding noise
        np.testing.assert_allclose(have[key], value, rtol=0, atol=2e-5, err_msg=key)

    want_eval = json.loads((single / "eval_results.json").read_text())
    have_eval = json.loads((double / "eval_results.json").read_text())
    assert have_eval["eval_loss"] == pytest.approx(want_eval["eval_loss"], rel=1e-5)
    state = json.loads((double / "trainer_state.json").read_text())
    single_state = json.loads((single / "trainer_state.json").read_text())
    assert state["global_step"] == single_state["global_step"]


def test_one_device_per_process_trains_and_checkpoints(tmp_path, data):
    """2 processes x 1 device (two single-GPU machines): the replicated state must be
    savable (orbax reads every array's shards) and the run equal to 1 process x 2 devices."""
    model = _model(tmp_path, dropout=False)
    extra = ("--save_strategy", "steps", "--save_steps", "4")
    single = _run(tmp_path, "single", model, data, processes=1, devices=2, extra=extra)
    double = _run(tmp_path, "double", model, data, processes=2, devices=2, extra=extra)
    for out in (single, double):
        steps = sorted(int(p.name) for p in (out / "checkpoints" / "latest").iterdir())
        assert 4 in steps, steps
    want, have = _weights(single), _weights(double)
    for key, value in want.items():
        if "key.bias" not in key:
            np.testing.assert_allclose(have[key], value, rtol=0, atol=2e-5, err_msg=key)
