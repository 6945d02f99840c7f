"""Tagging-scheme detection (`--label_scheme auto`), the IO scheme, and seqeval's default mode
for BILOU / IO tags checked against seqeval called directly."""

from __future__ import annotations

import random
import warnings

import pytest
from seqeval.metrics import classification_report, f1_score
from seqeval.scheme import BILOU as SEQEVAL_BILOU
from seqeval.scheme import IOBES as SEQEVAL_IOBES

from flaxtrainer.tasks import (
    TokenClassificationTask,
    detect_scheme,
    detect_scheme_details,
    get_scheme,
)
from flaxtrainer.tasks.metrics import seqeval_metrics

TYPES = ("PER", "LOC", "geo-loc")


def random_chunks(rng: random.Random, n: int) -> list[tuple[int, int, str]]:
    """Non-overlapping (start, end, type) chunks; adjacent ones of one type occur."""
    chunks, i = [], 0
    while i < n:
        if rng.random() < 0.5:
            length = min(rng.randint(1, 3), n - i)
            chunks.append((i, i + length, rng.choice(TYPES)))
            i += length
        else:
            i += 1
    return chunks


def encode(chunks: list[tuple[int, int, str]], n: int, scheme: str) -> list[str]:
    """Chunks -> tags, from each scheme's textbook definition."""
    tags = ["O"] * n
    ends = {end: kind for _, end, kind in chunks}
    starts = {start: kind for start, _, kind in chunks}
    for start, end, kind in chunks:
        for i in range(start, end):
            first, last = i == start, i == end - 1
            if scheme == "IOB1":
                prefix = "B" if first and ends.get(start) == kind else "I"
            elif scheme == "IOB2":
                prefix = "B" if first else "I"
            elif scheme == "IOE1":
                prefix = "E" if last and starts.get(end) == kind else "I"
            elif scheme == "IOE2":
                prefix = "E" if last else "I"
            else:
                single, begin, final = ("S", "B", "E") if scheme == "IOBES" else ("U", "B", "L")
                prefix = (single if last else begin) if first else (final if last else "I")
            tags[i] = f"{prefix}-{kind}"
    return tags


def corpus(scheme: str, seed: int = 0, n_sentences: int = 80) -> list[list[str]]:
    rng = random.Random(seed)
    sentences = []
    for _ in range(n_sentences):
        n = rng.randint(1, 10)
        sentences.append(encode(random_chunks(rng, n), n, scheme))
    return sentences


@pytest.mark.parametrize("scheme", ["IOB1", "IOB2", "IOBES", "BILOU", "IOE1", "IOE2"])
def test_detects_every_scheme_from_its_sentences(scheme):
    for seed in range(3):
        sentences = corpus(scheme, seed)
        assert all(get_scheme(scheme).violations(s) == [] for s in sentences)
        found = detect_scheme_details(sentences)
        assert found.scheme == scheme, found
        assert detect_scheme(sentences) == scheme
        # IOE data is rare: found, but flagged for a warning rather than logged as certain
        assert found.certain is (scheme not in ("IOE1", "IOE2"))


