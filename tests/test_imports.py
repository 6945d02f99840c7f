"""What a run imports: the training path must not pull in what only evaluation needs.

``seqeval.metrics`` imports scikit-learn and SciPy (1-2 s of CPU at start-up); the tasks import
it where entities are read or scored, so a training-only run never pays for it.
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("sklearn", "scipy", "seqeval.metrics", "torch", "tensorflow")


def test_training_path_does_not_import_evaluation_only_packages():
    code = (
        "import json, sys\n"
        "import flaxtrainer.cli.job, flaxtrainer.tasks, flaxtrainer.training.trainer, flaxtrainer.cli.main\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_scoring_still_finds_seqeval():
    from flaxtrainer.tasks.metrics import seqeval_metrics

    metrics = seqeval_metrics([["B-PER", "I-PER", "O"]], [["B-PER", "I-PER", "O"]])
    assert metrics["f1"] == 1.0 and metrics["accuracy"] == 1.0
