"""FLAXTRAINER_MALLOC=mimalloc: the command line starts itself again with the allocator preloaded.

The in-process tests replace ``os.execve`` (nothing is re-executed); the subprocess tests run
``python -m flaxtrainer demo --help`` for real and read the allocator line it logs.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from flaxtrainer.runtime import allocator


class Execve(Exception):
    """Raised by the fake ``os.execve`` so that the test sees what would have run."""


@pytest.fixture
def fake_execve(monkeypatch):
    calls = []

    def execve(path, argv, env):
        calls.append((path, list(argv), dict(env)))
        raise Execve

    monkeypatch.setattr(allocator.os, "execve", execve)
    monkeypatch.setattr(allocator, "is_loaded", lambda name: False)
    return calls


def test_preload_names_and_parse():
    assert allocator.preload_name(" MiMalloc ") == "mimalloc"
    assert allocator.preload_name("off") is None
    assert allocator.preload_name("arena_max=1") is None
    assert allocator.parse("mimalloc") == {}  # no mallopt for a preloaded allocator


def test_preload_environment_prepends_and_keeps_user_settings():
    env = allocator.preload_environment(
        "mimalloc",
        "/lib/libmimalloc.so",
        {"LD_PRELOAD": "/lib/libother.so", "MIMALLOC_PURGE_DELAY": "500", "HOME": "/h"},
    )
    assert env["LD_PRELOAD"] == "/lib/libmimalloc.so /lib/libother.so"
    assert env["MIMALLOC_PURGE_DELAY"] == "500"  # the user's value wins
    assert env["MIMALLOC_ALLOW_THP"] == "0"
    assert env["HOME"] == "/h"
    assert env[allocator.REEXEC_MARK] == "mimalloc"
    again = allocator.preload_environment("mimalloc", "/lib/libmimalloc.so", env)
    assert again["LD_PRELOAD"] == env["LD_PRELOAD"]  # never twice


def test_reexec_runs_the_same_command_with_the_library(monkeypatch, fake_execve):
    monkeypatch.setenv(allocator.ENV, "mimalloc")
    monkeypatch.delenv(allocator.REEXEC_MARK, raising=False)
    monkeypatch.setattr(allocator, "find_library", lambda name: "/opt/libmimalloc.so")
    with pytest.raises(Execve):
        allocator.reexec_with_preload()
    ((path, argv, env),) = fake_execve
    assert path == sys.executable
    assert argv == list(sys.orig_argv)
    assert env["LD_PRELOAD"].split()[0] == "/opt/libmimalloc.so"
    assert env[allocator.REEXEC_MARK] == "mimalloc"


@pytest.mark.parametrize("spec", ["off", "arena_max=1", ""])
def test_no_reexec_without_a_preload(monkeypatch, fake_execve, spec):
    monkeypatch.setenv(allocator.ENV, spec)
    allocator.reexec_with_preload()
    assert fake_execve == []


def test_missing_library_warns_and_runs_on(monkeypatch, fake_execve, capsys):
    monkeypatch.setenv(allocator.ENV, "mimalloc")
    monkeypatch.delenv(allocator.REEXEC_MARK, raising=False)
    monkeypatch.setattr(allocator, "find_library", lambda name: None)
    allocator.reexec_with_preload()
    assert fake_execve == []
    err = capsys.readouterr().err
    assert "no libmimalloc.so found" in err and "flaxtrainer[mimalloc]" in err


def test_a_second_start_never_reexecutes(monkeypatch, fake_execve, capsys):
    monkeypatch.setenv(allocator.ENV, "mimalloc")
    monkeypatch.setenv(allocator.REEXEC_MARK, "mimalloc")  # we are the re-executed process
    monkeypatch.setattr(allocator, "find_library", lambda name: "/opt/libmimalloc.so")
    allocator.reexec_with_preload()
    assert fake_execve == []
    assert "did not load it" in capsys.readouterr().err


def _help_under(spec: str, **extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != allocator.REEXEC_MARK}
    env.update({allocator.ENV: spec, **extra})
    return subprocess.run(
        [sys.executable, "-m", "flaxtrainer", "demo", "--help"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or allocator.find_library("mimalloc") is None,
    reason="needs Linux and libmimalloc (the mimalloc extra)",
)
def test_command_line_runs_under_mimalloc():
    done = _help_under("mimalloc")
    assert done.returncode == 0, done.stderr
    assert "usage: flaxtrainer demo" in done.stdout
    assert "allocator: mimalloc (preloaded; MIMALLOC_PURGE_DELAY=-1" in done.stderr
    plain = _help_under("off")
    assert plain.returncode == 0
    assert "allocator: glibc malloc" in plain.stderr


def test_command_line_without_the_library_warns_and_works():
    # The mark says "already re-executed" and LD_PRELOAD is empty: the guard must warn and run.
    done = _help_under("mimalloc", **{allocator.REEXEC_MARK: "mimalloc", "LD_PRELOAD": ""})
    assert done.returncode == 0, done.stderr
    assert "usage: flaxtrainer demo" in done.stdout
    assert "running with glibc's malloc" in done.stderr
