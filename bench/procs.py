"""Child processes for the benchmark: start, pin to a core, wait until they listen, read their CPU time,
and always stop them, whatever ends the run."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

REPO = Path(__file__).resolve().parent.parent
_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """The process's on-CPU time, all threads. schedstat is in nanoseconds; /proc/<pid>/stat (10 ms ticks)
    is the fallback where the kernel has no schedstat."""
    try:
        total = 0
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/stat") as f:
            # Fields after the parenthesised name; utime and stime are the 14th and 15th fields.
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS


def run_queue(pid: int) -> tuple[float, float, int]:
    """The process's (on-CPU seconds, seconds ready to run but waiting for a core, time slices), all
    threads, from schedstat; zeros where the kernel has none."""
    total = [0, 0, 0]
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total = [a + int(b) for a, b in zip(total, f.read().split(), strict=True)]
    except (OSError, ValueError):
        return 0.0, 0.0, 0
    return total[0] / 1e9, total[1] / 1e9, total[2]


def core_seconds(core: int) -> tuple[float, float]:
    """(busy, stolen) seconds of one core since boot, from /proc/stat (10 ms ticks): busy is everything
    but idle and iowait; stolen is time the hypervisor gave to other guests."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{core} "):
                ticks = [int(v) for v in line.split()[1:9]]
                user, nice, system, irq, softirq, steal = (ticks[i] for i in (0, 1, 2, 5, 6, 7))
                return (user + nice + system + irq + softirq) / _TICKS, steal / _TICKS
    return 0.0, 0.0


class Child:
    def __init__(self, name: str, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.name = name
        self.proc = proc
        self.port = port
        self.log = log

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Fleet:
    """A context manager owning every child process; leaving it, normally or not, stops them all."""

    def __init__(self) -> None:
        self.children: list[Child] = []
        self.logs = Path(tempfile.mkdtemp(prefix="fluido-bench-"))
        self._old_term: signal._HANDLER = None

    def __enter__(self) -> Fleet:
        # SIGTERM (e.g. from a CI timeout) becomes an exception, so the finally-style cleanup still runs.
        self._old_term = signal.signal(signal.SIGTERM, _raise_exit)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_all()
        signal.signal(signal.SIGTERM, self._old_term)
        # Fluido's access log alone is tens of MB a run: keep the logs only when something went wrong.
        if kind is None:
            shutil.rmtree(self.logs, ignore_errors=True)
        else:
            print(f"child process logs kept in {self.logs}", file=sys.stderr)

    def start(self, name: str, module: str, args: list[str], cpu: int | None) -> Child:
        port = free_port()
        log = self.logs / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", module, "--port", str(port), *args],
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Its own session: a Ctrl-C reaches only this process, which then stops the children in order.
                start_new_session=True,
            )
        child = Child(name, proc, port, log)
        self.children.append(child)
        if cpu is not None:
            # Pinned before it has started its event loop: threads it creates later inherit the mask.
            os.sched_setaffinity(proc.pid, {cpu})
        return child

    def wait_listening(self, child: Child, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if child.proc.poll() is not None:
                raise RuntimeError(f"{child.name} exited with {child.proc.returncode}:\n{child.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", child.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{child.name} did not listen on port {child.port} within {timeout:g}s")

    def stop_all(self) -> None:
        for child in self.children:
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        for child in self.children:
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()
        self.children.clear()


def _raise_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def rss_mb(pid: int) -> float:
    """The process's resident set size, in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")
