"""InterruptGuard: signals become a flag, a second Ctrl-C stops at once, handlers come back, and
nothing is swallowed; TrainingInterrupted exits with the shell's status for the signal; with
several processes, all stop at the same step."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from flaxtrainer.training.preemption import InterruptGuard, TrainingInterrupted, interrupt_message


def _deliver(signum: int) -> None:
    """Send ``signum`` to this process and let Python run its handler."""
    os.kill(os.getpid(), signum)
    time.sleep(0.01)  # handlers run between bytecodes of the main thread


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_sets_the_flag_and_handlers_come_back(signum, capfd):
    previous = signal.getsignal(signum)
    with InterruptGuard() as guard:
        assert signal.getsignal(signum) != previous
        assert not guard.requested and not guard.should_stop(1)
        _deliver(signum)
        assert guard.requested and guard.should_stop(1) and guard.signum == signum
        guard.stop(1, "ckpt", "out")  # handled: nothing is re-raised on exit
    assert signal.getsignal(signum) == previous
    notice = capfd.readouterr().err
    assert f"Received {signal.Signals(signum).name}: finishing the current step" in notice
    # Only an interactive Ctrl-C can be pressed again; a SIGTERM's notice does not offer it.
    assert ("press Ctrl-C again" in notice) == (signum == signal.SIGINT)


def test_second_ctrl_c_raises_keyboard_interrupt_at_once():
    previous = signal.getsignal(signal.SIGINT)  # SIG_IGN when pytest started in the background
    with pytest.raises(KeyboardInterrupt):
        with InterruptGuard() as guard:
            _deliver(signal.SIGINT)
            assert guard.requested
            _deliver(signal.SIGINT)
            pytest.fail("the second SIGINT did not interrupt")
    assert signal.getsignal(signal.SIGINT) is previous


def test_the_guard_tests_pass_when_sigint_is_inherited_as_ignored():
    """A background job (``pytest &``, nohup, some CI runners) starts with SIGINT ignored, and
    Python then keeps it ignored: the tests above must not depend on the disposition."""
    if os.environ.get("FLAXTRAINER_SIGINT_IGNORED_RUN"):
        pytest.skip("already the inner run")
    inner = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__]
    done = subprocess.run(  # the shell's `trap '' INT` is what a background job inherits
        ["sh", "-c", 'trap "" INT; exec "$@"', "sh", *inner, "-k", "not two_processes"],
        env={**os.environ, "FLAXTRAINER_SIGINT_IGNORED_RUN": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "failed" not in done.stdout


def test_a_signal_not_acted_on_goes_to_the_previous_handler():
    received = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        with InterruptGuard():
            _deliver(signal.SIGTERM)
            assert received == []  # the guard has it...
        time.sleep(0.01)
        assert received == [signal.SIGTERM]  # ...and hands it on when the loop never stopped
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_outside_the_main_thread_the_guard_is_inert():
    seen = {}

    def run():
        with InterruptGuard() as guard:
            seen["handler"] = signal.getsignal(signal.SIGTERM)
            seen["requested"] = guard.requested

    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == {"handler": before, "requested": False}


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_training_interrupted_is_a_system_exit_with_the_shell_status(signum, code, capsys):
    with InterruptGuard() as guard:
        _deliver(signum)
        exc = guard.stop(12, "/runs/a/checkpoints/latest/12", "/runs/a")
    assert isinstance(exc, TrainingInterrupted) and isinstance(exc, SystemExit)
    assert exc.code == code and exc.step == 12 and exc.signum == signum
    err = capsys.readouterr().err
    assert str(exc) in err  # printed for the user, on stderr
    assert "after step 12" in str(exc) and "/runs/a/checkpoints/latest/12" in str(exc)
    assert "--resume_from_checkpoint latest" in str(exc) and "--output_dir /runs/a" in str(exc)


def test_message_without_a_checkpoint_says_so():
    message = interrupt_message(signal.SIGTERM, 3, None, "out")
    assert "after step 3" in message and "no checkpoint" in message
    assert "--resume_from_checkpoint" not in message


_TWO_PROCESS_WORKER = textwrap.dedent(
    """
    import json, os, sys, time
    pid, port, folder = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid)
    from flaxtrainer.training.preemption import InterruptGuard

    with InterruptGuard() as guard:
        open(os.path.join(folder, f"ready{pid}"), "w").close()
        for step in range(1, 100_000):
            time.sleep(0.01)  # a training step
            if guard.should_stop(step):
                exc = guard.stop(step, "ckpt", "out")
                break
    print("RESULT " + json.dumps({"step": step, "code": exc.code}), flush=True)
    jax.distributed.shutdown()
    """
)


def test_two_processes_stop_at_the_same_step_when_one_gets_sigterm(tmp_path):
    """Multi-process: JAX's preemption service picks one step for every process to stop at."""
    script = tmp_path / "worker.py"
    script.write_text(_TWO_PROCESS_WORKER)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(pid), port, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for pid in (0, 1)
    ]
    try:
        deadline = time.monotonic() + 120
        while not all((tmp_path / f"ready{pid}").exists() for pid in (0, 1)):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
            time.sleep(0.05)
        procs[1].send_signal(signal.SIGTERM)  # only process 1 is preempted
        outputs = [p.communicate(timeout=60)[0] for p in procs]
    finally:
        for proc in procs:
            proc.kill()
    results = []
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-3000:]
        line = next(x for x in out.splitlines() if x.startswith("RESULT "))
        results.append(json.loads(line[len("RESULT ") :]))
    assert results[0] == results[1] and results[0]["code"] == 143
