"""Query classes, their profiles, and routing by class."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from middleware.classify.config import ClassifierConfig, Profile
from middleware.classify.scorer import RuleScorer, apply_profile
from proxy.config import parse
from proxy.parsing import parse_chat
from tests.conftest import OLLAMA_MODEL, VLLM_MODEL, running, upstream_for
from tests.fakes.ollama import FakeOllama
from tests.fakes.vllm import FakeVLLM

DATA = Path(__file__).resolve().parents[2] / "data" / "query_classes.jsonl"


def labelled() -> list[dict[str, str]]:
    return [orjson.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hi! how are you?", "short"),
        ("¿Cuál es la capital de Perú?", "short"),
        ("```python\ndef f(x):\n    return x[0]\n```\nwhy IndexError?", "code"),
        ('Traceback (most recent call last):\n  File "app.py", line 3\nKeyError: "id"', "code"),
        ("¿Cómo hago un join en SQL entre dos tablas?", "code"),
        ("Prove that there are infinitely many primes.", "reasoning"),
        ("Resuelve paso a paso: 3x + 5 = 20", "reasoning"),
        ("Write a 1500-word essay on the history of the printing press.", "long"),
        ("Escribe un cuento largo sobre un faro abandonado, con detalle.", "long"),
        ("Résume cet article: " + "Le texte continue longuement. " * 40, "long"),
    ],
)
def test_the_fast_scorer_reads_the_last_user_turn(text: str, expected: str) -> None:
    assert RuleScorer(ClassifierConfig()).pick(text) == expected


def test_the_fast_scorer_is_accurate_on_the_labelled_set() -> None:
    rows = labelled()
    scorer = RuleScorer(ClassifierConfig())
    right = sum(scorer.pick(r["prompt"]) == r["class"] for r in rows)
    assert len(rows) >= 200 and right / len(rows) >= 0.85


def test_the_labelled_set_covers_every_class_and_several_languages() -> None:
    rows = labelled()
    assert set(collections.Counter(r["class"] for r in rows)) == {"short", "long", "code", "reasoning"}
    languages = collections.Counter(r["lang"] for r in rows)
    assert len(languages) >= 4 and languages["es"] >= 40


def test_configured_signals_add_a_class() -> None:
    cfg = ClassifierConfig(signals={"translation": (r"\btranslate\b", r"\btraduce\b")}, signal_weight=6)
    assert RuleScorer(cfg).pick("translate 'good morning' to Japanese") == "translation"


def test_the_last_user_turn_decides_not_earlier_ones() -> None:
    req = parse_chat(orjson.dumps({"model": "m", "messages": [
        {"role": "user", "content": "```js\nconsole.log(1)\n```"},
        {"role": "assistant", "content": "It prints 1."},
        {"role": "user", "content": "thanks! what's the weather like in Lima today?"},
    ]}))  # fmt: skip
    import asyncio

    assert asyncio.run(RuleScorer(ClassifierConfig()).classify(req)) == "short"


def chat(**body: Any) -> Any:
    return parse_chat(
        orjson.dumps({"model": "chat", "messages": [{"role": "user", "content": "hi"}], **body})
    )


def test_a_profile_fills_what_the_client_left_unset() -> None:
    req = apply_profile(chat(), Profile(max_tokens=128, temperature=0.2))
    assert (req.max_tokens, req.temperature) == (128, 0.2)


def test_the_clients_values_win_over_profile_defaults() -> None:
    req = apply_profile(chat(max_tokens=900, temperature=1.1), Profile(max_tokens=128, temperature=0.2))
    assert (req.max_tokens, req.temperature) == (900, 1.1)


def test_a_cap_lowers_even_what_the_client_set() -> None:
    assert apply_profile(chat(max_tokens=900), Profile(max_tokens_cap=256)).max_tokens == 256
    assert apply_profile(chat(), Profile(max_tokens_cap=256)).max_tokens == 256
    assert apply_profile(chat(max_tokens=100), Profile(max_tokens_cap=256)).max_tokens == 100


def routed_config(ollama: FakeOllama, vllm: FakeVLLM) -> Any:
    return parse(
        {
            "upstreams": {"ollama": upstream_for(ollama), "vllm": upstream_for(vllm)},
            "models": {
                "chat": {"targets": [{"upstream": "ollama", "model": OLLAMA_MODEL}]},
                "coder": {"targets": [{"upstream": "vllm", "model": VLLM_MODEL}]},
            },
            "classifier": {
                "profiles": {
                    "short": {"max_tokens": 64, "temperature": 0.3, "ollama_options": {"top_k": 20}},
                    "code": {"model": "coder", "max_tokens_cap": 512, "extra": {"priority": 1}},
                }
            },
        }
    )


def test_classes_are_noted_and_profiles_reach_each_upstream_in_its_terms(
    ollama: FakeOllama, vllm: FakeVLLM
) -> None:
    with running(routed_config(ollama, vllm)) as url:
        short = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "chat", "messages": [{"role": "user", "content": "hi there"}]},
        )
        code = httpx.post(f"{url}/v1/chat/completions", json={"model": "chat", "max_tokens": 4000,
                          "messages": [{"role": "user", "content": "fix this:\n```py\nprint(x\n```"}]})  # fmt: skip
        metrics = httpx.get(f"{url}/metrics").text
    assert short.headers["x-fluido-query-class"] == "short" and short.headers["x-fluido-upstream"] == "ollama"
    assert ollama.requests[-1]["options"] == {"num_predict": 64, "temperature": 0.3, "top_k": 20}
    assert code.headers["x-fluido-query-class"] == "code" and code.headers["x-fluido-upstream"] == "vllm"
    assert code.headers["x-fluido-routed-from"] == "chat" and code.json()["model"] == "coder"
    assert vllm.requests[-1]["max_tokens"] == 512 and vllm.requests[-1]["priority"] == 1
    counted = {
        s.labels["query_class"]: s.value
        for f in text_string_to_metric_families(metrics)
        for s in f.samples
        if s.name == "fluido_query_class_total"
    }
    assert counted == {"short": 1.0, "code": 1.0}


def test_profile_models_must_be_configured_aliases() -> None:
    from proxy.config import ConfigError

    with pytest.raises(ConfigError) as info:
        parse({
            "upstreams": {"u": {"kind": "openai", "url": "http://h:1/v1"}},
            "models": {"chat": {"targets": [{"upstream": "u", "model": "m"}]}},
            "classifier": {"profiles": {"code": {"model": "nowhere"}}, "signals": {"x": ["(unclosed"]}},
        })  # fmt: skip
    problems = "\n".join(info.value.problems)
    assert "classifier.profiles.code.model" in problems and "classifier.signals.x" in problems
