"""The in-memory call registry: lookups, time-to-live of finished calls, slots, JSON view."""

from __future__ import annotations

import json
import time

from gateway.registry import CallRecord, MemoryRegistry, new_call_id


def record(**fields) -> CallRecord:
    return CallRecord(**({"id": new_call_id(), "provider": "twilio", "agent": "default"} | fields))


async def test_add_get_and_provider_lookup():
    registry = MemoryRegistry()
    inbound = await registry.add(record(provider_call_id="CA1"))
    outbound = await registry.add(record(direction="outbound"))
    assert await registry.get(inbound.id) is inbound
    assert await registry.get("cg_nope") is None
    assert await registry.by_provider_call_id("CA1") is inbound
    assert await registry.by_provider_call_id("CA2") is None
    await registry.link(outbound, "CA2")
    assert outbound.provider_call_id == "CA2"
    assert await registry.by_provider_call_id("CA2") is outbound


async def test_all_newest_first():
    registry = MemoryRegistry()
    now = time.time()
    old = await registry.add(record(created_at=now - 10, status="in-progress"))
    new = await registry.add(record(created_at=now, status="ringing"))
    done = await registry.add(record(created_at=now - 5, status="completed", ended_at=now))
    assert [r.id for r in await registry.all()] == [new.id, done.id, old.id]


async def test_only_finished_calls_expire():
    registry = MemoryRegistry(finished_ttl_secs=60)
    now = time.time()
    live = await registry.add(record(created_at=now - 7200, provider_call_id="CA-live"))
    recent = await registry.add(record(ended_at=now - 50, provider_call_id="CA-recent"))
    stale = await registry.add(record(ended_at=now - 70, provider_call_id="CA-stale"))
    assert await registry.get(stale.id) is None  # past its TTL: gone even before the next sweep
    assert await registry.by_provider_call_id("CA-stale") is None
    assert {r.id for r in await registry.all()} == {live.id, recent.id}
    assert await registry.get(live.id) is live and await registry.get(recent.id) is recent
    assert await registry.by_provider_call_id("CA-live") is live

    live.ended_at = time.time() - 61  # a call that ended a while ago
    await registry.add(record())
    assert await registry.get(live.id) is None
    assert await registry.by_provider_call_id("CA-live") is None
    assert live.id not in {r.id for r in await registry.all()}


async def test_zero_ttl_forgets_finished_calls_at_once():
    registry = MemoryRegistry(finished_ttl_secs=0)
    done = await registry.add(record(ended_at=time.time() - 0.001))
    assert await registry.get(done.id) is None
    assert await registry.all() == []


def test_to_json_fields():
    answered = 1_700_000_000.0
    data = record(
        provider_call_id="CA9",
        from_number="+15550001",
        to_number="+15550002",
        answered_at=answered,
        ended_at=answered + 12.3456,
        transcript=[{"role": "user", "text": "hi"}],
    ).to_json()
    assert data["from"] == "+15550001" and data["to"] == "+15550002"
    assert "from_number" not in data and "to_number" not in data
    assert data["duration_secs"] == 12.346
    assert data["transcript"] == [{"role": "user", "text": "hi"}]
    for key in ("id", "provider", "agent", "direction", "status", "created_at", "latency_ms"):
        assert key in data
    assert json.loads(json.dumps(data)) == data


def test_to_json_without_duration_until_answered_and_ended():
    assert "duration_secs" not in record().to_json()
    assert "duration_secs" not in record(answered_at=time.time()).to_json()


def test_call_ids_are_unique_and_prefixed():
    ids = {new_call_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(i.startswith("cg_") and len(i) > 20 for i in ids)


async def test_slots_count_until_released_or_expired(monkeypatch):
    registry = MemoryRegistry()
    assert await registry.hold("cg_ringing", ttl_secs=300)
    assert await registry.hold("cg_live", ttl_secs=None)
    assert registry.local_count() == 2 and await registry.active_count() == 2
    clock = time.monotonic() + 301
    monkeypatch.setattr(time, "monotonic", lambda: clock)
    assert registry.local_count() == 1  # a ringing call whose media never came frees its slot
    await registry.release("cg_live")
    assert registry.local_count() == 0


async def test_hold_respects_the_limit_but_renews_a_held_slot():
    registry = MemoryRegistry()
    assert await registry.hold("cg_1", 300, limit=2)
    assert await registry.hold("cg_2", 300, limit=2)
    assert not await registry.hold("cg_3", 300, limit=2)
    assert await registry.hold("cg_1", None, limit=2)  # its media started: same slot
    assert registry.local_count() == 2
