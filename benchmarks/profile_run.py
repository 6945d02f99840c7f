"""Profile mode: where a run's time goes, measured from outside (the process) and inside (the loop).

Runs the benchmark job (see run.py; MiniLM-L6, the W-NUT 2016 split, 1 epoch, batch 32) in child
processes, `--repeat` rounds, and reports per run:

- whole run: wall time from process start to result written, user and system CPU seconds and
  minor page faults of the child (`os.wait4`, i.e. `getrusage` of exactly that child), peak RSS;
- the train loop alone (the child's own `getrusage` at train begin and after the last step):
  user / system CPU seconds, minor page faults per step;
- time to first step (process start -> step 1 has run) and the first step alone, compile time
  (JAX's compile events: train loop and evaluation), train and eval throughput, padding
  efficiency, and the load average before and after.

Variants (`--variant NAME:ENV=VALUE ENV2=VALUE`) run the same job with other environment
settings; every round runs each variant once, in order (A, B, A, B, ...), so that other load on
the machine hits them alike. Medians over the rounds go in the printed table and the JSON.

    python benchmarks/profile_run.py --out /tmp/profile.json                       # flaxtrainer, 3 rounds
    python benchmarks/profile_run.py --out /tmp/p.json --runs flax,torch           # + PyTorch Trainer
    python benchmarks/profile_run.py --out /tmp/p.json --variant base:FLAXTRAINER_MALLOC=off \\
        --variant tuned:FLAXTRAINER_MALLOC=mmap_threshold=32M,trim_threshold=1G
    python benchmarks/profile_run.py --out /tmp/p.json --max_train_samples 512     # a shorter job
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as bench  # noqa: E402  (benchmarks/ scripts are not a package)
import spec  # noqa: E402

#: run key -> (script, extra arguments)
RUNS = {
    "flax": ("flax_runs.py", ["--mode", "bucketed"]),
    "seed": ("flax_runs.py", ["--mode", "seed"]),
    "torch": ("hf_pytorch.py", []),
}
CACHE_MODES = ("none", "cold", "warm")

#: (field, label, format) of the summary table, in order.
FIELDS: tuple[tuple[str, str, str], ...] = (
    ("process_wall_s", "whole run, process start to result (s)", "{:.1f}"),
    ("start_to_train_begin_s", "process start to train begin (s)", "{:.1f}"),
    ("startup_imports_s", "  interpreter start and imports (s)", "{:.1f}"),
    ("startup_data_s", "  reading the data (s)", "{:.1f}"),
    ("startup_tokenizer_s", "  tokenizer (PyTorch: and tokenizing) (s)", "{:.1f}"),
    ("startup_model_s", "  building and loading the model (s)", "{:.1f}"),
    ("startup_setup_s", "  trainer set-up (flaxtrainer: and tokenizing) (s)", "{:.1f}"),
    ("time_to_first_step_s", "process start to step 1 done (s)", "{:.1f}"),
    ("steps_after_first_s", "steps 2 to the last (s)", "{:.1f}"),
    ("eval_s", "evaluation: predict on validation, without tokenizing (s)", "{:.1f}"),
    ("other_s", "the rest: validation tokenizing, model export, exit (s)", "{:.1f}"),
    ("first_step_s", "first step, train begin to step 1 done (s)", "{:.2f}"),
    ("compile_s", "compiling, train loop + evaluation (s)", "{:.1f}"),
    ("train_runtime_s", "train loop (s)", "{:.1f}"),
    ("train_sentences_per_s", "train sentences/s", "{:.1f}"),
    ("after_first_step_sentences_per_s", "  after step 1: sentences/s", "{:.1f}"),
    ("model_gflops_after_first_step", "  after step 1: model GFLOP/s on real tokens", "{:.1f}"),
    ("matmul_peak_share", "  after step 1: share of the measured matmul peak", "{:.2f}"),
    ("arithmetic_floor_s", "the train loop's model FLOPs at the matmul peak (s)", "{:.1f}"),
    ("eval_sentences_per_s", "eval sentences/s (incl. its compiling)", "{:.1f}"),
    ("padding_efficiency", "padding efficiency", "{:.3f}"),
    ("user_s", "CPU user (s), whole process", "{:.1f}"),
    ("sys_s", "CPU system (s), whole process", "{:.1f}"),
    ("sys_share", "system / (user + system)", "{:.3f}"),
    ("minflt", "minor page faults, whole process", "{:,.0f}"),
    ("train_user_s", "CPU user (s), train loop", "{:.1f}"),
    ("train_sys_s", "CPU system (s), train loop", "{:.1f}"),
    ("train_minflt_per_step", "minor page faults per train step (after step 1)", "{:,.0f}"),
    ("train_sys_s_per_step", "CPU system ms per train step (after step 1)", "{:.0f}"),
    ("train_user_s_per_step", "CPU user ms per train step (after step 1)", "{:.0f}"),
    ("peak_rss_mib", "peak RSS (MiB)", "{:,.0f}"),
    ("load_before", "load average (1 min) before", "{:.2f}"),
)


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """`"NAME:ENV=VALUE ENV2=VALUE"` -> (NAME, {ENV: VALUE, ...}); `"NAME"` alone: no change."""
    name, _, assignments = text.partition(":")
    env: dict[str, str] = {}
    for item in shlex.split(assignments):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--variant {text!r}: {item!r} is not ENV=VALUE")
        env[key] = value
    if not name:
        raise ValueError(f"--variant {text!r}: no name")
    return name, env


def profile_one(
    key: str,
    env_extra: dict[str, str],
    data_dir: Path,
    model_dir: Path,
    log_path: Path,
    cache_dir: str,
    timeout: float,
) -> dict[str, Any]:
    """Run one child, wait for it with `os.wait4`, and return its result plus the profile."""
    script, extra = RUNS[key]
    result_json = log_path.with_suffix(".json")
    result_json.unlink(missing_ok=True)
    command = [sys.executable, str(HERE / script), "--data_dir", str(data_dir)]
    command += ["--model_dir", str(model_dir), "--result_json", str(result_json), *extra]
    if script == "flax_runs.py":
        command += ["--compilation_cache_dir", cache_dir]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.update(env_extra)
    load_before = os.getloadavg()
    start_unix, start = time.time(), time.perf_counter()
    with open(log_path, "w") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = start + timeout
        while True:
            pid, status, ru = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                child.kill()
                pid, status, ru = os.wait4(child.pid, 0)
                break
            time.sleep(0.05)
        child.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait again
    wall = time.perf_counter() - start
    profile = {
        "command": shlex.join(command),
        "env": env_extra,
        "load_before": load_before[0],
        "load_after": os.getloadavg()[0],
        "loadavg_before": load_before,
        "wall_s": wall,
        "user_s": ru.ru_utime,
        "sys_s": ru.ru_stime,
        "minflt": ru.ru_minflt,
        "majflt": ru.ru_majflt,
        "maxrss_mib": ru.ru_maxrss / 1024,
        "nvcsw": ru.ru_nvcsw,
        "nivcsw": ru.ru_nivcsw,
    }
    if child.returncode != 0 or not result_json.exists():
        tail = log_path.read_text().splitlines()[-20:]
        return {"error": f"{key} exited {child.returncode} after {wall:.0f} s", "log_tail": tail}
    result = json.loads(result_json.read_text())
    cpu = ru.ru_utime + ru.ru_stime
    train = result["train_rusage"]
    later = result["train_rusage_after_first_step"]
    later_steps = max(result["train_steps"] - 1, 1)
    profile.update(
        process_wall_s=wall,
        time_to_first_step_s=result["first_step_end_unix_s"] - start_unix,
        first_step_s=result["first_step_s"],
        compile_s=(result["train_compile_s"] or 0.0) + (result["eval_compile_s"] or 0.0)
        if result["train_compile_s"] is not None
        else None,
        train_runtime_s=result["train_runtime_s"],
        train_sentences_per_s=result["train_sentences_per_s"],
        after_first_step_sentences_per_s=result["after_first_step_sentences_per_s"],
        eval_sentences_per_s=result["eval_sentences"] / result["eval_s"],
        padding_efficiency=result["padding_efficiency"],
        sys_share=ru.ru_stime / cpu if cpu else None,
        train_user_s=train["user_s"],
        train_sys_s=train["sys_s"],
        train_minflt_per_step=later["minflt"] / later_steps,
        train_sys_s_per_step=1000 * later["sys_s"] / later_steps,
        train_user_s_per_step=1000 * later["user_s"] / later_steps,
        peak_rss_mib=result["peak_rss_mib"],
    )
    add_breakdown(profile, result, start_unix)
    return {"profile": profile, "result": result}


def add_breakdown(profile: dict[str, Any], result: dict[str, Any], start_unix: float) -> None:
    """Split the whole run into consecutive parts: process start to train begin (itself split
    at the start-up marks), the first step, steps 2 to the last, evaluation, and the rest
    (they add up to the whole run); and copy what `add_model_rates` needs."""
    profile["start_to_train_begin_s"] = result["train_begin_unix_s"] - start_unix
    for field in ("model_flops_per_token", "real_tokens", "after_first_step_tokens_per_s"):
        profile[field] = result[field]
    marks = result.get("startup_marks_unix_s") or {}
    previous = start_unix
    for phase in spec.STARTUP_PHASES:
        if phase in marks:
            profile[f"startup_{phase}_s"] = marks[phase] - previous
            previous = marks[phase]
    if marks:
        profile["startup_setup_s"] = result["train_begin_unix_s"] - previous
    profile["steps_after_first_s"] = result["train_runtime_s"] - result["first_step_s"]
    profile["eval_s"] = result["eval_s"]
    profile["other_s"] = (
        profile["process_wall_s"]
        - profile["start_to_train_begin_s"]
        - result["train_runtime_s"]
        - result["eval_s"]
    )


def add_model_rates(records: list[dict[str, Any]], peak_gflops: float | None) -> None:
    """Model GFLOP/s on real tokens after step 1, its share of the matmul peak, and the floor:
    the seconds the train loop's model FLOPs would take at that peak, per run.

    The model FLOPs per real token are the model's and the sentences' (flax_runs.py computes
    them), so a PyTorch run of the same job takes the flaxtrainer run's figure.
    """
    profiles = [r["profile"] for r in records if "profile" in r]
    known = [p["model_flops_per_token"] for p in profiles if p.get("model_flops_per_token")]
    if not known:
        return
    for p in profiles:
        gflops = known[0] * p["after_first_step_tokens_per_s"] / 1e9
        p["model_gflops_after_first_step"] = gflops
        p["matmul_peak_share"] = p["arithmetic_floor_s"] = None
        if peak_gflops:
            p["matmul_peak_share"] = gflops / peak_gflops
            p["arithmetic_floor_s"] = known[0] * p["real_tokens"] / 1e9 / peak_gflops


def measure_matmul_peak(seconds: float, timeout: float) -> dict[str, float] | None:
    """`matmul_peak.py` in its own process (JAX's threads to itself); None when skipped."""
    if seconds <= 0:
        return None
    command = [sys.executable, str(HERE / "matmul_peak.py"), "--seconds", str(seconds)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def median_table(summary: dict[str, dict[str, Any]]) -> str:
    """Markdown: one column per (run, variant), the medians over rounds (n = rounds)."""
    names = list(summary)
    header = ["", *(f"{name} (n={summary[name]['n']})" for name in names)]
    rows = [header, ["---", *("---:" for _ in names)]]
    for field, label, fmt in FIELDS:
        cells = []
        for name in names:
            value = summary[name]["median"].get(field)
            cells.append("n/a" if value is None else fmt.format(value))
        rows.append([label, *cells])
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def summarise(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Medians (and min/max) of every profile field, per run name, over the successful rounds."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if "profile" in record:
            by_name.setdefault(record["name"], []).append(record["profile"])
    summary = {}
    for name, profiles in by_name.items():
        median, spread = {}, {}
        for field, _, _ in FIELDS:
            values = [p[field] for p in profiles if p.get(field) is not None]
            if values:
                median[field] = statistics.median(values)
                spread[field] = [min(values), max(values)]
        summary[name] = {"n": len(profiles), "median": median, "min_max": spread}
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, help="where to write the JSON")
    parser.add_argument(
        "--report",
        type=Path,
        default=None,
        metavar="JSON",
        help="re-print the table of a profile written earlier (fields added since are derived "
        "from its records) instead of running anything",
    )
    parser.add_argument("--runs", default="flax", help=f"comma-separated, of {', '.join(RUNS)}")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (default 3)")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:ENV=VALUE ...",
        help="an environment variant of every run (repeatable; default: one, unchanged)",
    )
    parser.add_argument(
        "--compilation_cache",
        default="none",
        help="flaxtrainer's persistent compilation cache, one or more (comma-separated, "
        "interleaved like variants): none (off: every run compiles), cold (a fresh empty folder "
        "per run: compiles and writes), warm (a folder filled by an unmeasured run first)",
    )
    parser.add_argument("--max_train_samples", type=int, default=None, help="default: all 1915")
    parser.add_argument("--max_eval_samples", type=int, default=None, help="default: all 239")
    parser.add_argument("--model_dir", type=Path, default=None)
    parser.add_argument("--log_dir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    parser.add_argument(
        "--matmul_peak_s",
        type=float,
        default=2.0,
        help="seconds per shape for the fp32 matmul peak measured first (matmul_peak.py); 0: skip",
    )
    args = parser.parse_args(argv)
    if args.report is not None:
        print(median_table(report(args.report)))
        return 0
    if args.out is None:
        parser.error("--out is required (or --report JSON)")

    caches = [c.strip() for c in args.compilation_cache.split(",") if c.strip()]
    if not caches or any(c not in CACHE_MODES for c in caches):
        parser.error(f"--compilation_cache: choose from {', '.join(CACHE_MODES)}")
    keys = [k.strip() for k in args.runs.split(",") if k.strip()]
    if not keys or any(k not in RUNS for k in keys):
        parser.error(f"--runs: choose from {', '.join(RUNS)}")
    try:
        variants = [parse_variant(v) for v in args.variant] or [("default", {})]
    except ValueError as exc:
        parser.error(str(exc))
    model_dir = (args.model_dir or spec.default_model_dir()).resolve()
    data = bench.load_job_data(args.max_train_samples, args.max_eval_samples)
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="flaxtrainer_profile_"))
    log_dir.mkdir(parents=True, exist_ok=True)
    data_dir = log_dir / "data"
    spec.write_data(data_dir, data)
    print(
        f"job: {len(data.train_tokens)} train / {len(data.val_tokens)} validation sentences; "
        f"logs in {log_dir}",
        flush=True,
    )

    matmul_peak = measure_matmul_peak(args.matmul_peak_s, args.timeout)
    peak = matmul_peak["peak_gflops"] if matmul_peak else None
    if peak:
        print(f"measured fp32 matmul peak (JAX): {peak:.1f} GFLOP/s", flush=True)

    warm_dir = log_dir / "jax_cache_warm"
    if "warm" in caches and any(RUNS[k][0] == "flax_runs.py" for k in keys):
        shutil.rmtree(warm_dir, ignore_errors=True)
        key = next(k for k in keys if RUNS[k][0] == "flax_runs.py")
        filled = profile_one(
            key, {}, data_dir, model_dir, log_dir / "warm-fill.log", str(warm_dir), args.timeout
        )
        if "error" in filled:
            print(filled["error"], *filled["log_tail"], sep="\n  ", file=sys.stderr)
            return 1

    records: list[dict[str, Any]] = []
    # Cache modes and variants are flaxtrainer settings: the PyTorch run goes once per round,
    # with the first variant's environment.
    plan = [
        (key, mode, variant, env)
        for key in keys
        for mode in (caches if RUNS[key][0] == "flax_runs.py" else ["none"])
        for variant, env in (variants if RUNS[key][0] == "flax_runs.py" else variants[:1])
    ]
    for round_ in range(args.repeat):
        for key, mode, variant, env in plan:
            flax = RUNS[key][0] == "flax_runs.py"
            name = "/".join(
                [key]
                + ([mode] if len(caches) > 1 and flax else [])
                + ([variant] if variant != "default" and flax else [])
            )
            tag = f"{name.replace('/', '-')}-{round_}"
            if mode == "warm":
                cache = str(warm_dir)
            elif mode == "cold":
                cache = str(log_dir / f"jax_cache_{tag}")
                shutil.rmtree(cache, ignore_errors=True)
            else:
                cache = "none"
            record = profile_one(
                key, env, data_dir, model_dir, log_dir / f"{tag}.log", cache, args.timeout
            )
            record.update(name=name, round=round_)
            records.append(record)
            add_model_rates(records, peak)
            write_document(args, data, caches, records, matmul_peak)
            if "error" in record:
                print(f"{tag}: {record['error']}", *record["log_tail"], sep="\n  ")
            else:
                p = record["profile"]
                print(
                    f"{tag}: wall {p['wall_s']:.1f} s, train {p['train_runtime_s']:.1f} s, "
                    f"user {p['user_s']:.1f} s, sys {p['sys_s']:.1f} s, "
                    f"faults/step {p['train_minflt_per_step']:,.0f}, "
                    f"rss {p['peak_rss_mib']:,.0f} MiB, load {p['load_before']:.2f}",
                    flush=True,
                )

    document = write_document(args, data, caches, records, matmul_peak)
    print()
    print(median_table(document["summary"]))
    print(f"\nwritten: {args.out}")
    return 1 if any("error" in r for r in records) else 0


def report(path: Path) -> dict[str, dict[str, Any]]:
    """The summary of a saved profile, recomputed from its records."""
    document = json.loads(Path(path).read_text())
    records = document["records"]
    for record in records:
        # Records from before the breakdown existed (no train_begin_unix_s) keep their fields.
        if "profile" in record and record["result"].get("train_begin_unix_s") is not None:
            p, result = record["profile"], record["result"]
            start_unix = result["first_step_end_unix_s"] - p["time_to_first_step_s"]
            add_breakdown(p, result, start_unix)
    peak = (document.get("matmul_peak_gflops") or {}).get("peak_gflops")
    add_model_rates(records, peak)
    return summarise(records)


def write_document(args, data, caches, records, matmul_peak=None) -> dict[str, Any]:
    """The JSON (rewritten after every run, so an interrupted profile keeps what it measured)."""
    summary = summarise(records)
    document = {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": bench.machine(),
        "job": {
            "train_sentences": len(data.train_tokens),
            "validation_sentences": len(data.val_tokens),
            "compilation_cache": caches,
        },
        "matmul_peak_gflops": matmul_peak,
        "summary": summary,
        "records": records,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2))
    return document


if __name__ == "__main__":
    sys.exit(main())
