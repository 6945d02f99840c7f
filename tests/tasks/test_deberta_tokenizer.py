"""Word -> piece label alignment with DeBERTa-v3's SentencePiece (Unigram + Metaspace) tokenizer.

The tokenizer is transformers' own `DebertaV2TokenizerFast`, built offline from a small Unigram
vocabulary written here in the SentencePiece convention: `▁` marks a piece that starts a word
(`▁Hunter`), word-internal pieces have none (`bridge`), single characters back off everything,
and a word whose start has no `▁x` piece begins with `▁` on its own, as with the real
128k-piece vocabulary. transformers adds the normaliser, the Metaspace pre-tokenizer (prefix
`▁` before every pre-split word) and the `[CLS] ... [SEP]` template, exactly as for
microsoft/deberta-v3-base.
"""

from __future__ import annotations

import datasets
import numpy as np
import pytest

from flaxtrainer.tasks import TokenClassificationTask

LABELS = ["B-LOC", "B-PER", "I-LOC", "I-PER", "O"]
SENTENCES = [
    (["John", "lives", "in", "Hunterbridge", "."], ["B-PER", "O", "O", "B-LOC", "O"]),
    (["Angela", "Merkel", "visited", "Tegucigalpa"], ["B-PER", "I-PER", "O", "B-LOC"]),
    (["the", "cat", "sat", "in", "Zürich"], ["O", "O", "O", "O", "B-LOC"]),
]
SPECIALS = ["[PAD]", "[CLS]", "[SEP]", "[UNK]"]  # ids 0-3 as in deberta-v3's spm.model
WORD_PIECES = [
    "▁the", "▁cat", "▁sat", "▁in", "▁John", "▁lives", "▁Hunter", "bridge", "▁.", "▁Angela",
    "▁Mer", "kel", "▁visit", "ed", "▁Z", "rich", "gal", "pa",
]  # fmt: skip
CHARACTERS = sorted(set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPRSTUVWXYZ.,"))  # no Q, no ü


def unigram_vocab() -> list[tuple[str, float]]:
    """(piece, log-probability) pairs: words beat their spelling, `▁` alone is a fallback."""
    return (
        [(s, 0.0) for s in SPECIALS]
        + [(p, -3.0 - 0.01 * i) for i, p in enumerate(WORD_PIECES)]
        + [("▁", -4.0)]
        + [(c, -6.0) for c in CHARACTERS]
        + [("[MASK]", 0.0)]  # deberta-v3 keeps [MASK] at the end of the vocabulary
    )


@pytest.fixture(scope="module")
def deberta_tokenizer():
    from transformers import DebertaV2TokenizerFast

    tokenizer = DebertaV2TokenizerFast(vocab=unigram_vocab())
    assert tokenizer.is_fast and tokenizer.unk_token_id == 3 and tokenizer.pad_token_id == 0
    return tokenizer


def make_dataset(sentences):
    return datasets.Dataset.from_dict(
        {"tokens": [w for w, _ in sentences], "tags": [t for _, t in sentences]},
        features=datasets.Features(
            {
                "tokens": datasets.Sequence(datasets.Value("string")),
                "tags": datasets.Sequence(datasets.ClassLabel(names=LABELS)),
            }
        ),
    )


def reference_labels(tokenizer, words, tags, label_all_tokens):
    """transformers' run_ner alignment through the tokenizer's own word_ids()."""
    enc = tokenizer(words, is_split_into_words=True)
    labels, previous = [], None
    for word in enc.word_ids():
        if word is None:
            labels.append(-100)
        elif word != previous:
            labels.append(LABELS.index(tags[word]))
        else:
            tag = tags[word]
            inside = "I-" + tag[2:] if tag.startswith("B-") else tag
            labels.append(LABELS.index(inside) if label_all_tokens else -100)
        previous = word
    return enc["input_ids"], labels


def test_pieces_follow_sentencepiece_conventions(deberta_tokenizer):
    pieces = [
        deberta_tokenizer.convert_ids_to_tokens(
            deberta_tokenizer(words, is_split_into_words=True)["input_ids"]
        )
        for words, _ in SENTENCES
    ]
    assert pieces[0] == ["[CLS]", "▁John", "▁lives", "▁in", "▁Hunter", "bridge", "▁.", "[SEP]"]
    # No `▁T` piece: the word starts with `▁` alone, then its spelling.
    assert pieces[1][:8] == ["[CLS]", "▁Angela", "▁Mer", "kel", "▁visit", "ed", "▁", "T"]
    assert pieces[1][-3:] == ["gal", "pa", "[SEP]"]
    # A character outside the vocabulary becomes [UNK] inside the word.
    assert pieces[2] == ["[CLS]", "▁the", "▁cat", "▁sat", "▁in", "▁Z", "[UNK]", "rich", "[SEP]"]


@pytest.mark.parametrize("label_all_tokens", [False, True])
def test_labels_go_to_the_first_piece_of_each_word(deberta_tokenizer, label_all_tokens):
    task = TokenClassificationTask(LABELS, deberta_tokenizer, label_all_tokens=label_all_tokens)
    assert task.model_input_names == ("input_ids", "attention_mask", "token_type_ids")
    features = task.prepare(make_dataset(SENTENCES))
    assert len(features) == len(SENTENCES)
    for feature, (words, tags) in zip(features, SENTENCES):
        ids, labels = reference_labels(deberta_tokenizer, words, tags, label_all_tokens)
        np.testing.assert_array_equal(feature["input_ids"], ids)
        np.testing.assert_array_equal(feature["labels"], labels)
        np.testing.assert_array_equal(feature["token_type_ids"], np.zeros(len(ids)))
        # Every word's first piece carries its label and is where predictions are read; that
        # piece is the one that starts with the word-boundary marker.
        pieces = deberta_tokenizer.convert_ids_to_tokens(feature["input_ids"])
        firsts = np.flatnonzero(feature["prediction_mask"])
        assert len(firsts) == len(words)
        assert all(pieces[k].startswith("\u2581") for k in firsts), pieces
        np.testing.assert_array_equal(feature["labels"][firsts], [LABELS.index(t) for t in tags])
        rest = np.setdiff1d(np.arange(len(ids)), firsts)
        if not label_all_tokens:
            assert (feature["labels"][rest] == -100).all()


def test_labels_by_hand(deberta_tokenizer):
    B_PER, I_PER, B_LOC, OUT = (LABELS.index(t) for t in ("B-PER", "I-PER", "B-LOC", "O"))
    task = TokenClassificationTask(LABELS, deberta_tokenizer)
    first, second, _ = task.prepare(make_dataset(SENTENCES))
    # [CLS] ▁John ▁lives ▁in ▁Hunter bridge ▁. [SEP]
    assert first["labels"].tolist() == [-100, B_PER, OUT, OUT, B_LOC, -100, OUT, -100]
    # [CLS] ▁Angela ▁Mer kel ▁visit ed ▁ T e g u c i gal pa [SEP]
    assert second["labels"].tolist() == [-100, B_PER, I_PER, -100, OUT, -100, B_LOC] + [-100] * 9
    assert first["word_ids"].tolist() == [-1, 0, 1, 2, 3, 3, 4, -1]


def test_saved_tokenizer_reloads_identically(deberta_tokenizer, tmp_path):
    from transformers import AutoTokenizer

    deberta_tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert type(reloaded).__name__ == type(deberta_tokenizer).__name__
    task = TokenClassificationTask(LABELS, deberta_tokenizer)
    again = TokenClassificationTask(LABELS, reloaded)
    for a, b in zip(task.prepare(make_dataset(SENTENCES)), again.prepare(make_dataset(SENTENCES))):
        np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
        np.testing.assert_array_equal(a["labels"], b["labels"])
