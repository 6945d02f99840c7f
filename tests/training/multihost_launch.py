"""Start and wait for the processes of a multi-process run on this machine (CPU devices, JAX's
distributed runtime with the coordinator on 127.0.0.1). Shared by the multi-host tests."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_env(devices: int, **extra: str) -> dict[str, str]:
    """This environment with ``devices`` CPU devices per process."""
    return {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_PLATFORMS": "cpu",
        **extra,
    }


def launch(
    command: Sequence[str],
    run_dir: Path,
    processes: int,
    env: dict[str, str],
    per_process: Sequence[str] = (),
) -> list[tuple[subprocess.Popen, Path]]:
    """Start ``processes`` copies of ``command`` (with the distributed flags when more than one),
    each logging to ``run_dir/log<pid>.txt``; ``per_process`` may hold ``{pid}``."""
    port = free_port()
    procs = []
    for pid in range(processes):
        extra = [arg.format(pid=pid) for arg in per_process]
        if processes > 1:
            extra += ["--coordinator_address", f"127.0.0.1:{port}"]
            extra += ["--num_processes", str(processes), "--process_id", str(pid)]
        log = run_dir / f"log{pid}.txt"
        with log.open("w") as stream:
            proc = subprocess.Popen(
                [*command, *extra], stdout=stream, stderr=subprocess.STDOUT, env=env
            )
        procs.append((proc, log))
    return procs


def wait_all(procs: list[tuple[subprocess.Popen, Path]], timeout: float, name: str) -> None:
    """Wait for every process (killing all if one runs past ``timeout`` seconds: a hung
    collective fails the test instead of stalling CI); each must exit 0."""
    try:
        for proc, _ in procs:
            proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        for proc, _ in procs:
            proc.kill()
        logs = "\n".join(f"--- {log}\n{log.read_text()[-3000:]}" for _, log in procs)
        pytest.fail(f"{name}: a process ran past {timeout} s (hung collective?):\n{logs}")
    for pid, (proc, log) in enumerate(procs):
        assert proc.returncode == 0, f"{name} process {pid} failed:\n{log.read_text()[-5000:]}"
