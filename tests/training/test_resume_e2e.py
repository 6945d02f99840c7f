"""End to end, in real processes: a run killed with SIGKILL, or stopped with SIGTERM, resumes
to the same final parameters and loss history as the uninterrupted run, bitwise (CPU, float32
throughout: orbax restores the arrays in their saved dtype), and TensorBoard shows every step
once. And the exported final model (the best checkpoint's, with load_best_model_at_end) loads
in flaxtrainer and in PyTorch transformers with the same logits.

Each run is ``tests/training/resume_worker.py`` (a 2-layer, 32-wide BERT with dropout, 10 steps, a
checkpoint every 2) in its own Python process; they share a JAX compilation cache, so only the
first one compiles. Those runs take about 20 s each on 2 cores, so the two kill/resume tests are
marked slow; tests/training/test_interrupt_resume.py has the fast in-process equivalents.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from . import resume_worker as worker

WORKER = Path(worker.__file__)
STEPS, SAVE_STEPS, STOP_AT = 10, 2, 5  # 4 steps per epoch: the stop is inside epoch 2
TIMEOUT = 300


class Run:
    """One worker process: its arguments, output files and captured stderr."""

    def __init__(self, root: Path, name: str, output_dir: Path, *extra: str) -> None:
        self.output_dir = output_dir
        self.result = root / f"{name}.json"
        self.stderr_path = root / f"{name}.stderr"
        cmd = [sys.executable, str(WORKER), "--output_dir", str(output_dir)]
        cmd += ["--result", str(self.result), "--max_steps", str(STEPS)]
        cmd += ["--save_steps", str(SAVE_STEPS), *extra]
        env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(root / "jax-cache")}
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                cmd, stdout=subprocess.DEVNULL, stderr=stderr, env=env, cwd=WORKER.parent
            )

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait(self) -> int:
        try:
            return self.proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail(f"worker timed out; stderr:\n{self.stderr[-3000:]}")

    def wait_until_paused(self) -> None:
        marker = self.output_dir / worker.PAUSED_FILE
        deadline = time.monotonic() + TIMEOUT
        while not marker.exists():
            if self.proc.poll() is not None:
                pytest.fail(f"worker exited with {self.proc.returncode}:\n{self.stderr[-3000:]}")
            if time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail("worker never reached the pause step")
            time.sleep(0.05)

    def outputs(self) -> tuple[dict, dict[str, np.ndarray]]:
        code = self.wait()
        assert code == 0, self.stderr[-3000:]
        with np.load(self.result.with_suffix(".npz")) as params:
            return json.loads(self.result.read_text()), dict(params)


def _steps(output_dir: Path) -> list[int]:
    latest = output_dir / "checkpoints" / "latest"
    return sorted(int(p.name) for p in latest.iterdir() if p.name.isdigit())


def _assert_same_run(result, params, reference) -> None:
    ref_result, ref_params = reference
    assert result["global_step"] == STEPS
    assert [h["step"] for h in result["logs"]] == list(range(1, STEPS + 1))
    assert result["logs"] == ref_result["logs"]  # loss, lr, grad norm, epoch: every float bitwise
    assert result["training_loss"] == ref_result["training_loss"]
    assert params.keys() == ref_params.keys()
    for name, value in params.items():
        np.testing.assert_array_equal(value, ref_params[name], err_msg=name)


def _tensorboard_losses(logdir: Path) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars("train/loss")]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("resume-e2e")


@pytest.fixture(scope="module")
def reference(root):
    """The uninterrupted run: (result, params), and its output_dir."""
    run = Run(root, "reference", root / "reference")
    return run.outputs(), run.output_dir


@pytest.mark.slow
def test_sigkill_then_resume_is_bitwise_exact(root, reference):
    (ref_result, ref_params), ref_dir = reference
    output_dir = root / "killed"
    killed = Run(root, "killed", output_dir, "--pause_at", str(STOP_AT))
    killed.wait_until_paused()
    killed.proc.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL
    assert not killed.result.exists()
    assert _steps(output_dir) == [2, 4]  # step 5 was lost with the process
    # What a save killed half-way leaves: a temporary folder, to be ignored and removed.
    partial = output_dir / "checkpoints" / "latest" / "6.orbax-checkpoint-tmp"
    shutil.copytree(output_dir / "checkpoints" / "latest" / "4", partial)
    (partial / "commit_success.txt").unlink()

    resumed = Run(root, "resumed-kill", output_dir, "--resume_from_checkpoint", "latest")
    result, params = resumed.outputs()
    assert result["start_step"] == 4
    assert not partial.exists() and "did not finish" in resumed.stderr
    _assert_same_run(result, params, (ref_result, ref_params))
    # TensorBoard: each step once, the same curve as the uninterrupted run.
    assert _tensorboard_losses(output_dir / "runs") == _tensorboard_losses(ref_dir / "runs")


@pytest.mark.slow
def test_sigterm_saves_exits_143_and_resume_is_bitwise_exact(root, reference):
    output_dir = root / "terminated"
    release = root / "terminated.release"
    run = Run(root, "terminated", output_dir, "--pause_at", str(STOP_AT), "--release", str(release))
    run.wait_until_paused()
    run.proc.send_signal(signal.SIGTERM)
    release.touch()  # the step ends, then the signal is acted on
    assert run.wait() == 128 + signal.SIGTERM
    checkpoint = output_dir / "checkpoints" / "latest" / str(STOP_AT)
    assert _steps(output_dir) == [2, 4, STOP_AT]  # 5 is no save step: saved for the signal
    err = run.stderr
    assert "Received SIGTERM" in err
    assert (
        f"interrupted by SIGTERM after step {STOP_AT}. Checkpoint to resume from: {checkpoint}"
        in err
    )
    assert "--resume_from_checkpoint latest" in err and "Traceback" not in err
    assert not run.result.exists()

    resumed = Run(root, "resumed-term", output_dir, "--resume_from_checkpoint", "latest")
    result, params = resumed.outputs()
    assert result["start_step"] == STOP_AT
    _assert_same_run(result, params, reference[0])


def test_exported_model_is_the_best_and_loads_in_flax_and_pytorch(tmp_path):
    """In-process: train with load_best_model_at_end, then load the export both ways."""
    import jax.numpy as jnp
    import torch
    from flax import nnx
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from flaxtrainer.callbacks import Callback
    from flaxtrainer.models import from_pretrained

    class Snapshots(Callback):
        def __init__(self):
            self.params = {}

        def on_save(self, trainer, checkpoint_dir):
            graphdef, _, rest = nnx.split(trainer.model, nnx.Param, ...)
            model = nnx.merge(graphdef, trainer.train_state.params, rest)
            self.params[trainer.state.global_step] = worker.params_of(model)

    snapshots = Snapshots()
    output_dir = tmp_path / "out"
    trainer = worker.make_trainer(
        output_dir,
        max_steps=4,
        save_steps=1,
        eval_steps=1,
        callbacks=[snapshots],
        dropout=0.0,  # compiles faster; dropout is the kill/resume tests' business
        load_best_model_at_end=True,
        metric_for_best_model="loss",
        greater_is_better=True,  # the *highest* loss: an early step, so best != last
        report_to="none",
    )
    trainer.train()
    best = trainer.state.best_global_step
    assert best is not None and best < 4 and sorted(snapshots.params) == [1, 2, 3, 4]

    for name in ("config.json", "model.safetensors", "tokenizer.json", "trainer_state.json"):
        assert (output_dir / name).is_file(), name
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and state["best_global_step"] == best

    model = from_pretrained(output_dir)
    assert model.config.labels == worker.LABELS
    exported = worker.params_of(model)
    assert exported.keys() == snapshots.params[best].keys()
    for key, value in exported.items():  # float32 all the way: the best weights, bitwise
        np.testing.assert_array_equal(value, snapshots.params[best][key], err_msg=key)
    assert any(not np.array_equal(v, snapshots.params[4][k]) for k, v in exported.items())

    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    words = [w for w, _ in worker.sentences(4, seed=9)]
    batch = tokenizer(words, is_split_into_words=True, padding=True, return_tensors="np")
    flax_logits = np.asarray(
        model(
            jnp.asarray(batch["input_ids"]),
            attention_mask=jnp.asarray(batch["attention_mask"]),
            token_type_ids=jnp.asarray(batch["token_type_ids"]),
        )
    )
    torch_model = AutoModelForTokenClassification.from_pretrained(output_dir).eval()
    assert torch_model.config.id2label == dict(enumerate(worker.LABELS))
    with torch.no_grad():
        torch_logits = torch_model(**{k: torch.tensor(v) for k, v in batch.items()}).logits
    real = batch["attention_mask"] == 1
    np.testing.assert_allclose(flax_logits[real], torch_logits.numpy()[real], atol=1e-4)
    assert np.abs(flax_logits[real]).max() > 0.1  # a trained head, not zeros
