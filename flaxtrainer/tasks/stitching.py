"""From the model's rows back to words: each word's prediction from the one row that owns it.

A sentence may span several rows (overlapping windows, see :mod:`flaxtrainer.tasks.windows`);
each row's ``prediction_mask`` marks the first pieces of the words it owns and ``word_ids`` says
which word each token belongs to, so the words are put back in order with one prediction each.
With a CRF the rows' predictions are already Viterbi tags (decoded per row over the words the
row owns, in the jitted ``predict_step``); stitching is the same for both heads.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

#: Characters escaped in the markdown of :func:`examples_markdown`.
MARKDOWN_SPECIALS = re.compile(r"[\\`*_{}\[\]()<>#+\-.!|~]")


def stitch_words(
    features: Sequence[dict],
    outputs: Sequence[Mapping[str, np.ndarray]],
    n_examples: int,
    fallback: int,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per example: the label id and score of each word, from the token that owns it.

    A word no row predicts (it yields no subword token) keeps ``fallback`` with score 0. Raises
    ValueError for features of another dataset or a missing example, AssertionError for a word
    owned by two rows.
    """
    if len(features) != len(outputs):
        raise ValueError(f"{len(features)} features but {len(outputs)} outputs.")
    preds: list[np.ndarray | None] = [None] * n_examples
    scores: list[np.ndarray | None] = [None] * n_examples
    seen: list[np.ndarray | None] = [None] * n_examples
    for feature, output in zip(features, outputs):
        i = feature["example_index"]
        if not 0 <= i < n_examples:
            raise ValueError(
                f"A feature of example {i} is not from this {n_examples}-example dataset."
            )
        if preds[i] is None:
            preds[i] = np.full(feature["num_words"], fallback, np.int32)
            scores[i] = np.zeros(feature["num_words"], np.float32)
            seen[i] = np.zeros(feature["num_words"], np.int32)
        mask = np.asarray(feature["prediction_mask"])
        words = feature["word_ids"][mask]
        preds[i][words] = np.asarray(output["predictions"])[mask]
        if "scores" in output:
            scores[i][words] = np.asarray(output["scores"])[mask]
        seen[i][words] += 1
    for i in range(n_examples):
        if preds[i] is None:
            raise ValueError(f"Example {i} has no feature; pass all features of the dataset.")
        if np.any(seen[i] > 1):
            raise AssertionError(f"Example {i}: a word is owned by more than one window.")
    return preds, scores  # type: ignore[return-value]


def examples_markdown(
    words: Sequence[Sequence[str]],
    gold: Sequence[Sequence[str]] | None,
    predicted: Sequence[Sequence[str]],
) -> str:
    """A numbered markdown list, ``word/PREDICTED`` per word; errors in bold with the gold tag."""
    lines = []
    for i, tags in enumerate(predicted):
        marked = []
        for j, (word, tag) in enumerate(zip(words[i], tags)):
            word = MARKDOWN_SPECIALS.sub(r"\\\g<0>", word)
            if gold is not None and gold[i][j] != tag:
                marked.append(f"**{word}/{tag} (gold {gold[i][j]})**")
            else:
                marked.append(f"{word}/{tag}")
        lines.append(f"{i + 1}. " + " ".join(marked))
    return "\n".join(lines)
