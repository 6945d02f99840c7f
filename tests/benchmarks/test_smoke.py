"""The benchmark scripts run end to end on a tiny slice, and their bookkeeping is right.

Benchmarks are not tests: nothing here checks a speed. The end-to-end tests run
`benchmarks/run.py` (flaxtrainer, bucketed; a tiny random BERT with the MiniLM tokenizer,
16 W-NUT sentences) and `benchmarks/gpu.py --tiny` on the CPU, each in its own process as the
real runs do, and check every reported field for consistency with an independent count.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"


def _load(name: str):
    """A benchmarks/ script as a module (they are scripts, not a package)."""
    module_spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module  # dataclasses look their module up there
    module_spec.loader.exec_module(module)
    return module


spec = _load("spec")
report = _load("report")
gpu_models = sys.modules["gpu_models"] = _load("gpu_models")  # gpu.py's `import gpu_models`
gpu = _load("gpu")


def _child_env() -> dict[str, str]:
    """One CPU device in the children, as in a real benchmark run (conftest sets 8 here)."""
    env = dict(os.environ)
    flags = env.get("XLA_FLAGS", "").replace("--xla_force_host_platform_device_count=8", "")
    env["XLA_FLAGS"] = flags.strip()
    return env


# ----------------------------------------------------------------------------- bookkeeping
def test_first_subword_tags_take_each_words_first_piece():
    id2label = {0: "O", 1: "B-x", 2: "I-x"}
    # [CLS] w0 w1 w1 w2 [SEP], then a word (3) cut by truncation
    word_ids = [None, 0, 1, 1, 2, None]
    predictions = [2, 1, 2, 0, 2, 1]
    assert spec.first_subword_tags(word_ids, predictions, 4, id2label) == ["B-x", "I-x", "I-x", "O"]


def test_word_f1_is_seqeval_default_mode_and_checks_lengths():
    gold = [["B-x", "I-x", "O"], ["B-y", "O"]]
    assert spec.word_f1(gold, gold) == 1.0
    # one of two entities found, one spurious: P = 1/2, R = 1/2
    assert spec.word_f1(gold, [["B-x", "I-x", "O"], ["O", "B-y"]]) == pytest.approx(0.5)
    with pytest.raises(spec.BenchmarkError, match="sentence 1: 1 predicted tags, 2 words"):
        spec.word_f1(gold, [["O", "O", "O"], ["O"]])


def test_data_round_trip_and_bad_row_names_the_line(tmp_path):
    data = spec.BenchData(["B-x", "O"], [["a", "b"]], [["B-x", "O"]], [["c"]], [["O"]])
    spec.write_data(tmp_path, data)
    assert spec.read_data(tmp_path) == data
    with open(tmp_path / "validation.jsonl", "a") as f:
        f.write(json.dumps({"tokens": ["x", "y"], "tags": ["O"]}) + "\n")
    with pytest.raises(spec.BenchmarkError, match=r"validation\.jsonl:2: 2 tokens but 1 tags"):
        spec.read_data(tmp_path)


def test_rates_split_the_first_step_off():
    out = spec.rates(
        sentences=100,
        real_tokens=2000,
        train_runtime_s=10.0,
        first_step_s=6.0,
        first_batch_sentences=20,
        first_batch_tokens=400,
    )
    assert out["train_sentences_per_s"] == 10.0
    assert out["train_tokens_per_s"] == 200.0
    assert out["after_first_step_sentences_per_s"] == 20.0
    assert out["after_first_step_tokens_per_s"] == 400.0
    one_step = spec.rates(
        sentences=20,
        real_tokens=400,
        train_runtime_s=6.5,
        first_step_s=6.0,
        first_batch_sentences=20,
        first_batch_tokens=400,
    )
    assert one_step["after_first_step_sentences_per_s"] is None


def test_table_and_comparisons():
    run = {f: 1.0 for f in spec.RESULT_FIELDS}
    run.update(real_tokens=50, computed_tokens=100, train_sentences=10, train_steps=1)
    flax = {**run, "name": "flaxtrainer", "train_sentences_per_s": 30.0, "val_f1": 0.5}
    torch = {**run, "name": "hf-pytorch", "train_sentences_per_s": 10.0, "val_f1": 0.52}
    failed = {"name": "flaxtrainer-seed", "error": "boom", "log_tail": []}
    table = report.format_table([flax, failed, torch])
    header = [cell.strip() for cell in table.splitlines()[0].split("|")[1:-1]]
    assert header == ["", "flaxtrainer", "flaxtrainer-seed", "hf-pytorch"]
    assert "failed" in table and "50 / 100" in table
    values = report.comparisons([flax, failed, torch])
    assert values["speedup_vs_torch"] == pytest.approx(3.0)
    assert values["f1_points_vs_torch"] == pytest.approx(-2.0)
    assert "speedup_vs_seed" not in values


def _config(model: str, tiny: bool = False):
    """The config `gpu.py` builds for `model` (no weights)."""
    from flaxtrainer.models import BertConfig, DebertaV2Config, ModernBertConfig

    shape = gpu_models.base_shape(model, tiny)
    dims = dict(
        hidden_size=shape.hidden_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        intermediate_size=shape.intermediate_size,
        vocab_size=shape.vocab_size,
    )
    if model == "bert-base":
        return BertConfig(**dims)
    if model == "deberta-v3-base":
        return DebertaV2Config(**dims, **gpu_models.DEBERTA_V3)
    return ModernBertConfig(**dims)


def test_model_flops_of_bert_base():
    n, config = 85_000_000, _config("bert-base")
    flops = gpu.flops_per_token(config, n, [128] * 4, 512.0)
    assert flops == {
        "matmul": 6 * n,
        "attention": 12 * 12 * 768 * 128,
        "total": 6 * n + 12 * 12 * 768 * 128,
    }
    # attention context is the token-weighted mean length: (4*4 + 12*12) / (4 + 12) = 10
    assert gpu.flops_per_token(config, n, [4, 12], 16.0)["attention"] == 12 * 12 * 768 * 10
    assert gpu.peak_tflops("NVIDIA H100 80GB HBM3", None) == 989.4
    assert gpu.peak_tflops("cpu", None) is None
    assert gpu.peak_tflops("cpu", 2.0) == 2.0


def test_model_flops_of_deberta_v3_base_add_the_disentangled_terms():
    n, config = 85_000_000, _config("deberta-v3-base")
    assert config.relative_span == 256 and config.pos_att_type == ("p2c", "c2p")
    flops = gpu.flops_per_token(config, n, [128] * 256, 128 * 256.0)
    assert flops["attention"] == 12 * 12 * 768 * 128
    # c2p + p2c: two score matmuls of QK^T's size, 2 x 2 x 768 x 128 forward, x 3, per layer
    assert flops["disentangled_scores"] == 2 * 12 * 3 * 2 * 768 * 128
    # the 512 relative embeddings through the shared key and query weights, once per step
    assert flops["position_projections"] == 2 * 12 * 6 * 512 * 768**2 / (128 * 256)
    assert flops["total"] == pytest.approx(sum(v for k, v in flops.items() if k != "total"))


def test_model_flops_of_modernbert_base_count_the_window():
    config = _config("modernbert-base")
    assert config.layer_types.count("full_attention") == 8 and config.sliding_window == 64
    assert gpu_models.pairs_in_window(5, None) == 25
    assert gpu_models.pairs_in_window(5, 1) == 5 + 2 * 4  # the diagonal and its two neighbours
    assert gpu_models.pairs_in_window(5, 4) == 25  # the window covers the sentence
    brute = sum(abs(i - j) <= 64 for i in range(128) for j in range(128))
    assert gpu_models.pairs_in_window(128, 64) == brute
    flops = gpu.flops_per_token(config, 100, [128, 32], 160.0)
    global_context = (128**2 + 32**2) / 160
    local_context = (brute + 32**2) / 160  # 32 tokens fit the window
    assert flops["attention"] == pytest.approx(12 * 768 * (8 * global_context + 14 * local_context))
    assert set(flops) == {"matmul", "attention", "total"}


# ------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer, hidden-32 random BERT saved with the real MiniLM tokenizer (no download)."""
    from flax import nnx
    from transformers import AutoTokenizer

    from flaxtrainer.models import BertConfig, BertForTokenClassification, save_pretrained

    folder = tmp_path_factory.mktemp("tiny_bert")
    config = BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    tokenizer = AutoTokenizer.from_pretrained(spec.default_model_dir())
    save_pretrained(BertForTokenClassification(config, rngs=nnx.Rngs(0)), folder, tokenizer)
    return folder


