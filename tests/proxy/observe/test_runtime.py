"""GET /admin/runtime: what the process holds (tasks, threads, descriptors, memory), for admin keys only."""

from __future__ import annotations

import httpx

from proxy.config import parse
from tests.conftest import VLLM_MODEL, running, upstream_for
from tests.fakes.vllm import FakeVLLM

ENV = {"ADMIN_KEY": "sk-admin-runtime", "USER_KEY": "sk-user-runtime"}


def keyed(vllm: FakeVLLM) -> dict[str, object]:
    return {
        "keys": {"ops": {"key_env": "ADMIN_KEY", "admin": True}, "app": {"key_env": "USER_KEY"}},
        "upstreams": {"vllm": upstream_for(vllm)},
        "models": {"chat": {"targets": [{"upstream": "vllm", "model": VLLM_MODEL}]}},
    }


def test_an_admin_key_reads_the_process_counts(vllm: FakeVLLM) -> None:
    with running(parse(keyed(vllm), ENV)) as url:
        r = httpx.get(f"{url}/admin/runtime", headers={"authorization": "Bearer sk-admin-runtime"})
    body = r.json()
    assert r.status_code == 200, body
    assert set(body) == {"tasks", "threads", "open_fds", "rss_bytes"}
    assert (
        body["tasks"] >= 1 and body["threads"] >= 1 and body["open_fds"] > 0 and body["rss_bytes"] > 1 << 20
    )


def test_other_keys_and_anonymous_callers_are_refused(vllm: FakeVLLM) -> None:
    with running(parse(keyed(vllm), ENV)) as url:
        user = httpx.get(f"{url}/admin/runtime", headers={"authorization": "Bearer sk-user-runtime"})
        anonymous = httpx.get(f"{url}/admin/runtime")
    assert user.status_code == 403 and user.json()["error"]["code"] == "permission_denied"
    assert anonymous.status_code == 401 and anonymous.json()["error"]["type"] == "authentication_error"


def test_without_keys_only_this_machine_may_ask(vllm: FakeVLLM) -> None:
    cfg = {k: v for k, v in keyed(vllm).items() if k != "keys"}
    cfg["limits"] = {"trusted_proxies": ["127.0.0.1"]}  # so a proxied caller is seen as its own address
    with running(parse(cfg)) as url:
        local = httpx.get(f"{url}/admin/runtime")
        remote = httpx.get(f"{url}/admin/runtime", headers={"x-forwarded-for": "203.0.113.9"})
    assert local.status_code == 200 and local.json()["tasks"] >= 1
    assert remote.status_code == 403
