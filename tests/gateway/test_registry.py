"""The in-memory call registry: lookups, time-to-live of finished calls, JSON view."""

from __future__ import annotations

import json
import time

from gateway.registry import CallRecord, CallRegistry, new_call_id


def record(**fields) -> CallRecord:
    return CallRecord(**({"id": new_call_id(), "provider": "twilio", "agent": "default"} | fields))


def test_add_get_and_provider_lookup():
    registry = CallRegistry()
    inbound = registry.add(record(provider_call_id="CA1"))
    outbound = registry.add(record(direction="outbound"))
    assert registry.get(inbound.id) is inbound
    assert registry.get("cg_nope") is None
    assert registry.by_provider_call_id("CA1") is inbound
    assert registry.by_provider_call_id("CA2") is None
    registry.link(outbound, "CA2")
    assert outbound.provider_call_id == "CA2"
    assert registry.by_provider_call_id("CA2") is outbound


def test_all_newest_first_and_active_count():
    registry = CallRegistry()
    now = time.time()
    old = registry.add(record(created_at=now - 10, status="in-progress"))
    new = registry.add(record(created_at=now, status="ringing"))
    done = registry.add(record(created_at=now - 5, status="completed", ended_at=now))
    assert [r.id for r in registry.all()] == [new.id, done.id, old.id]
    assert registry.active_count() == 2


def test_only_finished_calls_expire():
    registry = CallRegistry(finished_ttl_secs=60)
    now = time.time()
    live = registry.add(record(created_at=now - 7200, provider_call_id="CA-live"))
    recent = registry.add(record(ended_at=now - 50, provider_call_id="CA-recent"))
    stale = registry.add(record(ended_at=now - 70, provider_call_id="CA-stale"))
    assert registry.get(stale.id) is None  # past its TTL: gone even before the next sweep
    assert registry.by_provider_call_id("CA-stale") is None
    assert {r.id for r in registry.all()} == {live.id, recent.id}
    assert registry.get(live.id) is live and registry.get(recent.id) is recent
    assert registry.by_provider_call_id("CA-live") is live

    live.ended_at = time.time() - 61  # a call that ended a while ago
    registry.add(record())
    assert registry.get(live.id) is None
    assert registry.by_provider_call_id("CA-live") is None
    assert live.id not in {r.id for r in registry.all()}


def test_zero_ttl_forgets_finished_calls_at_once():
    registry = CallRegistry(finished_ttl_secs=0)
    done = registry.add(record(ended_at=time.time() - 0.001))
    assert registry.get(done.id) is None
    assert registry.all() == []


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
