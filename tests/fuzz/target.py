"""What the fuzzer runs against: Fluido on a real socket in front of the fake vLLM and the fake Ollama, with
the default chain on (classifier, compaction, exact cache) so every layer sees the odd input."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tests.conftest import OLLAMA_MODEL, VLLM_MODEL, threaded
from tests.fakes.ollama import FakeOllama
from tests.fakes.vllm import FakeVLLM

ALIASES = ("chat", "ollama")


def fuzz_config(vllm_url: str, ollama_url: str) -> dict[str, Any]:
    return {
        "upstreams": {
            "vllm": {"kind": "openai", "url": vllm_url + "/v1"},
            "ollama": {"kind": "ollama", "url": ollama_url},
        },
        "models": {
            "chat": {"targets": [{"upstream": "vllm", "model": VLLM_MODEL}]},
            "ollama": {"targets": [{"upstream": "ollama", "model": OLLAMA_MODEL}]},
        },
        "classifier": {"enabled": True, "compaction": True},
        "cache": {"enabled": True, "semantic": {"enabled": False}},
    }


@dataclass
class Fakes:
    vllm: FakeVLLM
    ollama: FakeOllama


@contextmanager
def fakes() -> Iterator[Fakes]:
    with threaded(FakeVLLM()) as vllm, threaded(FakeOllama()) as ollama:
        assert isinstance(vllm, FakeVLLM) and isinstance(ollama, FakeOllama)
        # The fakes keep every request they get; a fuzz run sends thousands.
        yield Fakes(vllm, ollama)


def toml_config(cfg: dict[str, Any]) -> str:
    """The same configuration as a config.toml, for ``fluido serve``."""
    up = cfg["upstreams"]
    return "\n".join(
        [
            "[classifier]\nenabled = true\ncompaction = true",
            "[cache]\nenabled = true\n[cache.semantic]\nenabled = false",
            f'[upstreams.vllm]\nkind = "openai"\nurl = "{up["vllm"]["url"]}"',
            f'[upstreams.ollama]\nkind = "ollama"\nurl = "{up["ollama"]["url"]}"',
            f'[models.chat]\ntargets = [{{ upstream = "vllm", model = "{VLLM_MODEL}" }}]',
            f'[models.ollama]\ntargets = [{{ upstream = "ollama", model = "{OLLAMA_MODEL}" }}]',
        ]
    )
