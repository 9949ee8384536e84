"""The deploy story on loopback with real parts: haproxy (deploy/haproxy.cfg, ports replaced by free ones) in
front of three ``fluido serve`` replicas sharing one Redis and one ``chroma run`` server.

One rate limit holds across the replicas, a cached answer (exact or, with the Chroma server, a paraphrase) is
shared by all of them, and a replica killed mid-load costs only the requests it had in flight. Each replica of
the semantic cache loads an embedding model (tens of seconds of CPU for three), so the short version that
``make test`` runs shares Redis only; ``make soak`` (FLUIDO_SOAK=1) adds the Chroma server.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_client

from tests.soak.conftest import fluido_config
from tests.soak.load import ANSWERED, LONG, LOST, TYPED, Deadline, Load, chat_body, scale, table
from tests.support.processes import REPO, Child, ChromaServer, Fluido, PacedUpstream
from tests.support.redis_server import RedisServer

TENANT = "sk-tenant-0123456789abcdef"
LIMITED = "sk-limited-0123456789abcdef"
RPM = 30
LEASE_S = 5.0
CLIENTS = int(scale(12, 48))


class HAProxy(Child):
    """haproxy in the foreground (-db) on a rendered copy of deploy/haproxy.cfg."""

    def __init__(self, logs: Path, replicas: list[Fluido]) -> None:
        super().__init__("haproxy", logs)
        self.socket = logs / "haproxy.sock"
        text = (REPO / "deploy" / "haproxy.cfg").read_text()
        text = text.replace("127.0.0.1:8080", f"127.0.0.1:{self.port}")
        text = text.replace("/tmp/fluido-haproxy.sock", str(self.socket))
        for i, replica in enumerate(replicas, 1):
            text = text.replace(f"127.0.0.1:808{i}", f"127.0.0.1:{replica.port}")
        self.config = logs / "haproxy.cfg"
        self.config.write_text(text)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [shutil.which("haproxy") or "haproxy", "-f", str(self.config), "-db"]

    def _stats(self) -> list[dict[str, str]]:
        """One row per replica from the stats socket's ``show stat`` CSV."""
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.socket))
            s.sendall(b"show stat\n")
            raw = b""
            while chunk := s.recv(65536):
                raw += chunk
        lines = raw.decode().splitlines()
        head = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(head, line.split(","), strict=False)) for line in lines[1:] if line]
        return [r for r in rows if r["svname"].startswith("replica")]

    def sessions(self) -> dict[str, int]:
        """Requests in flight per replica (``scur``)."""
        return {r["svname"]: int(r["scur"] or 0) for r in self._stats()}

    def up(self) -> dict[str, bool]:
        return {r["svname"]: r["status"].startswith("UP") for r in self._stats()}


@dataclass
class Cluster:
    haproxy: HAProxy
    replicas: list[Fluido]
    upstream: PacedUpstream
    redis: RedisServer


