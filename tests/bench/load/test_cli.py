"""``fluido bench`` end to end against the fixed-capacity fake: table, files, comparison, sweep."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from bench.load.cli import main
from proxy.cli import main as fluido
from proxy.config import parse
from tests.conftest import running
from tests.fakes.capacity import FakeCapacity


def test_a_comparison_run_writes_table_results_report_and_plots(
    threaded_fake: FakeCapacity,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLUIDO_BENCH_API_KEY", "sk-bench")
    out = tmp_path / "run"
    code = fluido([
        "bench", "--url", threaded_fake.url, "--name", "direct", "--compare", f"again={threaded_fake.url}/v1",
        "--rate", "4,8", "--duration", "0.5", "--mix", "short=1", "--pause", "0", "--out", str(out), "--quiet",
    ])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "TTFT p50/p90/p99 ms" in printed and "TTFT p50 ratio" in printed and "again" in printed
    doc = orjson.loads((out / "results.json").read_bytes())
    assert doc["endpoints"] == ["direct", "again"]
    assert [(c["endpoint"], c["load"]["value"]) for c in doc["cells"]] == [
        ("direct", 4.0), ("again", 4.0), ("again", 8.0), ("direct", 8.0)
    ]  # fmt: skip
    assert all(r["outcome"] == "ok" for c in doc["cells"] for r in c["records"])
    assert sum(len(c["records"]) for c in doc["cells"]) == threaded_fake.requests_seen
    assert {h["Authorization"] for h in threaded_fake.headers} == {"Bearer sk-bench"}
    report = (out / "report.md").read_text()
    assert "| direct | 4 req/s |" in report and "![ttft_vs_load](ttft_vs_load.png)" in report
    assert all(
        (out / name).stat().st_size > 0
        for name in ("ttft_vs_load.png", "throughput_vs_load.png", "latency_cdf.png")
    )


def test_the_model_defaults_to_the_first_the_server_lists(
    threaded_fake: FakeCapacity, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "--url",
                threaded_fake.url,
                "--concurrency",
                "2",
                "--requests",
                "4",
                "--mix",
                "short=1",
                "--quiet",
            ]
        )
        == 0
    )
    assert "fluido bench: capacity-model" in capsys.readouterr().out
    assert {r["model"] for r in threaded_fake.requests} == {"capacity-model"}


def test_a_sweep_runs_its_probes_then_rates_between_them(threaded_fake: FakeCapacity, tmp_path: Path) -> None:
    code = main([
        "--url", threaded_fake.url, "--model", "capacity-model", "--sweep", "2", "--sweep-concurrency", "8",
        "--duration", "0.6", "--mix", "short=1", "--pause", "0", "--out", str(tmp_path), "--quiet",
    ])  # fmt: skip
    assert code == 0
    cells = orjson.loads((tmp_path / "results.json").read_bytes())["cells"]
    assert [c["load"]["label"] or c["load"]["kind"] for c in cells] == [
        "synchronous",
        "throughput",
        "rate",
        "rate",
    ]
    low, high = cells[2]["load"]["value"], cells[3]["load"]["value"]
    assert 0 < low < high and threaded_fake.max_in_flight == 4  # the throughput probe filled every slot


def test_an_unreachable_server_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--url", "http://127.0.0.1:9", "--requests", "1"]) == 2
    assert "fluido bench:" in capsys.readouterr().err


def test_bad_arguments_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--url", "http://127.0.0.1:9", "--model", "m", "--compare", "nourl", "--requests", "1"]) == 2
    assert "NAME=URL" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--rate", "1"])  # no --url


def test_fluidos_own_429_is_counted_shed_with_its_retry_after(
    threaded_fake: FakeCapacity, tmp_path: Path
) -> None:
    """Fluido in front of the fake, two requests a minute allowed: the rest are shed, and say when to retry."""
    cfg = parse({
        "limits": {"rpm": 2},
        "cache": {"enabled": False},
        "upstreams": {"fake": {"kind": "openai", "url": threaded_fake.url + "/v1"}},
        "models": {"capacity-model": {"targets": [{"upstream": "fake", "model": "capacity-model"}]}},
    })  # fmt: skip
    with running(cfg) as fluido_url:
        code = main([
            "--url", fluido_url, "--model", "capacity-model", "--concurrency", "1", "--requests", "5",
            "--mix", "short=1", "--out", str(tmp_path), "--quiet",
        ])  # fmt: skip
    assert code == 0
    records = orjson.loads((tmp_path / "results.json").read_bytes())["cells"][0]["records"]
    assert [r["outcome"] for r in records] == ["ok", "ok", "shed", "shed", "shed"]
    assert all(r["status"] == 429 and 0 < r["retry_after"] <= 60 for r in records[2:])
    assert records[0]["retry_after"] is None
    assert "3 of 3 shed with Retry-After" in (tmp_path / "report.md").read_text()
