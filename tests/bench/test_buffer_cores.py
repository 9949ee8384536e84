"""The buffer bench's core split and its run-queue figures: Fluido on a core of its own, the rest on the
others, and a process's on-CPU and waiting time read from schedstat."""

from __future__ import annotations

import os
import subprocess
import sys

from bench.buffer.scenarios import Cell, cores
from bench.buffer.table import core
from bench.procs import run_queue


def test_fluido_gets_a_core_the_rest_does_not_share() -> None:
    own, rest = cores()
    allowed = os.sched_getaffinity(0)
    if len(allowed) > 1:
        assert own in allowed and own not in rest and rest | {own} == allowed
    else:
        assert own is None and rest == allowed


def test_a_busy_process_shows_on_cpu_time_and_time_slices() -> None:
    # A process of its own: the test process's other threads may end between two reads, and a busy loop
    # that is never preempted adds no time slice. The child runs 50 ms, says so, and waits.
    work = "import time\nt = time.process_time() + 0.05\nwhile time.process_time() < t: pass\nprint(flush=True)\ninput()"
    with subprocess.Popen(
        [sys.executable, "-c", work], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    ) as child:
        try:
            assert child.stdout is not None and child.stdout.readline() == b"\n"
            ran, waited, runs = run_queue(child.pid)
            has_schedstat = os.path.exists(f"/proc/{child.pid}/schedstat")
        finally:
            child.kill()
    if has_schedstat:
        assert ran >= 0.05 and waited >= 0 and runs >= 1
    else:
        assert (ran, waited, runs) == (0, 0, 0)


def test_a_gone_process_reads_as_zeros() -> None:
    assert run_queue(2**22 + 1) == (0.0, 0.0, 0)


def test_the_core_figure_is_per_second_and_per_run() -> None:
    cell = Cell([], 1.0, 10.0, fluido_cpu=0.12, fluido_wait=0.03, fluido_runs=3000)
    assert core(cell) == "Fluido on CPU 12% of its core, waiting for it 30 ms/s (100 us a run)"