def _run_benchmark(tmp_path: Path, model_dir: Path, only: str) -> dict:
    """`run.py` on the first 16 train / 16 validation sentences; returns the JSON document."""
    out = tmp_path / "results.json"
    command = [sys.executable, str(BENCH / "run.py"), "--out", str(out), "--only", only]
    command += ["--max_train_samples", "16", "--max_eval_samples", "16"]
    command += ["--model_dir", str(model_dir), "--log_dir", str(tmp_path / "logs")]
    done = subprocess.run(command, capture_output=True, text=True, env=_child_env(), timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| train sentences/s" in done.stdout
    return json.loads(out.read_text())


def test_run_py_end_to_end_on_a_tiny_slice(tmp_path, tiny_model_dir):
    document = _run_benchmark(tmp_path, tiny_model_dir, "flax")
    assert document["job"]["train_sentences"] == 16
    assert document["job"]["global_train_batch"] == 32
    (run,) = document["runs"]
    assert list(run) == list(spec.RESULT_FIELDS)
    assert run["name"] == "flaxtrainer"
    assert run["train_sentences"] == 16 and run["train_steps"] == 1
    assert 0 < run["first_step_s"] <= run["train_runtime_s"]
    assert run["after_first_step_sentences_per_s"] is None  # the first step was the epoch
    assert run["train_sentences_per_s"] == pytest.approx(16 / run["train_runtime_s"])

    # Real tokens against an independent count: the tokenizer's row lengths.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    data = spec.read_data(tmp_path / "logs" / "data")
    rows = tokenizer(data.train_tokens, is_split_into_words=True)["input_ids"]
    assert run["real_tokens"] == sum(len(r) for r in rows)
    assert run["real_tokens"] <= run["computed_tokens"]
    # one batch of 32 rows (16 padding rows) at one bucket width
    assert run["computed_tokens"] % 32 == 0
    assert 0 < run["padding_efficiency"] <= 1
    assert run["padding_efficiency"] == pytest.approx(run["real_tokens"] / run["computed_tokens"])
    assert run["train_compiled_shapes"] == 1 and run["eval_compiled_shapes"] >= 1
    assert math.isfinite(run["train_loss"]) and run["train_loss"] > 0
    assert 0 <= run["val_f1"] <= 1
    assert run["val_f1"] == pytest.approx(run["trainer_reported_f1"])
    assert run["eval_s"] > 0 and run["tokenize_s"] > 0
    assert 0 < run["train_compile_s"] < run["train_runtime_s"]
    assert run["tokens_per_s_without_compile"] > run["train_tokens_per_s"]
    assert 0 < run["eval_compile_s"] < run["eval_s"]
    assert 100 < run["peak_rss_mib"] < 64_000
    assert run["environment"]["devices"] == 1


@pytest.mark.slow
def test_seed_mode_and_pytorch_runs_count_the_same_tokens(tmp_path, tiny_model_dir):
    pytest.importorskip("accelerate", reason="transformers.Trainer needs accelerate")
    seed, torch = _run_benchmark(tmp_path, tiny_model_dir, "seed,torch")["runs"]
    assert (seed["name"], torch["name"]) == ("flaxtrainer-seed", "hf-pytorch")
    assert seed["real_tokens"] == torch["real_tokens"]  # same sentences, same tokenizer
    # seed mode: one batch of 32 rows x 128; PyTorch: 16 rows x the longest of them
    assert seed["computed_tokens"] == 32 * 128 and seed["train_compiled_shapes"] == 1
    assert torch["computed_tokens"] % 16 == 0 and torch["distinct_batch_shapes"] == 1
    assert torch["train_compiled_shapes"] is None and torch["train_compile_s"] is None
    for run in (seed, torch):
        assert list(run) == list(spec.RESULT_FIELDS)
        assert 0 < run["padding_efficiency"] <= 1 and 0 <= run["val_f1"] <= 1
        assert run["val_f1"] == pytest.approx(run["trainer_reported_f1"])
        assert math.isfinite(run["train_loss"]) and run["peak_rss_mib"] > 100


@pytest.fixture(scope="module")
def gpu_tiny(tmp_path_factory):
    """`gpu_tiny(X)`: the JSON result of `gpu.py --tiny --model X` on the CPU, run once per X."""
    results: dict[str, dict] = {}

    def run(model: str) -> dict:
        if model not in results:
            out = tmp_path_factory.mktemp("gpu") / f"{model}.json"
            command = [sys.executable, str(BENCH / "gpu.py"), "--tiny", "--peak_tflops", "1.0"]
            done = subprocess.run(
                [*command, "--model", model, "--out", str(out)],
                capture_output=True,
                text=True,
                env=_child_env(),
                timeout=300,
                cwd=ROOT,
            )
            assert done.returncode == 0, done.stdout + done.stderr
            results[model] = json.loads(out.read_text())
        return results[model]

    return run


@pytest.mark.parametrize("model", gpu_models.MODELS)
def test_gpu_script_runs_tiny_on_cpu(gpu_tiny, model):
    result = gpu_tiny(model)
    assert result["model_name"] == model
    assert result["tokens_per_s"] > 0
    terms = result["flops_per_token_terms"]
    assert result["flops_per_token"] == pytest.approx(sum(terms.values()))
    assert terms["matmul"] == 6 * result["matmul_params"]
    assert result["dtype"] == "bfloat16"
    assert result["train_compiled_shapes"] == 1
    assert result["padding_efficiency"] == 1.0  # --lengths full: every row real
    assert result["tokens_per_s"] == pytest.approx(result["sentences_per_s"] * result["seq_len"])
    assert result["mfu"] == pytest.approx(result["model_tflops_per_s"] / 1.0)
    assert 0 < result["mfu"] < 1
    assert math.isfinite(result["train_loss"])


def test_gpu_script_counts_deberta_attention_above_berts(gpu_tiny):
    """Equal tiny dims: DeBERTa's FLOPs/token exceed BERT's by its disentangled terms."""
    bert, deberta = gpu_tiny("bert-base"), gpu_tiny("deberta-v3-base")
    assert (bert["seq_len"], bert["global_batch"]) == (deberta["seq_len"], deberta["global_batch"])
    assert deberta["flops_per_token"] > bert["flops_per_token"]
    b, d = bert["flops_per_token_terms"], deberta["flops_per_token_terms"]
    assert d["attention"] == pytest.approx(b["attention"])  # same layers, hidden and lengths
    assert d["disentangled_scores"] == pytest.approx(b["attention"])  # c2p + p2c: 2 x QK^T's size
    assert d["position_projections"] > 0
    # Not a parameter-count artefact: the matmul parameters differ by a LayerNorm or so, and the
    # difference is exactly that plus the two disentangled terms.
    params_delta = deberta["matmul_params"] - bert["matmul_params"]
    assert abs(params_delta) < 100
    assert deberta["flops_per_token"] - bert["flops_per_token"] == pytest.approx(
        6 * params_delta + d["disentangled_scores"] + d["position_projections"]
    )
