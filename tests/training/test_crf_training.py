"""The CRF output layer end to end: export/reload of its transitions, training with packing on
8 devices and gradient accumulation, packed vs unpacked evaluation, the CLI flag and Viterbi
prediction from a saved model."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
from pathlib import Path

import datasets
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors import safe_open

from flaxtrainer import FlaxTrainer, TrainingArguments
from flaxtrainer.models import from_pretrained, save_pretrained
from flaxtrainer.tasks import TokenClassificationTask
from flaxtrainer.tasks.schemes import get_scheme

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
CRF_KEYS = {"crf.transitions", "crf.start_transitions", "crf.end_transitions"}


def _cli_fixtures():
    """tests/cli/conftest.py's builders (tiny BERT, sentences, CoNLL files) as a plain module."""
    path = Path(__file__).parents[1] / "cli" / "conftest.py"
    spec = importlib.util.spec_from_file_location("_crf_cli_fixtures", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FX = _cli_fixtures()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return FX.build_tiny_bert(tmp_path_factory.mktemp("crf") / "model")


@pytest.fixture(scope="module")
def tokenizer(tiny):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny))


def _dataset(n: int, seed: int) -> datasets.Dataset:
    sentences = FX.make_sentences(n, seed)
    features = datasets.Features(
        {
            "tokens": datasets.Sequence(datasets.Value("string")),
            "tags": datasets.Sequence(datasets.ClassLabel(names=LABELS)),
        }
    )
    return datasets.Dataset.from_dict(
        {"tokens": [w for w, _ in sentences], "tags": [t for _, t in sentences]}, features
    )


def _crf_params(model) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in model.head_params().items()}


def test_save_pretrained_round_trip_keeps_the_transitions(tiny, tmp_path):
    model = from_pretrained(tiny, id2label=dict(enumerate(LABELS)), crf=True)
    assert model.config.crf and set(model.head_params()) == {
        "transitions",
        "start_transitions",
        "end_transitions",
    }
    assert not np.any(_crf_params(model)["transitions"])  # a new CRF starts at zero
    rng = np.random.default_rng(0)
    for name in ("transitions", "start_transitions", "end_transitions"):
        param = getattr(model.crf, name)
        param.set_value(jnp.asarray(rng.normal(size=param.shape), jnp.float32))
    saved = save_pretrained(model, tmp_path / "crf-model")
    assert json.loads((saved / "config.json").read_text())["crf"] is True
    with safe_open(str(saved / "model.safetensors"), framework="np") as f:
        assert CRF_KEYS <= set(f.keys())
        np.testing.assert_array_equal(f.get_tensor("crf.transitions"), model.crf.transitions[...])
    reloaded = from_pretrained(saved)
    assert reloaded.config.crf
    for name, value in _crf_params(model).items():
        np.testing.assert_array_equal(_crf_params(reloaded)[name], value)
    # Without the CRF (crf=False) the tensors are ignored; a plain model's config has no "crf".
    plain = from_pretrained(saved, crf=False)
    assert plain.head_params() == {} and not hasattr(plain, "crf")
    save_pretrained(plain, tmp_path / "plain")
    assert "crf" not in json.loads((tmp_path / "plain" / "config.json").read_text())
    # New labels reinitialise the CRF with the classifier.
    relabelled = from_pretrained(saved, id2label={0: "O", 1: "B-X", 2: "I-X"})
    assert _crf_params(relabelled)["transitions"].shape == (3, 3)
    assert not np.any(_crf_params(relabelled)["transitions"])
    relabelled.reset_crf(False)
    assert not relabelled.config.crf and relabelled.head_params() == {}


def _args(tmp_path: Path, **overrides) -> TrainingArguments:
    values = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        per_device_eval_batch_size=2,
        learning_rate=3e-3,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=0,
    )
    values.update(overrides)
    return TrainingArguments(**values)


