"""A real ``chroma run`` server for tests, on a free port."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import free_port


class ChromaServer:
    """A real ``chroma run`` on a free port; ``stop()`` then ``start()`` keeps the port and the data."""

    def __init__(self, path: Path) -> None:
        self.path, self.port = path, free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = str(Path(sys.executable).parent / "chroma")
        command = [binary, "run", "--path", str(self.path), "--host", "127.0.0.1", "--port", str(self.port)]
        self._proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("chroma did not start")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None
