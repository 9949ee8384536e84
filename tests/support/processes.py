"""Real processes for load and fault tests: ``fluido serve``, the paced fake upstream, ``chroma run``.

Each runs as a child process on a free loopback port, with its output in a file the test can read, and can
be killed (SIGKILL, as a crash) and started again on the same port. Every wait has a deadline.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import free_port
from tests.support.procfs import children

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def toml_text(data: Mapping[str, Any], prefix: str = "") -> str:
    """``data`` as TOML: scalars and lists first, then each sub-table under its dotted name."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, Mapping):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        return "[" + ", ".join(value(x) for x in v) + "]"

    lines = [f"{k} = {value(v)}" for k, v in data.items() if not isinstance(v, Mapping)]
    # An empty table is still written: its presence can mean something ([upstreams.x.embedded]).
    text = (f"[{prefix}]\n" if prefix and (lines or not data) else "") + "".join(
        line + "\n" for line in lines
    )
    for k, v in data.items():
        if isinstance(v, Mapping):
            text += toml_text(v, f"{prefix}.{k}" if prefix else k)
    return text


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class Child:
    """One child process on ``port``; ``start`` again after ``kill`` reuses the port."""

    def __init__(self, name: str, logs: Path, port: int | None = None) -> None:
        self.name = name
        self.port = port or free_port()
        self.log = logs / f"{name}.out"
        self.err = logs / f"{name}.err"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def ready(self) -> bool:
        return listening(self.port)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 60.0) -> None:
        with self.log.open("ab") as out, self.err.open("ab") as err:
            self.proc = subprocess.Popen(
                self.command(), cwd=REPO, env=self.env(), stdin=subprocess.DEVNULL, stdout=out, stderr=err
            )
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}): {self.tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{self.name} did not start in {timeout:g}s: {self.tail()}")
            time.sleep(0.05)

    def tail(self, chars: int = 2000) -> str:
        text = self.err.read_text(errors="replace") + self.log.read_text(errors="replace")
        return text[-chars:]

    def kill(self) -> None:
        """SIGKILL, as a crash: nothing is closed cleanly."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL past ``timeout``; the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


class PacedUpstream(Child):
    """``tests.fakes.paced``: an OpenAI-compatible upstream streaming at a fixed rate."""

    def __init__(
        self,
        logs: Path,
        tokens: int = 40,
        interval: float = 0.1,
        keepalive: float = 5.0,
        piece_bytes: int = 0,
        name: str = "upstream",
    ) -> None:
        super().__init__(name, logs)
        self.options = ["--tokens", str(tokens), "--interval", str(interval), "--keepalive", str(keepalive)]
        self.options += ["--piece-bytes", str(piece_bytes)]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [PYTHON, "-m", "tests.fakes.paced", "--port", str(self.port), *self.options]

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/_fake/stats", timeout=10).json()  # type: ignore[no-any-return]

    def received(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/_fake/received", timeout=30).json()  # type: ignore[no-any-return]


class ChromaServer(Child):
    """``chroma run``: the Chroma server the semantic cache uses when ``cache.semantic.host`` is set."""

    def __init__(self, logs: Path, data: Path) -> None:
        super().__init__("chroma", logs)
        self.data = data

    def command(self) -> list[str]:
        binary = shutil.which("chroma", path=str(Path(PYTHON).parent)) or "chroma"
        return [binary, "run", "--path", str(self.data), "--host", "127.0.0.1", "--port", str(self.port)]

    def ready(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/api/v2/heartbeat", timeout=1).status_code == 200
        except httpx.TransportError:
            return False


class Fluido(Child):
    """``fluido serve`` (as ``python -m proxy.cli serve``) on a config written from ``config``."""

    def __init__(
        self,
        logs: Path,
        config: Mapping[str, Any],
        env: Mapping[str, str] | None = None,
        name: str = "fluido",
        args: Sequence[str] = (),
    ) -> None:
        super().__init__(name, logs)
        self.config_path = logs / f"{name}.toml"
        self.config_path.write_text(toml_text(config))
        self.extra_env = dict(env or {})
        self.args = list(args)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        serve = ["serve", "--config", str(self.config_path), "--port", str(self.port), *self.args]
        return [PYTHON, "-m", "proxy.cli", *serve]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLUIDO_")}
        return env | self.extra_env

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def runtime(self, admin_key: str | None = None) -> dict[str, int]:
        """GET /admin/runtime: tasks, threads, descriptors and memory as the process sees them."""
        headers = {"authorization": f"Bearer {admin_key}"} if admin_key else {}
        r = httpx.get(f"{self.url}/admin/runtime", headers=headers, timeout=10)
        r.raise_for_status()
        return r.json()  # type: ignore[no-any-return]

    def child_pids(self) -> list[int]:
        return children(self.pid)
