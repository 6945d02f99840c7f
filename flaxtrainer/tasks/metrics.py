"""Word-level metrics: seqeval for chunks (NER, chunking), tag accuracy for POS."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from flaxtrainer.tasks.schemes import TaggingScheme

_AVERAGES = ("micro avg", "macro avg", "weighted avg")


def seqeval_metrics(
    y_true: Sequence[Sequence[str]],
    y_pred: Sequence[Sequence[str]],
    *,
    scheme: TaggingScheme | None = None,
    mode: str | None = None,
    entity_level: bool = True,
) -> dict[str, float]:
    """``precision, recall, f1`` (micro over entities), ``accuracy`` (words) and, with
    ``entity_level``, ``{TYPE}_precision/_recall/_f1/_support``.

    ``mode=None`` (or ``"default"``) is seqeval's conlleval-compatible default, which reads the
    B-/I-/E-/S- prefixes leniently; tags go through ``scheme.default_mode_tags`` first, so BILOU's
    L-/U- are read as E-/S- and IO's plain tags as I- (the scheme's chunks, not seqeval's guess).
    ``mode="strict"`` reads chunks with the scheme's seqeval class, so only exact, well-formed
    chunks count.
    """
    kwargs = {}
    if mode == "strict":
        if scheme is None or scheme.seqeval is None:
            name = "no scheme" if scheme is None else f"the {scheme.name} scheme"
            raise ValueError(
                f"Strict seqeval mode needs a tagging scheme that seqeval knows, not {name}; "
                "use the default mode (mode=None) or a scheme such as IOB2 or IOBES."
            )
        kwargs = {"mode": "strict", "scheme": scheme.seqeval}
    elif mode not in (None, "default"):
        raise ValueError(f"seqeval mode must be None/'default' or 'strict', got {mode!r}.")
    y_true, y_pred = [list(s) for s in y_true], [list(s) for s in y_pred]
    # imported here: seqeval.metrics imports scikit-learn and SciPy (see schemes.entity_spans)
    from seqeval.metrics import accuracy_score, classification_report

    accuracy = float(accuracy_score(y_true, y_pred))  # of the tags as given
    if mode != "strict" and scheme is not None:
        y_true = [scheme.default_mode_tags(s) for s in y_true]
        y_pred = [scheme.default_mode_tags(s) for s in y_pred]
    with warnings.catch_warnings():
        # Tags that are not chunk tags at all (a wrong scheme) are the task's to report.
        warnings.filterwarnings("ignore", message=".* seems not to be NE tag", category=UserWarning)
        report = classification_report(y_true, y_pred, output_dict=True, zero_division=0, **kwargs)
    micro = report["micro avg"]
    metrics = {
        "precision": float(micro["precision"]),
        "recall": float(micro["recall"]),
        "f1": float(micro["f1-score"]),
        "accuracy": accuracy,
    }
    if entity_level:
        for entity, scores in report.items():
            if entity in _AVERAGES:
                continue
            metrics[f"{entity}_precision"] = float(scores["precision"])
            metrics[f"{entity}_recall"] = float(scores["recall"])
            metrics[f"{entity}_f1"] = float(scores["f1-score"])
            metrics[f"{entity}_support"] = float(scores["support"])
    return metrics


def tag_accuracy_metrics(
    y_true: Sequence[Sequence[str]], y_pred: Sequence[Sequence[str]], *, per_tag: bool = True
) -> dict[str, float]:
    """``accuracy`` over words and, with ``per_tag``, ``{TAG}_accuracy`` (the share of words
    whose gold tag is TAG that got TAG) and ``{TAG}_support``."""
    gold = np.array([t for s in y_true for t in s], dtype=object)
    pred = np.array([t for s in y_pred for t in s], dtype=object)
    if gold.shape != pred.shape:
        raise ValueError(f"{len(gold)} gold tags but {len(pred)} predicted tags.")
    correct = gold == pred
    metrics = {"accuracy": float(correct.mean()) if len(gold) else 0.0}
    if per_tag:
        for tag in sorted(set(gold.tolist())):
            of_tag = gold == tag
            metrics[f"{tag}_accuracy"] = float(correct[of_tag].mean())
            metrics[f"{tag}_support"] = float(of_tag.sum())
    return metrics
