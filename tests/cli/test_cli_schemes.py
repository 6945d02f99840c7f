"""`--label_scheme` / `--seqeval_mode` end to end: IOBES and BILOU CoNLL files trained through the
command line, the detected scheme in the results and the saved task, F1 equal to seqeval called
directly on the written predictions, and the saved scheme reused by evaluation-only runs,
`flaxtrainer predict` and TokenClassificationPipeline."""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import pytest
from conftest import fast_flags, make_sentences, write_conll
from seqeval.metrics import f1_score
from seqeval.scheme import BILOU, IOB2

from flaxtrainer.cli.main import main
from flaxtrainer.outputs.results import read_predictions
from flaxtrainer.tasks import get_scheme, iob2_to_iobes, iobes_to_iob2

TO_BILOU = {"B": "B", "I": "I", "E": "L", "S": "U"}


def bilou(tags: list[str]) -> list[str]:
    """IOB2 -> BILOU, through IOBES (E- -> L-, S- -> U-)."""
    return [t if t == "O" else f"{TO_BILOU[t[0]]}{t[1:]}" for t in iob2_to_iobes(tags)]


def run_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def load_json(path: Path) -> dict:
    return json.loads(path.read_text())


def gold_and_predicted(output_dir: Path) -> tuple[list[list[str]], list[list[str]]]:
    sentences = read_predictions(output_dir / "test_predictions.txt")
    return [[r[1] for r in s] for s in sentences], [[r[2] for r in s] for s in sentences]


def seqeval_f1(gold, pred, **kwargs) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return f1_score(gold, pred, zero_division=0, **kwargs)


@pytest.fixture(scope="module")
def scheme_files(tmp_path_factory) -> dict[str, Path]:
    """The same sentences as IOBES and as BILOU CoNLL files (dev doubles as the test file)."""
    folder = tmp_path_factory.mktemp("scheme-data")
    train, dev = make_sentences(64, 10), make_sentences(16, 11)
    files = {}
    for name, convert in (("iobes", iob2_to_iobes), ("bilou", bilou)):
        for split, sentences in (("train", train), ("dev", dev)):
            converted = [(words, convert(tags)) for words, tags in sentences]
            files[f"{name}_{split}"] = write_conll(folder / f"{name}_{split}.conll", converted)
    return files


