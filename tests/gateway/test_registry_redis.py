"""The Redis call registry against a real redis-server: the same behaviour as the in-memory one,
time-to-live in Redis, cluster-wide slots shared by instances, and heartbeat expiry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from gateway import redis_registry
from gateway.redis_registry import RedisRegistry
from gateway.registry import CallRecord, MemoryRegistry, Registry, new_call_id
from tests.gateway.redis_server import redis_server


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory) -> Iterator[str]:
    directory: Path = tmp_path_factory.mktemp("redis")
    with redis_server(directory) as url:
        yield url


@pytest.fixture
async def fresh_redis(redis_url: str) -> AsyncIterator[str]:
    client = Redis.from_url(redis_url)
    await client.flushdb()
    await client.aclose()
    yield redis_url


@pytest.fixture
async def instances(fresh_redis: str) -> AsyncIterator[list[RedisRegistry]]:
    """Two instances sharing one Redis, started (heartbeats running) and closed after."""
    registries = [RedisRegistry(fresh_redis, finished_ttl_secs=60) for _ in range(2)]
    for registry in registries:
        await registry.start()
    yield registries
    for registry in registries:
        await registry.close()


@pytest.fixture(params=["memory", "redis"])
async def registry(request, fresh_redis: str) -> AsyncIterator[Registry]:
    if request.param == "memory":
        yield MemoryRegistry(finished_ttl_secs=60)
        return
    registry = RedisRegistry(fresh_redis, finished_ttl_secs=60)
    await registry.start()
    yield registry
    await registry.close()


def record(**fields) -> CallRecord:
    return CallRecord(**({"id": new_call_id(), "provider": "twilio", "agent": "default"} | fields))


# The behaviour both registries share


async def test_records_round_trip_and_provider_lookup(registry: Registry):
    inbound = await registry.add(
        record(provider_call_id="CA1", from_number="+15550001", variables={"name": "Ada"})
    )
    assert await registry.get(inbound.id) == inbound
    assert await registry.by_provider_call_id("CA1") == inbound
    assert await registry.get("cg_nope") is None
    assert await registry.by_provider_call_id("CA-nope") is None
    outbound = await registry.add(record(direction="outbound"))
    await registry.link(outbound, "CA2")
    found = await registry.by_provider_call_id("CA2")
    assert found is not None and found.id == outbound.id and found.provider_call_id == "CA2"


async def test_saved_changes_are_read_back(registry: Registry):
    call = await registry.add(record(status="ringing"))
    call.status, call.answered_at = "in-progress", time.time()
    call.transcript = [{"role": "user", "text": "hello"}]
    call.latency_ms = [{"first_audio": 812.5}]
    await registry.save(call)
    stored = await registry.get(call.id)
    assert stored == call


async def test_all_is_newest_first_and_drops_expired(registry: Registry):
    now = time.time()
    old = await registry.add(record(created_at=now - 10))
    new = await registry.add(record(created_at=now))
    done = await registry.add(record(created_at=now - 5, ended_at=now - 1, status="completed"))
    stale = await registry.add(record(created_at=now - 1, ended_at=now - 100, status="completed"))
    ids = [r.id for r in await registry.all()]
    assert ids == [new.id, done.id, old.id]
    assert await registry.get(stale.id) is None


async def test_slots_limit_renewal_and_release(registry: Registry):
    assert await registry.hold("cg_a", 300, limit=2)
    assert await registry.hold("cg_b", None, limit=2)
    assert not await registry.hold("cg_c", 300, limit=2)
    assert await registry.hold("cg_a", None, limit=2)  # its media started: same slot
    assert registry.local_count() == 2 and await registry.active_count() == 2
    await registry.release("cg_a")
    assert registry.local_count() == 1 and await registry.active_count() == 1
    assert await registry.hold("cg_c", 300, limit=2)


async def test_ringing_slot_lasts_only_its_ttl(registry: Registry):
    assert await registry.hold("cg_ringing", 0.3)
    assert await registry.hold("cg_live", None)
    assert registry.local_count() == 2 and await registry.active_count() == 2
    await asyncio.sleep(0.45)
    assert registry.local_count() == 1 and await registry.active_count() == 1


# Redis only


async def test_finished_records_expire_in_redis(fresh_redis: str):
    registry = RedisRegistry(fresh_redis, finished_ttl_secs=1)
    await registry.start()
    try:
        live = await registry.add(record(provider_call_id="CA-live"))
        done = await registry.add(record(provider_call_id="CA-done"))
        done.status, done.ended_at = "completed", time.time()
        await registry.save(done)
        client = Redis.from_url(fresh_redis, decode_responses=True)
        assert 0 < await client.ttl(f"callgate:call:{done.id}") <= 1
        assert await client.ttl(f"callgate:call:{live.id}") > 3600
        await asyncio.sleep(1.3)
        assert await registry.get(done.id) is None
        assert await registry.by_provider_call_id("CA-done") is None
        assert [r.id for r in await registry.all()] == [live.id]
        assert await client.zscore("callgate:calls", done.id) is None  # pruned from the list
        await client.aclose()
    finally:
        await registry.close()


async def test_partial_saves_of_two_instances_do_not_undo_each_other(
    instances: list[RedisRegistry],
):
    a, b = instances
    call = await a.add(record(status="ringing"))
    on_b = await b.get(call.id)
    assert on_b is not None
    on_b.status, on_b.transcript = "in-progress", [{"role": "user", "text": "hi"}]
    await b.save(on_b, "status", "transcript")
    call.provider_status = "in-progress"
    await a.save(call, "provider_status")  # a's copy still says "ringing": not written
    stored = await b.get(call.id)
    assert stored is not None
    assert (stored.status, stored.provider_status) == ("in-progress", "in-progress")
    assert stored.transcript == [{"role": "user", "text": "hi"}]


async def test_cluster_limit_spans_instances(instances: list[RedisRegistry]):
    a, b = instances
    assert await a.hold("cg_1", 300, limit=3)
    assert await a.hold("cg_2", None, limit=3)
    assert await b.hold("cg_3", None, limit=3)
    assert not await b.hold("cg_4", 300, limit=3)
    assert not await a.hold("cg_4", 300, limit=3)
    assert (a.local_count(), b.local_count()) == (2, 1)
    assert await a.active_count() == await b.active_count() == 3
    await a.release("cg_1")
    assert await b.hold("cg_4", 300, limit=3)


async def test_concurrent_admissions_never_exceed_the_cluster_limit(
    instances: list[RedisRegistry],
):
    a, b = instances
    attempts = [(a if i % 2 else b).hold(f"cg_{i}", 300, limit=5) for i in range(40)]
    results = await asyncio.gather(*attempts)
    assert sum(results) == 5
    assert await a.active_count() == 5


async def test_a_crashed_instance_frees_its_slots_after_the_heartbeat_ttl(
    fresh_redis: str, monkeypatch
):
    monkeypatch.setattr(redis_registry, "SLOT_TTL_SECS", 0.6)
    monkeypatch.setattr(redis_registry, "HEARTBEAT_SECS", 0.15)
    alive = RedisRegistry(fresh_redis)
    crashed = RedisRegistry(fresh_redis)
    await alive.start()
    await crashed.start()
    try:
        assert await alive.hold("cg_alive", None)
        assert await crashed.hold("cg_crashed", None)
        assert await alive.active_count() == 2
        assert crashed._heartbeat is not None
        crashed._heartbeat.cancel()  # the process died: no more renewals, no clean close
        await asyncio.sleep(1.2)
        assert await alive.active_count() == 1
        assert not await alive.hold("cg_new", 300, limit=1)  # cg_alive is still renewed
    finally:
        await alive.close()
        await crashed._redis.aclose()


async def test_heartbeat_forgets_a_ringing_call_served_elsewhere(
    fresh_redis: str, monkeypatch
):
    monkeypatch.setattr(redis_registry, "HEARTBEAT_SECS", 0.1)
    answering, serving = RedisRegistry(fresh_redis), RedisRegistry(fresh_redis)
    await answering.start()
    await serving.start()
    try:
        call = await answering.add(record(status="ringing"))
        assert await answering.hold(call.id, 300)
        assert answering.local_count() == 1
        on_serving = await serving.get(call.id)
        assert on_serving is not None
        await serving.hold(call.id, None)
        on_serving.status = "in-progress"
        await serving.save(on_serving, "status")
        await asyncio.sleep(0.35)
        assert (answering.local_count(), serving.local_count()) == (0, 1)
        assert await answering.active_count() == 1
    finally:
        await answering.close()
        await serving.close()


async def test_close_gives_back_the_slots_of_served_calls(fresh_redis: str):
    observer, leaving = RedisRegistry(fresh_redis), RedisRegistry(fresh_redis)
    await observer.start()
    await leaving.start()
    try:
        assert await leaving.hold("cg_served", None)
        assert await observer.active_count() == 1
        await leaving.close()
        assert await observer.active_count() == 0
    finally:
        await observer.close()
