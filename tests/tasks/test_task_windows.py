"""Long sentences: overlapping windows, one owner per word, stitched back in order."""

import random

import datasets
import numpy as np
import pytest

from flaxtrainer.tasks import PosTaggingTask, TokenClassificationTask
from flaxtrainer.tasks.windows import plan_windows

VOCAB = ["the", "cat", "Hunterbridge", "Tegucigalpa", "sat", "Yorkshire", ",", "Merkel", "on"]


def long_sentence(n_words, seed=0):
    rng = random.Random(seed)
    return [rng.choice(VOCAB) for _ in range(n_words)]


def owner_outputs(features):
    """Synthetic outputs: each token predicts its own word index (as a label id) and scores
    the feature's index, so decode_with_scores shows which window each word came from."""
    outputs = []
    for k, feature in enumerate(features):
        word_ids = feature["word_ids"]
        outputs.append(
            {
                "predictions": np.where(word_ids >= 0, word_ids, 0).astype(np.int32),
                "scores": np.full(len(word_ids), k, np.float32),
            }
        )
    return outputs


@pytest.mark.parametrize("label_all_tokens", [False, True])
def test_thousand_words_with_32_tokens(wordpiece_tokenizer, label_all_tokens):
    n = 1000
    labels = [f"T{j:04d}" for j in range(n)]
    words = long_sentence(n)
    data = {"tokens": [words], "tags": [labels]}
    task = PosTaggingTask(
        labels, wordpiece_tokenizer, max_seq_length=32, label_all_tokens=label_all_tokens
    )
    features = task.prepare(data)
    n_pieces = len(wordpiece_tokenizer(words, is_split_into_words=True)["input_ids"]) - 2
    assert n_pieces > n  # several words split into pieces
    assert len(features) > n_pieces / 30
    trained = np.zeros(n, int)
    for feature in features:
        assert len(feature["input_ids"]) <= 32
        assert feature["input_ids"][0] == wordpiece_tokenizer.cls_token_id
        assert feature["input_ids"][-1] == wordpiece_tokenizer.sep_token_id
        assert feature["example_index"] == 0
        firsts = feature["prediction_mask"]
        # A word is labelled (on its first piece) exactly where its window owns it.
        np.testing.assert_array_equal(feature["labels"][firsts], feature["word_ids"][firsts])
        owned_words = set(feature["word_ids"][firsts].tolist())
        labelled = feature["labels"] != -100
        assert set(feature["word_ids"][labelled].tolist()) == owned_words
        if not label_all_tokens:
            assert labelled.sum() == firsts.sum()
        np.add.at(trained, feature["word_ids"][firsts], 1)
        # Windows hold whole words: a window's words are all of their pieces.
        content = feature["word_ids"][1:-1]
        assert content[0] != -1 and content[-1] != -1
    np.testing.assert_array_equal(trained, 1)  # every word trained exactly once

    outputs = owner_outputs(features)
    decoded = task.decode(None, features, outputs)
    assert decoded == [labels]  # 1,000 words, each once, in order
    # The owning window is the one giving the word the most context.
    with_scores = task.decode_with_scores(None, features, outputs)[0]
    for j in range(n):
        best, best_k = -1.0, None
        for k, feature in enumerate(features):
            pos = np.flatnonzero(feature["word_ids"] == j)
            if len(pos) == 0:
                continue
            content = np.flatnonzero(feature["word_ids"] >= 0)
            left = pos[0] - content[0] if k > 0 else np.inf
            right = content[-1] - pos[-1] if k < len(features) - 1 else np.inf
            if min(left, right) > best:
                best, best_k = min(left, right), k
        assert with_scores[j][1] == best_k


def test_windows_overlap_by_stride(wordpiece_tokenizer):
    words = long_sentence(300, seed=1)
    task = PosTaggingTask(["X"], wordpiece_tokenizer, max_seq_length=64, stride=16)
    features = task.prepare({"tokens": [words], "tags": [["X"] * 300]})
    for a, b in zip(features, features[1:]):
        overlap = set(a["word_ids"][1:-1].tolist()) & set(b["word_ids"][1:-1].tolist())
        pieces = np.isin(b["word_ids"], list(overlap)).sum()
        assert 0 < pieces <= 16


def test_word_longer_than_window_is_clipped_not_dropped(wordpiece_tokenizer, caplog):
    giant = "Tegucigalpa" * 8  # < 100 characters, else WordPiece gives one [UNK]
    words = ["in", giant, "today"]
    task = TokenClassificationTask(["B-LOC", "O"], wordpiece_tokenizer, max_seq_length=16, stride=4)
    data = {"tokens": [words], "tags": [["O", "B-LOC", "O"]]}
    features = task.prepare(data)
    assert "1 word(s) have more subword pieces than fit in max_seq_length=16" in caplog.text
    assert all(len(f["input_ids"]) <= 16 for f in features)
    predictions = [{"predictions": np.where(f["labels"] >= 0, f["labels"], 1)} for f in features]
    assert task.decode(None, features, predictions) == [["O", "B-LOC", "O"]]
    assert task.compute_metrics(data, features, predictions)["f1"] == 1.0


def test_plan_windows_properties():
    rng = np.random.default_rng(0)
    for _ in range(200):
        lengths = rng.integers(1, 6, size=rng.integers(1, 80))
        budget = int(rng.integers(lengths.max(), 30))
        stride = int(rng.integers(0, budget))
        ends = np.cumsum(lengths)
        starts = ends - lengths
        windows, owner = plan_windows(starts, ends, budget, stride)
        covered = np.zeros(len(lengths), int)
        for k, (a, b) in enumerate(windows):
            assert b > a and ends[b - 1] - starts[a] <= budget
            covered[a:b] += 1
            if k:
                assert a > windows[k - 1][0]
                prev_end = ends[windows[k - 1][1] - 1]
                assert a <= windows[k - 1][1]  # no word skipped
                assert prev_end - starts[a] <= stride or a == windows[k - 1][1]
        assert covered.min() >= 1 and windows[-1][1] == len(lengths)
        for j, k in enumerate(owner):
            a, b = windows[k]
            assert a <= j < b


def test_datasets_dataset_roundtrip(wordpiece_tokenizer):
    words = long_sentence(120, seed=3)
    tags = ["O"] * 120
    tags[50] = "B-LOC"
    data = datasets.Dataset.from_dict(
        {"tokens": [words, ["short", "one"]], "tags": [tags, ["O", "O"]]},
        features=datasets.Features(
            {
                "tokens": datasets.Sequence(datasets.Value("string")),
                "tags": datasets.Sequence(datasets.ClassLabel(names=["B-LOC", "O"])),
            }
        ),
    )
    task = TokenClassificationTask(["B-LOC", "O"], wordpiece_tokenizer, max_seq_length=24)
    features = task.prepare(data)
    assert [f["example_index"] for f in features] == sorted(f["example_index"] for f in features)
    outputs = [{"predictions": np.where(f["labels"] >= 0, f["labels"], 0)} for f in features]
    assert task.decode(data, features, outputs) == [tags, ["O", "O"]]