def train_flags(output_dir: Path, model: Path, train: Path, dev: Path) -> list[str]:
    return fast_flags(output_dir, model) + [
        "--train_file", str(train),
        "--validation_file", str(dev),
        "--test_file", str(dev),
        "--do_train", "--do_eval", "--do_predict",
        "--num_train_epochs", "6",
        "--learning_rate", "5e-3",
        "--report_to", "none",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def iobes_run(tmp_path_factory, tiny_bert, scheme_files):
    """IOBES data, --label_scheme left at auto, seqeval mode at default."""
    output_dir = tmp_path_factory.mktemp("iobes-run") / "out"
    argv = train_flags(
        output_dir, tiny_bert, scheme_files["iobes_train"], scheme_files["iobes_dev"]
    )
    code, stdout, stderr = run_main(argv)
    assert code == 0, stderr[-3000:]
    return output_dir, stderr


@pytest.fixture(scope="module")
def bilou_run(tmp_path_factory, tiny_bert, scheme_files):
    """BILOU data, auto scheme, --seqeval_mode strict."""
    output_dir = tmp_path_factory.mktemp("bilou-run") / "out"
    argv = train_flags(
        output_dir, tiny_bert, scheme_files["bilou_train"], scheme_files["bilou_dev"]
    ) + ["--seqeval_mode", "strict"]
    code, stdout, stderr = run_main(argv)
    assert code == 0, stderr[-3000:]
    return output_dir, stderr


def test_iobes_detected_and_scored_like_seqeval(iobes_run):
    output_dir, stderr = iobes_run
    assert "INFO label scheme: IOBES (detected: B-/E-/S- tags (S-/E- are IOBES's) in train)" in (
        stderr
    )  # entities of one or two words: no I- tags
    assert stderr.count("label scheme:") == 1
    results = load_json(output_dir / "eval_results.json")
    assert results["eval_label_scheme"] == "IOBES"
    assert results["eval_seqeval_mode"] == "default"
    assert isinstance(results["eval_f1"], float)
    gold, pred = gold_and_predicted(output_dir)
    assert any(t.startswith(("S-", "E-")) for s in gold for t in s)
    assert any(t != "O" for s in pred for t in s), "the model learned no entity at all"
    # default mode: seqeval's own (lenient) reading of the IOBES tags
    assert results["eval_f1"] == pytest.approx(seqeval_f1(gold, pred))
    assert results["eval_f1"] > 0
    test = load_json(output_dir / "test_results.json")
    assert test["test_f1"] == pytest.approx(results["eval_f1"])
    assert (test["test_label_scheme"], test["test_seqeval_mode"]) == ("IOBES", "default")
    saved = load_json(output_dir / "flaxtrainer_task.json")
    assert saved["scheme"] == saved["task_kwargs"]["scheme"] == "IOBES"
    assert saved["seqeval_mode"] == "default" and saved["task_kwargs"]["mode"] is None
    # the strings stay out of the trainer's numeric logs
    state = load_json(output_dir / "trainer_state.json")
    assert not any("label_scheme" in key for entry in state["log_history"] for key in entry)


def test_bilou_strict_equals_seqeval_strict_bilou(bilou_run):
    output_dir, stderr = bilou_run
    assert "INFO label scheme: BILOU (detected: B-/L-/U- tags: L-/U- are BILOU's in train)" in (
        stderr
    )
    results = load_json(output_dir / "eval_results.json")
    assert (results["eval_label_scheme"], results["eval_seqeval_mode"]) == ("BILOU", "strict")
    gold, pred = gold_and_predicted(output_dir)
    assert any(t.startswith(("U-", "L-")) for s in gold for t in s)
    expected = seqeval_f1(gold, pred, mode="strict", scheme=BILOU)
    assert results["eval_f1"] == pytest.approx(expected)
    assert results["eval_f1"] > 0
    saved = load_json(output_dir / "flaxtrainer_task.json")
    assert (saved["scheme"], saved["seqeval_mode"]) == ("BILOU", "strict")


def test_bilou_default_mode_reads_bilou_as_iobes(bilou_run, tmp_path):
    """Evaluation only: the saved scheme (BILOU) is used, the mode given here overrides."""
    model_dir, _ = bilou_run
    output_dir = tmp_path / "eval"
    gold, _ = gold_and_predicted(model_dir)  # the BILOU dev file, written back
    dev_file = tmp_path / "dev.conll"
    words = [[r[0] for r in s] for s in read_predictions(model_dir / "test_predictions.txt")]
    write_conll(dev_file, list(zip(words, gold)))
    code, _, stderr = run_main(
        ["--model_name_or_path", str(model_dir), "--output_dir", str(output_dir),
         "--validation_file", str(dev_file), "--test_file", str(dev_file),
         "--do_eval", "--do_predict", "--seqeval_mode", "default", "--disable_tqdm",
         "--report_to", "none", "--per_device_eval_batch_size", "2"]
    )  # fmt: skip
    assert code == 0, stderr[-3000:]
    assert "label scheme: BILOU (saved with the model)" in stderr
    results = load_json(output_dir / "eval_results.json")
    assert (results["eval_label_scheme"], results["eval_seqeval_mode"]) == ("BILOU", "default")
    gold, pred = gold_and_predicted(output_dir)
    as_iobes = [[{"L": "E", "U": "S"}.get(t[0], t[0]) + t[1:] for t in s] for s in pred]
    gold_iobes = [[{"L": "E", "U": "S"}.get(t[0], t[0]) + t[1:] for t in s] for s in gold]
    assert results["eval_f1"] == pytest.approx(seqeval_f1(gold_iobes, as_iobes))
    if not any(get_scheme("BILOU").violations(s) for s in pred):  # well formed: lenient == strict
        assert results["eval_f1"] == pytest.approx(
            seqeval_f1(gold, pred, mode="strict", scheme=BILOU)
        )


def test_saved_scheme_reused_by_pipeline_and_predict_command(bilou_run):
    from flaxtrainer.inference.pipeline import TokenClassificationPipeline

    output_dir, _ = bilou_run
    tagger = TokenClassificationPipeline(output_dir, batch_size=4)
    assert (tagger.task.scheme.name, tagger.task.mode) == ("BILOU", "strict")
    sentences = read_predictions(output_dir / "test_predictions.txt")
    tagged = tagger.tag([[r[0] for r in s] for s in sentences])
    assert [[t for t, _ in s] for s in tagged] == [[r[2] for r in s] for s in sentences]
    code, stdout, stderr = run_main(
        ["predict", "--model_name_or_path", str(output_dir), "--text", "Mary met Anna in Paris ."]
    )
    assert code == 0, stderr
    result = json.loads(stdout)
    assert result["text"] == "Mary met Anna in Paris ."
    for entity in result["entities"]:
        assert result["text"][entity["start"] : entity["end"]] == entity["text"]
        assert entity["type"] in ("PER", "LOC", "ORG")


def test_explicit_iob2_strict_is_honoured(tmp_path, tiny_bert, ner_files):
    """Evaluation only, with the untrained tiny model (a new head for the data's IOB2 labels).

    Its predictions open chunks with I-: gold tags made from them (the same chunks, opened
    with B-) score 1.0 in the default mode but less in strict IOB2, where I- opens no chunk.
    """
    common = ["--model_name_or_path", str(tiny_bert), "--disable_tqdm", "--report_to", "none",
              "--max_seq_length", "32", "--label_scheme", "IOB2"]  # fmt: skip
    first = tmp_path / "first"
    code, _, stderr = run_main(
        common + ["--output_dir", str(first), "--test_file", str(ner_files["validation"]),
                  "--do_predict"]
    )  # fmt: skip
    assert code == 0, stderr[-3000:]
    _, predicted = gold_and_predicted(first)
    assert get_scheme("IOB2").violations(sum(predicted, [])), "needs chunks opened by I-"
    words = [[r[0] for r in s] for s in read_predictions(first / "test_predictions.txt")]
    same_chunks = [iobes_to_iob2(iob2_to_iobes(tags)) for tags in predicted]
    dev = write_conll(tmp_path / "dev.conll", list(zip(words, same_chunks)))

    second = tmp_path / "second"
    code, _, stderr = run_main(
        common + ["--output_dir", str(second), "--validation_file", str(dev),
                  "--test_file", str(ner_files["validation"]),  # the same label list as before
                  "--do_eval", "--do_predict", "--seqeval_mode", "strict"]
    )  # fmt: skip
    assert code == 0, stderr[-3000:]
    assert "label scheme: IOB2 (--label_scheme)" in stderr
    assert gold_and_predicted(second)[1] == predicted  # the same model, the same predictions
    results = load_json(second / "eval_results.json")
    assert (results["eval_label_scheme"], results["eval_seqeval_mode"]) == ("IOB2", "strict")
    assert seqeval_f1(same_chunks, predicted) == 1.0  # what the default mode would report
    strict = seqeval_f1(same_chunks, predicted, mode="strict", scheme=IOB2)
    assert results["eval_f1"] == pytest.approx(strict) and strict < 1.0


@pytest.mark.parametrize(
    "flag, value", [("--label_scheme", "BIOES"), ("--seqeval_mode", "lenient")]
)
def test_invalid_values_are_clear_cli_errors(tmp_path, tiny_bert, ner_files, flag, value):
    code, _, stderr = run_main(
        ["--model_name_or_path", str(tiny_bert), "--output_dir", str(tmp_path / "x"),
         "--train_file", str(ner_files["train"]), "--do_train", flag, value]
    )  # fmt: skip
    assert code == 2
    assert flag.lstrip("-") in stderr and repr(value) in stderr
    assert "IOBES" in stderr if flag == "--label_scheme" else "strict" in stderr


def test_plain_tags_for_ner_warn_and_strict_io_is_refused(tmp_path, tiny_bert, ner_files):
    """POS-like tags under --task_name ner: IO with a loud warning; strict mode can't read IO."""
    code, _, stderr = run_main(
        ["--model_name_or_path", str(tiny_bert), "--output_dir", str(tmp_path / "io"),
         "--train_file", str(ner_files["train_conllu"]), "--do_train",
         "--seqeval_mode", "strict", "--max_seq_length", "32", "--disable_tqdm"]
    )  # fmt: skip
    assert code == 2
    assert "WARNING label scheme: IO (detected: no B-/I-/E-/S-/L-/U- prefixes" in stderr
    assert "use --task_name pos" in stderr
    assert "error: " in stderr and "strict" in stderr and "--seqeval_mode default" in stderr


def _dataset(split_tags: dict[str, list[list[str]]]):
    import datasets

    names = sorted({t for tags in split_tags.values() for s in tags for t in s})
    features = datasets.Features(
        {
            "tokens": datasets.Sequence(datasets.Value("string")),
            "tags": datasets.Sequence(datasets.ClassLabel(names=names)),
        }
    )
    return datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict(
                {"tokens": [["w"] * len(s) for s in tags], "tags": tags}, features=features
            )
            for split, tags in split_tags.items()
        }
    ), names


