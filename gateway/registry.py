"""Live and recent calls: the record, the `Registry` interface and its in-memory form.

The Redis form, shared by several instances, is `gateway.redis_registry`.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

CallStatus = Literal["initiated", "ringing", "in-progress", "completed", "failed"]


@dataclass(slots=True)
class CallRecord:
    id: str
    provider: str
    agent: str
    direction: Literal["inbound", "outbound"] = "inbound"
    provider_call_id: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    status: CallStatus = "initiated"
    provider_status: str | None = None
    created_at: float = field(default_factory=time.time)
    answered_at: float | None = None
    ended_at: float | None = None
    hangup_by: str | None = None
    end_reason: str | None = None
    turns: int = 0
    interruptions: int = 0
    latency_ms: list[dict[str, float]] = field(default_factory=list)
    transcript: list[dict[str, str]] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    status_webhook: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["from"] = data.pop("from_number")
        data["to"] = data.pop("to_number")
        if self.answered_at and self.ended_at:
            data["duration_secs"] = round(self.ended_at - self.answered_at, 3)
        return data


def new_call_id() -> str:
    return "cg_" + uuid.uuid4().hex


class Registry(Protocol):
    """Live and recent calls, and the slots live calls hold against the concurrency limits.

    Records are values: after changing one, `save` it (other instances read the stored copy).
    """

    async def add(self, record: CallRecord) -> CallRecord: ...
    async def save(self, record: CallRecord, *fields: str) -> None:
        """Store the record; with field names, only those (so that two instances updating
        different fields of one call do not undo each other)."""

    async def get(self, call_id: str) -> CallRecord | None: ...
    async def by_provider_call_id(self, provider_call_id: str) -> CallRecord | None: ...
    async def link(self, record: CallRecord, provider_call_id: str) -> None: ...
    async def all(self) -> list[CallRecord]:
        """Live and recent calls, newest first."""

    async def active_count(self) -> int:
        """Slots held by live calls everywhere (in memory: in this process)."""

    def local_count(self) -> int:
        """Slots held by this process."""

    async def hold(self, call_id: str, ttl_secs: float | None, limit: int | None = None) -> bool:
        """Count the call as live: for `ttl_secs` (a ringing call), or until `release` (None).

        False, holding nothing, when `limit` slots are already held everywhere (a call that
        already holds a slot may always renew it).
        """

    async def release(self, call_id: str) -> None: ...
    async def start(self) -> None: ...
    async def close(self) -> None: ...


class Slots:
    """The slots this process holds: call id -> monotonic deadline (inf: until released)."""

    def __init__(self) -> None:
        self._deadlines: dict[str, float] = {}

    def hold(self, call_id: str, ttl_secs: float | None) -> None:
        ttl = math.inf if ttl_secs is None else ttl_secs
        self._deadlines[call_id] = time.monotonic() + ttl

    def release(self, call_id: str) -> None:
        self._deadlines.pop(call_id, None)

    def holds(self, call_id: str) -> bool:
        return self._deadlines.get(call_id, 0) > time.monotonic()

    def count(self) -> int:
        now = time.monotonic()
        for call_id in [c for c, deadline in self._deadlines.items() if deadline <= now]:
            del self._deadlines[call_id]
        return len(self._deadlines)

    def live(self) -> list[str]:
        """Calls held until released (their media is served here)."""
        return [c for c, deadline in self._deadlines.items() if deadline == math.inf]

    def ringing(self) -> list[str]:
        self.count()
        return [c for c, deadline in self._deadlines.items() if deadline != math.inf]


class MemoryRegistry:
    """The registry of one process: records in a dict, finished ones kept for a time-to-live."""

    def __init__(self, finished_ttl_secs: float = 3600):
        self._calls: dict[str, CallRecord] = {}
        self._by_provider_id: dict[str, str] = {}
        self._ttl = finished_ttl_secs
        self._slots = Slots()

    async def add(self, record: CallRecord) -> CallRecord:
        self._expire()
        self._calls[record.id] = record
        if record.provider_call_id:
            self._by_provider_id[record.provider_call_id] = record.id
        return record

    async def save(self, record: CallRecord, *fields: str) -> None:
        if record.id not in self._calls:
            await self.add(record)

    async def get(self, call_id: str) -> CallRecord | None:
        return self._unexpired(self._calls.get(call_id))

    async def by_provider_call_id(self, provider_call_id: str) -> CallRecord | None:
        call_id = self._by_provider_id.get(provider_call_id)
        return self._unexpired(self._calls.get(call_id)) if call_id else None

    async def link(self, record: CallRecord, provider_call_id: str) -> None:
        record.provider_call_id = provider_call_id
        self._by_provider_id[provider_call_id] = record.id

    async def all(self) -> list[CallRecord]:
        self._expire()
        return sorted(self._calls.values(), key=lambda r: r.created_at, reverse=True)

    async def active_count(self) -> int:
        return self._slots.count()

    def local_count(self) -> int:
        return self._slots.count()

    async def hold(self, call_id: str, ttl_secs: float | None, limit: int | None = None) -> bool:
        if limit is not None and not self._slots.holds(call_id) and self._slots.count() >= limit:
            return False
        self._slots.hold(call_id, ttl_secs)
        return True

    async def release(self, call_id: str) -> None:
        self._slots.release(call_id)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _unexpired(self, record: CallRecord | None) -> CallRecord | None:
        """The record unless it finished longer than the TTL ago (swept on the next add)."""
        if record and record.ended_at and record.ended_at < time.time() - self._ttl:
            return None
        return record

    def _expire(self) -> None:
        horizon = time.time() - self._ttl
        stale = [r for r in self._calls.values() if r.ended_at and r.ended_at < horizon]
        for record in stale:
            del self._calls[record.id]
            if record.provider_call_id:
                self._by_provider_id.pop(record.provider_call_id, None)
