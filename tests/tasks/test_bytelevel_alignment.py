"""Word alignment with a ModernBERT-style tokenizer: byte-level BPE in a generic
`PreTrainedTokenizerFast` with [CLS]/[SEP]/[PAD]/[MASK]/[UNK], built offline."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from flaxtrainer.tasks import TokenClassificationTask
from flaxtrainer.tasks.alignment import check_tokenizer

CORPUS = [
    "the cat sat on the mat in New York",
    "Angela Merkel visited Paris and London",
    "hello world , the weather is fine .",
] * 5
SPECIALS = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
LABELS = ["B-LOC", "B-PER", "I-LOC", "I-PER", "O"]
SENTENCES = [
    (["cat", "Angela", "Merkel", "visited", "Tegucigalpa"], ["O", "B-PER", "I-PER", "O", "B-LOC"]),
    (["New", "Yorkshire", "cat", "sat", "."], ["B-LOC", "I-LOC", "O", "O", "O"]),
    (["Paris"], ["B-LOC"]),
]


def _modernbert_style_tokenizer(add_prefix_space: bool) -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.BPE(unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(
        CORPUS,
        trainers.BpeTrainer(
            vocab_size=300,
            special_tokens=SPECIALS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[(t, backend.token_to_id(t)) for t in ("[CLS]", "[SEP]")],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "attention_mask"],
    )


def _dataset(sentences) -> datasets.Dataset:
    return datasets.Dataset.from_dict(
        {"tokens": [w for w, _ in sentences], "tags": [t for _, t in sentences]},
        features=datasets.Features(
            {
                "tokens": datasets.Sequence(datasets.Value("string")),
                "tags": datasets.Sequence(datasets.ClassLabel(names=LABELS)),
            }
        ),
    )


def test_labels_go_on_each_words_first_piece():
    tokenizer = _modernbert_style_tokenizer(add_prefix_space=True)
    check_tokenizer(tokenizer)
    task = TokenClassificationTask(LABELS, tokenizer)
    features = task.prepare(_dataset(SENTENCES))
    assert len(features) == len(SENTENCES)
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    multi_piece = 0
    for feature, (words, tags) in zip(features, SENTENCES):
        encoding = tokenizer(words, is_split_into_words=True)
        word_ids = encoding.word_ids()
        np.testing.assert_array_equal(feature["input_ids"], encoding["input_ids"])
        assert feature["input_ids"][0] == cls_id and feature["input_ids"][-1] == sep_id
        assert "token_type_ids" not in feature
        expected, previous = [], None
        for word in word_ids:
            first = word is not None and word != previous
            expected.append(LABELS.index(tags[word]) if first else -100)
            previous = word
        np.testing.assert_array_equal(feature["labels"], expected)
        labelled = [word_ids[i] for i in np.flatnonzero(feature["labels"] != -100)]
        assert labelled == list(range(len(words)))  # one label per word, in order
        multi_piece += sum(word_ids.count(w) > 1 for w in range(len(words)))
    assert multi_piece >= 2  # e.g. "Tegucigalpa" and "Yorkshire" split into several pieces


def test_prefix_space_encodes_words_as_in_running_text():
    """With the prefix space a pre-split word gets the pieces it has inside running text
    (what the model saw in pre-training); without it, those of a text-initial word."""
    text = "the cat sat"

    def pieces(tokenizer):
        split = tokenizer(text.split(), is_split_into_words=True, add_special_tokens=False)
        running = tokenizer(text, add_special_tokens=False)
        return split["input_ids"], running["input_ids"]

    split, running = pieces(_modernbert_style_tokenizer(add_prefix_space=True))
    assert split[1:] == running[1:]  # "cat", "sat" as in running text
    split, running = pieces(_modernbert_style_tokenizer(add_prefix_space=False))
    assert split[1:] != running[1:]


def test_tokenizer_without_prefix_space_is_refused():
    with pytest.raises(ValueError, match="add_prefix_space"):
        TokenClassificationTask(LABELS, _modernbert_style_tokenizer(add_prefix_space=False))


def test_load_tokenizer_gives_a_usable_modernbert_style_tokenizer(tmp_path):
    from flaxtrainer.cli.job import load_tokenizer

    _modernbert_style_tokenizer(add_prefix_space=False).save_pretrained(tmp_path)
    check_tokenizer(load_tokenizer(str(tmp_path)))
