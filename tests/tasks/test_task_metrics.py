"""Metrics equal seqeval called directly, for every scheme and mode; POS accuracy; loss."""

import random
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from seqeval.metrics import (
    accuracy_score,
    classification_report,
    f1_score,
    precision_score,
    recall_score,
)

from flaxtrainer.tasks import (
    SCHEMES,
    ChunkingTask,
    PosTaggingTask,
    TokenClassificationTask,
    get_scheme,
    iob2_to_iobes,
    iobes_to_iob2,
)

TYPES = ["PER", "geo-loc", "ORG"]
WORDS = ["the", "Merkel", "Tegucigalpa", "in", "Hunterbridge", "cat", ",", "Paris"]
SCHEME_NAMES = ["IOB1", "IOB2", "IOE1", "IOE2", "IOBES", "BILOU"]


def random_spans(rng, n):
    """Non-overlapping (start, end, type) chunks, adjacent ones included."""
    spans, i = [], 0
    while i < n:
        if rng.random() < 0.4:
            length = min(rng.randint(1, 3), n - i)
            spans.append((i, i + length, rng.choice(TYPES)))
            i += length
        else:
            i += 1
    return spans


def encode(spans, n, scheme):
    """Chunks -> tags, written from each scheme's definition."""
    tags = ["O"] * n
    for k, (s, e, t) in enumerate(spans):
        after_same = k > 0 and spans[k - 1][1] == s and spans[k - 1][2] == t
        before_same = k + 1 < len(spans) and spans[k + 1][0] == e and spans[k + 1][2] == t
        tags[s:e] = [f"I-{t}"] * (e - s)
        if scheme == "IOB2" or (scheme == "IOB1" and after_same):
            tags[s] = f"B-{t}"
        elif scheme == "IOE2" or (scheme == "IOE1" and before_same):
            tags[e - 1] = f"E-{t}"
        elif scheme in ("IOBES", "BILOU"):
            single, first, last = ("S", "B", "E") if scheme == "IOBES" else ("U", "B", "L")
            if e - s == 1:
                tags[s] = f"{single}-{t}"
            else:
                tags[s], tags[e - 1] = f"{first}-{t}", f"{last}-{t}"
    return tags


def scheme_labels(scheme):
    return sorted(f"{p}-{t}" for p in get_scheme(scheme).prefixes for t in TYPES) + ["O"]


def corpus(scheme, seed, n_sentences=60):
    rng = random.Random(seed)
    labels = scheme_labels(scheme)
    words, gold, pred = [], [], []
    for _ in range(n_sentences):
        n = rng.randint(1, 14)
        words.append([rng.choice(WORDS) for _ in range(n)])
        gold.append(encode(random_spans(rng, n), n, scheme))
        if rng.random() < 0.3:
            pred.append(list(gold[-1]))
        elif rng.random() < 0.5:
            pred.append(encode(random_spans(rng, n), n, scheme))
        else:  # arbitrary tags, possibly breaking the scheme
            pred.append([t if rng.random() < 0.6 else rng.choice(labels) for t in gold[-1]])
    return words, gold, pred, labels


def outputs_for(task, features, word_tags):
    outputs = []
    for feature in features:
        tags = word_tags[feature["example_index"]]
        predictions = np.zeros(len(feature["input_ids"]), np.int32)
        for pos in np.flatnonzero(feature["prediction_mask"]):
            predictions[pos] = task.label2id[tags[feature["word_ids"][pos]]]
        outputs.append(
            {"predictions": predictions, "scores": np.ones(len(predictions), np.float32)}
        )
    return outputs


