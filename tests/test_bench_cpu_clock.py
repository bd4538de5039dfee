"""The benchmarks read a process's CPU time in nanoseconds (bench/stream_bench.py, `cpu_seconds`),
not in /proc's ticks of 10 ms: the end-to-end test's tiny floor run (60 frames, a few ms of CPU)
read 0 in ticks on a fast machine, and its CPU per frame with it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench.stream_bench import cpu_seconds
from tests.support.waiting import eventually_sync

pytestmark = pytest.mark.pure


def test_a_process_that_used_a_millisecond_reads_above_zero_and_below_a_tick():
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        # Asleep: `sleep` has spent a fraction of a millisecond starting, then nothing: more
        # than no time at all, less than one tick of /proc/PID/stat.
        eventually_sync(lambda: _state(sleeper.pid) == "S", timeout=5, what="sleep asleep")
        used = cpu_seconds(sleeper.pid)
        assert 0 < used < 0.010, used
    finally:
        sleeper.kill()
        sleeper.wait()


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_it_reads_every_thread_of_the_process():
    burner = subprocess.Popen(["python3", "-c", (
        "import threading, time\n"
        "def burn():\n"
        "    end = time.thread_time() + 0.2\n"
        "    while time.thread_time() < end: pass\n"
        "t = threading.Thread(target=burn); t.start(); t.join()\n"
        "print('done', flush=True); time.sleep(30)")], stdout=subprocess.PIPE, text=True)
    try:
        assert burner.stdout.readline() == "done\n"
        assert cpu_seconds(burner.pid) >= 0.2  # the ended thread's 0.2 s included
    finally:
        burner.kill()
        burner.wait()