def test_scheme_keywords_of_a_run(caplog):
    """run.scheme_kwargs: explicit flags win; evaluation reuses the saved scheme and mode;
    auto detects from train (else the evaluated split); the pos task gets neither keyword."""
    from flaxtrainer.cli.job import scheme_kwargs
    from flaxtrainer.config.job_args import DataArguments

    dsd, names = _dataset(
        {"train": [["O", "I-PER", "I-PER"], ["I-LOC"]], "validation": [["B-PER", "E-PER"]]}
    )
    caplog.set_level("INFO", logger="flaxtrainer.cli.job")
    auto = DataArguments()
    assert scheme_kwargs(auto, "ner", dsd, names, {}, True) == {"scheme": "IOB1", "mode": None}
    assert "label scheme: IOB1 (detected: I- starts chunks" in caplog.text
    # without training: the validation split, not train
    assert scheme_kwargs(auto, "chunk", dsd, names, {}, False)["scheme"] == "IOBES"
    saved = {"scheme": "BILOU", "seqeval_mode": "strict", "task_kwargs": {}}
    assert scheme_kwargs(auto, "ner", dsd, names, saved, False) == {
        "scheme": "BILOU",
        "mode": "strict",
    }
    explicit = DataArguments(label_scheme="IOB2", seqeval_mode="default")
    assert scheme_kwargs(explicit, "ner", dsd, names, saved, False) == {
        "scheme": "IOB2",
        "mode": None,
    }
    caplog.clear()
    assert scheme_kwargs(explicit, "pos", dsd, names, {}, True) == {}
    assert "ignored by --task_name pos" in caplog.text


def test_inference_task_scheme_without_task_kwargs(tiny_bert):
    """Task files from before --label_scheme (top-level "scheme" only) and models without one."""
    from flaxtrainer.cli.job import load_tokenizer
    from flaxtrainer.inference.pipeline import _inference_task

    tokenizer = load_tokenizer(str(tiny_bert))
    kwargs = {"max_seq_length": 32}
    iobes = ["B-PER", "E-PER", "I-PER", "O", "S-PER"]
    assert _inference_task({}, None, iobes, tokenizer, kwargs).scheme.name == "IOBES"
    old_file = {
        "task_name": "ner",
        "task_class": "flaxtrainer.tasks:TokenClassificationTask",
        "scheme": "BILOU",
        "label_names": ["L-PER", "O", "U-PER"],
        "task_kwargs": dict(kwargs),
    }
    task = _inference_task(old_file, None, ["L-PER", "O", "U-PER"], tokenizer, kwargs)
    assert (task.scheme.name, task.mode) == ("BILOU", None)
    assert (
        _inference_task(old_file, "pos", ["L-PER", "O", "U-PER"], tokenizer, kwargs).scheme is None
    )
