"""The deployment files agree with Fluido: every metric the Grafana dashboard queries is exported by
GET /metrics, the probes and scrape paths answer, and the manifests parse."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml  # declared in the test extra: without it these tests fail, they never skip

from proxy.config import apply_env, parse
from tests.conftest import config, running, threaded
from tests.fakes.vllm import FakeVLLM

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "fluido.json"
YAML_FILES = [
    "prometheus.yml",
    "docker-compose.yml",
    "grafana/provisioning/datasources/prometheus.yml",
    "grafana/provisioning/dashboards/fluido.yml",
    "k8s/configmap.yaml",
    "k8s/deployment.yaml",
    "k8s/service.yaml",
    "k8s/kustomization.yaml",
]
HI = [{"role": "user", "content": "hi"}]
# Fluido's metric names inside PromQL. A quoted label value starting with "fluido_" would match too; such a
# false hit fails the test loudly instead of hiding a missing metric.
METRIC_NAME = re.compile(r"\bfluido_[A-Za-z0-9_:]*")
SAMPLE_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
# The series Prometheus stores for each declared family type.
SERIES_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def queries(dashboard: dict[str, Any]) -> Iterator[str]:
    """Every PromQL text in the dashboard: panel targets and template variable queries."""
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            yield target.get("expr", "")
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query", "")
        if variable.get("type") == "query":
            yield query.get("query", "") if isinstance(query, dict) else query
            yield variable.get("definition", "")


def referenced_metrics(dashboard: dict[str, Any]) -> set[str]:
    return {name for text in queries(dashboard) for name in METRIC_NAME.findall(text)}


def exported_series(exposition: str) -> set[str]:
    """Every series name Prometheus can store from this exposition, sampled yet or not.

    A labelled family has no sample lines until a label combination is observed, so the names also come
    from its ``# TYPE`` line: a counter stores ``<family>_total`` (the text format already names the family
    so; OpenMetrics names it without the suffix), a histogram ``_bucket``, ``_sum`` and ``_count``, never
    the bare family name.
    """
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(maxsplit=3)
            if kind == "counter":
                names.add(family if family.endswith("_total") else family + "_total")
            elif kind in SERIES_SUFFIXES:
                names.update(family + suffix for suffix in SERIES_SUFFIXES[kind])
            else:
                names.add(family)
        elif line and not line.startswith("#"):
            match = SAMPLE_NAME.match(line)
            assert match is not None, f"unparsable exposition line: {line!r}"
            names.add(match.group())
    return names


@pytest.fixture(scope="module")
def fluido() -> Iterator[str]:
    """Fluido in front of a fake vLLM, after one plain and one streamed chat request."""
    with threaded(FakeVLLM()) as fake, running(config(fake)) as url:
        with httpx.Client(base_url=url, timeout=10) as client:
            for stream in (False, True):
                reply = client.post(
                    "/v1/chat/completions", json={"model": "chat", "messages": HI, "stream": stream}
                )
                assert reply.status_code == 200
        yield url


@pytest.fixture(scope="module")
def exposition(fluido: str) -> str:
    reply = httpx.get(fluido + "/metrics", timeout=10)
    assert reply.status_code == 200
    return reply.text


def test_every_metric_the_dashboard_queries_is_exported(exposition: str) -> None:
    referenced = referenced_metrics(load_dashboard())
    # Guards the extraction itself: an empty set would pass vacuously.
    assert {"fluido_requests_total", "fluido_time_to_first_token_seconds_bucket"} <= referenced
    missing = referenced - exported_series(exposition)
    assert not missing, f"the dashboard queries metrics Fluido does not export: {sorted(missing)}"


@pytest.mark.parametrize(
    "name",
    [
        "fluido_cache_hits_total",  # not declared at all
        "fluido_requests",  # a counter family without its _total suffix
        "fluido_time_to_first_token_seconds",  # a histogram without _bucket/_sum/_count
        "fluido_upstream_circuit_state_total",  # a gauge given a counter's suffix
    ],
)
def test_a_dashboard_querying_an_unexported_name_is_caught(
    name: str, exposition: str, tmp_path: Path
) -> None:
    dashboard = load_dashboard()
    panel = next(p for p in all_panels(dashboard) if p["type"] != "row")
    panel["targets"].append({"refId": "Z", "expr": f"sum(rate({name}[5m]))"})
    copy = tmp_path / "fluido.json"
    copy.write_text(json.dumps(dashboard), encoding="utf-8")
    assert referenced_metrics(load_dashboard(copy)) - exported_series(exposition) == {name}


def test_labelled_families_without_samples_still_count_as_exported(exposition: str) -> None:
    """No fallback happened, so these families have a # TYPE line but no sample yet."""
    sampled = {
        m.group()
        for line in exposition.splitlines()
        if not line.startswith("#")
        if (m := SAMPLE_NAME.match(line))
    }
    assert "fluido_fallbacks_total" not in sampled
    assert {"fluido_fallbacks_total", "fluido_upstream_errors_total"} <= exported_series(exposition)


