"""Profile mode (`benchmarks/profile_run.py`), the allocator settings and the compilation-cache
default: they run and their bookkeeping is sane. Nothing here checks a speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flaxtrainer.runtime import allocator
from flaxtrainer.runtime.compilation import ENV as CACHE_ENV
from flaxtrainer.runtime.compilation import default_cache_dir, resolve_cache_dir

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"


# --------------------------------------------------------------------------- allocator
def test_allocator_spec_parses_sizes_and_off():
    assert allocator.parse("mmap_threshold=32M, trim_threshold=1g,arena_max=2") == {
        "mmap_threshold": 32 * 2**20,
        "trim_threshold": 2**30,
        "arena_max": 2,
    }
    for off in ("off", "0", "none", ""):
        assert allocator.parse(off) == {}
    assert allocator.parse("single_arena") == {
        "arena_max": 1,
        "mmap_max": 0,
        "trim_threshold": 2**30,
        "top_pad": 64 * 2**20,
    }
    with pytest.raises(ValueError, match="FLAXTRAINER_MALLOC"):
        allocator.parse("mmap=1")
    with pytest.raises(ValueError, match="not an integer"):
        allocator.parse("top_pad=lots")


def test_allocator_applies_in_a_fresh_process():
    code = "import flaxtrainer, json; print(json.dumps(flaxtrainer.runtime.allocator.applied))"
    env = {**os.environ, allocator.ENV: "mmap_threshold=1M,top_pad=4M"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    applied = json.loads(done.stdout)
    if sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION"):
        assert applied == {"mmap_threshold": 2**20, "top_pad": 4 * 2**20}
    env[allocator.ENV] = "off"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert json.loads(done.stdout) == {}


# -------------------------------------------------------------------- compilation cache
def test_cache_dir_auto_none_and_env(monkeypatch, tmp_path):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == str(tmp_path / "xdg" / "flaxtrainer" / "jax")
    assert resolve_cache_dir("auto") == default_cache_dir()
    for off in (None, "none", "None", "off", ""):
        assert resolve_cache_dir(off) is None
    assert resolve_cache_dir("~/x") == os.path.expanduser("~/x")
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax"))
    assert resolve_cache_dir("auto") is None  # JAX reads its own variable
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "ours"))
    assert resolve_cache_dir("auto") == str(tmp_path / "ours")
    monkeypatch.setenv(CACHE_ENV, "none")
    assert resolve_cache_dir("auto") is None


def test_tests_do_not_write_a_cache_into_home():
    from flaxtrainer import TrainingArguments

    resolved = TrainingArguments(output_dir="unused").compilation_cache_dir
    home_cache = os.path.join(os.path.expanduser("~"), ".cache")
    assert resolved is None or not resolved.startswith(home_cache)  # tests/conftest.py: none


# ------------------------------------------------------------------------- profile mode
@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer, hidden-32 random BERT saved with the real MiniLM tokenizer (no download)."""
    from flax import nnx
    from transformers import AutoTokenizer

    from flaxtrainer.models import BertConfig, BertForTokenClassification, save_pretrained

    sys.path.insert(0, str(BENCH))
    import spec

    folder = tmp_path_factory.mktemp("tiny_bert")
    config = BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    tokenizer = AutoTokenizer.from_pretrained(spec.default_model_dir())
    save_pretrained(BertForTokenClassification(config, rngs=nnx.Rngs(0)), folder, tokenizer)
    return folder


def test_profile_mode_reports_every_field(tmp_path, tiny_model_dir):
    out = tmp_path / "profile.json"
    command = [sys.executable, str(BENCH / "profile_run.py"), "--out", str(out), "--repeat", "1"]
    command += ["--max_train_samples", "40", "--max_eval_samples", "16"]
    command += ["--model_dir", str(tiny_model_dir), "--log_dir", str(tmp_path / "logs")]
    command += ["--variant", "off:FLAXTRAINER_MALLOC=off", "--variant", "shipped"]
    command += ["--matmul_peak_s", "0.2"]
    env = dict(os.environ)  # one CPU device in the child, as in a real run
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "").replace(
        "--xla_force_host_platform_device_count=8", ""
    )
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| minor page faults per train step" in done.stdout
    document = json.loads(out.read_text())
    assert document["job"]["train_sentences"] == 40
    assert set(document["summary"]) == {"flax/off", "flax/shipped"}
    peaks = document["matmul_peak_gflops"]
    peak = peaks.pop("peak_gflops")
    assert len(peaks) >= 2 and peak == max(peaks.values()) > 0
    assert "after step 1: share of the measured matmul peak |" in done.stdout
    records = document["records"]
    assert [r["name"] for r in records] == ["flax/off", "flax/shipped"]
    assert records[0]["result"]["environment"]["malloc"] == {}
    for record in records:
        p, result = record["profile"], record["result"]
        assert result["train_steps"] == 2  # 32 + 8 sentences
        assert p["user_s"] > 0 and p["sys_s"] >= 0 and 0 <= p["sys_share"] < 1
        assert p["minflt"] > 0 and p["train_minflt_per_step"] >= 0
        assert 0 < p["train_user_s"] <= p["user_s"] and 0 <= p["train_sys_s"] <= p["sys_s"]
        assert 0 < p["first_step_s"] <= p["train_runtime_s"] < p["process_wall_s"]
        assert p["first_step_s"] < p["time_to_first_step_s"] < p["process_wall_s"]
        assert 0 < p["compile_s"] < p["process_wall_s"]
        assert 0 < p["padding_efficiency"] <= 1
        assert p["train_sentences_per_s"] > 0 and p["eval_sentences_per_s"] > 0
        assert 100 < p["peak_rss_mib"] < 64_000
        assert p["maxrss_mib"] == pytest.approx(p["peak_rss_mib"], rel=0.05)
        assert len(p["loadavg_before"]) == 3
        assert 0 < p["start_to_train_begin_s"] < p["time_to_first_step_s"]
        startup = [p[f"startup_{x}_s"] for x in ("imports", "data", "tokenizer", "model", "setup")]
        assert min(startup) >= 0 and p["startup_imports_s"] > 0.5  # jax and transformers alone
        assert sum(startup) == pytest.approx(p["start_to_train_begin_s"])
        # hidden 32, 2 layers: the 4 h^2 attention weights alone are 6 x 8,192 FLOPs a token
        assert p["model_flops_per_token"] > 6 * 2 * 4 * 32**2
        gflops = p["model_flops_per_token"] * p["after_first_step_tokens_per_s"] / 1e9
        assert p["model_gflops_after_first_step"] == pytest.approx(gflops)
        assert p["matmul_peak_share"] == pytest.approx(gflops / peak)
        floor = p["model_flops_per_token"] * result["real_tokens"] / 1e9 / peak
        assert p["arithmetic_floor_s"] == pytest.approx(floor)
        parts = ("start_to_train_begin_s", "first_step_s", "steps_after_first_s", "eval_s")
        assert all(p[k] > 0 for k in parts) and p["other_s"] >= 0
        assert sum(p[k] for k in (*parts, "other_s")) == pytest.approx(p["process_wall_s"])
    reprinted = subprocess.run(
        [sys.executable, str(BENCH / "profile_run.py"), "--report", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert reprinted.returncode == 0, reprinted.stderr
    assert reprinted.stdout.strip() in done.stdout  # the same table from the saved JSON
    median = document["summary"]["flax/off"]["median"]
    assert median["user_s"] == records[0]["profile"]["user_s"]
