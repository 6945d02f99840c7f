"""Packing on one process and on several: padding efficiency and compiled train shapes.

Runs the offline demo (MiniLM on W-NUT 2016, packing as shipped) for one epoch twice: one
process with ``D`` CPU devices, then ``P`` processes with ``D / P`` devices each (JAX's
distributed runtime on 127.0.0.1). Both runs see the same global batch (32 sentences); the
multi-process run plans its grid and packs every micro-batch from the global lengths, each
process placing its own sentences into the shared rows. Prints each run's ``padding_efficiency``, ``train_compiled_shapes`` and
its grid ("Training batches: ..." from the log) as a Markdown table.

    python benchmarks/multi_process.py --devices 2 --processes 2 --max_train_samples 512
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(root: Path, processes: int, devices: int, extra: list[str], timeout: float) -> dict:
    """One run of the demo on ``processes`` x ``devices / processes`` CPU devices."""
    out = root / f"p{processes}"
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices // processes}",
        "JAX_PLATFORMS": "cpu",
        "TOKENIZERS_PARALLELISM": "false",
    }
    per_device = 32 // devices
    command = [
        sys.executable, "-m", "flaxtrainer", "demo",
        "--output_dir", str(out / "out"),
        "--num_train_epochs", "1",
        "--per_device_train_batch_size", str(per_device),
        "--eval_strategy", "no", "--do_eval", "false", "--do_predict", "false",
        "--save_strategy", "no",  # training only: no checkpoint writes in the timings
        "--disable_tqdm", "--report_to", "none",
        *extra,
    ]  # fmt: skip
    port, procs = _free_port(), []
    out.mkdir(parents=True)
    for pid in range(processes):
        flags = []
        if processes > 1:
            flags = ["--coordinator_address", f"127.0.0.1:{port}"]
            flags += ["--num_processes", str(processes), "--process_id", str(pid)]
        log = (out / f"log{pid}.txt").open("w")
        procs.append(
            subprocess.Popen([*command, *flags], stdout=log, stderr=subprocess.STDOUT, env=env)
        )
    for proc in procs:
        if proc.wait(timeout=timeout) != 0:
            raise SystemExit(f"run {out} failed: see {out}/log*.txt")
    results = json.loads((out / "out" / "train_results.json").read_text())
    grid = re.search(r"Training batches: (.*)\.", (out / "log0.txt").read_text())
    return {
        "processes": processes,
        "devices": devices,
        "padding_efficiency": results["padding_efficiency"],
        "train_compiled_shapes": results["train_compiled_shapes"],
        "train_loss": results["train_loss"],
        "grid": grid.group(1) if grid else "?",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2, help="CPU devices in all")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--max_train_samples", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args()
    extra = []
    if args.max_train_samples:
        extra = ["--max_train_samples", str(args.max_train_samples)]
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run(Path(tmp), p, args.devices, extra, args.timeout) for p in (1, args.processes)]
    print(
        "| processes x devices | padding efficiency | compiled train shapes | grid | train loss |"
    )
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['processes']} x {r['devices'] // r['processes']} | "
            f"{r['padding_efficiency']:.4f} | {r['train_compiled_shapes']} | {r['grid']} | "
            f"{r['train_loss']:.4f} |"
        )


if __name__ == "__main__":
    main()
