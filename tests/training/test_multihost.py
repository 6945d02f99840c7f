"""Multi-host training on one machine: 2 processes x 2 CPU devices train like 1 x 4 devices.

Each run is ``tests/training/multihost_worker.py``: a seeded NER fine-tuning of a tiny BERT with dropout
on, gradient accumulation, two bucket widths, windows for long sentences, evaluation and
checkpoints every 3 steps, TensorBoard on; then evaluate and predict. The 2-process run uses
JAX's distributed runtime (coordinator on 127.0.0.1, gloo CPU collectives); it must give the
single-process results (up to the summation order of cross-device reductions), with only
process 0 writing files outside the orbax checkpoints; a resume of it from its step-3
checkpoint must reproduce it bit for bit.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .multihost_launch import cpu_env, launch, wait_all

pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("multihost_worker.py")
TIMEOUT = 420  # seconds per phase; a hung collective fails the test instead of stalling CI
LEARNING_RATE, MAX_STEPS = 3e-2, 6  # as in the worker
#: Measures of the session (since the process started): a resumed run covers fewer steps.
SESSION_KEYS = ("padding_efficiency", "compiled_shapes", "train_compiled_shapes")


def _launch(
    root: Path, name: str, processes: int, devices: int, resume_from: Path | None = None
) -> tuple[str, list[tuple[subprocess.Popen, Path]]]:
    """Start ``processes`` workers with ``devices`` host devices each, output in ``root/name``."""
    env = cpu_env(
        devices,
        # Shared by the runs: the resumed run reuses the 2-process run's executables.
        JAX_COMPILATION_CACHE_DIR=str(root / "jax-cache"),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    )
    run_dir = root / name
    run_dir.mkdir(parents=True)
    command = [sys.executable, str(WORKER), "--output_dir", str(run_dir / "out")]
    if resume_from is not None:
        command += ["--resume_from", str(resume_from)]
    per_process = ["--result", str(run_dir / "result{pid}.json")]
    return name, launch(command, run_dir, processes, env, per_process)


def _results(launched: tuple[str, list[tuple[subprocess.Popen, Path]]]) -> list[dict[str, Any]]:
    """Wait for the workers (killing all if one hangs); each one's result with its params."""
    name, procs = launched
    wait_all(procs, TIMEOUT, name)
    results = []
    for pid, (_, log) in enumerate(procs):
        path = log.with_name(f"result{pid}.json")
        result = json.loads(path.read_text())
        with np.load(f"{path}.npz") as params:
            result["params"] = {k: params[k] for k in params.files}
        results.append(result)
    return results


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("multihost")
    single = _launch(root, "single", processes=1, devices=4)
    double = _launch(root, "double", processes=2, devices=2)
    out = {"single": _results(single), "double": _results(double), "root": root}
    checkpoint = root / "double" / "out" / "checkpoints" / "latest" / "3"
    out["resumed"] = _results(_launch(root, "resumed", 2, 2, resume_from=checkpoint))
    return out


def _losses(result: dict[str, Any]) -> list[tuple[int, float, float]]:
    return [(e["step"], e["loss"], e["grad_norm"]) for e in result["log_history"] if "loss" in e]


def _evals(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in result["log_history"] if "eval_loss" in e] + [result["eval"]]


def test_runs_are_what_they_claim(runs):
    (single,) = runs["single"]
    assert (single["process_count"], single["device_count"]) == (1, 4)
    for pid, result in enumerate(runs["double"]):
        assert (result["process_index"], result["process_count"]) == (pid, 2)
        assert result["device_count"] == 4
        assert result["start_step"] == 0
    assert [r["start_step"] for r in runs["resumed"]] == [3, 3]
    assert [s for s, _, _ in _losses(single)] == list(range(1, MAX_STEPS + 1))


def test_two_processes_train_like_one(runs):
    """Same loss and gradient-norm history, eval metrics, predictions and final parameters."""
    (single,), (double, _) = runs["single"], runs["double"]
    expected, got = _losses(single), _losses(double)
    assert [s for s, _, _ in got] == [s for s, _, _ in expected]
    np.testing.assert_allclose([x[1:] for x in got], [x[1:] for x in expected], rtol=1e-5)

    for want, have in zip(_evals(single), _evals(double), strict=True):
        assert set(want) == set(have)
        for key, value in want.items():
            if key.endswith("_loss"):
                assert have[key] == pytest.approx(value, rel=1e-5), key
            else:  # counts and scores of identical predictions: exact
                assert have[key] == value, key
    assert double["test"] == pytest.approx(single["test"], rel=1e-5)
    assert double["predictions"] == single["predictions"]
    assert double["best_step"] == single["best_step"]

    assert single["params"].keys() == double["params"].keys()
    for name, want in single["params"].items():
        have = double["params"][name]
        if "['key']['bias']" in name:
            # Attention scores are invariant to the key bias: its gradient is zero up to
            # rounding noise, which Adam scales to steps of up to learning_rate.
            assert np.abs(have - want).max() <= LEARNING_RATE * MAX_STEPS, name
        else:
            np.testing.assert_allclose(have, want, rtol=1e-4, atol=2e-5, err_msg=name)


def test_processes_agree(runs):
    """Every process ends with the same parameters, logs and metrics (bit for bit)."""
    first, second = runs["double"]
    for key in ("log_history", "eval", "test", "predictions", "best_step"):
        assert first[key] == second[key], key
    for name, value in first["params"].items():
        np.testing.assert_array_equal(second["params"][name], value, err_msg=name)


def test_only_process_zero_writes_outside_checkpoints(runs):
    root = runs["root"]
    for name in ("double", "resumed"):
        first, second = runs[name]
        assert [p for p in second["writes"] if not p.startswith("checkpoints")] == []
        written = set(first["writes"])
        for path in ("all_results.json", "trainer_state.json", "model/model.safetensors"):
            assert path in written, path
        assert any(p.startswith("runs/events.out.tfevents") for p in written)
    # One set of TensorBoard event files, as in the single-process run (not one per process).
    events = {
        name: sorted(p.name for p in (root / name / "out" / "runs").glob("events.out.tfevents*"))
        for name in ("single", "double")
    }
    assert len(events["double"]) == len(events["single"]) > 0
    # orbax wrote each process's shards of the same checkpoint.
    state = root / "double" / "out" / "checkpoints" / "latest" / "3" / "state"
    assert sorted(p.name for p in state.glob("ocdbt.process_*")) == [
        "ocdbt.process_0",
        "ocdbt.process_1",
    ]


def test_resume_of_two_processes_is_exact(runs):
    """Resumed at step 3 from the 2-process checkpoint: the same run, bit for bit."""
    for original, resumed in zip(runs["double"], runs["resumed"]):
        for name, value in original["params"].items():
            np.testing.assert_array_equal(resumed["params"][name], value, err_msg=name)
        strip = [
            {k: v for k, v in e.items() if k not in SESSION_KEYS} for e in original["log_history"]
        ]
        again = [
            {k: v for k, v in e.items() if k not in SESSION_KEYS} for e in resumed["log_history"]
        ]
        assert again == strip
        for key in ("eval", "test", "predictions", "best_step"):
            assert resumed[key] == original[key], key
