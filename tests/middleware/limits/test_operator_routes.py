"""/admin/* (every such route the app has) answers admin keys only, or this machine when keys are off;
/metrics can require an admin key, or live on a port of its own."""

from __future__ import annotations

import socket
from typing import Any

import httpx
import pytest
from starlette.routing import Route

from proxy.app import create_app
from proxy.config import Config, ConfigError, parse
from tests.conftest import VLLM_MODEL, free_port, running, upstream_for
from tests.fakes.vllm import FakeVLLM

ENV = {"USER_KEY": "sk-user-123", "ADMIN_KEY": "sk-admin-456"}
KEYS = {"user": {"key_env": "USER_KEY"}, "root": {"key_env": "ADMIN_KEY", "admin": True}}


def cfg(vllm: FakeVLLM, **extra: Any) -> Config:
    return parse(
        {
            "upstreams": {"up0": upstream_for(vllm)},
            "models": {"chat": {"targets": [{"upstream": "up0", "model": VLLM_MODEL}]}},
            "cache": {"enabled": True, "semantic": {"enabled": False}},
            **extra,
        },
        ENV,
    )


def admin_routes(config: Config) -> list[tuple[str, str]]:
    """Every (method, path) under /admin/ the app serves: routes added later are covered without edits."""
    app = create_app(config)
    found = [
        (method, route.path)
        for route in app.routes
        if isinstance(route, Route) and route.path.startswith("/admin/")
        for method in sorted(route.methods or ())
        if method != "HEAD"
    ]
    assert found, "the app has admin routes to check"
    return found


def call(url: str, method: str, path: str, key: str | None = None, **headers: str) -> httpx.Response:
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    return httpx.request(method, url + path, headers=headers, content=b"{}" if method != "GET" else None)


def test_admin_routes_refuse_other_keys_and_answer_admin_keys(vllm: FakeVLLM) -> None:
    config = cfg(vllm, keys=KEYS)
    with running(config) as url:
        for method, path in admin_routes(config):
            assert call(url, method, path).status_code == 401
            refused = call(url, method, path, "sk-user-123")
            assert refused.status_code == 403 and refused.json()["error"]["code"] == "permission_denied"
            assert call(url, method, path, "sk-admin-456").status_code == 200


def test_without_keys_admin_routes_answer_this_machine_only(vllm: FakeVLLM) -> None:
    # Loopback is a trusted proxy here, so X-Forwarded-For stands in for a client elsewhere.
    config = cfg(vllm, limits={"trusted_proxies": ["127.0.0.1/32"]})
    with running(config) as url:
        for method, path in admin_routes(config):
            remote = call(url, method, path, **{"x-forwarded-for": "203.0.113.7"})
            assert remote.status_code == 403
            assert call(url, method, path).status_code == 200, "positive control: this machine is let in"


def test_metrics_can_require_an_admin_key(vllm: FakeVLLM) -> None:
    with running(cfg(vllm, keys=KEYS, metrics={"require_key": True})) as url:
        assert httpx.get(url + "/metrics").status_code == 401
        assert call(url, "GET", "/metrics", "sk-user-123").status_code == 403
        scraped = call(url, "GET", "/metrics", "sk-admin-456")
        assert scraped.status_code == 200 and "fluido_requests_total" in scraped.text
    with running(cfg(vllm, keys=KEYS)) as url:
        assert httpx.get(url + "/metrics").status_code == 200, "open by default, as Prometheus expects"


def test_require_key_needs_an_admin_key_configured(vllm: FakeVLLM) -> None:
    with pytest.raises(ConfigError, match=r"metrics\.require_key"):
        cfg(vllm, metrics={"require_key": True})


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("require_key", [False, True])
def test_metrics_can_be_served_on_a_port_of_their_own(vllm: FakeVLLM, require_key: bool) -> None:
    port = free_port()
    config = cfg(vllm, keys=KEYS, metrics={"port": port, "require_key": require_key})
    with running(config) as url:
        key = {"authorization": "Bearer sk-user-123"}
        httpx.post(
            url + "/v1/chat/completions",
            json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
            headers=key,
        )
        assert httpx.get(url + "/metrics", headers=key).status_code == 404, "not on the API port any more"
        scrape = httpx.get(f"http://127.0.0.1:{port}/metrics")
        if require_key:
            assert scrape.status_code == 401 and scrape.json()["error"]["type"] == "authentication_error"
            assert httpx.get(f"http://127.0.0.1:{port}/metrics", headers=key).status_code == 401
            scrape = httpx.get(
                f"http://127.0.0.1:{port}/metrics", headers={"authorization": "Bearer sk-admin-456"}
            )
        assert scrape.status_code == 200
        assert (
            'fluido_requests_total{model="chat",route="/v1/chat/completions",status="200",upstream="up0"} 1.0'
            in scrape.text
        )
    assert not listening(port), "the metrics port closes with Fluido"
