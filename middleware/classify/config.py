"""Configuration of the query classifier and of the generation profile each class gets."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from proxy.config_reader import Reader

CLASSIFIER_MODES = ("rules", "embeddings")
DEFAULT_CLASSES = ("short", "long", "code", "reasoning")


@dataclass(frozen=True, slots=True)
class Profile:
    """What a query class changes in a request. Client-set values win unless a cap says otherwise."""

    max_tokens: int | None = None  # default when the client sets none
    max_tokens_cap: int | None = None  # upper bound even when the client sets more
    temperature: float | None = None  # default when the client sets none
    model: str = ""  # route this class to another alias ("" = keep the client's)
    ollama_options: Mapping[str, Any] = field(default_factory=dict)  # Ollama options (num_ctx, top_k, ...)
    extra: Mapping[str, Any] = field(default_factory=dict)  # body fields for OpenAI-compatible upstreams
    budget: int = 0  # compaction budget in prompt tokens; 0 = clean up only, never trim turns


@dataclass(frozen=True, slots=True)
class ClassifierConfig:
    enabled: bool = True
    mode: str = "rules"
    default: str = "short"  # the class when nothing points elsewhere
    # Extra signals per class: regular expressions, each adding ``weight`` to its class's score.
    signals: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    signal_weight: float = 2.0
    # Example prompts per class for the embeddings mode (built-in examples when empty).
    examples: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    profiles: Mapping[str, Profile] = field(default_factory=dict)
    compaction: bool = True  # clean up every prompt, and trim old turns to the class's budget

    @property
    def classes(self) -> tuple[str, ...]:
        extra = [c for c in (*self.signals, *self.examples, *self.profiles) if c not in DEFAULT_CLASSES]
        return (*DEFAULT_CLASSES, *dict.fromkeys(extra))


def _optional_int(r: Reader, key: str) -> int | None:
    return r.integer(key, 0, 1) if key in r.table else None


def _profile(r: Reader) -> Profile:
    temperature = r.raw("temperature", None)
    if temperature is not None and (
        isinstance(temperature, bool) or not isinstance(temperature, int | float)
    ):
        r.problems.append(f"{r.path}.temperature: must be a number")
        temperature = None
    profile = Profile(
        max_tokens=_optional_int(r, "max_tokens"),
        max_tokens_cap=_optional_int(r, "max_tokens_cap"),
        temperature=float(temperature) if temperature is not None else None,
        model=r.text("model", ""),
        ollama_options=r.table_of("ollama_options"),
        extra=r.table_of("extra"),
        budget=r.integer("budget", 0),
    )
    r.done()
    return profile


def _lists(r: Reader, key: str) -> dict[str, tuple[str, ...]]:
    table = r.table_of(key)
    return {name: Reader({"v": v}, f"{r.path}.{key}", r.problems).strings("v") for name, v in table.items()}


def parse_classifier(r: Reader, aliases: Mapping[str, object]) -> ClassifierConfig:
    d = ClassifierConfig()
    signals = _lists(r, "signals")
    for name, patterns in signals.items():
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                r.problems.append(f"classifier.signals.{name}: {pattern!r} is not a valid regex ({exc})")
    profiles = {
        name: _profile(Reader(table, f"classifier.profiles.{name}", r.problems))
        for name, table in r.table_of("profiles").items()
    }
    for name, profile in profiles.items():
        if profile.model and profile.model not in aliases:
            r.problems.append(f"classifier.profiles.{name}.model: no model alias named {profile.model!r}")
    cfg = ClassifierConfig(
        enabled=r.boolean("enabled", d.enabled),
        mode=r.text("mode", d.mode, CLASSIFIER_MODES),
        default=r.text("default", d.default),
        signals=signals,
        signal_weight=r.number("signal_weight", d.signal_weight),
        examples=_lists(r, "examples"),
        profiles=profiles,
        compaction=r.boolean("compaction", d.compaction),
    )
    if cfg.default not in cfg.classes:
        r.problems.append(f"classifier.default: {cfg.default!r} is not a class")
    r.done()
    return cfg
