"""The built-in query-class mix and prompt files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from bench.load.prompts import builtin_classes, builtin_prompts, file_prompts, parse_mix


def test_the_mix_sets_the_share_of_each_class() -> None:
    prompts = builtin_prompts(parse_mix("short=70,long=30"), 2000, seed=0)
    counts = Counter(p.query_class for p in prompts)
    assert set(counts) == {"short", "long"}
    assert counts["short"] / 2000 == pytest.approx(0.7, abs=0.03)


def test_each_class_carries_its_output_cap_and_long_prompts_are_long() -> None:
    classes = builtin_classes()
    prompts = builtin_prompts({"short": 1, "long": 1, "code": 1, "reasoning": 1}, 200, seed=1)
    for p in prompts:
        assert p.body["max_tokens"] == classes[p.query_class].max_tokens
    words = {p.query_class: len(p.body["messages"][0]["content"].split()) for p in prompts}
    assert words["long"] > 400 > 20 > words["short"]


def test_the_same_seed_gives_the_same_sequence() -> None:
    mix = parse_mix("short=1,code=1")
    assert builtin_prompts(mix, 50, seed=2) == builtin_prompts(mix, 50, seed=2)


@pytest.mark.parametrize("bad", ["short", "tiny=3", "short=-1", "short=0"])
def test_a_bad_mix_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_mix(bad)


def test_a_prompt_file_gives_chat_bodies_without_model_or_stream(tmp_path: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_text(
        '{"model": "x", "stream": false, "messages": [{"role": "user", "content": "hi"}], "class": "greeting"}\n'
        "\n"
        '{"messages": [{"role": "user", "content": "bye"}], "temperature": 0}\n'
    )
    prompts = file_prompts(path)
    assert [p.query_class for p in prompts] == ["greeting", "file"]
    assert prompts[0].body == {"messages": [{"role": "user", "content": "hi"}]}
    assert prompts[1].body["temperature"] == 0


def test_a_broken_prompt_file_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"messages": []}\n{"prompt": "no messages"}\n')
    with pytest.raises(ValueError, match=r"prompts\.jsonl:2"):
        file_prompts(path)
