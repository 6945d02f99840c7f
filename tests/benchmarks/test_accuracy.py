"""`benchmarks/accuracy.py`: grid parsing, the summary statistics, and one tiny end-to-end run.

The end-to-end test runs the real harness (which runs the real CLI in a child process) on a
2-layer random BERT with the MiniLM tokenizer and 16 W-NUT sentences; nothing checks a score's
quality, only that what is reported is what the run wrote.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"


def _load(name: str):
    module_spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module  # dataclasses look their module up there
    module_spec.loader.exec_module(module)
    return module


accuracy = _load("accuracy")


def test_parse_datasets_and_configs():
    assert accuracy.parse_datasets("wnut16, wnut16-conll:1000") == [
        ("wnut16", None),
        ("wnut16-conll", 1000),
    ]
    with pytest.raises(ValueError, match="unknown dataset 'conll03'"):
        accuracy.parse_datasets("conll03")
    with pytest.raises(ValueError, match="positive integer"):
        accuracy.parse_datasets("wnut16:0")
    configs = accuracy.parse_configs("hf", ["ctx=--context_size 64", "crf=--crf"])
    assert configs == {
        "hf": ("--classifier_init", "hf"),
        "ctx": ("--context_size", "64"),
        "crf": ("--crf",),
    }
    with pytest.raises(ValueError, match="unknown config 'nope'"):
        accuracy.parse_configs("nope", [])
    with pytest.raises(ValueError, match="NAME=FLAGS"):
        accuracy.parse_configs("", ["--crf"])


def test_summary_is_mean_and_sample_std_per_cell():
    runs = [
        {"data": "d", "epochs": 1, "config": "a", "seed": s, "eval_f1": f, "wall_s": 10.0}
        | {"eval_loss": loss}
        for s, f, loss in ((1, 0.6, 0.3), (2, 0.5, 0.2), (3, 0.7, 0.1))
    ]
    runs += [
        {"data": "d", "epochs": 1, "config": "b", "seed": 1, "eval_f1": 0.2, "wall_s": 4.0},
        {"data": "d", "epochs": 1, "config": "b", "seed": 2, "error": "exit code 1", "wall_s": 1},
    ]
    a, b = accuracy.summarise(runs)
    assert (a["config"], a["seeds"], a["mean"]) == ("a", [1, 2, 3], pytest.approx(0.6))
    assert a["std"] == pytest.approx(0.1)  # sqrt(((0)^2 + 0.1^2 + 0.1^2) / 2)
    assert a["mean_eval_loss"] == pytest.approx(0.2)
    assert (b["seeds"], b["std"]) == ([1], None)  # the failed run is not averaged
    assert b["mean_eval_loss"] is None  # the run wrote no loss
    table = accuracy.markdown_table([a, b]).splitlines()
    assert table[2].startswith("| d | None | 1 | a | 0.600 | 0.100 | 1: 0.600, 2: 0.500")
    assert table[2].endswith("| 0.2000 | 10 |")
    assert "| 0.200 | - |" in table[3] and table[3].endswith("| - | 4 |")


def test_run_command_puts_config_flags_last():
    cell = accuracy.Cell("wnut16", 100, "hf", 3)
    command = accuracy.run_command(
        "m", ["--dataset_name", "x"], cell, ["--seed", "9"], 2, Path("o")
    )
    assert command[1:3] == ["-m", "flaxtrainer"]
    text = " ".join(command)
    assert "--num_train_epochs 3 --seed 2 --max_train_samples 100 --output_dir o --seed 9" in text
    assert cell.data_label == "wnut16:100"


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer, hidden-32 random BERT saved with the real MiniLM tokenizer (no download)."""
    from flax import nnx
    from transformers import AutoTokenizer

    from flaxtrainer.models import BertConfig, BertForTokenClassification, save_pretrained

    folder = tmp_path_factory.mktemp("tiny_bert")
    config = BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    tokenizer = AutoTokenizer.from_pretrained(accuracy.spec.default_model_dir())
    save_pretrained(BertForTokenClassification(config, rngs=nnx.Rngs(0)), folder, tokenizer)
    return folder


@pytest.mark.slow  # two child processes, one of them a training run: ~30-70 s on 2 cores
def test_end_to_end_on_a_tiny_model(tmp_path, tiny_model_dir):
    env = dict(os.environ)  # one CPU device in the child, as in a real run
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "").replace(
        "--xla_force_host_platform_device_count=8", ""
    )
    out = tmp_path / "study"
    command = [sys.executable, str(BENCH / "accuracy.py"), "--out_dir", str(out)]
    command += ["--model", str(tiny_model_dir), "--configs", "lecun", "--seeds", "5"]
    command += ["--datasets", "wnut16-conll:16", "--max_eval_samples", "16"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr

    document = json.loads((out / "accuracy.json").read_text())
    (run,) = document["runs"]
    run_dir = out / "runs" / "wnut16-conll:16" / "lecun" / "e1-s5"
    written = json.loads((run_dir / "eval_results.json").read_text())
    assert run["eval_f1"] == written["eval_f1"] and 0 <= run["eval_f1"] <= 1
    assert (run["train_samples"], run["eval_samples"]) == (16, 16)
    assert "--classifier_init lecun" in run["command"] and "--seed 5" in run["command"]
    # Without --do_predict there is no test_results.json; everything else but KEPT_FILES is pruned.
    kept = sorted(name for name in accuracy.KEPT_FILES if name != "test_results.json")
    assert sorted(p.name for p in run_dir.iterdir()) == kept
    assert "classifier_init=lecun" in (run_dir / "run.log").read_text()
    (row,) = document["summary"]
    assert row["mean"] == run["eval_f1"] and row["std"] is None
    assert f"| {run['eval_f1']:.3f} |" in (out / "accuracy.md").read_text()

    # The CoNLL files hold the speed benchmark's sentences, read back by flaxtrainer's reader.
    import run as speed_run  # the speed benchmark (benchmarks/ is on sys.path via accuracy)

    from flaxtrainer.data.conll import read_conll

    data = speed_run.load_job_data(None, None)
    raw = read_conll(out / "data" / "wnut16-conll" / "validation.conll")
    assert [list(t) for t in raw.tokens] == data.val_tokens
    assert [list(t) for t in raw.tags] == data.val_tags

    # --resume finds the run done and runs nothing.
    again = subprocess.run(
        [*command, "--resume"], capture_output=True, text=True, env=env, timeout=600
    )
    assert again.returncode == 0, again.stderr
    assert "lecun seed 5 ..." not in again.stdout
    assert len(json.loads((out / "accuracy.json").read_text())["runs"]) == 1