@pytest.mark.parametrize(
    "sentences, scheme, in_reason",
    [
        # IOB1: I- opens a chunk after O, at the sentence start, or after another type
        ([["O", "I-PER", "I-PER", "O"]], "IOB1", "I- starts"),
        ([["I-PER", "O"]], "IOB1", "I- starts"),
        ([["B-PER", "I-PER", "I-LOC", "I-LOC"]], "IOB2", "mixed"),  # one each: tie -> IOB2
        ([["I-PER", "B-PER", "I-LOC"], ["I-LOC"]], "IOB1", "I- starts"),
        # IOB2: B- opens every chunk (B- right after a chunk of its type is legal in both)
        ([["B-PER", "I-PER", "O", "B-LOC"], ["B-LOC", "B-LOC"]], "IOB2", "B- starts every"),
        ([["B-PER"], ["O", "B-LOC", "B-PER"]], "IOB2", "B- starts every"),
        # IOBES: S-, or E- with B-
        ([["S-PER", "O"]], "IOBES", "S-"),
        ([["B-PER", "E-PER", "O"]], "IOBES", "E-"),
        ([["B-PER", "I-PER", "E-PER", "S-LOC"]], "IOBES", "S-/E- are IOBES"),
        # BILOU: L- or U-
        ([["U-PER", "O"]], "BILOU", "L-/U-"),
        ([["B-PER", "L-PER"]], "BILOU", "L-/U-"),
        # I-/E- without B-/S-: IOE (IOBES chunks open with B- or S-)
        ([["I-PER", "E-PER", "O", "E-LOC"]], "IOE2", "E- ends every chunk"),
        ([["I-PER", "I-PER", "O", "I-LOC", "E-LOC", "I-LOC"]], "IOE1", "I- ends"),
    ],
)
def test_detection_rules(sentences, scheme, in_reason):
    found = detect_scheme_details(sentences)
    assert found.scheme == scheme
    assert in_reason in found.reason


def test_iob1_and_iob2_need_sentences_not_just_labels():
    labels = ["B-PER", "I-PER", "O"]
    iob1 = [["O", "I-PER", "I-PER"], ["I-PER", "B-PER"]]
    iob2 = [["O", "B-PER", "I-PER"], ["B-PER", "B-PER"]]
    assert detect_scheme(iob1, labels) == "IOB1"
    assert detect_scheme(iob2, labels) == "IOB2"
    only_labels = detect_scheme_details([], labels)
    assert (only_labels.scheme, only_labels.certain) == ("IOB2", False)
    assert "no sentences" in only_labels.reason
    assert detect_scheme([], ["S-PER", "B-PER", "E-PER", "O"]) == "IOBES"
    assert detect_scheme([], ["U-PER", "O"]) == "BILOU"


def test_no_prefixes_is_io_and_flagged():
    found = detect_scheme_details([["PER", "PER", "O", "LOC"], ["O"]])
    assert (found.scheme, found.certain) == ("IO", False)
    assert "'PER'" in found.reason and "no B-/I-/E-/S-/L-/U- prefixes" in found.reason
    pos = detect_scheme_details([["DT", "NN", "-NONE-", "PRP$"]])  # "-NONE-": no prefix either
    assert pos.scheme == "IO" and not pos.certain
    only_o = detect_scheme_details([["O", "O"], []])
    assert (only_o.scheme, only_o.certain) == ("IOB2", False)
    assert "only O" in only_o.reason


@pytest.mark.parametrize(
    "sentences, scheme, in_reason",
    [
        # noisy IOB2: a few chunks open with I-; the majority wins, flagged with the counts
        ([["B-PER", "I-PER"], ["B-LOC"], ["O", "I-LOC"]], "IOB2", "I- starts 1 chunk(s), B- 2"),
        ([["I-PER"], ["I-LOC"], ["O", "B-LOC"]], "IOB1", "I- starts 2 chunk(s), B- 1"),
        # L-/U- together with E-/S-: BILOU, flagged (the task then refuses the E-/S- labels)
        ([["U-PER", "S-LOC"]], "BILOU", "mixed with S- tags"),
        # chunk tags and plain tags in one set
        ([["B-PER", "I-PER", "MISC"]], "IOB2", "without a chunk prefix ('MISC')"),
    ],
)
def test_ambiguous_data_is_flagged(sentences, scheme, in_reason):
    found = detect_scheme_details(sentences)
    assert found.scheme == scheme and not found.certain
    assert in_reason in found.reason


# -- the task and the metrics -----------------------------------------------------------------