@pytest.mark.parametrize("mode", [None, "strict"])
@pytest.mark.parametrize("scheme", SCHEME_NAMES)
def test_metrics_equal_seqeval(wordpiece_tokenizer, scheme, mode):
    words, gold, pred, labels = corpus(scheme, seed=SCHEME_NAMES.index(scheme))
    data = {"tokens": words, "tags": gold}
    task = TokenClassificationTask(labels, wordpiece_tokenizer, scheme=scheme, mode=mode)
    features = task.prepare(data)
    metrics = task.compute_metrics(data, features, outputs_for(task, features, pred))

    kwargs = {"mode": "strict", "scheme": SCHEMES[scheme].seqeval} if mode else {}
    y_true, y_pred = gold, pred
    if scheme == "BILOU" and not mode:  # seqeval's default mode knows E-/S-, not L-/U-
        to_iobes = {"L-": "E-", "U-": "S-"}
        y_true, y_pred = (
            [[to_iobes.get(t[:2], t[:2]) + t[2:] for t in s] for s in tags] for tags in (gold, pred)
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = {
            "precision": precision_score(y_true, y_pred, **kwargs),
            "recall": recall_score(y_true, y_pred, **kwargs),
            "f1": f1_score(y_true, y_pred, **kwargs),
            "accuracy": accuracy_score(gold, pred),
        }
        report = classification_report(y_true, y_pred, output_dict=True, **kwargs)
    for entity, scores in report.items():
        if not entity.endswith(" avg"):
            expected.update(
                {
                    f"{entity}_precision": scores["precision"],
                    f"{entity}_recall": scores["recall"],
                    f"{entity}_f1": scores["f1-score"],
                    f"{entity}_support": scores["support"],
                }
            )
    assert metrics == pytest.approx(expected)
    assert 0 < metrics["f1"] < 1  # a non-trivial corpus
    assert {"geo-loc_f1", "PER_support"} <= set(metrics)
    no_types = TokenClassificationTask(
        labels, wordpiece_tokenizer, scheme=scheme, mode=mode, return_entity_level_metrics=False
    )
    assert set(no_types.compute_metrics(data, features, outputs_for(task, features, pred))) == {
        "precision", "recall", "f1", "accuracy",
    }  # fmt: skip


@pytest.mark.parametrize("scheme", SCHEME_NAMES)
def test_scheme_validity(scheme):
    rng = random.Random(7)
    for _ in range(200):
        n = rng.randint(0, 12)
        tags = encode(random_spans(rng, n), n, scheme)
        assert get_scheme(scheme).violations(tags) == [], tags


@pytest.mark.parametrize(
    "scheme, tags, bad",
    [
        ("IOB2", ["O", "I-PER"], [1]),
        ("IOB2", ["B-PER", "I-ORG", "I-ORG"], [1]),
        ("IOB1", ["O", "B-PER"], [1]),
        ("IOE2", ["I-PER", "O"], [1]),
        ("IOE1", ["E-PER", "O"], [1]),
        ("IOBES", ["B-PER", "O", "E-PER"], [1, 2]),
        ("BILOU", ["I-PER"], [0, 1]),
    ],
)
def test_scheme_violations(scheme, tags, bad):
    assert get_scheme(scheme).violations(tags) == bad


def test_broken_gold_tags_warned_once(wordpiece_tokenizer, caplog):
    labels = scheme_labels("IOB2")
    task = TokenClassificationTask(labels, wordpiece_tokenizer)
    data = {
        "tokens": [["the", "cat"], ["in", "Paris"], ["Paris"]],
        "tags": [["O", "I-PER"], ["O", "I-ORG"], ["B-ORG"]],
    }
    task.prepare(data)
    warnings_ = [r for r in caplog.records if "break the IOB2 scheme" in r.getMessage()]
    assert len(warnings_) == 1
    assert "2 gold tag transition(s) in 2 sentence(s)" in warnings_[0].getMessage()
    assert "example 0, word 1: 'O' -> 'I-PER'" in warnings_[0].getMessage()


def test_iob2_iobes_round_trip():
    rng = random.Random(3)
    for _ in range(200):
        n = rng.randint(0, 12)
        spans = random_spans(rng, n)
        assert iob2_to_iobes(encode(spans, n, "IOB2")) == encode(spans, n, "IOBES")
        assert iobes_to_iob2(encode(spans, n, "IOBES")) == encode(spans, n, "IOB2")
    assert iob2_to_iobes(["O", "I-PER", "I-PER", "I-ORG"]) == ["O", "B-PER", "E-PER", "S-ORG"]


def test_pos_accuracy(wordpiece_tokenizer):
    tags = ["DT", "NN", "VB", "."]
    rng = random.Random(1)
    words = [[rng.choice(WORDS) for _ in range(rng.randint(1, 9))] for _ in range(30)]
    gold = [[rng.choice(tags) for _ in s] for s in words]
    pred = [[t if rng.random() < 0.7 else rng.choice(tags) for t in s] for s in gold]
    task = PosTaggingTask(sorted(tags), wordpiece_tokenizer)
    assert task.scheme is None
    data = {"tokens": words, "tags": gold}
    features = task.prepare(data)
    metrics = task.compute_metrics(data, features, outputs_for(task, features, pred))
    flat = [(g, p) for gs, ps in zip(gold, pred) for g, p in zip(gs, ps)]
    assert metrics["accuracy"] == pytest.approx(np.mean([g == p for g, p in flat]))
    for tag in tags:
        of_tag = [g == p for g, p in flat if g == tag]
        assert metrics[f"{tag}_accuracy"] == pytest.approx(np.mean(of_tag))
        assert metrics[f"{tag}_support"] == len(of_tag)


def test_chunking_is_seqeval(wordpiece_tokenizer):
    words, gold, pred, labels = corpus("IOB2", seed=11)
    task = ChunkingTask(labels, wordpiece_tokenizer)
    data = {"tokens": words, "tags": gold}
    features = task.prepare(data)
    metrics = task.compute_metrics(data, features, outputs_for(task, features, pred))
    assert metrics["f1"] == pytest.approx(f1_score(gold, pred))


def test_loss_and_predict_step(wordpiece_tokenizer):
    task = TokenClassificationTask(["B-X", "I-X", "O"], wordpiece_tokenizer)
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 3)).astype(np.float32) * 3
    labels = np.array([[0, 2, -100, 1, -100], [-100, -100, 2, 2, 0]], np.int32)
    total, count = jax.jit(task.loss)(jnp.asarray(logits), jnp.asarray(labels))
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    mask = labels != -100
    expected = -sum(log_probs[b, s, labels[b, s]] for b, s in zip(*np.nonzero(mask)))
    assert total.dtype == jnp.float32 and float(total) == pytest.approx(expected, rel=1e-5)
    assert float(count) == mask.sum()
    # bf16 logits: the loss is still computed in float32.
    total16, _ = task.loss(jnp.asarray(logits, jnp.bfloat16), jnp.asarray(labels))
    assert total16.dtype == jnp.float32
    assert float(total16) == pytest.approx(expected, rel=2e-2)
    none, zero = task.loss(jnp.asarray(logits), jnp.full_like(jnp.asarray(labels), -100))
    assert float(none) == 0.0 and float(zero) == 0.0

    out = jax.jit(task.predict_step)(jnp.asarray(logits))
    assert out["predictions"].dtype == jnp.int32 and out["scores"].dtype == jnp.float32
    np.testing.assert_array_equal(out["predictions"], logits.argmax(-1))
    probs = np.exp(log_probs)
    np.testing.assert_allclose(out["scores"], probs.max(-1), rtol=1e-5)


def test_custom_scheme_is_a_small_subclass(wordpiece_tokenizer, monkeypatch):
    from flaxtrainer.tasks import IOB2, register_scheme

    monkeypatch.setitem(SCHEMES, "KEEPBEGIN", None)  # removed again after the test

    @register_scheme
    class KeepBegin(IOB2):
        """IOB2, but continuation pieces repeat the word's own tag."""

        name = "KEEPBEGIN"

        def continuation_tag(self, tag, labels):
            return tag

    labels = scheme_labels("IOB2")
    task = TokenClassificationTask(
        labels, wordpiece_tokenizer, scheme="keepbegin", label_all_tokens=True
    )
    assert isinstance(task.scheme, KeepBegin)
    feature = task.prepare({"tokens": [["Tegucigalpa"]], "tags": [["B-geo-loc"]]})[0]
    pieces = feature["labels"][1:-1]
    assert len(pieces) > 1 and set(pieces.tolist()) == {labels.index("B-geo-loc")}
