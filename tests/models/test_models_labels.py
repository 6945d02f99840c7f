"""Which labels a loaded model gets, and when its classifier is newly initialised."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from flax import nnx

from flaxtrainer.models import from_pretrained

CHECKPOINT_LABELS = {0: "O", 1: "B-PER", 2: "I-PER"}


def _new_head_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "new classifier" in r.getMessage()]


@pytest.fixture
def token_checkpoint(make_checkpoint):
    return make_checkpoint("bert")


def _head(model) -> np.ndarray:
    return np.asarray(model.classifier.kernel[...])


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"num_labels": 3},
        {"id2label": CHECKPOINT_LABELS},
        {"label2id": {"O": 0, "B-PER": 1, "I-PER": 2}},
    ],
)
def test_agreeing_request_keeps_checkpoint_head(kwargs, token_checkpoint, caplog):
    expected = token_checkpoint.torch_model.classifier.weight.detach().numpy().T
    with caplog.at_level(logging.INFO, logger="flaxtrainer"):
        model = from_pretrained(token_checkpoint.path, **kwargs)
    assert _new_head_lines(caplog) == []
    assert model.config.id2label == CHECKPOINT_LABELS
    assert model.config.label2id == {"O": 0, "B-PER": 1, "I-PER": 2}
    np.testing.assert_allclose(_head(model), expected, atol=1e-7)


@pytest.mark.parametrize(
    ("kwargs", "labels"),
    [
        ({"num_labels": 5}, ("LABEL_0", "LABEL_1", "LABEL_2", "LABEL_3", "LABEL_4")),
        ({"id2label": {"0": "O", "1": "B-LOC", "2": "I-LOC"}}, ("O", "B-LOC", "I-LOC")),
    ],
)
def test_conflicting_request_reinitialises_head(kwargs, labels, token_checkpoint, caplog):
    with caplog.at_level(logging.INFO, logger="flaxtrainer"):
        model = from_pretrained(
            token_checkpoint.path, rngs=nnx.Rngs(3), classifier_init="hf", **kwargs
        )
    lines = _new_head_lines(caplog)
    assert len(lines) == 1
    assert "[O, B-PER, I-PER]" in lines[0] and "requested" in lines[0]
    assert model.config.labels == labels
    assert _head(model).shape == (32, len(labels))
    assert np.abs(_head(model)).max() < 0.2  # HF-style small normal init, not the checkpoint's


def test_inconsistent_label_arguments_are_rejected(token_checkpoint):
    with pytest.raises(ValueError, match="num_labels=2 but 3 labels"):
        from_pretrained(token_checkpoint.path, num_labels=2, id2label=CHECKPOINT_LABELS)
    with pytest.raises(ValueError, match="disagree"):
        from_pretrained(
            token_checkpoint.path,
            id2label=CHECKPOINT_LABELS,
            label2id={"O": 1, "B-PER": 0, "I-PER": 2},
        )
    with pytest.raises(ValueError, match="without gaps"):
        from_pretrained(token_checkpoint.path, id2label={0: "O", 2: "B-PER"})


def test_base_checkpoint_without_labels_defaults_like_transformers(make_checkpoint, caplog):
    ckpt = make_checkpoint("bert", head="base", id2label=None, label2id=None)
    with caplog.at_level(logging.INFO, logger="flaxtrainer"):
        model = from_pretrained(ckpt.path, num_labels=4)
    assert len(_new_head_lines(caplog)) == 1
    assert model.config.labels == ("LABEL_0", "LABEL_1", "LABEL_2", "LABEL_3")