def test_task_scheme_arguments(wordpiece_tokenizer):
    labels = ["B-PER", "I-PER", "L-PER", "U-PER", "O"]
    with pytest.raises(ValueError, match=r"detect_scheme\(train_tags\)"):
        TokenClassificationTask(labels, wordpiece_tokenizer, scheme="auto")
    task = TokenClassificationTask(
        labels, wordpiece_tokenizer, scheme=detect_scheme([["U-PER", "O"]]), mode="default"
    )
    assert (task.scheme.name, task.mode) == ("BILOU", None)
    with pytest.raises(ValueError, match="not scheme IO"):
        TokenClassificationTask(["PER", "O"], wordpiece_tokenizer, scheme="IO", mode="strict")
    with pytest.raises(ValueError, match="'B-PER' has the chunk prefix B-"):
        TokenClassificationTask(["B-PER", "PER", "O"], wordpiece_tokenizer, scheme="IO")


def test_io_scheme_reads_runs_of_equal_tags():
    io = get_scheme("IO")
    assert io.label_error("geo-loc") is None and io.label_error("I-PER") is None
    assert io.label_error("S-PER") is not None
    assert io.continuation_tag("PER", {"PER", "I-PER"}) == "PER"
    assert io.violations(["PER", "LOC", "O", "LOC"]) == []
    gold = [["PER", "PER", "O", "geo-loc"], ["LOC", "LOC"]]
    pred = [["PER", "O", "O", "geo-loc"], ["LOC", "LOC"]]
    metrics = seqeval_metrics(gold, pred, scheme=io)
    # gold: PER(0-1), geo-loc(3), LOC(0-1); pred: PER(0), geo-loc(3), LOC(0-1)
    assert metrics["precision"] == pytest.approx(2 / 3) and metrics["recall"] == pytest.approx(
        2 / 3
    )
    assert metrics["geo-loc_f1"] == 1.0 and metrics["PER_f1"] == 0.0
    assert metrics["accuracy"] == pytest.approx(5 / 6)
    with pytest.raises(ValueError, match="not the IO scheme"):
        seqeval_metrics(gold, pred, scheme=io, mode="strict")


def _seqeval(gold, pred, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return classification_report(gold, pred, output_dict=True, zero_division=0, **kwargs)


def test_bilou_default_mode_scores_bilou_chunks():
    rng = random.Random(5)
    gold = corpus("BILOU", seed=11)
    # well-formed predictions: other chunks, still valid BILOU
    pred = [encode(random_chunks(rng, len(s)), len(s), "BILOU") for s in gold]
    bilou = get_scheme("BILOU")
    default = seqeval_metrics(gold, pred, scheme=bilou)
    strict = f1_score(gold, pred, mode="strict", scheme=SEQEVAL_BILOU)
    assert 0 < default["f1"] < 1
    assert default["f1"] == pytest.approx(strict)
    assert seqeval_metrics(gold, pred, scheme=bilou, mode="strict")["f1"] == pytest.approx(strict)
    # and it is the IOBES reading of the same chunks
    iobes_gold, iobes_pred = (
        corpus("IOBES", seed=11),
        [[t.replace("L-", "E-").replace("U-", "S-") for t in s] for s in pred],
    )
    assert default["f1"] == pytest.approx(
        f1_score(iobes_gold, iobes_pred, mode="strict", scheme=SEQEVAL_IOBES)
    )
    # seqeval's own default mode does not know L-/U-: it would give another number
    assert _seqeval(gold, pred)["micro avg"]["f1-score"] != pytest.approx(default["f1"])

    # malformed predictions: default mode stays lenient, as on the IOBES tags
    broken = [[rng.choice(["B-PER", "L-PER", "U-LOC", "I-LOC", "O"]) for _ in s] for s in gold]
    lenient = seqeval_metrics(gold, broken, scheme=bilou)
    iobes_broken = [[t.replace("L-", "E-").replace("U-", "S-") for t in s] for s in broken]
    expected = _seqeval(iobes_gold, iobes_broken)
    assert lenient["f1"] == pytest.approx(expected["micro avg"]["f1-score"])
    assert lenient["PER_support"] == expected["PER"]["support"]
