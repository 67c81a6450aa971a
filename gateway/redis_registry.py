"""The call registry in Redis, shared by every instance (CALLGATE_REDIS_URL).

Keys, all under `callgate:`:
- `call:{id}`: a hash, one JSON-encoded field per record field. Live records expire after a
  day (a safety net); finished ones after `finished_ttl_secs`.
- `provider:{provider_call_id}`: the call id, with its record's time-to-live.
- `calls`: sorted set of call ids by creation time, for listing (ids whose record expired are
  pruned as they are met).
- `live`: sorted set of call ids by the wall-clock time their slot expires. A ringing call's slot
  lasts the call-token TTL; a call whose media an instance serves gets a short slot that its
  instance renews every few seconds, so the calls of a crashed instance free their slots soon.
  Admission against the cluster limit is one Lua script, so two instances cannot both take the
  last slot.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import time
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.registry import CallRecord, Slots

log = structlog.get_logger()

PREFIX = "callgate:"
LIVE_RECORD_TTL_SECS = 86_400
LIST_LIMIT = 1000
HEARTBEAT_SECS = 5.0
SLOT_TTL_SECS = 15.0
"""A served call's slot outlives its instance by at most this long."""

_FIELDS = {f.name for f in dataclasses.fields(CallRecord)}
_IDENTITY = ("id", "provider", "agent")
"""Written with every partial save, so that even a partial hash reads back as a record."""

_HOLD = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local limit = tonumber(ARGV[4])
if limit >= 0 and not redis.call('ZSCORE', KEYS[1], ARGV[3])
    and redis.call('ZCARD', KEYS[1]) >= limit then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
return 1
"""


def _encode(record: CallRecord, fields: tuple[str, ...]) -> dict[str, str]:
    names = (*_IDENTITY, *fields) if fields else _FIELDS
    return {name: json.dumps(getattr(record, name)) for name in names}


def _decode(stored: dict[str, str]) -> CallRecord | None:
    values: dict[str, Any] = {k: json.loads(v) for k, v in stored.items() if k in _FIELDS}
    if not all(name in values for name in _IDENTITY):
        return None
    return CallRecord(**values)


class RedisRegistry:
    def __init__(self, url: str, finished_ttl_secs: float = 3600):
        self._redis: Redis = Redis.from_url(url, decode_responses=True)
        self._ttl = finished_ttl_secs
        self._slots = Slots()
        self._hold_script = self._redis.register_script(_HOLD)
        self._heartbeat: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._redis.ping()
        self._heartbeat = asyncio.create_task(self._beat())

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
        if live := self._slots.live():
            await self._redis.zrem(PREFIX + "live", *live)
        await self._redis.aclose()

    async def add(self, record: CallRecord) -> CallRecord:
        async with self._redis.pipeline(transaction=True) as pipe:
            self._write(pipe, record, ())
            pipe.zadd(PREFIX + "calls", {record.id: record.created_at})
            await pipe.execute()
        return record

    async def save(self, record: CallRecord, *fields: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            self._write(pipe, record, fields)
            await pipe.execute()

    def _write(self, pipe: Any, record: CallRecord, fields: tuple[str, ...]) -> None:
        key = PREFIX + "call:" + record.id
        ttl = LIVE_RECORD_TTL_SECS
        if record.ended_at:  # kept for finished_ttl_secs after it ended
            ttl = math.ceil(record.ended_at + self._ttl - time.time())
        if ttl <= 0:
            pipe.delete(key)
            return
        pipe.hset(key, mapping=_encode(record, fields))
        pipe.expire(key, ttl)
        if record.provider_call_id:
            pipe.set(PREFIX + "provider:" + record.provider_call_id, record.id, ex=ttl)

    async def get(self, call_id: str) -> CallRecord | None:
        return _decode(await self._redis.hgetall(PREFIX + "call:" + call_id))

    async def by_provider_call_id(self, provider_call_id: str) -> CallRecord | None:
        call_id = await self._redis.get(PREFIX + "provider:" + provider_call_id)
        return await self.get(call_id) if call_id else None

    async def link(self, record: CallRecord, provider_call_id: str) -> None:
        record.provider_call_id = provider_call_id
        await self.save(record, "provider_call_id")

    async def all(self) -> list[CallRecord]:
        ids = await self._redis.zrevrange(PREFIX + "calls", 0, LIST_LIMIT - 1)
        async with self._redis.pipeline(transaction=False) as pipe:
            for call_id in ids:
                pipe.hgetall(PREFIX + "call:" + call_id)
            stored = await pipe.execute()
        records, gone = [], []
        for call_id, fields in zip(ids, stored, strict=True):
            record = _decode(fields)
            if record is None:
                gone.append(call_id)
            else:
                records.append(record)
        if gone:
            await self._redis.zrem(PREFIX + "calls", *gone)
        return records

    async def active_count(self) -> int:
        live = PREFIX + "live"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(live, "-inf", time.time())
            pipe.zcard(live)
            _, count = await pipe.execute()
        return count

    def local_count(self) -> int:
        return self._slots.count()

    async def hold(self, call_id: str, ttl_secs: float | None, limit: int | None = None) -> bool:
        now = time.time()
        expires = now + (SLOT_TTL_SECS if ttl_secs is None else ttl_secs)
        args = [now, expires, call_id, -1 if limit is None else limit]
        if not await self._hold_script(keys=[PREFIX + "live"], args=args):
            return False
        self._slots.hold(call_id, ttl_secs)
        return True

    async def release(self, call_id: str) -> None:
        self._slots.release(call_id)
        await self._redis.zrem(PREFIX + "live", call_id)

    async def _beat(self) -> None:
        """Renew the slots of the calls served here; forget ringing calls that moved on."""
        while True:
            await asyncio.sleep(HEARTBEAT_SECS)
            try:
                await self._renew()
            except RedisError as exc:
                log.warning("registry_heartbeat_failed", error=str(exc))

    async def _renew(self) -> None:
        if live := self._slots.live():
            expires = time.time() + SLOT_TTL_SECS
            await self._redis.zadd(PREFIX + "live", dict.fromkeys(live, expires))
        ringing = self._slots.ringing()
        if not ringing:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for call_id in ringing:
                pipe.hget(PREFIX + "call:" + call_id, "status")
            statuses = await pipe.execute()
        for call_id, status in zip(ringing, statuses, strict=True):
            if status is not None and json.loads(status) != "ringing":
                self._slots.release(call_id)  # its media went to another instance
