"""The results table (Markdown, so it pastes into the README) and the JSON document.

python benchmarks/report.py benchmarks/results.json     # re-print a saved run's table
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# (row label, result field, formatter); a missing or None value prints as "n/a".
ROWS: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("train sentences/s", "train_sentences_per_s", lambda v: f"{v:.1f}"),
    ("train real tokens/s", "train_tokens_per_s", lambda v: f"{v:,.0f}"),
    ("  after 1st step: sentences/s", "after_first_step_sentences_per_s", lambda v: f"{v:.1f}"),
    ("  after 1st step: real tokens/s", "after_first_step_tokens_per_s", lambda v: f"{v:,.0f}"),
    ("train loop (s)", "train_runtime_s", lambda v: f"{v:.1f}"),
    ("first step (s)", "first_step_s", lambda v: f"{v:.2f}"),
    ("compiling in the train loop (s)", "train_compile_s", lambda v: f"{v:.1f}"),
    ("real tokens/s without compiling", "tokens_per_s_without_compile", lambda v: f"{v:,.0f}"),
    ("padding efficiency", "padding_efficiency", lambda v: f"{100 * v:.1f}%"),
    ("real / computed tokens", "_tokens", str),
    ("compiled train-step shapes", "train_compiled_shapes", str),
    ("compiled eval-step shapes", "eval_compiled_shapes", str),
    ("distinct batch shapes", "distinct_batch_shapes", str),
    ("train sentences / steps", "_steps", str),
    ("train loss", "train_loss", lambda v: f"{v:.4f}"),
    ("tokenize (s)", "tokenize_s", lambda v: f"{v:.2f}"),
    ("evaluation (s)", "eval_s", lambda v: f"{v:.2f}"),
    ("  of which compiling (s)", "eval_compile_s", lambda v: f"{v:.2f}"),
    ("validation F1, word level (%)", "val_f1", lambda v: f"{100 * v:.2f}"),
    ("F1 the trainer reports (%)", "trainer_reported_f1", lambda v: f"{100 * v:.2f}"),
    ("peak RSS (MiB)", "peak_rss_mib", lambda v: f"{v:,.0f}"),
    ("process wall (s)", "process_wall_s", lambda v: f"{v:.1f}"),
)


def _cell(run: dict[str, Any], field: str, fmt: Callable[[Any], str]) -> str:
    if "error" in run:
        return "failed" if field == "train_sentences_per_s" else ""
    if field == "_tokens":
        return f"{run['real_tokens']:,} / {run['computed_tokens']:,}"
    if field == "_steps":
        return f"{run['train_sentences']:,} / {run['train_steps']:,}"
    value = run.get(field)
    return "n/a" if value is None else fmt(value)


def format_table(runs: Sequence[dict[str, Any]]) -> str:
    """One column per run, one row per measurement, as a Markdown table."""
    header = ["", *(run["name"] for run in runs)]
    body = [[label, *(_cell(run, field, fmt) for run in runs)] for label, field, fmt in ROWS]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first, *rest = cells
        padded = [first.ljust(widths[0])] + [c.rjust(w) for c, w in zip(rest, widths[1:])]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(["-" * (widths[0] + 2)] + ["-" * (w + 1) + ":" for w in widths[1:]]) + "|"
    return "\n".join([line(header), rule, *(line(row) for row in body)])


def comparisons(runs: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """flaxtrainer against the other runs: throughput ratios and F1 differences (points)."""
    by_name = {run["name"]: run for run in runs if "error" not in run}
    flax = by_name.get("flaxtrainer")
    out: dict[str, float | None] = {}
    if flax is None:
        return out

    def ratio(field: str, ref: dict[str, Any]) -> float | None:
        return flax[field] / ref[field] if flax.get(field) and ref.get(field) else None

    for other, key in (("flaxtrainer-seed", "seed"), ("hf-pytorch", "torch")):
        if other in by_name:
            ref = by_name[other]
            out[f"speedup_vs_{key}"] = ratio("train_sentences_per_s", ref)
            out[f"speedup_after_first_step_vs_{key}"] = ratio(
                "after_first_step_sentences_per_s", ref
            )
            out[f"f1_points_vs_{key}"] = 100 * (flax["val_f1"] - ref["val_f1"])
    warm, torch = by_name.get("flaxtrainer-warm-cache"), by_name.get("hf-pytorch")
    if warm is not None and torch is not None:
        out["speedup_warm_cache_vs_torch"] = (
            warm["train_sentences_per_s"] / torch["train_sentences_per_s"]
        )
    return out


def format_comparisons(values: dict[str, float | None]) -> str:
    """The comparison lines under the table."""

    def times(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}x"

    lines = []
    for key in ("seed", "torch"):
        if f"speedup_vs_{key}" in values:
            lines.append(
                f"flaxtrainer vs {key}: {times(values[f'speedup_vs_{key}'])} sentences/s over "
                f"the whole train loop ({times(values[f'speedup_after_first_step_vs_{key}'])} "
                f"after the first step), F1 {values[f'f1_points_vs_{key}']:+.2f} points"
            )
    if "speedup_warm_cache_vs_torch" in values:
        lines.append(
            "flaxtrainer with a warm compilation cache vs torch: "
            f"{times(values['speedup_warm_cache_vs_torch'])} sentences/s over the whole train loop"
        )
    return "\n".join(lines)


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write the results document (machine, command, job, runs, comparisons)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Print the table of a saved benchmark run.")
    parser.add_argument("results_json", type=Path)
    args = parser.parse_args(argv)
    document = json.loads(args.results_json.read_text())
    print(format_table(document["runs"]))
    print(format_comparisons(document.get("comparisons", {})))


if __name__ == "__main__":
    sys.exit(main())