def cluster_config(
    upstream: PacedUpstream, redis_url: str, chroma: ChromaServer | None, tmp: Path
) -> dict[str, Any]:
    semantic: dict[str, Any] = {"enabled": False}
    if chroma is not None:
        semantic = {
            "enabled": True,
            "host": "127.0.0.1",
            "port": chroma.port,
            "embedding_cache": str(tmp / "embeddings.sqlite"),
        }
    return fluido_config(
        upstream.url,
        keys={
            "tenant": {"key_env": "TENANT_KEY", "concurrency": 1000},
            "limited": {"key_env": "LIMITED_KEY", "rpm": RPM},
        },
        limits={"backend": "redis", "lease_seconds": LEASE_S, "trusted_proxies": ["127.0.0.1"]},
        redis={"url": redis_url},
        cache={"backend": "redis", "semantic": semantic},
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if shutil.which("haproxy") is None:
        pytest.fail("haproxy is not installed (apt-get install -y haproxy)")
    tmp = tmp_path_factory.mktemp("scale-out")
    started: list[Child] = []
    redis = RedisServer()
    redis.start()
    try:
        upstream = PacedUpstream(tmp, tokens=20, interval=0.05)
        started.append(upstream)
        upstream.start()
        chroma = ChromaServer(tmp, tmp / "chroma-data") if LONG else None
        if chroma is not None:
            started.append(chroma)
            chroma.start(timeout=120)
        config = cluster_config(upstream, redis.url, chroma, tmp)
        env = {"TENANT_KEY": TENANT, "LIMITED_KEY": LIMITED}
        replicas = [Fluido(tmp, config, env, name=f"replica{i}") for i in (1, 2, 3)]
        started += replicas
        for replica in replicas:
            replica.start()
        haproxy = HAProxy(tmp, replicas)
        started.append(haproxy)
        haproxy.start()
        deadline = time.monotonic() + 240
        for replica in replicas if chroma is not None else []:  # each loads the embedding model first
            while not httpx.get(f"{replica.url}/ready", timeout=10).json()["dependencies"]["chroma"]["ok"]:
                assert time.monotonic() < deadline, "the semantic index never became ready"
                time.sleep(0.5)
        while not all(haproxy.up().values()):
            assert time.monotonic() < deadline, haproxy.up()
            time.sleep(0.2)
        yield Cluster(haproxy, replicas, upstream, redis)
    finally:
        for child in reversed(started):
            child.stop(timeout=10)
        redis.stop()


def ask(url: str, text: str, key: str = TENANT, temperature: float = 0) -> httpx.Response:
    body = chat_body(text, stream=False, temperature=temperature)
    return httpx.post(
        f"{url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}, timeout=30
    )


def replica_counts(cluster: Cluster) -> dict[str, int]:
    return {
        r.name: sum(1 for line in r.log.read_text().splitlines() if '"event":"request"' in line)
        for r in cluster.replicas
    }


def test_one_rate_limit_holds_across_the_replicas(cluster: Cluster) -> None:
    before = replica_counts(cluster)
    start = time.monotonic()
    statuses = [ask(cluster.haproxy.url, f"limited {i}", LIMITED, 0.7).status_code for i in range(3 * RPM)]
    elapsed = time.monotonic() - start
    after = replica_counts(cluster)
    spread = {name: after[name] - before[name] for name in after}
    allowed = statuses.count(200)
    refill = RPM * elapsed / 60  # the bucket refills continuously while the test runs
    print(
        f"\nGlobal limit: {3 * RPM} requests at rpm {RPM} through haproxy in {elapsed:.1f} s, spread over "
        f"the replicas as {spread}: {allowed} answered, {statuses.count(429)} refused (429)"
    )
    # Every replica took its share; with per-replica buckets each would have let RPM through.
    assert all(n >= RPM // 2 for n in spread.values()), spread
    assert statuses.count(429) + allowed == len(statuses)
    assert RPM <= allowed <= RPM + refill + 1


def test_a_cached_answer_is_shared_by_every_replica(cluster: Cluster) -> None:
    question = "What is the capital of Burkina Faso?"
    first = ask(cluster.haproxy.url, question)
    assert first.status_code == 200 and first.headers["x-fluido-cache"] == "miss"
    # Straight to each replica, haproxy aside: every one answers from the shared store.
    deadline = time.monotonic() + 10
    for replica in cluster.replicas:
        while (r := ask(replica.url, question)).headers["x-fluido-cache"] != "hit":
            assert time.monotonic() < deadline, r.headers
            time.sleep(0.1)
        assert (
            r.json()["choices"][0]["message"]["content"] == first.json()["choices"][0]["message"]["content"]
        )
    # A paraphrase is found in the shared Chroma server by whichever replica is asked.
    paraphrase = "What's Burkina Faso's capital city?"
    kinds = {}
    deadline = time.monotonic() + 20
    for replica in cluster.replicas if LONG else []:
        while (r := ask(replica.url, paraphrase)).headers["x-fluido-cache"] != "semantic":
            assert time.monotonic() < deadline, r.headers
            time.sleep(0.2)
        kinds[replica.name] = r.headers["x-fluido-cache"]
    bodies = cluster.upstream.received()["bodies"]
    asked = sum(1 for b in bodies if b["messages"][-1]["content"] in (question, paraphrase))
    print(
        f"\nShared cache: exact hits on every replica; paraphrase answered as {kinds}; upstream asked {asked}x"
    )
    assert asked == 1  # the first request only


async def test_a_replica_killed_mid_load_affects_only_its_in_flight_requests(cluster: Cluster) -> None:
    victim = cluster.replicas[1]
    auth = {"authorization": f"Bearer {TENANT}"}

    def body(n: int) -> dict[str, Any]:
        return chat_body(f"scale-out {n}", stream=n % 2 == 0)

    async with Load(cluster.haproxy.url, CLIENTS, body, headers=auth) as load:
        await load.run_phase("steady, 3 replicas", int(scale(60, 600)))
        in_flight = await asyncio.to_thread(cluster.haproxy.sessions)
        victim.kill()
        killed = load.begin(f"{victim.name} killed ({in_flight[victim.name]} in flight)")
        assert await Deadline(15).poll(lambda: not cluster.haproxy.up()[victim.name], every=0.2)
        await load.run_phase("2 replicas", int(scale(60, 600)))
    print(table("Scale-out: one replica killed mid-load", load.tallies))
    after = load.tallies[-1]
    failed = sum(t.outcomes[TYPED] + t.outcomes[LOST] for t in load.tallies)
    print(f"in flight per replica at the kill: {in_flight}; failed in all: {failed}")
    assert after.outcomes[ANSWERED] == after.sent
    # Only the requests the dead replica was serving failed (streams cut, or haproxy's 502 for a reply not
    # yet started); everything else, including requests that arrived while it was dying, was served.
    assert failed <= in_flight[victim.name], (failed, in_flight, killed.outcomes)
    assert sum(t.outcomes["hang"] for t in load.tallies) == 0
    # The dead replica's concurrency leases in Redis expire after lease_seconds, freeing its slots.
    r = redis_client.Redis.from_url(cluster.redis.url)
    leases = lambda: sum(int(r.zcard(k)) for k in r.scan_iter("fluido:rl:*:c"))  # noqa: E731
    assert await Deadline(LEASE_S + 10).poll(lambda: leases() == 0, every=0.5)