@pytest.mark.slow
def test_crf_trains_with_packing_8_devices_and_accumulation(tiny, tokenizer, tmp_path):
    """Packing (the default) on 8 devices with 2 accumulation steps: the loss falls, every
    predicted sentence is valid IOB2 and the transitions were learned; packed and unpacked
    evaluation agree."""
    assert jax.device_count() == 8
    train, dev = _dataset(64, 0), _dataset(16, 1)
    task = TokenClassificationTask(LABELS, tokenizer, max_seq_length=32, crf=True)
    model = from_pretrained(tiny, id2label=dict(enumerate(LABELS)), crf=True)
    args = _args(
        tmp_path,
        gradient_accumulation_steps=2,
        num_train_epochs=8,
        save_strategy="steps",
        save_steps=16,
    )
    trainer = FlaxTrainer(model, task, args, train_dataset=train, eval_dataset=dev)
    assert trainer.packing
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 16 and np.mean(losses[-2:]) < 0.7 * np.mean(losses[:2])
    after = trainer.evaluate()
    assert after["eval_loss"] < 0.7 * before
    transitions = _crf_params(trainer.model)["transitions"]
    assert np.any(transitions != 0)
    # The orbax checkpoint of the last step holds the trained transitions.
    from flaxtrainer.checkpointing.checkpointer import find_checkpoint, restore_checkpoint

    location = find_checkpoint(args.output_dir, "latest")
    restored, _, step = restore_checkpoint(location, trainer._checkpoint_target())
    assert step == 16
    saved = restored["train_state"].params["crf"]["transitions"]
    np.testing.assert_array_equal(np.asarray(saved[...]), transitions)
    ix = {label: i for i, label in enumerate(LABELS)}
    assert transitions[ix["O"], ix["I-PER"]] == 0.0  # masked: never trained
    prediction = trainer.predict(dev)
    scheme = get_scheme("IOB2")
    assert len(prediction.predictions) == 16
    assert all(scheme.violations(tags) == [] for tags in prediction.predictions)
    # The same parameters, unpacked (one sentence a row): the same loss and predictions.
    unpacked = FlaxTrainer(
        trainer.model, task, _args(tmp_path / "unpacked", packing=False), eval_dataset=dev
    )
    assert not unpacked.packing
    assert unpacked.evaluate()["eval_loss"] == pytest.approx(after["eval_loss"], abs=1e-5)
    assert unpacked.predict(dev).predictions == prediction.predictions


def test_task_adds_word_starts_only_with_crf(tokenizer):
    data = {"tokens": [["Angela", "visited", "Paris"]], "tags": [["B-PER", "O", "B-LOC"]]}
    plain = TokenClassificationTask(LABELS, tokenizer, max_seq_length=32)
    crf = TokenClassificationTask(LABELS, tokenizer, max_seq_length=32, crf=True)
    assert "word_starts" not in plain.model_input_names
    assert "word_starts" not in plain.prepare(data)[0]
    feature = crf.prepare(data)[0]
    np.testing.assert_array_equal(feature["word_starts"], feature["prediction_mask"].astype(int))
    assert crf.model_input_names[-1] == "word_starts"


def test_long_sentence_windows_are_cut_chains_and_decode_per_window(tokenizer):
    """A sentence longer than a row: each window's owned words form one chain; the cut ends
    carry CUT_BEFORE / CUT_AFTER, so no start/end constraint applies there (an entity may
    cross the cut); decoding each window gives every word exactly one tag."""
    from flaxtrainer.models.crf import CUT_AFTER, CUT_BEFORE, WORD

    words = ["Mary", "visited", "Paris", "and", "Rome", "today"] * 4
    task = TokenClassificationTask(LABELS, tokenizer, max_seq_length=12, stride=3, crf=True)
    features = task.prepare({"tokens": [words]})
    assert len(features) > 1
    for k, feature in enumerate(features):
        flags = feature["word_starts"]
        owned = np.flatnonzero(flags & WORD)
        np.testing.assert_array_equal(owned, np.flatnonzero(feature["prediction_mask"]))
        assert bool(flags[owned[0]] & CUT_BEFORE) == (k > 0)
        assert bool(flags[owned[-1]] & CUT_AFTER) == (k < len(features) - 1)
    # Emissions favour I-PER everywhere: each window's chain opens with I-PER only at a cut.
    width = max(len(f["input_ids"]) for f in features)
    batch = {
        name: jnp.asarray(np.stack([np.pad(f[name], (0, width - len(f[name]))) for f in features]))
        for name in ("word_starts", "attention_mask")
    }
    logits = jnp.zeros((len(features), width, len(LABELS))).at[..., 2].set(5.0)
    head = {
        "transitions": jnp.zeros((7, 7)),
        "start_transitions": jnp.zeros(7),
        "end_transitions": jnp.zeros(7),
    }
    out = task.predict_step(logits, head=head, batch=batch)
    outputs = [
        {k: np.asarray(v[i, : len(f["input_ids"])]) for k, v in out.items()}
        for i, f in enumerate(features)
    ]
    tags = task.decode({"tokens": [words]}, features, outputs)[0]
    assert len(tags) == len(words)
    assert tags == ["B-PER"] + ["I-PER"] * (len(words) - 1)