def test_dashboard_is_valid_and_every_panel_queries_the_datasource_variable() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == "fluido"
    assert dashboard["schemaVersion"] >= 39
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert "label_values(fluido_requests_total, model)" in variables["model"]["definition"]
    panels = [p for p in all_panels(dashboard) if p["type"] != "row"]
    assert len({p["id"] for p in all_panels(dashboard)}) == len(list(all_panels(dashboard)))
    for panel in panels:
        title = panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", title
        assert panel["targets"], f"{title}: no query"
        for target in panel["targets"]:
            assert target["expr"].strip(), f"{title}: empty query"
            assert target.get("datasource", panel["datasource"])["uid"] == "${datasource}", title
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert "Cache and rate limits" in rows


def test_probe_and_scrape_paths_of_the_manifests_answer(fluido: str) -> None:
    deployment = yaml.safe_load((DEPLOY / "k8s" / "deployment.yaml").read_text(encoding="utf-8"))
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    paths = {
        container["readinessProbe"]["httpGet"]["path"],
        container["livenessProbe"]["httpGet"]["path"],
        pod["metadata"]["annotations"]["prometheus.io/path"],
    }
    assert paths == {"/ready", "/health", "/metrics"}
    for path in paths:
        assert httpx.get(fluido + path, timeout=10).status_code == 200, path


@pytest.mark.parametrize("name", YAML_FILES)
def test_yaml_file_parses(name: str) -> None:
    documents = list(yaml.safe_load_all((DEPLOY / name).read_text(encoding="utf-8")))
    assert documents and all(isinstance(d, dict) for d in documents)


def test_prometheus_scrapes_fluido_every_15_seconds() -> None:
    scrape = yaml.safe_load((DEPLOY / "prometheus.yml").read_text(encoding="utf-8"))
    (job,) = [j for j in scrape["scrape_configs"] if j["job_name"] == "fluido"]
    assert job["scrape_interval"] == "15s"
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert job["static_configs"][0]["targets"] == ["fluido:8080"]


def test_cluster_config_is_valid_with_the_deployments_overrides() -> None:
    """The ConfigMap's config.toml loads as Fluido would load it in the pod, environment included."""
    configmap = yaml.safe_load((DEPLOY / "k8s" / "configmap.yaml").read_text(encoding="utf-8"))
    deployment = yaml.safe_load((DEPLOY / "k8s" / "deployment.yaml").read_text(encoding="utf-8"))
    env = {
        e["name"]: e["value"]
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        if "value" in e
    }
    cfg = parse(apply_env(tomllib.loads(configmap["data"]["config.toml"]), env))
    assert {up.kind for up in cfg.upstreams.values()} == {"ollama", "openai"}
    assert all(up.embedded is None for up in cfg.upstreams.values())
    assert cfg.server.workers == 1
