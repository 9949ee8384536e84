from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config import ConfigError, load, parse

REPO = Path(__file__).resolve().parents[2]

MINIMAL = {
    "upstreams": {"vllm": {"kind": "openai", "url": "http://127.0.0.1:8000/v1"}},
    "models": {"chat": {"targets": [{"upstream": "vllm", "model": "qwen"}]}},
}


def problems(data: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(data)
    return info.value.problems


def test_the_shipped_config_is_valid_and_serves_default_from_ollama_then_the_embedded_model() -> None:
    cfg = load(REPO / "config.toml", environ={})
    targets = cfg.models["default"].targets
    assert [cfg.upstreams[t.upstream].kind for t in targets] == ["ollama", "openai"]
    assert cfg.upstreams[targets[-1].upstream].embedded is not None
    assert cfg.server.max_body_bytes == 10 * 1024 * 1024


def test_defaults_fill_what_the_file_leaves_out() -> None:
    cfg = parse(MINIMAL)
    assert (cfg.server.host, cfg.server.port, cfg.server.workers) == ("127.0.0.1", 8080, 1)
    assert cfg.upstreams["vllm"].connect_timeout == 2.0


def test_slow_request_deadlines_have_defaults_and_must_be_positive() -> None:
    cfg = parse(MINIMAL)
    assert (cfg.server.header_timeout, cfg.server.body_timeout) == (10.0, 30.0)
    cfg = parse({**MINIMAL, "server": {"header_timeout": 2.5, "body_timeout": 4}})
    assert (cfg.server.header_timeout, cfg.server.body_timeout) == (2.5, 4.0)
    found = problems({**MINIMAL, "server": {"header_timeout": 0, "body_timeout": "fast"}})
    assert any(p.startswith("server.header_timeout:") for p in found)
    assert any(p.startswith("server.body_timeout:") for p in found)


def test_every_problem_is_reported_at_once_and_names_its_key() -> None:
    found = problems(
        {
            "server": {"port": 70000, "prot": 1},
            "upstreams": {"x": {"kind": "grpc", "url": "ftp://nowhere"}},
            "models": {"m": {"targets": [{"upstream": "missing", "model": ""}]}},
        }
    )
    assert any(p.startswith("server.port:") for p in found)
    assert "server.prot: unknown key" in found
    assert any(p.startswith("upstreams.x.kind:") for p in found)
    assert any(p.startswith("upstreams.x.url:") for p in found)
    assert any(p.startswith("models.m.targets[0].upstream:") for p in found)
    assert any(p.startswith("models.m.targets[0].model:") for p in found)


def test_a_config_without_models_is_refused() -> None:
    assert "models: at least one model alias must be configured" in problems({"upstreams": {}})


def test_an_embedded_server_must_listen_on_loopback() -> None:
    data = {
        "upstreams": {"local": {"kind": "openai", "url": "http://10.0.0.5:8091/v1", "embedded": {}}},
        "models": {"m": {"targets": [{"upstream": "local", "model": "smollm2"}]}},
    }
    assert any(p.startswith("upstreams.local.url:") for p in problems(data))


def test_environment_overrides_the_file_with_typed_values(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text((REPO / "config.toml").read_text())
    cfg = load(
        path,
        environ={
            "FLUIDO_SERVER__PORT": "9001",
            "FLUIDO_UPSTREAMS__OLLAMA__URL": "http://gpu-box:11434",
            "FLUIDO_LOG__FORMAT": "console",
            "UNRELATED": "1",
        },
    )
    assert cfg.server.port == 9001
    assert cfg.upstreams["ollama"].url == "http://gpu-box:11434"
    assert cfg.log.format == "console"


def test_a_bad_environment_override_is_reported_under_its_key(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text((REPO / "config.toml").read_text())
    with pytest.raises(ConfigError) as info:
        load(path, environ={"FLUIDO_SERVER__WORKERS": "many"})
    assert any(p.startswith("server.workers:") for p in info.value.problems)


def test_an_unreadable_or_invalid_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load(tmp_path / "missing.toml", environ={})
    broken = tmp_path / "broken.toml"
    broken.write_text("[server\nport = 1")
    with pytest.raises(ConfigError):
        load(broken, environ={})


def test_the_upstream_key_comes_from_the_named_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    data = {**MINIMAL, "upstreams": {"vllm": {**MINIMAL["upstreams"]["vllm"], "api_key_env": "VLLM_KEY"}}}
    monkeypatch.setenv("VLLM_KEY", "sk-upstream")
    assert parse(data).upstreams["vllm"].api_key == "sk-upstream"
    monkeypatch.delenv("VLLM_KEY")
    assert parse(data).upstreams["vllm"].api_key is None
