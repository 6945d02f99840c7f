"""max_seq_length against the model's position table (issue 12): the command line clamps it
with a warning, `FlaxTrainer` refuses a Python-built task that is longer, and the reason for
both, pinned: rows past the table give NaN logits without an error."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flaxtrainer.config.training_args import TrainingArguments
from flaxtrainer.models import (
    BertConfig,
    BertForTokenClassification,
    RobertaConfig,
    RobertaForTokenClassification,
    save_pretrained,
)

LABELS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")
WORDS = ["John", "Mary", "Paris", "Rome", "visited", "met", "in", "the", "."]
TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    labels=LABELS,
)


def tokenizer_in(folder: Path):
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    pieces = sorted({c for w in WORDS for c in w} | {f"##{c}" for w in WORDS for c in w})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *pieces]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=False), len(vocab)


def tiny_bert(positions: int, vocab_size: int = 64) -> BertForTokenClassification:
    config = BertConfig(vocab_size=vocab_size, max_position_embeddings=positions, **TINY)
    return BertForTokenClassification(config, rngs=nnx.Rngs(0))


def tiny_roberta(positions: int) -> RobertaForTokenClassification:
    config = RobertaConfig(vocab_size=64, max_position_embeddings=positions, pad_token_id=1, **TINY)
    return RobertaForTokenClassification(config, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    """A saved tiny BERT with a 64-entry position table and its WordPiece tokenizer."""
    folder = tmp_path_factory.mktemp("bert64") / "model"
    tokenizer, vocab_size = tokenizer_in(folder)
    save_pretrained(tiny_bert(64, vocab_size), folder, tokenizer)
    return folder


def args_in(tmp_path: Path, **overrides) -> TrainingArguments:
    values = dict(output_dir=str(tmp_path / "out"), report_to="none", disable_tqdm=True)
    return TrainingArguments(**{**values, **overrides})


# -- why: the model cannot refuse a position past its table inside jit -----------------------


def test_rows_past_the_position_table_give_nan_logits():
    """Pins the failure the checks below prevent (docs of flaxtrainer.training.checks): a 24-wide row on
    a 16-position table is NaN everywhere, the in-range real tokens included."""
    model = tiny_bert(16)
    ids = jnp.full((1, 24), 7, jnp.int32)
    mask = jnp.zeros((1, 24), jnp.int32).at[:, :5].set(1)
    assert np.isnan(np.asarray(model(ids[:, :16], attention_mask=mask[:, :16]))).sum() == 0
    assert np.isnan(np.asarray(model(ids, attention_mask=mask))[0, :5]).all()


# -- the Python API: FlaxTrainer refuses the mismatch ----------------------------------------


def test_trainer_refuses_a_task_longer_than_the_position_table(tmp_path):
    from flaxtrainer.tasks import TokenClassificationTask
    from flaxtrainer.training.trainer import FlaxTrainer

    tokenizer, vocab_size = tokenizer_in(tmp_path / "tok")
    task = TokenClassificationTask(list(LABELS), tokenizer, max_seq_length=128)
    with pytest.raises(ValueError, match=r"max_seq_length=128 .*\(64 positions") as info:
        FlaxTrainer(tiny_bert(64, vocab_size), task, args_in(tmp_path))
    assert "max_position_embeddings=64" in str(info.value)
    assert "max_seq_length <= 64" in str(info.value)
    fits = TokenClassificationTask(list(LABELS), tokenizer, max_seq_length=64)
    trainer = FlaxTrainer(tiny_bert(64, vocab_size), fits, args_in(tmp_path))
    assert trainer.task.max_seq_length == 64


def test_roberta_table_is_offset_by_padding_idx(tmp_path):
    """66 positions, pad_token_id 1: real tokens start at position 2, so 64 fit, 65 do not."""
    from flaxtrainer.training.trainer import FlaxTrainer

    class Task:  # only what the constructor reads
        model_input_names = ("input_ids", "attention_mask")

        def __init__(self, max_seq_length: int) -> None:
            self.max_seq_length = max_seq_length

        def loss(self, logits, labels):
            return logits.sum(), labels.sum()

        def predict_step(self, logits):
            return {"predictions": logits.argmax(-1)}

    FlaxTrainer(tiny_roberta(66), Task(64), args_in(tmp_path))
    with pytest.raises(ValueError, match=r"max_seq_length=65 .*64 positions.*offset 2"):
        FlaxTrainer(tiny_roberta(66), Task(65), args_in(tmp_path))
    with pytest.raises(ValueError, match=r"bucket_widths \[80\].*64 positions"):
        FlaxTrainer(tiny_roberta(66), Task(64), args_in(tmp_path, bucket_widths=[32, 80]))


# -- the run level: --max_seq_length is clamped with a warning --------------------------------


def test_resolve_max_seq_length_clamps_with_a_warning(model_folder, caplog):
    from flaxtrainer.cli.job import resolve_max_seq_length
    from flaxtrainer.models.tokenizer import default_max_length

    tokenizer, _ = tokenizer_in(model_folder)
    with caplog.at_level(logging.WARNING, logger="flaxtrainer"):
        assert resolve_max_seq_length(48, str(model_folder), tokenizer) == 48
        assert resolve_max_seq_length(64, str(model_folder), tokenizer) == 64
        assert not caplog.records
        assert resolve_max_seq_length(1024, str(model_folder), tokenizer) == 64
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "1024" in message and "64" in message
    assert resolve_max_seq_length(None, str(model_folder), tokenizer) == default_max_length(
        str(model_folder), tokenizer
    )


def test_default_max_length_uses_the_roberta_offset(tmp_path):
    from flaxtrainer.models.tokenizer import default_max_length

    tokenizer, _ = tokenizer_in(tmp_path / "m")
    save_pretrained(tiny_roberta(66), tmp_path / "m", tokenizer)
    assert default_max_length(str(tmp_path / "m"), tokenizer) == 64


def test_cli_clamps_max_seq_length_and_metrics_are_finite(model_folder, tmp_path, capsys):
    from flaxtrainer.cli.main import main

    sentences = [
        (["John", "visited", "Paris", "."], ["B-PER", "O", "B-LOC", "O"]),
        (["Mary", "met", "John", "in", "Rome", "."], ["B-PER", "O", "B-PER", "O", "B-LOC", "O"]),
    ] * 4
    data = tmp_path / "data.conll"
    data.write_text(
        "".join("".join(f"{w}\t{t}\n" for w, t in zip(*s)) + "\n" for s in sentences),
        encoding="utf-8",
    )
    output_dir = tmp_path / "run"
    argv = [
        "--model_name_or_path", str(model_folder), "--output_dir", str(output_dir),
        "--train_file", str(data), "--validation_file", str(data), "--test_file", str(data),
        "--do_train", "--do_eval", "--do_predict", "--max_seq_length", "128",
        "--pad_to_max_length", "--per_device_train_batch_size", "2",
        "--per_device_eval_batch_size", "2", "--max_steps", "2", "--learning_rate", "1e-3",
        "--save_steps", "0", "--report_to", "none", "--disable_tqdm",
    ]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    stderr = capsys.readouterr().err
    assert code == 0, stderr[-3000:]
    warnings = [line for line in stderr.splitlines() if "WARNING" in line and "128" in line]
    assert len(warnings) == 1 and "64" in warnings[0], stderr[-3000:]
    eval_results = json.loads((output_dir / "eval_results.json").read_text())
    assert math.isfinite(eval_results["eval_loss"]) and 0 <= eval_results["eval_f1"] <= 1
    assert math.isfinite(json.loads((output_dir / "train_results.json").read_text())["train_loss"])
    task_file = json.loads((output_dir / "flaxtrainer_task.json").read_text())
    assert task_file["max_seq_length"] == 64

    from flaxtrainer.inference.pipeline import TokenClassificationPipeline

    tagger = TokenClassificationPipeline(output_dir)
    assert tagger.task.max_seq_length == 64
    scores = [score for _, score in tagger.tag([["John", "visited", "Paris", "."]])[0]]
    assert all(math.isfinite(s) and 0 < s <= 1 for s in scores)
