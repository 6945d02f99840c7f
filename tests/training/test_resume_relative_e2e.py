"""The README's resume recipe with a relative --output_dir, in real processes: a run in
``./out`` killed with SIGKILL, then the same command plus ``--resume_from_checkpoint latest``
from the same directory, ends with the uninterrupted run's parameters, bitwise (orbax needs
absolute paths; the checkpointer resolves them). tests/training/test_resume_e2e.py has the absolute-path
variants; tests/training/test_stops_and_outputs.py the fast in-process ones."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from . import resume_worker as worker

WORKER = Path(worker.__file__)
STEPS, SAVE_STEPS, STOP_AT = 10, 2, 5
TIMEOUT = 300


def _start(cwd: Path, name: str, *extra: str) -> tuple[subprocess.Popen, Path, Path]:
    result = cwd / f"{name}.json"
    stderr_path = cwd / f"{name}.stderr"
    cmd = [sys.executable, str(WORKER), "--output_dir", "out", "--result", str(result)]
    cmd += ["--max_steps", str(STEPS), "--save_steps", str(SAVE_STEPS), *extra]
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(cwd.parent / "jax-cache")}
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr, env=env, cwd=cwd)
    return proc, result, stderr_path


def _finish(proc: subprocess.Popen, result: Path, stderr: Path) -> tuple[dict, dict]:
    try:
        code = proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"worker timed out:\n{stderr.read_text()[-3000:]}")
    assert code == 0, stderr.read_text()[-3000:]
    with np.load(result.with_suffix(".npz")) as params:
        return json.loads(result.read_text()), dict(params)


@pytest.mark.slow
def test_sigkill_in_a_relative_output_dir_then_resume_latest(tmp_path):
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    reference_dir.mkdir()
    killed_dir.mkdir()
    ref_result, ref_params = _finish(*_start(reference_dir, "run"))

    proc, result, stderr = _start(killed_dir, "run", "--pause_at", str(STOP_AT))
    marker = killed_dir / "out" / worker.PAUSED_FILE
    deadline = time.monotonic() + TIMEOUT
    while not marker.exists():
        assert proc.poll() is None, stderr.read_text()[-3000:]
        assert time.monotonic() < deadline, "worker never reached the pause step"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL

    resumed, params = _finish(*_start(killed_dir, "resumed", "--resume_from_checkpoint", "latest"))
    assert resumed["start_step"] == 4  # not a fresh start: the checkpoint was usable
    assert resumed["global_step"] == STEPS
    assert resumed["logs"] == ref_result["logs"]
    assert params.keys() == ref_params.keys()
    for name, value in params.items():
        np.testing.assert_array_equal(value, ref_params[name], err_msg=name)
