"""Live and recent calls. In memory, finished calls kept for a time-to-live."""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

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

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["from"] = data.pop("from_number")
        data["to"] = data.pop("to_number")
        if self.answered_at and self.ended_at:
            data["duration_secs"] = round(self.ended_at - self.answered_at, 3)
        return data


def new_call_id() -> str:
    return "cg_" + uuid.uuid4().hex


class CallRegistry:
    def __init__(self, finished_ttl_secs: float = 3600):
        self._calls: dict[str, CallRecord] = {}
        self._by_provider_id: dict[str, str] = {}
        self._ttl = finished_ttl_secs

    def add(self, record: CallRecord) -> CallRecord:
        self._expire()
        self._calls[record.id] = record
        if record.provider_call_id:
            self._by_provider_id[record.provider_call_id] = record.id
        return record

    def get(self, call_id: str) -> CallRecord | None:
        return self._unexpired(self._calls.get(call_id))

    def by_provider_call_id(self, provider_call_id: str) -> CallRecord | None:
        call_id = self._by_provider_id.get(provider_call_id)
        return self._unexpired(self._calls.get(call_id)) if call_id else None

    def link(self, record: CallRecord, provider_call_id: str) -> None:
        record.provider_call_id = provider_call_id
        self._by_provider_id[provider_call_id] = record.id

    def all(self) -> list[CallRecord]:
        self._expire()
        return sorted(self._calls.values(), key=lambda r: r.created_at, reverse=True)

    def active_count(self) -> int:
        return sum(1 for r in self._calls.values() if r.status in ("ringing", "in-progress"))

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
