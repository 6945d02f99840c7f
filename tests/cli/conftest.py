"""Fixtures for the command-line tests: a tiny random BERT with its own small WordPiece
vocabulary, and tiny NER/POS corpora written as CoNLL, JSON lines, CSV and CoNLL-U files."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENTITY_TYPES = ("PER", "LOC", "ORG")
NAMES = {
    "PER": ["John", "Mary", "Anna", "Peter", "Smith", "Lee"],
    "LOC": ["Paris", "Berlin", "Rome", "Texas", "York"],
    "ORG": ["Google", "Acme", "Reuters", "Apple"],
}
FILLER = ["the", "a", "visited", "met", "in", "at", "works", "for", "said", "today", "and", "."]
POS = {"the": "DT", "a": "DT", "visited": "VBD", "met": "VBD", "in": "IN", "at": "IN",
       "works": "VBZ", "for": "IN", "said": "VBD", "today": "NN", "and": "CC", ".": "."}  # fmt: skip


def make_sentences(n: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """`n` random sentences of words and IOB2 tags (1-2 entities each, some two words long)."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(n):
        words: list[str] = []
        tags: list[str] = []
        for _ in range(rng.randint(1, 2)):
            words += rng.sample(FILLER[:-1], rng.randint(1, 3))
            tags += ["O"] * (len(words) - len(tags))
            kind = rng.choice(ENTITY_TYPES)
            for j in range(rng.randint(1, 2)):
                words.append(rng.choice(NAMES[kind]))
                tags.append(("B-" if j == 0 else "I-") + kind)
        words.append(".")
        tags.append("O")
        sentences.append((words, tags))
    return sentences


def pos_tags(words: list[str]) -> list[str]:
    return [POS.get(w, "NNP") for w in words]


def write_conll(path: Path, sentences, with_tags: bool = True) -> Path:
    lines = []
    for words, tags in sentences:
        for word, tag in zip(words, tags):
            lines.append(f"{word}\t{tag}" if with_tags else word)
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_json(path: Path, sentences) -> Path:
    """A JSON array of {"tokens": [...], "ner_tags": [...]} objects."""
    rows = [{"tokens": words, "ner_tags": tags} for words, tags in sentences]
    path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return path


def write_csv(path: Path, sentences) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["tokens", "ner_tags"])
        for words, tags in sentences:
            writer.writerow([json.dumps(words), json.dumps(tags)])
    return path


def write_conllu(path: Path, sentences) -> Path:
    lines = []
    for i, (words, _) in enumerate(sentences):
        lines.append(f"# sent_id = {i}")
        lines.append(f"# text = {' '.join(words)}")
        for j, (word, tag) in enumerate(zip(words, pos_tags(words)), 1):
            lines.append(f"{j}\t{word}\t{word.lower()}\t{tag}\t{tag}\t_\t0\troot\t_\t_")
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def build_tiny_bert(folder: Path) -> Path:
    """A random 2-layer, 32-wide BERT (token classification) + a WordPiece tokenizer."""
    from flax import nnx
    from transformers import BertTokenizerFast

    from flaxtrainer.models import BertConfig, BertForTokenClassification, save_pretrained

    folder.mkdir(parents=True, exist_ok=True)
    words = sorted({w for names in NAMES.values() for w in names} | set(FILLER))
    pieces = sorted({c for w in words for c in w} | {f"##{c}" for w in words for c in w})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *pieces]
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab=str(vocab_file), do_lower_case=False)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    model = BertForTokenClassification(config, rngs=nnx.Rngs(0))
    save_pretrained(model, folder, tokenizer)
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert") / "model")


@pytest.fixture(scope="session")
def ner_files(tmp_path_factory) -> dict[str, Path]:
    """train/dev/test as CoNLL, the same as JSON/CSV/CoNLL-U, and an unlabeled test file."""
    folder = tmp_path_factory.mktemp("ner-data")
    train, dev, test = make_sentences(48, 0), make_sentences(12, 1), make_sentences(10, 2)
    return {
        "train": write_conll(folder / "train.conll", train),
        "validation": write_conll(folder / "dev.conll", dev),
        "test": write_conll(folder / "test.conll", test),
        "train_json": write_json(folder / "train.json", train),
        "validation_csv": write_csv(folder / "dev.csv", dev),
        "test_unlabeled": write_conll(folder / "test_words.conll", test, with_tags=False),
        "train_conllu": write_conllu(folder / "train.conllu", train),
        "validation_conllu": write_conllu(folder / "dev.conllu", dev),
        "test_conllu": write_conllu(folder / "test.conllu", test),
    }


def fast_flags(output_dir: Path, model: Path) -> list[str]:
    """Flags of a seconds-long run: tiny model, one epoch, one padded shape (one compile)."""
    return [
        "--model_name_or_path", str(model),
        "--output_dir", str(output_dir),
        "--per_device_train_batch_size", "2",
        "--per_device_eval_batch_size", "2",
        "--num_train_epochs", "1",
        "--learning_rate", "1e-3",
        "--logging_steps", "2",
        "--save_steps", "0",
        "--max_seq_length", "32",
        "--pad_to_max_length",
        "--disable_tqdm",
    ]  # fmt: skip
