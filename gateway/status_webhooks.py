"""Status webhooks: a call's lifecycle events, posted to the URL its creator gave.

Events are `initiated`, `ringing`, `answered`, `completed` and `failed`; the body is JSON
`{"id", "event", "created_at", "call"}`, where `call` is the call's record (with its transcript
and a `summary` once the call has ended). Each POST carries `X-Callgate-Signature:
t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` so the receiver can check that it came
from us and is recent.

Sending never blocks a call: `notify` only enqueues. A few workers, owned by the sender and
cancelled by `aclose`, deliver with exponential backoff on connection errors, 429 and 5xx. The
events of one call go through one worker, so they arrive in the order they happened.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import structlog

from gateway.registry import CallRecord

log = structlog.get_logger()

SIGNATURE_HEADER = "X-Callgate-Signature"
Event = Literal["initiated", "ringing", "answered", "completed", "failed"]
TERMINAL: frozenset[str] = frozenset({"completed", "failed"})
RETRY_DELAYS_SECS = (0.5, 1.0, 2.0, 4.0)
"""Waits between tries: five tries in all, the last about 7.5 s after the first."""

_PROVIDER_EVENTS: dict[str, Event] = {
    "initiated": "initiated",
    "queued": "initiated",
    "ringing": "ringing",
    "in-progress": "answered",
    "answered": "answered",
}
_PROVIDER_FAILURES = frozenset(
    {"busy", "failed", "no-answer", "canceled", "cancel", "timeout", "rejected"}
)


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The `X-Callgate-Signature` value for `body` sent at `timestamp`."""
    message = str(timestamp).encode() + b"." + body
    digest = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, body: bytes, header: str, tolerance_secs: float = 300) -> bool:
    """What a receiver does: recompute the signature and check that the timestamp is recent."""
    parts = dict(item.partition("=")[::2] for item in header.split(","))
    try:
        timestamp = int(parts.get("t", ""))
    except ValueError:
        return False
    if abs(time.time() - timestamp) > tolerance_secs:
        return False
    expected = sign(secret, body, timestamp).partition(",v1=")[2]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def call_summary(record: CallRecord) -> dict[str, Any]:
    """What a finished call came to, in a few fields."""
    said = [turn["text"] for turn in record.transcript if turn.get("role") == "assistant"]
    duration = None
    if record.answered_at and record.ended_at:
        duration = round(record.ended_at - record.answered_at, 3)
    return {
        "status": record.status,
        "duration_secs": duration,
        "turns": record.turns,
        "interruptions": record.interruptions,
        "hangup_by": record.hangup_by,
        "end_reason": record.end_reason,
        "last_agent_words": said[-1] if said else None,
    }


@dataclass(frozen=True, slots=True)
class _Delivery:
    url: str
    body: bytes
    call_id: str
    event: str


class StatusWebhooks:
    """The process's sender. `start()` in the app's lifespan, `aclose()` at its end."""

    def __init__(
        self,
        secret: str | None,
        *,
        workers: int = 4,
        max_queued: int = 1000,
        retry_delays: Sequence[float] = RETRY_DELAYS_SECS,
        timeout_secs: float = 10.0,
    ) -> None:
        self._secret = secret
        self._queues: list[asyncio.Queue[_Delivery]] = [
            asyncio.Queue(max(1, max_queued // workers)) for _ in range(workers)
        ]
        self._delays = tuple(retry_delays)
        self._timeout = timeout_secs
        self._tasks: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None
        self._sent: OrderedDict[str, set[str]] = OrderedDict()

    def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=self._timeout, follow_redirects=False)
        self._tasks = [asyncio.create_task(self._work(q)) for q in self._queues]

    async def aclose(self) -> None:
        """Stop delivering: what is still queued or being retried is dropped (and logged)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        dropped = sum(q.qsize() for q in self._queues)
        if dropped:
            log.warning("status_webhooks_dropped", count=dropped, reason="shutdown")
        if self._client is not None:
            await self._client.aclose()

    def notify(self, record: CallRecord, event: Event) -> None:
        """Queue `event` for the call's status webhook, once per call; never waits."""
        if not record.status_webhook or not self._first(record.id, event):
            return
        call = record.to_json()
        if event in TERMINAL:
            call["summary"] = call_summary(record)
        payload = {"id": "ev_" + uuid.uuid4().hex, "event": event, "created_at": time.time()}
        body = json.dumps({**payload, "call": call}, separators=(",", ":")).encode()
        delivery = _Delivery(record.status_webhook, body, record.id, event)
        queue = self._queues[hash(record.id) % len(self._queues)]
        try:
            queue.put_nowait(delivery)
        except asyncio.QueueFull:
            log.warning("status_webhook_dropped", call_id=record.id, event=event, reason="queue")

    def provider_status(self, record: CallRecord, provider_status: str) -> tuple[str, ...]:
        """Turn a provider's status callback into our event; a call that ended before its
        media started (busy, no answer, or hung up at once) ends here, not in the media path.

        Returns the names of the record's fields this changed (for `registry.save`).
        """
        status = provider_status.lower()
        if status in _PROVIDER_EVENTS:
            event = _PROVIDER_EVENTS[status]
            self.notify(record, event)
            if event == "ringing" and record.status == "initiated":
                record.status = "ringing"
                return ("status",)
            return ()
        if record.answered_at is not None or record.ended_at is not None:
            return ()  # the media path reports how the call ended, with its transcript
        if status != "completed" and status not in _PROVIDER_FAILURES:
            return ()
        record.ended_at = time.time()
        record.status = "completed" if status == "completed" else "failed"
        record.end_reason = record.end_reason or status
        self.notify(record, record.status)
        return ("ended_at", "status", "end_reason")

    def _first(self, call_id: str, event: str) -> bool:
        sent = self._sent.setdefault(call_id, set())
        if event in sent or TERMINAL & sent:
            return False
        sent.add(event)
        if event in TERMINAL:
            del self._sent[call_id]
            self._sent[call_id] = sent  # most recent last; the oldest are forgotten first
        while len(self._sent) > 10_000:
            self._sent.popitem(last=False)
        return True

    async def _work(self, queue: asyncio.Queue[_Delivery]) -> None:
        while True:
            delivery = await queue.get()
            try:
                await self._deliver(delivery)
            finally:
                queue.task_done()

    async def _deliver(self, delivery: _Delivery) -> None:
        assert self._client is not None
        bound = log.bind(call_id=delivery.call_id, event=delivery.event)
        for attempt in range(len(self._delays) + 1):
            if attempt:
                await asyncio.sleep(self._delays[attempt - 1])
            headers = {"Content-Type": "application/json", "User-Agent": "callgate"}
            if self._secret:
                headers[SIGNATURE_HEADER] = sign(self._secret, delivery.body, int(time.time()))
            try:
                response = await self._client.post(
                    delivery.url, content=delivery.body, headers=headers
                )
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
            else:
                if response.status_code < 500 and response.status_code != 429:
                    bound.info(
                        "status_webhook_sent", status=response.status_code, tries=attempt + 1
                    )
                    return
                outcome = f"HTTP {response.status_code}"
            if attempt < len(self._delays):
                bound.info("status_webhook_retry", tries=attempt + 1, outcome=outcome)
        bound.warning("status_webhook_failed", tries=len(self._delays) + 1, outcome=outcome)


def sender_of(app: Any) -> StatusWebhooks:
    """The app's sender (set by `gateway.app.create_app`)."""
    return app.state.status_webhooks
