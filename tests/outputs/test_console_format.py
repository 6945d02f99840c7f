"""The console's view of metrics: the headline numbers of a pass in a fixed order, whatever the
order of the dict, and the short results block (every metric stays in the JSON files)."""

from __future__ import annotations

import logging
import random

from flaxtrainer.outputs.results import (
    evaluation_lines,
    format_metrics,
    headline_names,
    metric_prefixes,
)

NER = {
    "eval_company_precision": 0.1,
    "eval_company_recall": 0.2,
    "eval_company_f1": 0.15,
    "eval_company_support": 20.0,
    "eval_facility_precision": 0.3,
    "eval_precision": 0.6012,
    "eval_recall": 0.6238,
    "eval_f1": 0.6123,
    "eval_accuracy": 0.9394,
    "eval_loss": 0.23154,
    "eval_samples": 240,
    "eval_runtime": 5.12,
    "eval_samples_per_second": 46.875,
    "eval_label_scheme": "IOB2",
}


def shuffled(metrics: dict, seed: int) -> dict:
    items = list(metrics.items())
    random.Random(seed).shuffle(items)
    return dict(items)


def test_the_headline_order_does_not_depend_on_the_dict_order():
    expected = "eval step 40/100 | loss 0.2315 | f1 0.6123 | precision 0.6012 | recall 0.6238 | 46.9 samples/s"
    for seed in range(5):
        assert evaluation_lines(shuffled(NER, seed), "step 40/100") == [expected]


def test_the_metric_for_the_best_model_comes_after_the_loss():
    for best in ("accuracy", "eval_accuracy"):
        assert headline_names(NER, "eval", best) == [
            "loss",
            "accuracy",
            "f1",
            "precision",
            "recall",
        ]
    for best in ("f1", "eval_loss", "loss", "no_such_metric", None):
        assert headline_names(NER, "eval", best) == ["loss", "f1", "precision", "recall"]
    assert headline_names(NER, "eval", "company_f1")[:2] == ["loss", "company_f1"]


def test_accuracy_where_there_is_no_f1():
    pos = {"test_accuracy": 0.91, "test_loss": 0.3, "test_samples": 10, "test_runtime": 1.0}
    assert evaluation_lines(pos) == ["test | loss 0.3000 | accuracy 0.9100"]


def test_several_evaluation_sets_give_one_line_each():
    metrics = {
        **{k.replace("eval_", "eval_dev_"): v for k, v in NER.items()},
        **{
            k.replace("eval_", "eval_ood_"): v / 2
            for k, v in NER.items()
            if k != "eval_label_scheme"
        },
    }
    assert metric_prefixes(metrics) == ["eval_dev", "eval_ood"]
    lines = evaluation_lines(metrics, "step 8/8", best_metric="eval_dev_accuracy")
    assert lines[0].startswith("eval_dev step 8/8 | loss 0.2315 | accuracy 0.9394 | f1 0.6123")
    assert lines[1].startswith("eval_ood step 8/8 | loss 0.1158 | f1 0.3061 | precision")
    assert len(lines) == 2


def test_format_metrics_is_short_and_names_the_file():
    block = format_metrics("eval", shuffled(NER, 1), full=False)
    assert block.splitlines() == [
        "***** eval metrics ***** (all: eval_results.json, or --log_level debug)",
        "  eval: loss 0.2315 | f1 0.6123 | precision 0.6012 | recall 0.6238 | "
        "240 samples | 5.12 s (46.9 samples/s)",
    ]
    train = {
        "train_loss": 0.5,
        "train_runtime": 102.79,
        "train_samples_per_second": 6.2262,
        "train_tokens_per_second": 1234.5,
        "train_steps_per_second": 0.19,
        "padding_efficiency": 0.95,
        "train_samples": 1915,
        "epoch": 0.3333,
    }
    assert format_metrics("train", train, full=False).splitlines()[1] == (
        "  train: loss 0.5000 | 1,915 samples | 103 s (6.2 samples/s, 1,234 tok/s) | epoch 0.33"
    )


def test_format_metrics_lists_everything_at_debug():
    flaxtrainer_logger = logging.getLogger("flaxtrainer")
    level = flaxtrainer_logger.level
    try:
        flaxtrainer_logger.setLevel(logging.DEBUG)
        full = format_metrics("eval", NER)
        flaxtrainer_logger.setLevel(logging.INFO)
        short = format_metrics("eval", NER)
    finally:
        flaxtrainer_logger.setLevel(level)
    assert len(full.splitlines()) == 1 + len(NER)
    assert "  eval_company_precision  = 0.1000" in full.splitlines()
    assert full.splitlines()[1].startswith("  eval_accuracy ")  # sorted, aligned
    assert len(short.splitlines()) == 2