def test_task_refuses_a_model_without_crf_and_vice_versa(tokenizer):
    logits = jnp.zeros((1, 4, len(LABELS)))
    labels = jnp.zeros((1, 4), jnp.int32)
    crf = TokenClassificationTask(LABELS, tokenizer, max_seq_length=32, crf=True)
    plain = TokenClassificationTask(LABELS, tokenizer, max_seq_length=32)
    with pytest.raises(ValueError, match="no CRF layer"):
        crf.loss(logits, labels)
    head = {"transitions": jnp.zeros((7, 7))}
    with pytest.raises(ValueError, match="--crf"):
        plain.predict_step(logits, head=head, batch={})


def _run_cli(argv: list[str]) -> int:
    from flaxtrainer.cli.main import main

    with contextlib.redirect_stdout(io.StringIO()):
        return main(argv)


@pytest.mark.slow
def test_cli_crf_flag_trains_saves_and_predicts_with_viterbi(tiny, tmp_path):
    files = {
        name: FX.write_conll(tmp_path / f"{name}.conll", FX.make_sentences(n, seed))
        for name, n, seed in (("train", 32, 0), ("dev", 8, 1), ("test", 8, 2))
    }
    out = tmp_path / "out"
    argv = FX.fast_flags(out, tiny) + [
        "--train_file", str(files["train"]),
        "--validation_file", str(files["dev"]),
        "--test_file", str(files["test"]),
        "--do_train", "--do_eval", "--do_predict",
        "--crf",
    ]  # fmt: skip
    assert _run_cli(argv) == 0
    task_file = json.loads((out / "flaxtrainer_task.json").read_text())
    assert task_file["task_kwargs"]["crf"] is True
    assert json.loads((out / "config.json").read_text())["crf"] is True
    with safe_open(str(out / "model.safetensors"), framework="np") as f:
        assert CRF_KEYS <= set(f.keys())
    scheme = get_scheme("IOB2")
    blocks = (out / "test_predictions.txt").read_text().strip("\n").split("\n\n")
    predicted = [[line.split()[-1] for line in block.splitlines()] for block in blocks]
    assert len(predicted) == 8 and all(scheme.violations(tags) == [] for tags in predicted)

    # Make the emissions favour I-PER everywhere: a softmax head would tag every word I-PER
    # (invalid IOB2); Viterbi must open the chunk with B-PER.
    from flaxtrainer.inference.pipeline import TokenClassificationPipeline

    model = from_pretrained(out)
    labels = list(model.config.labels)
    bias = np.zeros(len(labels), np.float32)
    bias[labels.index("I-PER")] = 50.0
    model.classifier.bias.set_value(jnp.asarray(bias))
    model.classifier.kernel.set_value(jnp.zeros_like(model.classifier.kernel[...]))
    save_pretrained(model, out)
    tagger = TokenClassificationPipeline(out)
    assert tagger.task.crf
    tags = [tag for tag, _ in tagger.tag([["Mary", "visited", "Paris", "today"]])[0]]
    assert tags == ["B-PER", "I-PER", "I-PER", "I-PER"]
