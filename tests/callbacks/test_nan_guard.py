"""TerminateOnNaN stops a diverging run at a logging step, without saving the bad state."""

import math
import os

from training.toy import ToyTagger, ToyTask, make_dataset

from flaxtrainer import FlaxTrainer
from flaxtrainer.callbacks import TerminateOnNaN


def test_stops_a_run_whose_loss_becomes_non_finite(make_args, caplog):
    guard = TerminateOnNaN()
    args = make_args(
        learning_rate=1e10,
        max_grad_norm=0.0,
        max_steps=50,
        logging_steps=1,
        save_strategy="steps",
        save_steps=1,
        pad_to_max_length=True,
    )
    trainer = FlaxTrainer(
        ToyTagger(), ToyTask(), args, train_dataset=make_dataset(40), callbacks=[guard]
    )
    with caplog.at_level("INFO", logger="flaxtrainer"):
        out = trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert out.global_step == guard.stopped_at < 50
    assert not math.isfinite(losses[-1]) and all(math.isfinite(x) for x in losses[:-1])
    assert f"step {guard.stopped_at}" in guard.message
    stops = [r.getMessage() for r in caplog.records if "by TerminateOnNaN" in r.getMessage()]
    assert stops == [f"Training stopped at step {guard.stopped_at} of 50 by {guard.message}"]
    saved = sorted(
        int(s) for s in os.listdir(os.path.join(args.output_dir, "checkpoints", "latest"))
    )
    assert saved == list(range(1, guard.stopped_at))  # every step but the one found non-finite
