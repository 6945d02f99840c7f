"""Document context (FLERT): context tokens come from the sentence's own document, carry no
label, own no word, fit the row, and leave predictions one per word; end to end on the CLI."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
from pathlib import Path

import datasets
import numpy as np
import pytest

from flaxtrainer.cli.job_data import context_size
from flaxtrainer.cli.parser import UserError
from flaxtrainer.config.job_args import DataArguments
from flaxtrainer.data import load_token_classification_data
from flaxtrainer.tasks import TokenClassificationTask
from flaxtrainer.tasks.context import Context

IGNORE = -100
# Document A: five sentences ("1996-08-22" and "Blackburn" are several word pieces), then B.
DOC_A = [
    (["EU", "rejects", "German", "call", "."], ["B-ORG", "O", "B-MISC", "O", "O"]),
    (["Peter", "Blackburn"], ["B-PER", "I-PER"]),
    (["BRUSSELS", "1996-08-22"], ["B-LOC", "O"]),
    (["The", "European", "Commission", "said", "on", "Thursday"],
     ["O", "B-ORG", "I-ORG", "O", "O", "O"]),
    (["Germany", "imports", "sheep", "from", "Britain"], ["B-LOC", "O", "O", "O", "B-LOC"]),
]  # fmt: skip
DOC_B = [
    (["Rome", "is", "sunny", "today"], ["B-LOC", "O", "O", "O"]),
    (["Mary", "agreed", "."], ["B-PER", "O", "O"]),
    (["Paris", "too"], ["B-LOC", "O"]),
]
SENTENCES = DOC_A + DOC_B
DOC_OF = [0] * len(DOC_A) + [1] * len(DOC_B)


def conll_text(documents) -> str:
    lines = []
    for doc in documents:
        lines += ["-DOCSTART- -X- O", ""]
        for words, tags in doc:
            lines += [f"{w} NN {t}" for w, t in zip(words, tags)] + [""]
    return "\n".join(lines) + "\n"


def pieces(tokenizer, words):
    """Token ids and word ids of one sentence, without special tokens, straight from the
    tokenizer (independent of flaxtrainer's alignment)."""
    enc = tokenizer(words, is_split_into_words=True, add_special_tokens=False)
    return list(enc["input_ids"]), list(enc.word_ids())


def word_start_flags(word_ids):
    return [i == 0 or w != word_ids[i - 1] for i, w in enumerate(word_ids)]


def expected_context(tokenizer, sentences, i, first, end, left_size, right_size):
    """The longest run of at most left_size tokens ending just before sentence i, and of at most
    right_size tokens starting just after it, within [first, end), never cutting a word."""
    before_ids, before_starts, after_ids, after_starts = [], [], [], []
    for j in range(first, i):
        ids, wids = pieces(tokenizer, sentences[j])
        before_ids += ids
        before_starts += word_start_flags(wids)
    for j in range(i + 1, end):
        ids, wids = pieces(tokenizer, sentences[j])
        after_ids += ids
        after_starts += word_start_flags(wids)
    n = len(before_ids)
    k_left = max(k for k in range(min(n, left_size) + 1) if k == 0 or before_starts[n - k])
    k_right = max(
        k
        for k in range(min(len(after_ids), right_size) + 1)
        if k == len(after_ids) or after_starts[k]
    )
    return before_ids[n - k_left :], after_ids[:k_right]


def split_row(feature):
    """(left context, own tokens, right context) of a one-window feature's input ids."""
    ids = list(feature["input_ids"][1:-1])
    words = feature["word_ids"][1:-1]
    own = np.flatnonzero(words >= 0)
    a, b = int(own[0]), int(own[-1]) + 1
    return ids[:a], ids[a:b], ids[b:]


@pytest.fixture
def conll_dataset(tmp_path):
    path = tmp_path / "train.conll"
    path.write_text(conll_text([DOC_A, DOC_B]), encoding="utf-8")
    dsd, names = load_token_classification_data(train_file=path)
    return dsd["train"], names


def test_docstart_context_is_the_documents_neighbours(conll_dataset, wordpiece_tokenizer):
    tok = wordpiece_tokenizer
    dataset, names = conll_dataset
    assert dataset["document_id"] == DOC_OF
    task = TokenClassificationTask(names, tok, max_seq_length=64, context_size=16)
    features = task.prepare(dataset)
    assert [f["example_index"] for f in features] == list(range(len(SENTENCES)))
    words = [w for w, _ in SENTENCES]
    bounds = {0: (0, len(DOC_A)), 1: (len(DOC_A), len(SENTENCES))}
    label2id = {name: i for i, name in enumerate(names)}
    lefts, rights = [], []
    for i, feature in enumerate(features):
        assert feature["input_ids"][0] == tok.cls_token_id
        assert feature["input_ids"][-1] == tok.sep_token_id
        left, own, right = split_row(feature)
        own_ids, own_words = pieces(tok, words[i])
        assert own == own_ids
        first, end = bounds[DOC_OF[i]]
        want_left, want_right = expected_context(tok, words, i, first, end, 8, 8)
        assert (left, right) == (want_left, want_right), f"sentence {i}"
        lefts.append(len(left))
        rights.append(len(right))
        # Context positions: no label, no word, no prediction.
        n_left = len(left)
        context = np.r_[1 : 1 + n_left, 1 + n_left + len(own) : len(feature["input_ids"]) - 1]
        assert np.all(feature["labels"][context] == IGNORE)
        assert np.all(feature["word_ids"][context] == -1)
        assert not feature["prediction_mask"][context].any()
        # The sentence's own labels: each word's tag on its first piece, as without context.
        labelled = feature["labels"] != IGNORE
        starts = 1 + n_left + np.flatnonzero(word_start_flags(own_words))
        assert np.flatnonzero(labelled).tolist() == starts.tolist()
        tags = [label2id[t] for t in SENTENCES[i][1]]
        assert feature["labels"][labelled].tolist() == tags
    # Both document edges: no context across -DOCSTART-, and context elsewhere.
    assert lefts[0] == lefts[len(DOC_A)] == 0
    assert rights[len(DOC_A) - 1] == rights[-1] == 0
    assert all(lefts[1 : len(DOC_A)]) and all(rights[: len(DOC_A) - 1])
    assert any(0 < n < 8 for n in lefts + rights)  # some context stops at a document edge

    # Each word is predicted exactly once, from its own first piece: predict the token id.
    outputs = [{"predictions": f["input_ids"].copy()} for f in features]
    predicted, _ = task.word_predictions(dataset, features, outputs)
    for i, sentence in enumerate(words):
        ids, wids = pieces(tok, sentence)
        first_piece = [ids[wids.index(j)] for j in range(len(sentence))]
        assert predicted[i].tolist() == first_piece


def test_context_size_zero_changes_nothing(conll_dataset, wordpiece_tokenizer):
    dataset, names = conll_dataset
    plain = TokenClassificationTask(names, wordpiece_tokenizer).prepare(dataset)
    off = TokenClassificationTask(names, wordpiece_tokenizer, context_size=0).prepare(dataset)
    assert len(plain) == len(off)
    for a, b in zip(plain, off):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_context_cost_is_logged_per_split(conll_dataset, wordpiece_tokenizer, caplog):
    dataset, names = conll_dataset
    plain = TokenClassificationTask(names, wordpiece_tokenizer).prepare(dataset)
    task = TokenClassificationTask(names, wordpiece_tokenizer, context_size=16)
    with caplog.at_level(logging.INFO, logger="flaxtrainer.tasks.token_classification"):
        features = task.prepare(dataset)
    before = sum(len(f["input_ids"]) for f in plain) / len(dataset)
    after = sum(len(f["input_ids"]) for f in features) / len(dataset)
    assert after > before
    lines = [r.getMessage() for r in caplog.records if "tokens per sentence" in r.getMessage()]
    assert lines == [
        f"context (context_size=16): {before:.1f} -> {after:.1f} tokens per sentence "
        f"({len(dataset)} sentences)."
    ]


def test_context_fills_only_the_room_the_sentence_leaves(wordpiece_tokenizer):
    tok = wordpiece_tokenizer
    long = [f"w{i}" for i in range(3)] + "a b c d e f g h i j k l m n".split()
    sentences = [["hello", "world", "again"], long, ["john", "smith", "said", "so"]]
    data = {"tokens": sentences, "document_id": [7, 7, 7]}
    n_long = len(pieces(tok, long)[0])
    max_len = n_long + 2 + 3  # room for 3 context tokens beside the long sentence
    task = TokenClassificationTask(["O"], tok, max_seq_length=max_len, context_size=8, stride=2)
    features = task.prepare(data)
    assert all(len(f["input_ids"]) <= max_len for f in features)
    left, own, right = split_row(features[1])
    assert own == pieces(tok, long)[0]  # the sentence whole, in one row
    # 3 tokens of room: the right side takes at most half (1), the left side the rest (2).
    assert left == pieces(tok, sentences[0])[0][-2:]
    assert right == pieces(tok, sentences[2])[0][:1]

    # Too long for one row: windows; left context only in the first, right only in the last.
    task = TokenClassificationTask(["O"], tok, max_seq_length=12, context_size=8, stride=2)
    features = task.prepare(data)
    windows = [f for f in features if f["example_index"] == 1]
    assert len(windows) > 2
    for k, f in enumerate(windows):
        assert len(f["input_ids"]) <= 12
        words = np.flatnonzero(f["word_ids"] >= 0)
        left_n = int(words[0]) - 1
        right_n = len(f["input_ids"]) - 2 - int(words[-1])
        assert (left_n == 0 or k == 0) and (right_n == 0 or k == len(windows) - 1)
    room_last = 12 - 2 - int(np.sum(windows[-1]["word_ids"] >= 0))
    assert room_last > 0 and right_n == min(room_last, 4)
    outputs = [{"predictions": f["input_ids"].copy()} for f in features]
    predicted, _ = task.word_predictions(data, features, outputs)
    ids, wids = pieces(tok, long)
    assert predicted[1].tolist() == [ids[wids.index(j)] for j in range(len(long))]


def test_fit_splits_room_and_never_cuts_words():
    # Left: 6 tokens, words start at 0, 2, 3 (counts kept from the end: 6, 4, 3); right: 5
    # tokens, words start at 0, 1, 4 (kept from the start: 1, 4, 5).
    context = Context(
        left=np.arange(6, dtype=np.int32),
        right=np.arange(10, 15, dtype=np.int32),
        left_cuts=np.array([0, 3, 4, 6]),
        right_cuts=np.array([0, 1, 4, 5]),
    )
    assert [len(side) for side in context.fit(100)] == [6, 5]
    assert [len(side) for side in context.fit(8)] == [4, 4]
    assert [len(side) for side in context.fit(5)] == [4, 1]
    assert [len(side) for side in context.fit(2)] == [0, 1]
    assert [len(side) for side in context.fit(8, left=False)] == [0, 5]
    assert [len(side) for side in context.fit(8, right=False)] == [6, 0]
    left, right = context.fit(5)
    assert left.tolist() == [2, 3, 4, 5] and right.tolist() == [10]


def test_without_boundaries_neighbours_are_used_with_one_warning(wordpiece_tokenizer, caplog):
    tok = wordpiece_tokenizer
    words = [w for w, _ in SENTENCES]
    dataset = datasets.Dataset.from_dict({"tokens": words})
    task = TokenClassificationTask(["O"], tok, max_seq_length=64, context_size=16)
    with caplog.at_level(logging.WARNING):
        first = task.prepare(dataset)
        task.prepare(dataset)  # a second split: still one warning
    warnings = [r for r in caplog.records if "no document boundaries" in r.getMessage()]
    assert len(warnings) == 1
    # The whole file is one document: context crosses where -DOCSTART- would have been.
    n = len(DOC_A)
    left, _, right = split_row(first[n])
    assert (left, right) == expected_context(tok, words, n, 0, len(words), 8, 8)
    assert left and right

    caplog.clear()
    with_ids = datasets.Dataset.from_dict({"tokens": words, "document_id": DOC_OF})
    fresh = TokenClassificationTask(["O"], tok, max_seq_length=64, context_size=16)
    with caplog.at_level(logging.WARNING):
        features = fresh.prepare(with_ids)
    assert not [r for r in caplog.records if "no document boundaries" in r.getMessage()]
    assert split_row(features[n])[0] == []


def test_context_size_must_not_be_negative(wordpiece_tokenizer):
    with pytest.raises(ValueError, match="context_size must be an integer >= 0, got -1"):
        TokenClassificationTask(["O"], wordpiece_tokenizer, context_size=-1)
    with pytest.raises(UserError, match="--context_size must be an integer >= 0, got -4"):
        context_size(DataArguments(context_size=-4), {})
    # Not given: the saved model's (evaluation-only runs), else off.
    assert context_size(DataArguments(), {"context_size": 32}) == 32
    assert context_size(DataArguments(), {}) == 0
    assert context_size(DataArguments(context_size=0), {"context_size": 32}) == 0


# -- end to end ---------------------------------------------------------------------------------


def _cli_helpers():
    """tests/cli/conftest.py's tiny BERT builder and corpus maker (loaded by path: the
    `conftest` module name is taken by this folder's own)."""
    path = Path(__file__).resolve().parents[1] / "cli" / "conftest.py"
    spec = importlib.util.spec_from_file_location("cli_conftest_for_context", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Records(logging.Handler):
    """Collects records (the CLI's "flaxtrainer" logger does not propagate to caplog)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.slow
def test_cli_run_with_context_writes_the_same_predictions_format(tmp_path):
    from flaxtrainer.cli.main import main
    from flaxtrainer.outputs.results import read_predictions, read_task_file

    helpers = _cli_helpers()
    model = helpers.build_tiny_bert(tmp_path / "model")
    train = helpers.make_sentences(24, 0)
    test = helpers.make_sentences(9, 2)
    files = {}
    for name, sentences in (("train", train), ("test", test)):
        docs = [sentences[i : i + 4] for i in range(0, len(sentences), 4)]
        files[name] = tmp_path / f"{name}.conll"
        files[name].write_text(conll_text(docs), encoding="utf-8")

    def run(out: Path, *extra: str) -> str:
        argv = [
            "--model_name_or_path", str(model), "--output_dir", str(out),
            "--train_file", str(files["train"]), "--test_file", str(files["test"]),
            "--do_train", "--do_predict", "--num_train_epochs", "1",
            "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "2",
            "--learning_rate", "1e-3", "--save_steps", "0", "--max_seq_length", "32",
            "--disable_tqdm", "--report_to", "none", *extra,
        ]  # fmt: skip
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            assert main(argv) == 0
        return stdout.getvalue()

    handler = _Records()
    task_logger = logging.getLogger("flaxtrainer.tasks.token_classification")

    def context_logs() -> list[tuple[float, float]]:
        """(tokens per sentence without, with context) of each split's log line."""
        found = [r.args for r in handler.records if "tokens per sentence" in r.msg]
        handler.records.clear()
        return [(before, after) for _, before, after, _ in found]

    task_logger.addHandler(handler)
    try:
        run(tmp_path / "plain")
        assert context_logs() == []
        run(tmp_path / "context", "--context_size", "16")
        logged = context_logs()  # train and test splits
        assert len(logged) == 2 and all(after > before for before, after in logged)
        # Predicting with the trained model, no flag: the saved context_size is used.
        predict = [
            "--model_name_or_path", str(tmp_path / "context"), "--test_file", str(files["test"]),
            "--output_dir", str(tmp_path / "context_predict"), "--do_predict",
            "--per_device_eval_batch_size", "2", "--disable_tqdm", "--report_to", "none",
        ]  # fmt: skip
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(predict) == 0
        assert context_logs() == logged[1:]
    finally:
        task_logger.removeHandler(handler)
    plain = read_predictions(tmp_path / "plain" / "test_predictions.txt")
    with_context = read_predictions(tmp_path / "context" / "test_predictions.txt")
    assert len(with_context) == len(plain) == len(test)
    labels = set(read_task_file(tmp_path / "context")["label_names"])
    for rows, plain_rows, (words, tags) in zip(with_context, plain, test):
        assert (
            [r[:2] for r in rows]
            == [r[:2] for r in plain_rows]
            == list(map(list, zip(words, tags)))
        )
        assert all(len(r) == 3 and r[2] in labels for r in rows)
    saved = read_task_file(tmp_path / "context")
    assert saved["context_size"] == 16 and "context_size" not in saved["task_kwargs"]
    assert read_task_file(tmp_path / "plain")["context_size"] == 0

    code = main(["--model_name_or_path", str(model), "--output_dir", str(tmp_path / "bad"),
                 "--train_file", str(files["train"]), "--do_train", "--context_size", "-1"])  # fmt: skip
    assert code == 2
